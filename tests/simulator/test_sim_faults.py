"""Fault injection: spec parsing, and every fault kind observed at its configured rate."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pipeline.errors import UsageError
from pipeline.simulator import FAULT_KINDS, FAULTS_HELP, ManualClock, parse_faults
from tests.simulator.simkit import (
    AUTH,
    SUBMIT,
    body,
    create,
    image_url,
    result_urls,
    within_binomial,
)

pytestmark = pytest.mark.timeout(60)

TRIALS = 400
RATE = 0.25


def outcome(send: Callable[[], httpx.Response]) -> str:
    """What a request ended in: "ok", "malformed", "429", "5xx", "410", or "transport"."""
    try:
        response = send()
    except httpx.TransportError:
        return "transport"
    if response.status_code == 429:
        assert response.headers["Retry-After"] == "1"
        return "429"
    if response.status_code >= 500:
        assert response.status_code in (502, 503, 504)
        assert response.json()["error"]["type"] == "server_error"
        return "5xx"
    if response.status_code == 410:
        return "410"
    assert response.status_code == 200, response.text
    if response.headers["Content-Type"].startswith("application/json"):
        try:
            response.json()
        except ValueError:
            return "malformed"
    return "ok"


def fresh_client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=AUTH, timeout=10)


def test_parse_faults_reads_the_documented_spec() -> None:
    """The spec string from the docs parses into its rates."""
    spec = (
        "submit.429=0.1,submit.5xx=0.05,submit.reset=0.02,submit.lost_reply=0.02,poll.5xx=0.05,"
        "poll.malformed=0.01,task.fail=0.05,task.stuck=0.01,download.truncate=0.02,"
        "download.5xx=0.02"
    )
    rates = parse_faults(spec)
    assert rates["submit.429"] == 0.1
    assert len(rates) == 10
    assert parse_faults(" download.expired = 0.5 , poll.429=1 ") == {
        "download.expired": 0.5,
        "poll.429": 1.0,
    }
    assert parse_faults("") == parse_faults("none") == {}
    assert parse_faults("poll.5xx=0") == {}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("submit.500=0.1", "valid faults are"),
        ("poll.5xx", "no rate"),
        ("poll.5xx=abc", "number from 0 to 1"),
        ("poll.5xx=1.5", "number from 0 to 1"),
        ("poll.5xx=-0.1", "number from 0 to 1"),
        ("poll.5xx=0.1,poll.5xx=0.2", "twice"),
    ],
    ids=["unknown-name", "no-rate", "not-a-number", "above-1", "negative", "duplicate"],
)
def test_bad_fault_spec_is_usage_error(spec: str, fragment: str) -> None:
    """A malformed spec raises UsageError saying what is wrong."""
    with pytest.raises(UsageError, match=fragment):
        parse_faults(spec)


def test_unknown_fault_error_lists_every_valid_name() -> None:
    """The unknown-name error lists all fault names, so the user can pick one."""
    with pytest.raises(UsageError) as caught:
        parse_faults("nope=1")
    assert all(name in str(caught.value) for name in FAULT_KINDS)


def test_help_text_documents_every_kind() -> None:
    """FAULTS_HELP (shown by the CLI) names every fault kind."""
    assert all(name in FAULTS_HELP for name in FAULT_KINDS)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("submit.429", "429"), ("submit.5xx", "5xx"), ("submit.reset", "transport")],
)
def test_submit_faults_at_rate_create_nothing(start_sim: Any, kind: str, expected: str) -> None:
    """Submit 429/5xx/reset faults hit at their rate and never create or charge a task."""
    sim = start_sim(faults={kind: RATE}, seed=11)
    with fresh_client(sim.base_url) as client:
        seen = Counter(outcome(lambda: client.post(SUBMIT, json=body())) for _ in range(TRIALS))
    assert set(seen) <= {"ok", expected}
    assert within_binomial(seen[expected], TRIALS, RATE), seen
    ledger = sim.ledger()
    assert ledger.tasks_created == seen["ok"]
    assert ledger.faults == {kind: seen[expected]}


def test_lost_reply_creates_and_charges(start_sim: Any) -> None:
    """submit.lost_reply drops the reply at its rate, yet every task is created and charged."""
    sim = start_sim(faults={"submit.lost_reply": RATE}, seed=12)
    with fresh_client(sim.base_url) as client:
        seen = Counter(outcome(lambda: client.post(SUBMIT, json=body())) for _ in range(TRIALS))
    assert set(seen) <= {"ok", "transport"}
    assert within_binomial(seen["transport"], TRIALS, RATE), seen
    assert sim.ledger().tasks_created == TRIALS
    assert sim.ledger().images_charged == TRIALS


def test_lost_reply_is_recovered_by_idempotency_key(start_sim: Any) -> None:
    """After a lost reply, resending with the same key returns the task that was created."""
    sim = start_sim(faults={"submit.lost_reply": 0.5}, seed=0)
    headers = {"Idempotency-Key": "once"}
    with fresh_client(sim.base_url) as client:
        lost = 0
        for _ in range(50):  # at rate 0.5 a reply gets through long before this bound
            try:
                response = client.post(SUBMIT, json=body(), headers=headers)
            except httpx.TransportError:
                lost += 1
                continue
            break
        assert response.status_code == 200
    ledger = sim.ledger()
    assert ledger.tasks_created == 1
    assert lost == 3  # seed 0 loses the first three replies, so retries are exercised
    assert ledger.submissions == lost + 1
    assert ledger.replays == lost
    assert ledger.images_charged == 1


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("poll.429", "429"), ("poll.5xx", "5xx"), ("poll.malformed", "malformed")],
)
def test_poll_faults_at_rate(start_sim: Any, kind: str, expected: str) -> None:
    """Poll 429/5xx/malformed faults hit at their rate."""
    sim = start_sim(faults={kind: RATE}, seed=13)
    with fresh_client(sim.base_url) as client:
        tid = create(client)
        seen = Counter(outcome(lambda: client.get(f"/v1/tasks/{tid}")) for _ in range(TRIALS))
    assert set(seen) <= {"ok", expected}
    assert within_binomial(seen[expected], TRIALS, RATE), seen


def test_task_fail_at_rate(start_sim: Any, clock: ManualClock) -> None:
    """task.fail makes tasks end failed at its rate, and refunds exactly those."""
    sim = start_sim(faults={"task.fail": RATE}, seed=14)
    with fresh_client(sim.base_url) as client:
        tids = [create(client) for _ in range(TRIALS)]
        clock.advance(10)
        statuses = Counter(client.get(f"/v1/tasks/{t}").json()["data"]["status"] for t in tids)
    assert set(statuses) == {"completed", "failed"}
    assert within_binomial(statuses["failed"], TRIALS, RATE), statuses
    ledger = sim.ledger()
    assert ledger.tasks_failed == statuses["failed"]
    assert ledger.images_charged == statuses["completed"]


def test_task_stuck_at_rate_then_completes(start_sim: Any, clock: ManualClock) -> None:
    """task.stuck keeps tasks processing (progress 99) until stuck_factor x latency, at its rate."""
    sim = start_sim(faults={"task.stuck": RATE}, seed=15, stuck_factor=5.0)
    with fresh_client(sim.base_url) as client:
        tids = [create(client) for _ in range(TRIALS)]

        def statuses() -> Counter[str]:
            return Counter(client.get(f"/v1/tasks/{t}").json()["data"]["status"] for t in tids)

        clock.advance(10)
        after_latency = statuses()
        assert set(after_latency) == {"completed", "processing"}
        assert within_binomial(after_latency["processing"], TRIALS, RATE), after_latency
        clock.advance(39.9)
        assert statuses()["processing"] == after_latency["processing"]
        clock.advance(0.1)
        assert statuses() == Counter({"completed": TRIALS})


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("download.truncate", "transport"), ("download.5xx", "5xx"), ("download.expired", "410")],
)
def test_download_faults_at_rate(
    start_sim: Any, clock: ManualClock, kind: str, expected: str
) -> None:
    """Download truncate/5xx/expired faults hit at their rate; other downloads are whole."""
    sim = start_sim(faults={kind: RATE}, seed=16)
    with fresh_client(sim.base_url) as client:
        tid = create(client, size="1K")
        clock.advance(10)
        (url,) = result_urls(client, tid)
        whole = len(client.get(url).content) if kind != "download.truncate" else None
        seen = Counter(outcome(lambda: client.get(url)) for _ in range(TRIALS))
    assert set(seen) <= {"ok", expected}
    assert within_binomial(seen[expected], TRIALS, RATE), seen
    assert whole is None or whole > 0


def test_truncated_download_announces_full_length(start_sim: Any, clock: ManualClock) -> None:
    """A truncated download sends the full Content-Length, then about half the bytes."""
    sim = start_sim(faults={"download.truncate": 1.0})
    with fresh_client(sim.base_url) as client:
        tid = create(client, size="1K")
        clock.advance(10)
        (url,) = result_urls(client, tid)
        sizes: list[int] = []

        def read_all() -> None:
            with client.stream("GET", url) as response:
                sizes.append(int(response.headers["Content-Length"]))
                for chunk in response.iter_raw():
                    sizes.append(len(chunk))

        with pytest.raises(httpx.RemoteProtocolError):
            read_all()
    announced, received = sizes[0], sum(sizes[1:])
    assert 0 < received < announced


def test_faults_are_reproducible_for_a_seed(start_sim: Any) -> None:
    """The same seed and request sequence give the same faults; another seed does not."""

    def run(seed: int) -> list[str]:
        sim = start_sim(faults={"poll.5xx": 0.3, "poll.429": 0.2}, seed=seed)
        with fresh_client(sim.base_url) as client:
            tid = create(client)
            return [outcome(lambda: client.get(f"/v1/tasks/{tid}")) for _ in range(60)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_all_faults_together_keep_the_server_healthy(start_sim: Any, clock: ManualClock) -> None:
    """With every fault on at once, the server answers and its ledger stays consistent."""
    sim = start_sim(faults=dict.fromkeys(FAULT_KINDS, 0.1), seed=17)
    with fresh_client(sim.base_url) as client:
        for _ in range(100):
            outcome(lambda: client.post(SUBMIT, json=body()))
        clock.advance(1000)
        ledger = sim.ledger()
    assert ledger.submissions == 100
    assert 0 < ledger.tasks_created < 100
    assert sum(ledger.faults.values()) > 0


def test_bad_url_fault_gives_file_then_gopher_urls_on_completed_polls(
        start_sim: Any, clock: ManualClock) -> None:
    """poll.bad_url leaves pending polls alone and swaps a completed task's URLs for
    file:// and gopher:// ones, alternately."""
    sim = start_sim(faults={"poll.bad_url": 1.0})
    with fresh_client(sim.base_url) as client:
        tid = create(client)
        assert client.get(f"/v1/tasks/{tid}").json()["data"]["status"] != "completed"
        clock.advance(10)
        first, second = (image_url(client.get(f"/v1/tasks/{tid}").json()["data"]["result"]
                                   ["images"][0]) for _ in range(2))
    assert first.startswith("file:///files/task_")
    assert second.startswith("gopher://localhost/files/task_")
    assert sim.ledger().faults == {"poll.bad_url": 2}


def test_drip_fault_announces_the_image_and_sends_a_byte_at_a_time(
        start_sim: Any, clock: ManualClock) -> None:
    """download.drip sends the full Content-Length, then single bytes (until the client
    gives up)."""
    sim = start_sim(faults={"download.drip": 1.0})
    with fresh_client(sim.base_url) as client:
        tid = create(client, size="1K")
        clock.advance(10)
        (url,) = result_urls(client, tid)
        with client.stream("GET", url) as response:
            announced = int(response.headers["Content-Length"])
            first = next(response.iter_raw())
    assert announced > 1000
    assert first == b"\x89"  # the PNG signature's first byte, alone
    assert sim.ledger().faults == {"download.drip": 1}
