"""`run --simulate` resumes after Ctrl-C or SIGKILL: the simulated API's state outlives the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.simulator import SimulatorConfig, run_in_thread
from tests.e2e.conftest import IMAGES, INSTANCES, ROOT, Project

pytestmark = pytest.mark.timeout(180)


def simulate(project: Project, latency: str) -> subprocess.Popen[str]:
    """`imgspec run --simulate` in a subprocess, its tasks taking ``latency`` seconds."""
    env = {k: v for k, v in os.environ.items() if k != "APIMART_API_KEY"}
    env.update(PYTHONPATH=str(ROOT), IMGSPEC_SIMULATE_LATENCY=latency)
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", "--simulate", str(project.manifest)],
        env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def state_file(project: Project) -> Path:
    return project.manifest.with_name("shop.simulate.api.jsonl")


def wait_for_tasks(project: Project) -> None:
    """Until the simulated API has announced a task (so the run has tasks in flight)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        path = state_file(project)
        if path.is_file() and '"k":"task"' in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError("no task was created within 60 s")


def assert_resumed_paying_once(project: Project) -> None:
    """The rerun finishes everything, fails nothing, and the persisted ledger charged once."""
    final = simulate(project, "0.2")
    output, _ = final.communicate(timeout=120)
    assert final.returncode == 0, output
    assert " resume" in output  # the plan resumed recorded tasks instead of buying again
    assert f"Run: {INSTANCES} done, 0 failed, 0 blocked, 0 unfinished" in output, output
    lock = project.manifest.with_name("shop.simulate.lock.json").read_text()
    assert lock.count('"status": "done"') == INSTANCES
    with run_in_thread(SimulatorConfig(state=state_file(project))) as sim:
        ledger = sim.ledger()
    assert ledger.tasks_created == INSTANCES
    assert ledger.images_charged == IMAGES


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_simulate_run_resumes_after_interrupt_or_kill(project: Project, how: str) -> None:
    """Ctrl-C or SIGKILL mid-run, then a rerun: resumed tasks are found, each image paid once."""
    proc = simulate(project, "3")
    wait_for_tasks(project)
    if how == "SIGINT":
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, output
    else:
        proc.kill()
        proc.communicate(timeout=60)
    assert_resumed_paying_once(project)
