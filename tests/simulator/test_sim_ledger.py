"""Idempotency-Key replay and the billing ledger."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from pipeline.simulator import RunningSimulator
from tests.simulator.simkit import PRO, STD, body, create, poll, result_urls, submit, task_id

pytestmark = pytest.mark.timeout(60)


def test_same_key_same_body_replays_the_task(sim: RunningSimulator, client: httpx.Client) -> None:
    """A repeated Idempotency-Key with the same body returns the same task and charges nothing."""
    first = task_id(submit(client, body(n=2), key="k-1"))
    again = task_id(submit(client, body(n=2), key="k-1"))
    assert again == first
    ledger = sim.ledger()
    assert ledger.tasks_created == 1
    assert ledger.replays == 1
    assert ledger.submissions == 2
    assert ledger.images_charged == 2
    assert ledger.cost_charged == Decimal("1.00")


def test_replay_ignores_json_formatting(client: httpx.Client) -> None:
    """The body is compared as JSON, so key order and spacing do not matter."""
    first = task_id(
        client.post(
            "/v1/images/generations",
            content=b'{"model":"wan2.7-image","prompt":"x"}',
            headers={"Idempotency-Key": "k", "Content-Type": "application/json"},
        )
    )
    second = task_id(
        client.post(
            "/v1/images/generations",
            content=b'{ "prompt": "x", "model": "wan2.7-image" }',
            headers={"Idempotency-Key": "k", "Content-Type": "application/json"},
        )
    )
    assert first == second


def test_same_key_different_body_is_422(sim: RunningSimulator, client: httpx.Client) -> None:
    """Reusing a key with a different body is refused with 422 and creates nothing."""
    task_id(submit(client, body(seed=1), key="k-2"))
    response = submit(client, body(seed=2), key="k-2")
    assert response.status_code == 422
    assert "different request body" in response.json()["message"]
    assert sim.ledger().tasks_created == 1


def test_different_keys_create_different_tasks(client: httpx.Client) -> None:
    """Each new key (or no key) creates a new task, even for the same body."""
    ids = {task_id(submit(client, body(), key=k)) for k in ("a", "b", None, None)}
    assert len(ids) == 4


def test_rejected_request_does_not_burn_the_key(client: httpx.Client) -> None:
    """A 400 under a key leaves the key free for a corrected body."""
    assert submit(client, body(n=99), key="k-3").status_code == 400
    task_id(submit(client, body(n=1), key="k-3"))


def test_ledger_arithmetic(sim: RunningSimulator, client: httpx.Client, clock: Any) -> None:
    """Counts and CNY cost add up across models, n, rejections, polls and downloads."""
    pro = create(client, model=PRO, n=3)
    create(client, model=STD, n=4)
    submit(client, body(n=0))
    client.post("/v1/images/generations", json=body(), headers={"Authorization": "Bearer x"})
    poll(client, pro)
    clock.advance(10)
    for url in result_urls(client, pro):
        client.get(url)
    ledger = sim.ledger()
    assert ledger.submissions == 4
    assert ledger.rejected == 2
    assert ledger.tasks_created == 2
    assert ledger.polls == 2
    assert ledger.images_charged == 7
    assert ledger.cost_charged == Decimal("0.50") * 3 + Decimal("0.20") * 4
    assert ledger.downloads == ledger.downloads_ok == 3
    assert ledger.currency == "CNY"
    over_http = httpx.get(sim.base_url + "/_sim/ledger").json()
    assert over_http == ledger.to_json()
    assert over_http["cost_charged"] == "2.30"


def test_failed_tasks_are_refunded_when_they_fail(start_sim: Any, connect: Any, clock: Any) -> None:
    """A failing task is pre-charged at creation and refunded once its failure time passes."""
    sim = start_sim(faults={"task.fail": 1.0})
    client = connect(sim)
    create(client, n=2)
    assert sim.ledger().cost_charged == Decimal("1.00")
    clock.advance(10)
    ledger = sim.ledger()  # no poll needed: the refund follows the clock
    assert ledger.tasks_failed == 1
    assert ledger.images_charged == 0
    assert ledger.cost_charged == Decimal("0.00")


def test_balance_exhausted_is_402(start_sim: Any, connect: Any) -> None:
    """With a balance, a submission whose pre-charge would pass it gets 402; one that fits, 200."""
    sim = start_sim(balance=Decimal("1.20"))
    client = connect(sim)
    create(client, model=PRO, n=2)
    response = submit(client, body(model=PRO, n=1))
    assert response.status_code == 402
    assert response.json()["error"]["type"] == "insufficient_balance"
    create(client, model=STD, n=1)
    assert sim.ledger().cost_charged == Decimal("1.20")


def test_ledger_after_stop_still_readable(start_sim: Any, connect: Any) -> None:
    """The Python ledger() works after stop(), for assertions at teardown."""
    sim = start_sim()
    create(connect(sim))
    sim.stop()
    assert sim.ledger().tasks_created == 1
