"""`imgspec status` and `prune` tell what happened: money charged, unknown outcomes, recoveries.

Runs go through the CLI in-process against the simulator; status and prune are
read from a real subprocess (`python -m pipeline`), as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from typing import Any

import httpx
import stamina

from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import ROOT, Imgspec, Project, run_args
from tests.simulator.simkit import StartSim


def imgspec_process(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline ARGS` with this worktree's code; no traceback may reach stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("IMGSPEC_DEBUG", None)
    result = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, text=True,
                            capture_output=True, timeout=120, check=False)
    assert "Traceback" not in result.stderr
    return result


def status_json(project: Project) -> dict[str, Any]:
    """`imgspec status --json` of the project, from a subprocess."""
    result = imgspec_process("status", "--json", str(project.manifest))
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def ledger_charged(sim: RunningSimulator) -> Decimal:
    """The simulator's net charge, as its ledger endpoint reports it."""
    reply = httpx.get(f"{sim.base_url}/_sim/ledger", timeout=10)
    assert reply.status_code == 200
    return Decimal(reply.json()["cost_charged"])


def test_status_charged_equals_the_ledger_after_changed_prompts_rerun(
        project: Project, sim: RunningSimulator, imgspec: Imgspec) -> None:
    """Rerunning changed prompts pays again; status's charged counts both attempts, as billed."""
    assert imgspec(*run_args(project, sim)).exit_code == 0
    first = ledger_charged(sim)
    assert Decimal(str(status_json(project)["charged"])) == first
    project.edit("in {{ season }}", "during {{ season }}")  # gen, and night fed by it, rerun
    assert imgspec(*run_args(project, sim)).exit_code == 0
    total = ledger_charged(sim)
    assert total > first
    assert Decimal(str(status_json(project)["charged"])) == total
    text = imgspec_process("status", str(project.manifest)).stdout
    assert f"charged so far: ¥{total:.2f}" in text


def test_status_charged_equals_the_ledger_when_failed_tasks_are_refunded(
        project: Project, start_sim: StartSim, imgspec: Imgspec) -> None:
    """Failed tasks are refunded by the API and not counted; retries that succeed are."""
    sim = start_sim(seed=7, faults={"task.fail": 0.35})
    result = imgspec(*run_args(project, sim))
    for _ in range(8):
        if result.exit_code == 0:
            break
        assert result.exit_code == 4, result.output
        result = imgspec(*run_args(project, sim, "--only-failed"))
    assert result.exit_code == 0, result.output
    assert sim.ledger().tasks_failed > 0  # the seed makes some tasks fail
    project.edit("A logo for", "A badge for")
    assert imgspec(*run_args(project, sim)).exit_code in (0, 4)
    assert Decimal(str(status_json(project)["charged"])) == ledger_charged(sim)


def test_status_says_outcome_unknown_for_an_unanswered_submission(
        project: Project, start_sim: StartSim, imgspec: Imgspec) -> None:
    """A POST whose reply never came is not 'running': status says the key will be replayed."""
    broken = start_sim(faults={"submit.5xx": 1.0})
    with stamina.set_testing(True):  # one attempt, no backoff: the run ends at once
        result = imgspec(*run_args(project, broken, "--job", "logo"))
    assert result.exit_code == 4, result.output
    entry = project.lock()["entries"]["logo"]
    assert entry["status"] == "submitting"
    text = imgspec_process("status", str(project.manifest)).stdout
    assert "  unknown  logo: outcome unknown; the next run replays it with the same key" in text
    assert "running  logo" not in text
    (item,) = status_json(project)["in_progress"]
    assert item["key"] == "logo"
    assert item["status"] == "submitting"
    assert item["task_id"] is None
    assert "outcome unknown" in item["note"]
    healthy = start_sim()
    assert imgspec(*run_args(project, healthy, "--job", "logo")).exit_code == 0
    after = project.lock()["entries"]["logo"]
    assert after["idempotency_key"] == entry["idempotency_key"]  # replayed, as promised
    assert after["attempts"] == 1


def test_status_reads_lockfiles_without_charged(project: Project) -> None:
    """A lockfile from before 'charged' existed reports its entries' costs as charged."""
    entry = {"job": "logo", "fingerprint": "sha256:" + "0" * 64, "status": "failed",
             "cost": 0.2, "last_error": "boom"}
    project.lockfile.write_text(json.dumps({"version": 1, "entries": {
        "logo": entry, "old": {**entry, "job": "old", "cost": 0.5}}}))
    data = status_json(project)
    assert data["charged"] == 0.7
    assert data["failed"] == [{"key": "logo", "error": "boom"}, {"key": "old", "error": "boom"}]


KILL_DURING_PRUNE = textwrap.dedent("""
    import os, signal, sys
    from pipeline.shell.store.lockstore import LockStore

    def killed(self):
        # The removals are journaled; die before the lockfile is rewritten.
        os.kill(os.getpid(), signal.SIGKILL)

    LockStore.close = killed
    from pipeline.cli.main import main
    sys.argv = ["imgspec", "prune", sys.argv[1]]
    main()
""")


def test_prune_after_a_kill_reports_the_removals_it_recovers(project: Project) -> None:
    """Killed mid-prune, a re-prune says which orphans the folded journal removed, not '0'."""
    stale = {"job": "old", "fingerprint": "sha256:" + "0" * 64, "status": "done"}
    project.lockfile.write_text(json.dumps({"version": 1, "entries": {
        "old@x=1": stale, "old@x=2": stale}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_PRUNE, str(project.manifest)],
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr
    assert set(project.lock()["entries"]) == {"old@x=1", "old@x=2"}  # not rewritten yet
    assert project.lockfile.with_name("shop.lock.journal").read_text().count('"delete"') == 2
    result = imgspec_process("prune", str(project.manifest))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "pruned old@x=1 (removal recorded by an interrupted prune)\n"
        "pruned old@x=2 (removal recorded by an interrupted prune)\n"
        "2 orphaned entries removed (2 by an interrupted prune: its journal was folded into "
        "the lockfile now)\n")
    assert project.lock()["entries"] == {}
    assert not project.lockfile.with_name("shop.lock.journal").exists()
    assert imgspec_process("prune", str(project.manifest)).stdout == \
        "0 orphaned entries removed\n"
