"""The simulator's state file: tasks, keys and ledger outlive the process; memory is bounded."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from pipeline.errors import UsageError
from pipeline.simulator import ManualClock, SimulatorConfig, run_in_thread
from pipeline.simulator.config import for_simulate_run, simulate_state_path
from pipeline.simulator.state import _COMPACT_MIN_DEAD
from pipeline.simulator.tasks import TaskStore
from tests.simulator.simkit import AUTH, body, poll, submit, task_id

pytestmark = pytest.mark.timeout(60)


def config(state: Path, clock: ManualClock, **more: object) -> SimulatorConfig:
    return SimulatorConfig(state=state, clock=clock, latency=(10.0, 10.0), **more)  # type: ignore[arg-type]


def records(state: Path, kind: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in state.read_text().splitlines()]
    return [r for r in lines if r["k"] == kind]


def test_state_file_carries_tasks_keys_and_ledger_to_a_new_process(tmp_path: Path) -> None:
    """A second simulator on the same file polls the same tasks (lifecycle by clock),
    replays their keys without charging, and keeps the ledger cumulative."""
    state, clock = tmp_path / "api.jsonl", ManualClock()
    with run_in_thread(config(state, clock)) as first, httpx.Client(
            base_url=first.base_url, headers=AUTH, timeout=10) as client:
        tid = task_id(submit(client, body(n=2), key="k-1"))
        assert poll(client, tid)["status"] in ("pending", "processing")
    clock.advance(11)
    with run_in_thread(config(state, clock)) as second, httpx.Client(
            base_url=second.base_url, headers=AUTH, timeout=10) as client:
        assert poll(client, tid)["status"] == "completed"
        replay = submit(client, body(n=2), key="k-1").json()["data"][0]
        assert (replay["task_id"], replay["status"]) == (tid, "completed")
        other = task_id(submit(client, body(n=1), key="k-2"))
        assert other != tid
        ledger = second.ledger()
    assert ledger.tasks_created == 2
    assert ledger.images_charged == 3
    assert ledger.cost_charged == Decimal("1.50")
    assert ledger.replays == 1
    assert ledger.submissions == 3
    assert ledger.polls == 2


def test_task_is_in_the_state_file_before_its_reply(tmp_path: Path) -> None:
    """When the submit reply arrives, its task is already on disk (a kill cannot lose it)."""
    state, clock = tmp_path / "api.jsonl", ManualClock()
    with run_in_thread(config(state, clock)) as sim, httpx.Client(
            base_url=sim.base_url, headers=AUTH, timeout=10) as client:
        tid = task_id(submit(client, body(), key="k"))
        assert [r["id"] for r in records(state, "task")] == [tid]


def test_failed_task_refund_survives_a_restart(tmp_path: Path) -> None:
    """A task that fails after the restart is refunded once, in the new process."""
    state, clock = tmp_path / "api.jsonl", ManualClock()
    with run_in_thread(config(state, clock, faults={"task.fail": 1.0})) as sim, httpx.Client(
            base_url=sim.base_url, headers=AUTH, timeout=10) as client:
        task_id(submit(client, body()))
        assert sim.ledger().images_charged == 1
    clock.advance(11)
    with run_in_thread(config(state, clock)) as again:
        ledger = again.ledger()
    assert (ledger.tasks_created, ledger.tasks_failed, ledger.images_charged) == (1, 1, 0)
    assert ledger.faults == {"task.fail": 1}


def test_finished_tasks_are_forgotten_after_retention_unfinished_never(tmp_path: Path) -> None:
    """A finished task is forgotten once its URLs expired and retention passed; a task
    still running (stuck) stays pollable; the ledger keeps both charges."""
    state, clock = tmp_path / "api.jsonl", ManualClock()
    cfg = config(state, clock, url_ttl=100.0, task_retention=50.0, stuck_factor=1000.0)
    with run_in_thread(cfg) as sim, httpx.Client(
            base_url=sim.base_url, headers=AUTH, timeout=10) as client:
        done = task_id(submit(client, body(), key="done"))
        clock.advance(10 + 100 + 49)
        assert poll(client, done)["status"] == "completed"  # URLs expired, still pollable
        clock.advance(2)
        assert client.get(f"/v1/tasks/{done}").status_code == 404
        assert sim.ledger().images_charged == 1
        # Its key is forgotten with it: the same key now makes a new task.
        assert task_id(submit(client, body(), key="done")) != done
    stuck_cfg = config(state, clock, url_ttl=100.0, task_retention=50.0, stuck_factor=1000.0,
                       faults={"task.stuck": 1.0})
    with run_in_thread(stuck_cfg) as sim, httpx.Client(
            base_url=sim.base_url, headers=AUTH, timeout=10) as client:
        stuck = task_id(submit(client, body()))
        clock.advance(5000)  # far past any retention, but the task is still processing
        assert poll(client, stuck)["status"] == "processing"
        assert sim.ledger().tasks_created == 3


def test_restart_drops_forgotten_tasks_and_compacts_the_log(tmp_path: Path) -> None:
    """Loading leaves long-finished tasks out and, when most lines are dead, rewrites the
    file to its live tasks plus totals, with the ledger unchanged."""
    state, clock = tmp_path / "api.jsonl", ManualClock()
    cfg = config(state, clock, url_ttl=1.0, task_retention=1.0)
    store = TaskStore(cfg)
    count = _COMPACT_MIN_DEAD + 1
    for i in range(count):
        store.create({"model": "wan2.7-image", "prompt": "x"}, digest=str(i), size=(1024, 1024),
                     now=clock(), fails=False, stuck=False, key=f"k{i}")
    store.close()
    clock.advance(100)
    store = TaskStore(cfg)
    live = store.create({"model": "wan2.7-image", "prompt": "y"}, digest="y", size=(1024, 1024),
                        now=clock(), fails=False, stuck=False)
    ledger = store.ledger(clock(), {})
    store.close()
    assert not store.tasks.keys() - {live.id}
    assert ledger.tasks_created == count + 1
    assert ledger.cost_charged == Decimal("0.20") * (count + 1)
    assert len(records(state, "task")) == 1
    (base,) = records(state, "base")
    assert base["tasks_created"] == count


def test_torn_last_record_is_dropped(tmp_path: Path) -> None:
    """A last line cut short (never acknowledged) is dropped, and appends start clean."""
    state, clock = tmp_path / "api.jsonl", ManualClock()
    store = TaskStore(config(state, clock))
    store.create({"model": "wan2.7-image", "prompt": "x"}, digest="d", size=(1024, 1024),
                 now=clock(), fails=False, stuck=False)
    store.close()
    with state.open("a") as out:
        out.write('{"k":"task","id":"task_half')
    store = TaskStore(config(state, clock))
    store.create({"model": "wan2.7-image", "prompt": "z"}, digest="e", size=(1024, 1024),
                 now=clock(), fails=False, stuck=False)
    store.close()
    assert len(records(state, "task")) == 2


def test_damaged_or_foreign_state_file_is_a_usage_error(tmp_path: Path) -> None:
    """A damaged file, one made with another seed, or one in use says what to do."""
    state, clock = tmp_path / "api.jsonl", ManualClock()
    TaskStore(config(state, clock)).close()
    with pytest.raises(UsageError, match="seed 0"):
        TaskStore(config(state, clock, seed=3))
    holder = TaskStore(config(state, clock))
    with pytest.raises(UsageError, match="another simulator"):
        TaskStore(config(state, clock))
    holder.close()
    state.write_text('{"k":"meta","format":"imgspec-simulator-state","version":1,"seed":0}\n'
                     "not json\n")
    with pytest.raises(UsageError, match=r"api\.jsonl:2: .*damaged.*delete it"):
        TaskStore(config(state, clock))


def test_simulate_run_keeps_its_state_beside_its_lockfile(tmp_path: Path) -> None:
    """`run --simulate` uses `<stem>.simulate.api.jsonl`; IMGSPEC_SIMULATE_LATENCY sets latency."""
    lock = tmp_path / "shop.simulate.lock.json"
    assert simulate_state_path(lock) == tmp_path / "shop.simulate.api.jsonl"
    cfg = for_simulate_run(lock, {"IMGSPEC_SIMULATE_LATENCY": "4..6"})
    assert (cfg.state, cfg.latency) == (tmp_path / "shop.simulate.api.jsonl", (4.0, 6.0))
    with pytest.raises(UsageError, match="IMGSPEC_SIMULATE_LATENCY"):
        for_simulate_run(lock, {"IMGSPEC_SIMULATE_LATENCY": "soon"})
