"""Lockfiles in real git repositories: branches that each run work merge without paying twice."""

from __future__ import annotations

import json
import shutil
import time

from pipeline.simulator import RunningSimulator
from tests.simulator.simkit import StartSim
from tests.teams.conftest import Repo

BASE = """\
version: 1
name: shop
defaults: {model: wan2.7-image, size: 1K}
jobs:
  # branch one adds its job below this line
  gen:
    prompt: "A {{ shop }} storefront"
    matrix:
      shop: [bakery, florist]
"""
ONE_JOB = """\
  posters:
    prompt: "A poster for the {{ shop }}"
    matrix:
      shop: [bakery, florist]
"""
TWO_JOB = """\
  logo:
    prompt: "A round logo"
"""
MANIFEST = "manifests/shop.yaml"
LOCK = "manifests/shop.lock.json"


def run(repo: Repo, sim: RunningSimulator) -> None:
    """Run the manifest against the simulator; it must finish."""
    done = repo.imgspec("run", MANIFEST, "--base-url", sim.base_url, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr


def set_up(repo: Repo, sim: RunningSimulator) -> None:
    """main: the base manifest, run, the driver registered, all committed."""
    repo.write(MANIFEST, BASE)
    init = repo.imgspec("init")
    assert init.returncode == 0, init.stderr
    run(repo, sim)
    repo.commit("base")


def test_branches_adding_and_running_different_jobs_merge_cleanly(
        repo: Repo, sim: RunningSimulator) -> None:
    """Two branches each add and run a job; git merge (driver from init) merges the lockfile,
    the merged plan is all up to date, and a run after the merge pays nothing."""
    set_up(repo, sim)
    repo.git("checkout", "-q", "-b", "one")
    repo.write(MANIFEST, BASE.replace("  gen:\n", ONE_JOB + "  gen:\n"))
    run(repo, sim)
    repo.commit("one: posters")
    repo.git("checkout", "-q", "main")
    repo.git("checkout", "-q", "-b", "two")
    repo.write(MANIFEST, BASE + TWO_JOB)
    run(repo, sim)
    repo.commit("two: logo")
    charged = sim.ledger().images_charged
    assert charged == 2 + 2 + 1

    merge = repo.git("merge", "-q", "--no-edit", "one", check=False)

    assert merge.returncode == 0, merge.stdout + merge.stderr
    assert "CONFLICT" not in merge.stdout
    keys = set(repo.lock(LOCK)["entries"])
    assert keys == {"gen@shop=bakery", "gen@shop=florist", "posters@shop=bakery",
                    "posters@shop=florist", "logo"}
    assert all(e["status"] == "done" for e in repo.lock(LOCK)["entries"].values())
    plan = repo.imgspec("plan", MANIFEST, "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["counts"]["up-to-date"] == 5
    run(repo, sim)
    assert sim.ledger().images_charged == charged
    assert repo.git("status", "--porcelain").stdout == ""


def test_both_branches_rerunning_one_instance_keep_done_entry_and_every_task_id(
        repo: Repo, sim: RunningSimulator, start_sim: StartSim) -> None:
    """Both branches run the same new instance as two paid tasks (apart in time, so the API's
    idempotency could not join them: here, two simulators): the merge keeps a done entry and
    both task ids, reports it, and the merged plan pays nothing."""
    later = start_sim()
    set_up(repo, sim)
    repo.git("checkout", "-q", "-b", "one")
    repo.write(MANIFEST, BASE + TWO_JOB)
    run(repo, sim)
    repo.commit("one: logo")
    first = repo.lock(LOCK)["entries"]["logo"]["task_id"]
    repo.git("checkout", "-q", "main")
    repo.git("checkout", "-q", "-b", "two")
    repo.write(MANIFEST, BASE + TWO_JOB)
    # As in another checkout: branch one's logo in the shared outputs would be reused.
    shutil.rmtree(repo.root / "outputs" / "shop" / "logo")
    # updated_at has whole seconds and a fast run can end in the same second as the
    # first: then "the newer" is a tie. Start the second run in a later second.
    time.sleep(1.0 - time.time() % 1.0 + 0.01)
    run(repo, later)
    repo.commit("two: logo too")
    second = repo.lock(LOCK)["entries"]["logo"]["task_id"]
    assert first != second

    merge = repo.git("merge", "--no-edit", "one", check=False)

    assert merge.returncode == 0, merge.stdout + merge.stderr
    assert "superseded logo" in merge.stdout + merge.stderr
    entries = repo.lock(LOCK)["entries"]
    assert entries["logo"]["status"] == "done"
    assert entries["logo"]["task_id"] == second  # the newer run's files are on disk
    task_ids = {e["task_id"] for e in entries.values()}
    assert {first, second} <= task_ids
    plan = repo.imgspec("plan", MANIFEST, "--json")
    assert json.loads(plan.stdout)["counts"]["up-to-date"] == 3
    assert json.loads(plan.stdout)["orphaned"] == [f"logo#superseded:{first}"]
    charged = (sim.ledger().images_charged, later.ledger().images_charged)
    run(repo, later)
    assert (sim.ledger().images_charged, later.ledger().images_charged) == charged


def test_real_conflict_exits_1_and_loses_nothing(repo: Repo, sim: RunningSimulator) -> None:
    """Two branches record different files for the same task: the driver exits 1, git marks
    the lockfile conflicted, ours stays as it was and both sides stay in git's index."""
    set_up(repo, sim)
    entry = "gen@shop=bakery"
    for branch, digest in (("one", "a" * 64), ("two", "b" * 64)):
        repo.git("checkout", "-q", "main")
        repo.git("checkout", "-q", "-b", branch)
        data = repo.lock(LOCK)
        data["entries"][entry]["outputs"][0]["sha256"] = digest
        repo.write(LOCK, json.dumps(data, indent=2, sort_keys=True) + "\n")
        repo.commit(f"{branch}: other bytes")
    ours = (repo.root / LOCK).read_text()
    theirs = repo.git("show", f"one:{LOCK}").stdout

    merge = repo.git("merge", "--no-edit", "one", check=False)

    assert merge.returncode != 0
    assert f"CONFLICT (content): Merge conflict in {LOCK}" in merge.stdout
    assert f"conflict: {entry}: both sides downloaded task" in merge.stderr + merge.stdout
    assert (repo.root / LOCK).read_text() == ours
    assert repo.git("show", f":2:{LOCK}").stdout == ours
    assert repo.git("show", f":3:{LOCK}").stdout == theirs
