"""Money is the account's: replays, prune, lock mv, merges and the total budget.

Every command goes through the real command line (`python -m pipeline` in a
subprocess) against the simulator over HTTP; the simulator's ledger is the truth
the lockfiles' recorded spend must agree with.
"""

from __future__ import annotations

import json
import shutil
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pipeline.shell.store.guard import RunGuard, guard_path
from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import KEY, Project
from tests.e2e.test_status import imgspec_process, ledger_charged
from tests.simulator.simkit import StartSim

CUPS = """\
version: 1
name: shop
budget: {max_cost: 5}
defaults: {model: wan2.7-image, size: 1K, seed: 7}
jobs:
  shot:
    prompt: "A {{ c }} cup on a table"
    matrix: {c: [red, blue]}
"""


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The subprocesses get the simulator's key from the environment."""
    monkeypatch.setenv("APIMART_API_KEY", KEY)


def cups(root: Path, text: str = CUPS) -> Project:
    """A project at ``root`` with the cups manifest."""
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    (root / "manifests" / "shop.yaml").write_text(text)
    return Project(root)


def run(project: Project, sim: RunningSimulator, *extra: str) -> Any:
    """`imgspec run` of the project against ``sim``."""
    return imgspec_process("run", str(project.manifest), "--base-url", sim.base_url, "--yes",
                           *extra)


def charged(project: Project) -> Decimal:
    """`imgspec status --json`'s charged so far."""
    result = imgspec_process("status", "--json", str(project.manifest))
    assert result.returncode == 0, result.stderr
    return Decimal(str(json.loads(result.stdout)["charged"]))


def images(project: Project) -> list[str]:
    """The image files in the project's output folder, relative to it."""
    return sorted(p.relative_to(project.outputs).as_posix()
                  for p in project.outputs.rglob("*.png"))


# -- finding 5: money is the account's --------------------------------------------------


def test_a_second_clone_replayed_by_the_api_records_charged_0(
        tmp_path: Path, sim: RunningSimulator) -> None:
    """Two clones on one account: the second's replayed submissions are recorded as charged
    0 with a note, and the lockfiles' spend adds up to the ledger."""
    first, second = cups(tmp_path / "a"), cups(tmp_path / "b")
    assert run(first, sim).returncode == 0
    paid = ledger_charged(sim)
    assert paid == Decimal("0.40")
    result = run(second, sim)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ledger_charged(sim) == paid  # the API replayed: nothing new was charged
    assert "charged ¥0.00" in result.stdout
    entries = second.lock()["entries"]
    assert {e["charged"] for e in entries.values()} == {0}
    assert all("Idempotency-Replayed" in e["paid_by"] for e in entries.values())
    assert charged(first) + charged(second) == ledger_charged(sim)
    assert images(second) == images(first)  # the images are there all the same


