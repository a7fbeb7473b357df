"""Rate bounds seen from outside: no hidden cap by default, 429s slow submissions down,
and the run says which bound holds it back."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from pipeline.core.planning.pacing import Bound
from pipeline.errors import TransientError
from pipeline.operations.run.events import EventKind, RunEvent
from pipeline.shell.http.client import ApiClient
from pipeline.simulator import RunningSimulator
from pipeline.views.progress import JsonReporter, LiveReporter, PlainReporter
from tests.e2e.conftest import KEY, ROOT, Project, run_args
from tests.journeys.world import HANG_GUARD, SharedSim
from tests.journeys.world import KEY as JOURNEY_KEY
from tests.simulator.simkit import StartSim


def imgspec_subprocess(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess (bounded only against hangs)."""
    env = {**os.environ, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


def events(stdout: str) -> list[dict[str, object]]:
    """The JSON events a ``run --json`` printed."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_default_run_has_no_rate_cap(project: Project, sim: RunningSimulator) -> None:
    """With default flags no event names --max-rate: submits, polls and downloads go
    unbounded while the API does not limit them."""
    done = imgspec_subprocess([*run_args(project, sim), "--json"])
    assert done.returncode == 0, done.stderr
    seen = {event["limited_by"] for event in events(done.stdout)}
    assert seen <= {None, "concurrency"}


def test_max_rate_is_a_hard_cap_and_is_named(project: Project, sim: RunningSimulator) -> None:
    """--max-rate 10 holds the first burst of submissions, and the JSON events say so."""
    done = imgspec_subprocess([*run_args(project, sim), "--json", "--max-rate", "10"])
    assert done.returncode == 0, done.stderr
    named = [event for event in events(done.stdout) if event["limited_by"] == "max-rate"]
    assert named
    assert named[0]["event"] == EventKind.SUBMITTED


def test_default_client_does_not_cap_polls_or_downloads(start_sim: StartSim,
                                                        tmp_path: Path) -> None:
    """200 polls and 20 downloads at once, no max_rate: no bound holds any of them."""
    sim = start_sim()

    async def scenario() -> tuple[Bound | None, float | None, float | None]:
        async with ApiClient(base_url=sim.base_url, api_key=KEY) as client:
            task = await client.submit({"model": "wan2.7-image", "prompt": "x", "size": "1K"},
                                       idempotency_key="uncapped-1")
            while True:
                state = await client.poll(task.task_id)
                if state.status == "completed":
                    break
                await asyncio.sleep(0.05)
            await asyncio.gather(*(client.poll(task.task_id) for _ in range(200)))
            await asyncio.gather(*(client.download(state.images[0].url,
                                                   tmp_path / f"{i}.part")
                                   for i in range(20)))
            return client.holding(), client.rate_bound("poll"), client.rate_bound("download")

    assert asyncio.run(scenario()) == (None, None, None)


def test_a_429_lowers_the_submission_rate(start_sim: StartSim) -> None:
    """A submission answered 429 bounds later submissions (and only them)."""
    sim = start_sim(faults={"submit.429": 1.0}, retry_after=0)

    async def scenario() -> tuple[float | None, float | None, Bound | None]:
        async with ApiClient(base_url=sim.base_url, api_key=KEY, retry_attempts=1) as client:
            with pytest.raises(TransientError):
                await client.submit({"model": "wan2.7-image", "prompt": "x", "size": "1K"},
                                    idempotency_key="limited-1")
            return client.rate_bound("submit"), client.rate_bound("poll"), client.holding()

    submit_rate, poll_rate, held = asyncio.run(scenario())
    assert submit_rate is not None
    assert poll_rate is None
    assert held == Bound.API_RATE


def event(bound: Bound | None) -> RunEvent:
    """A DONE event held back by ``bound``."""
    return RunEvent(EventKind.DONE, "gen@1", "1 image(s)", 1, 0, 3, 10, Decimal("0.1"),
                    Decimal("0.3"), bound)


def test_every_display_names_the_limiting_bound() -> None:
    """JSON carries limited_by; plain lines and the live bar say it in words."""
    out = io.StringIO()
    JsonReporter("CNY", out)(event(Bound.API_RATE))
    assert json.loads(out.getvalue())["limited_by"] == "api-rate-limit"
    plain = io.StringIO()
    PlainReporter("CNY", plain)(event(Bound.MAX_RATE))
    assert "held back by --max-rate" in plain.getvalue()
    live = LiveReporter("CNY", Console(file=io.StringIO(), width=200), total=10)
    live(event(Bound.CONCURRENCY))
    assert "held back by --concurrency" in live.progress.tasks[0].fields["held"]
    live(event(None))
    assert live.progress.tasks[0].fields["held"] == ""


class _Counting(io.StringIO):
    """A stream that counts its flushes."""

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_json_events_are_flushed_in_batches_but_never_left_behind() -> None:
    """--json: the first line is flushed at once, a burst shares a later flush, so does the end."""
    out = _Counting()
    now = [0.0]

    async def burst() -> None:
        reporter = JsonReporter("CNY", out, clock=lambda: now[0])
        with reporter:
            reporter(event(None))
            assert out.flushes == 1
            for _ in range(50):
                reporter(event(None))
            assert out.flushes == 1  # the burst waits for the timer
            await asyncio.sleep(JsonReporter.FLUSH_EVERY * 2)
            assert out.flushes == 2
            reporter(event(None))  # within FLUSH_EVERY of the last flush (clock unmoved)
        assert out.flushes == 3  # leaving the reporter flushes what is left

    asyncio.run(burst())
    assert len(out.getvalue().splitlines()) == 52


RECOVERY_MANIFEST = """\
version: 1
name: burst
budget: {max_cost: 100}
defaults: {model: wan2.7-image, size: 1K}
jobs:
  sign:
    prompt: "A shop sign"
  window:
    prompt: "Shop window number {{ i }} under the sign"
    image_urls: [{from: sign, image: 0}]
    matrix:
      i: [%s]
"""
WINDOWS = 80
# Generous: recovered, the run sends its 80 window submissions in seconds; slots booked
# at the rate the 429 left (0.5/s: one request had been sent) would take 160 s.
RECOVERED_WITHIN = 60.0


def test_after_a_429_the_run_is_back_at_pace_within_seconds(tmp_path: Path) -> None:
    """The run's first submission, alone, is answered 429, which bounds submissions at
    0.5/s; the API then stops limiting, and the 80 submissions queued after it are all
    sent within seconds (waits follow the recovered rate, not slots booked at 0.5/s),
    each instance is paid once, and the events name the API's rate limit, never a
    --max-rate nobody gave."""
    manifest = tmp_path / "burst.yaml"
    manifest.write_text(RECOVERY_MANIFEST % ", ".join(str(i) for i in range(WINDOWS)))
    sim = SharedSim()
    try:
        sim.set_faults({"submit.429": 1.0}, seed=3)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", str(manifest), "--yes", "--json",
             "--concurrency", str(WINDOWS), "--base-url", sim.base_url],
            env={**os.environ, "APIMART_API_KEY": JOURNEY_KEY, "PYTHONPATH": str(ROOT)},
            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert wait_for(lambda: sim.running.ledger().faults.get("submit.429", 0) >= 1,
                            proc)
            sim.set_faults({}, seed=0)  # the API recovers: the next submission is accepted
            limited_at = time.time()  # the simulator's clock
            out, err = proc.communicate(timeout=HANG_GUARD)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        created = sim.task_times()
        ledger = sim.running.ledger()
    finally:
        sim.stop()
    # Each instance paid once, its image on disk: the 429 cost nothing.
    assert len(created) == ledger.tasks_created == ledger.images_charged == 1 + WINDOWS
    assert len(list((tmp_path / "outputs" / "burst").rglob("0.png"))) == 1 + WINDOWS
    assert created[-1] - limited_at < RECOVERED_WITHIN
    held = {event["limited_by"] for event in events(out)}
    assert "api-rate-limit" in held
    assert "max-rate" not in held


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str]) -> bool:
    """Poll ``condition`` while ``proc`` runs (bounded only against a hang)."""
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.01)
    return False
