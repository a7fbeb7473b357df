"""A paid task is never bought again for want of its results, and a stuck one never holds a run.

Through the real command line against the simulator: result links imgspec will not
use and downloads that keep failing are followed by free re-polls of the same task (in
the run, then by the next run), and a run whose only task left is far past the others
ends, leaving it to the next run, which collects it without paying. The simulated
API's memory is kept in a state file, so a second simulator without the fault (or
later in time) plays the same API the next run meets.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import Project, run_args
from tests.e2e.test_run_hostile_results import imgspec, run_logo, status_failures
from tests.simulator.simkit import StartSim

pytestmark = pytest.mark.timeout(180)

ONE = """\
version: 1
name: shop
defaults: {model: wan2.7-image, size: 1K}
jobs:
  pic:
    prompt: "A red apple"
"""
EIGHT = """\
version: 1
name: shop
defaults: {model: wan2.7-image, size: 1K}
jobs:
  gen:
    prompt: "A {{ shop }} in {{ season }}"
    matrix:
      shop: [bakery, florist, grocer, baker]
      season: [spring, winter]
"""


def plan_item(project: Project, key: str) -> dict[str, Any]:
    """``plan --json``'s item for ``key``."""
    out = imgspec("plan", "--json", str(project.manifest))
    assert out.returncode == 0, out.stderr
    item: dict[str, Any] = next(i for i in json.loads(out.stdout)["items"] if i["key"] == key)
    return item


def images(project: Project) -> list[Path]:
    """The images kept in the project's output folder."""
    return sorted((project.root / "outputs" / "shop").rglob("*.png"))


def assert_paid_once(sim: RunningSimulator, project: Project, tasks: int) -> None:
    """The API charged exactly the images kept, for ``tasks`` tasks, as the lockfile says."""
    ledger = sim.ledger()
    kept = images(project)
    assert ledger.images_charged == len(kept)
    assert ledger.tasks_created == tasks
    charged = sum(e["charged"] for e in project.lock()["entries"].values())
    assert f"{charged:.2f}" == f"{ledger.cost_charged:.2f}"


def test_bad_result_links_are_polled_again_by_the_next_run_for_free(
        project: Project, start_sim: StartSim, tmp_path: Path) -> None:
    """poll.bad_url on every poll: the attempt fails for its results, the plan's retry is
    free and says it re-polls, and the next run collects the same task: no second charge."""
    state = tmp_path / "api.jsonl"
    faulty = start_sim(faults={"poll.bad_url": 1.0}, state=state)
    assert run_logo(project, faulty).returncode == 4
    item = plan_item(project, "logo")
    assert (item["status"], item["cost"], item.get("repoll")) == ("retry", 0, True)
    entry = project.lock()["entries"]["logo"]
    assert (entry["status"], entry["failure"]) == ("failed", "results")
    assert "re-polls task" in item["note"]
    text = imgspec("plan", str(project.manifest), "--job", "logo").stdout
    assert "already paid, polled again" in text
    assert "Plan: 0 to submit (0 images" in text
    faulty.stop()
    healed = start_sim(state=state)
    result = run_logo(project, healed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(images(project)) == 1
    assert_paid_once(healed, project, tasks=1)


@pytest.mark.parametrize("fault", ["download.expired", "download.drip"])
def test_downloads_failing_three_times_are_followed_by_a_free_repoll(
        project: Project, start_sim: StartSim, tmp_path: Path, fault: str) -> None:
    """Downloads refused (410) or too slow three times, each after a re-poll: the attempt
    fails for its results, and the next run polls the paid task again instead of paying."""
    state = tmp_path / "api.jsonl"
    faulty = start_sim(faults={fault: 1.0}, state=state)
    assert run_logo(project, faulty).returncode == 4
    item = plan_item(project, "logo")
    assert (item["status"], item["cost"]) == ("retry", 0)
    assert faulty.ledger().faults[fault] == 3
    assert project.lock()["entries"]["logo"]["failure"] == "results"
    assert "the next run polls task" in status_failures(project)["logo"]
    faulty.stop()
    healed = start_sim(state=state)
    result = run_logo(project, healed)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_paid_once(healed, project, tasks=1)


def test_a_gone_task_is_retried_as_a_paid_new_attempt(
        project: Project, start_sim: StartSim, tmp_path: Path) -> None:
    """A free re-poll that finds the task gone (404: the API forgot it) records it so, and
    the next plan prices a new attempt, which the run after it pays for once."""
    project.manifest.write_text(ONE)
    state = tmp_path / "api.jsonl"
    faulty = start_sim(faults={"poll.bad_url": 1.0}, state=state)
    assert imgspec(*run_args(project, faulty)).returncode == 4
    faulty.stop()
    # A month later the API has forgotten the task (a week after its links expired).
    later = start_sim(state=state, clock=lambda: time.time() + 30 * 86_400.0)
    assert imgspec(*run_args(project, later)).returncode == 4
    entry = project.lock()["entries"]["pic"]
    assert (entry["status"], entry["failure"]) == ("failed", "task-gone")
    item = plan_item(project, "pic")
    assert (item["status"], item["cost"]) == ("retry", 0.2)
    assert "repoll" not in item
    assert later.ledger().tasks_created == 1
    assert imgspec(*run_args(project, later)).returncode == 0
    ledger = later.ledger()
    assert (ledger.tasks_created, ledger.images_charged, len(images(project))) == (2, 2, 1)
    assert project.lock()["entries"]["pic"]["charged"] == 0.4


def test_a_stuck_task_ends_the_run_and_the_next_run_collects_it_free(
        project: Project, start_sim: StartSim, tmp_path: Path) -> None:
    """One of eight tasks stuck for 1,000 s: once the others are done the run ends (not at
    the 1,800 s task timeout) saying it is still at the API; the next run, once the task
    is done, collects it without a new charge."""
    project.manifest.write_text(EIGHT)
    state = tmp_path / "api.jsonl"
    # Seed 0 makes exactly one of the first eight tasks stuck (the sixth created).
    sim = start_sim(faults={"task.stuck": 0.1}, seed=0, latency=(0.1, 0.1),
                    stuck_factor=10_000.0, state=state)
    # The subprocess is bounded (90 s): a run held by the stuck task fails the test.
    first = imgspec(*run_args(project, sim, "--concurrency", "8"))
    assert first.returncode == 4, first.stdout + first.stderr
    assert "still running at the API" in first.stdout
    assert "paying nothing new" in first.stdout
    assert sim.ledger().faults["task.stuck"] == 1
    statuses = [i["status"] for i in json.loads(
        imgspec("plan", "--json", str(project.manifest)).stdout)["items"]]
    assert sorted(statuses) == ["resume", *["up-to-date"] * 7]
    sim.stop()
    later = start_sim(state=state, seed=0, clock=lambda: time.time() + 1_200.0)  # done then
    second = imgspec(*run_args(project, later))
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(images(project)) == 8
    assert_paid_once(later, project, tasks=8)