def test_a_copy_in_another_manifest_notes_the_lockfile_that_paid(
        tmp_path: Path, sim: RunningSimulator) -> None:
    """A manifest whose submissions replay another manifest's of the same project records
    them as charged 0, naming the lockfile and entry that paid (the paid images are gone
    and their links unrecorded, so they cannot be reused: the requests are sent again)."""
    project = cups(tmp_path)
    assert run(project, sim).returncode == 0
    shutil.rmtree(project.outputs)
    lock = json.loads(project.lockfile.read_text())
    for entry in lock["entries"].values():
        entry["outputs"] = [{k: v for k, v in o.items() if k not in ("url", "expires_at")}
                            for o in entry["outputs"]]
    project.lockfile.write_text(json.dumps(lock, indent=2))
    copy = project.root / "manifests" / "copy.yaml"
    copy.write_text(CUPS.replace("name: shop", "name: shop-copy"))
    result = imgspec_process("run", str(copy), "--base-url", sim.base_url, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    entries = json.loads((project.root / "manifests" / "copy.lock.json").read_text())["entries"]
    assert {e["charged"] for e in entries.values()} == {0}
    assert {e["paid_by"] for e in entries.values()} == {
        "manifests/shop.lock.json: shot@c=blue", "manifests/shop.lock.json: shot@c=red"}
    assert ledger_charged(sim) == charged(project) == Decimal("0.40")


ONE_CUP = CUPS.replace("[red, blue]", "[red]")


def other_clone_paid_an_hour_ago(tmp_path: Path, start_sim: StartSim) -> tuple[Project, Path]:
    """A clone ``b`` that ran ``ONE_CUP`` an hour ago (by the API's clock) on the account
    whose memory is kept in the returned state file; the simulator it ran against is
    stopped."""
    state = tmp_path / "account.json"
    earlier = start_sim(state=state, clock=lambda: time.time() - 3600)
    other = cups(tmp_path / "b", ONE_CUP)
    assert run(other, earlier).returncode == 0
    assert ledger_charged(earlier) == Decimal("0.20")
    earlier.stop()
    return other, state


def run_replaying_the_others_task(mine: Project, other: Project, sim: RunningSimulator) -> str:
    """Run ``mine`` against ``sim``, whose replay hands it ``other``'s paid task: it must
    record that task as charged 0 and the two add up to the ledger; the run's output."""
    result = run(mine, sim)
    assert result.returncode == 0, result.stdout + result.stderr
    (entry,) = mine.lock()["entries"].values()
    assert entry["charged"] == 0
    assert "before this lockfile first sent its key" in entry["paid_by"]
    assert charged(mine) + charged(other) == ledger_charged(sim) == Decimal("0.20")
    return str(result.stdout)


def test_a_lost_reply_replayed_from_another_clones_task_is_not_our_charge(
        tmp_path: Path, start_sim: StartSim) -> None:
    """A second clone whose submission's reply is lost and retried (same key) gets the
    other clone's task back, marked replayed: it records charged 0 with a note, though
    the replay answered its own resending."""
    other, state = other_clone_paid_an_hour_ago(tmp_path, start_sim)
    # With the fixture's seed, this rate drops the first three replies and lets the
    # fourth attempt's through.
    sim = start_sim(state=state, faults={"submit.lost_reply": 0.9})
    mine = cups(tmp_path / "a", ONE_CUP)
    assert "charged ¥0.00" in run_replaying_the_others_task(mine, other, sim)


def test_a_submission_left_unanswered_by_a_run_and_replayed_by_the_next_is_not_our_charge(
        tmp_path: Path, start_sim: StartSim) -> None:
    """A run whose every reply is lost leaves its entry submitting; the next run replays
    the key and gets the task another clone paid for an hour before: charged 0 here."""
    other, state = other_clone_paid_an_hour_ago(tmp_path, start_sim)
    lossy = start_sim(state=state, faults={"submit.lost_reply": 1.0})
    mine = cups(tmp_path / "a", ONE_CUP)
    assert run(mine, lossy).returncode != 0
    assert {e["status"] for e in mine.lock()["entries"].values()} == {"submitting"}
    lossy.stop()
    run_replaying_the_others_task(mine, other, start_sim(state=state))


def test_our_own_lost_reply_replayed_is_our_charge(
        tmp_path: Path, start_sim: StartSim) -> None:
    """A run whose own submission's reply was lost pays for the task its retry gets back
    as a replay: recorded as charged here, equal to the ledger."""
    state = tmp_path / "account.json"
    lossy = start_sim(state=state, faults={"submit.lost_reply": 1.0})
    mine = cups(tmp_path / "a", ONE_CUP)
    assert run(mine, lossy).returncode != 0
    assert ledger_charged(lossy) == Decimal("0.20")  # made and charged, the reply lost
    lossy.stop()
    sim = start_sim(state=state)
    assert run(mine, sim).returncode == 0
    (entry,) = mine.lock()["entries"].values()
    assert entry["charged"] == 0.2
    assert "paid_by" not in entry
    assert charged(mine) == ledger_charged(sim) == Decimal("0.20")


# -- finding 6: spend is history ---------------------------------------------------------


def test_prune_never_lowers_charged_so_far(tmp_path: Path, sim: RunningSimulator) -> None:
    """prune drops orphaned entries but not their money: status's charged so far stays what
    the ledger says, and a merge that brings the entries back counts them once."""
    project = cups(tmp_path)
    assert run(project, sim).returncode == 0
    project.edit("[red, blue]", "[green]")
    assert run(project, sim).returncode == 0
    paid = ledger_charged(sim)
    assert paid == Decimal("0.60") == charged(project)
    before = project.lockfile.read_text()
    pruned = imgspec_process("prune", str(project.manifest))
    assert pruned.returncode == 0, pruned.stderr
    assert "pruned shot@c=red" in pruned.stdout
    assert set(project.lock()["entries"]) == {"shot@c=green"}
    assert charged(project) == paid == ledger_charged(sim)
    status = imgspec_process("status", str(project.manifest)).stdout
    assert "charged so far: ¥0.60" in status
    # The pruned entries come back from a copy of the lockfile made before the prune
    # (a merge never deletes): their money is counted once, by the entries.
    old = project.root / "manifests" / "before.lock.json"
    old.write_text(before)
    merged = imgspec_process("lock", "merge", "--into", str(project.lockfile), str(old))
    assert merged.returncode == 0, merged.stderr
    old.unlink()
    assert charged(project) == paid
    assert imgspec_process("prune", str(project.manifest)).returncode == 0
    assert charged(project) == paid == ledger_charged(sim)


def test_prune_lists_what_it_would_drop_and_the_images_it_leaves(
        tmp_path: Path, sim: RunningSimulator) -> None:
    """prune --dry-run lists entries and files and changes nothing; prune says which paid
    images it leaves on disk (meta.json kept); --outputs removes them explicitly."""
    project = cups(tmp_path)
    assert run(project, sim).returncode == 0
    project.edit("[red, blue]", "[green]")
    assert run(project, sim).returncode == 0
    before = project.lockfile.read_text()
    dry = imgspec_process("prune", "--dry-run", str(project.manifest))
    assert dry.returncode == 0, dry.stderr
    assert "would prune shot@c=blue" in dry.stdout
    assert "left on disk ../outputs/shop/shot/c=blue/0.png" in dry.stdout
    assert "dry run: nothing was changed" in dry.stdout
    assert project.lockfile.read_text() == before
    dry_outputs = imgspec_process("prune", "--dry-run", "--outputs", str(project.manifest))
    assert "would remove ../outputs/shop/shot/c=red/0.png" in dry_outputs.stdout
    assert project.lockfile.read_text() == before
    assert images(project) == ["shot/c=blue/0.png", "shot/c=green/0.png", "shot/c=red/0.png"]

    pruned = imgspec_process("prune", str(project.manifest))
    assert "2 images of pruned entries left on disk" in pruned.stdout
    assert "their spend ¥0.40 stays in the lockfile's history" in pruned.stdout
    assert images(project) == ["shot/c=blue/0.png", "shot/c=green/0.png", "shot/c=red/0.png"]
    assert (project.outputs / "shot" / "c=red" / "meta.json").is_file()

    project.edit("[green]", "[white]")
    assert run(project, sim).returncode == 0
    removed = imgspec_process("prune", "--outputs", str(project.manifest))
    assert removed.returncode == 0, removed.stderr
    assert "removed ../outputs/shop/shot/c=green/0.png" in removed.stdout
    assert images(project) == ["shot/c=blue/0.png", "shot/c=red/0.png", "shot/c=white/0.png"]
    assert not (project.outputs / "shot" / "c=green").exists()
    assert charged(project) == ledger_charged(sim) == Decimal("0.80")


# -- finding 7: a cumulative budget ------------------------------------------------------


def test_max_total_caps_what_the_manifest_spends_over_many_runs(
        tmp_path: Path, sim: RunningSimulator) -> None:
    """budget.max_total counts the spend recorded so far: a plan that would pass it is
    refused by plan and run (exit 3), though each run is within max_cost."""
    project = cups(tmp_path, CUPS.replace("{max_cost: 5}", "{max_cost: 5, max_total: 1}"))
    assert run(project, sim).returncode == 0
    project.edit("on a table", "on a shelf")
    assert run(project, sim).returncode == 0
    assert ledger_charged(sim) == Decimal("0.80")
    project.edit("on a shelf", "on a chair")
    plan = imgspec_process("plan", str(project.manifest))
    assert plan.returncode == 3
    assert ("Total budget: spent so far ¥0.80; this plan ¥0.40; total ¥1.20 of ¥1.00: "
            "over budget.max_total") in plan.stdout
    as_json = imgspec_process("plan", "--json", str(project.manifest))
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["budget"] == {
        "max_cost": 5, "max_total": 1, "spent": 0.8, "total": 1.2, "within": False}
    refused = run(project, sim)
    assert refused.returncode == 3
    assert "more than budget.max_total ¥1.00" in refused.stderr
    assert ledger_charged(sim) == Decimal("0.80") == charged(project)
    project.edit("[red, blue]", "[red]")  # a smaller plan fits what is left
    assert run(project, sim).returncode == 0
    assert ledger_charged(sim) == Decimal("1.00") == charged(project)


# -- moved: and lock mv ------------------------------------------------------------------


def test_a_moved_job_is_planned_as_moved_and_its_run_pays_nothing(
        tmp_path: Path, sim: RunningSimulator) -> None:
    """Renaming a job with a moved: block moves its entries and files; nothing is paid."""
    project = cups(tmp_path)
    assert run(project, sim).returncode == 0
    project.edit("  shot:", "  packshot:")
    project.manifest.write_text(project.manifest.read_text()
                                + "moved:\n  - {from: shot, to: packshot}\n")
    plan = imgspec_process("plan", str(project.manifest))
    assert plan.returncode == 0, plan.stderr
    assert "→ moved shot@c=blue to packshot@c=blue" in plan.stdout
    assert "→ moved shot@c=red to packshot@c=red" in plan.stdout
    assert "Plan: 0 to submit (0 images, ¥0.00); 2 up-to-date, 2 moved." in plan.stdout
    assert set(project.lock()["entries"]) == {"shot@c=blue", "shot@c=red"}  # plan is pure
    # A run stopped after moving a file and before recording the move: the file is
    # found where it went, and nothing is paid for it.
    (project.outputs / "packshot" / "c=red").mkdir(parents=True)
    (project.outputs / "shot" / "c=red" / "0.png").rename(
        project.outputs / "packshot" / "c=red" / "0.png")
    halfway = imgspec_process("plan", str(project.manifest))
    assert "Plan: 0 to submit (0 images, ¥0.00); 2 up-to-date, 2 moved." in halfway.stdout
    result = run(project, sim)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ledger_charged(sim) == Decimal("0.40") == charged(project)
    assert set(project.lock()["entries"]) == {"packshot@c=blue", "packshot@c=red"}
    assert images(project) == ["packshot/c=blue/0.png", "packshot/c=red/0.png"]
    meta = json.loads((project.outputs / "packshot" / "c=blue" / "meta.json").read_text())
    assert meta["key"] == "packshot@c=blue"
    assert imgspec_process("verify", str(project.manifest)).returncode == 0
    again = imgspec_process("plan", str(project.manifest))
    assert "No changes. Every instance is up to date." in again.stdout
    assert "→ moved" not in again.stdout


def test_lock_mv_moves_an_entry_with_its_files_and_refuses_to_overwrite(
        tmp_path: Path, sim: RunningSimulator) -> None:
    """lock mv --dry-run changes nothing; lock mv moves the entry and its image; it
    refuses an existing destination and a held run guard; the spend stays."""
    project = cups(tmp_path)
    assert run(project, sim).returncode == 0
    before = project.lockfile.read_text()
    dry = imgspec_process("lock", "mv", "--dry-run", str(project.manifest), "shot@c=red",
                          "shot@colour=red")
    assert dry.returncode == 0, dry.stderr
    assert "→ would move shot@c=red to shot@colour=red (1 file)" in dry.stdout
    assert project.lockfile.read_text() == before
    taken = imgspec_process("lock", "mv", str(project.manifest), "shot@c=red", "shot@c=blue")
    assert taken.returncode == 2
    assert "refusing to overwrite" in taken.stderr
    with RunGuard(guard_path(project.lockfile)):
        held = imgspec_process("lock", "mv", str(project.manifest), "shot@c=red",
                               "shot@colour=red")
    assert held.returncode == 5
    assert project.lockfile.read_text() == before
    moved = imgspec_process("lock", "mv", str(project.manifest), "shot@c=red",
                            "shot@colour=red")
    assert moved.returncode == 0, moved.stderr
    assert set(project.lock()["entries"]) == {"shot@c=blue", "shot@colour=red"}
    assert images(project) == ["shot/c=blue/0.png", "shot/colour=red/0.png"]
    verified = imgspec_process("verify", str(project.manifest))  # index.json follows
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert charged(project) == ledger_charged(sim) == Decimal("0.40")
    job = imgspec_process("lock", "mv", "--dry-run", str(project.manifest), "shot", "cup")
    assert job.returncode == 0, job.stderr
    assert job.stdout.splitlines() == [
        "→ would move shot@c=blue to cup@c=blue (1 file)",
        "→ would move shot@colour=red to cup@colour=red (1 file)",
        "2 lock entries would be moved; dry run: nothing was changed"]
    # The manifest now says colour: the moved entry is up to date (same request).
    project.edit("matrix: {c: [red, blue]}", "matrix: {colour: [red]}")
    project.edit("{{ c }}", "{{ colour }}")
    assert run(project, sim).returncode == 0
    assert ledger_charged(sim) == Decimal("0.40")
