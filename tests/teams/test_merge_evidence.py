"""`lock merge` folds two entries into one only when the evidence says they are one task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.contract.conftest import FOUR_SHOPS, cli
from tests.e2e.conftest import Project
from tests.simulator.simkit import StartSim


def ran(project: Project, start_sim: StartSim) -> dict[str, Any]:
    """The lockfile of a run of four instances against a fresh simulator."""
    sim = start_sim()
    project.manifest.write_text(FOUR_SHOPS)
    done = cli("run", str(project.manifest), "--base-url", sim.base_url, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sim.ledger().tasks_created == 4
    return project.lock()


def test_a_done_task_and_another_keys_submission_are_kept_apart(
        project: Project, start_sim: StartSim, tmp_path: Path) -> None:
    """Ours done (task id, no key) and theirs submitting (another key): the latter is
    superseded, not folded away, since it may have been paid for."""
    lock = ran(project, start_sim)
    key = sorted(lock["entries"])[0]
    ours = json.loads(json.dumps(lock))
    ours["entries"][key]["idempotency_key"] = None
    theirs = json.loads(json.dumps(lock))
    theirs["entries"][key].update(status="submitting", task_id=None, outputs=[],
                                  idempotency_key="their-key-1", updated_at=None)
    for name, data in (("base", {"version": 1, "manifest": "shop.yaml", "entries": {}}),
                       ("ours", ours), ("theirs", theirs)):
        (tmp_path / f"{name}.lock.json").write_text(json.dumps(data))
    merged = cli("lock", "merge", *(str(tmp_path / f"{n}.lock.json")
                                    for n in ("base", "ours", "theirs")))
    assert merged.returncode == 0, merged.stdout + merged.stderr
    entries = json.loads((tmp_path / "ours.lock.json").read_text())["entries"]
    assert entries[key]["status"] == "done"
    assert entries[key]["task_id"] == lock["entries"][key]["task_id"]
    moved = entries[f"{key}#superseded:their-key-1"]
    assert moved["status"] == "submitting"
    assert moved["idempotency_key"] == "their-key-1"
    assert "superseded" in merged.stdout
    assert len(entries) == 5
