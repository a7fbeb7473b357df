"""`run --simulate` repairs a damaged image for free, though its link names an earlier
process's simulator port."""

from __future__ import annotations

import json

import pytest

from pipeline.simulator import SimulatorConfig, run_in_thread
from tests.contract.conftest import cli
from tests.e2e.conftest import IMAGES, INSTANCES, Project
from tests.e2e.test_simulate_resume import simulate, state_file

pytestmark = pytest.mark.timeout(180)


def test_simulate_downloads_a_damaged_image_again_from_the_current_simulator(
        project: Project) -> None:
    """A damaged image planned as ``download`` is fetched again, free, in a later process."""
    first = simulate(project, "0.05")
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output
    folder = project.root / "outputs" / "shop.simulate"
    image = sorted(folder.rglob("0.png"))[0]
    intact = image.read_bytes()
    image.write_bytes(intact[: len(intact) // 2])
    plan = cli("plan", "--simulate", "--json", str(project.manifest))
    statuses = [i["status"] for i in json.loads(plan.stdout)["items"]]
    assert statuses.count("download") == 1, statuses
    second = simulate(project, "0.05")
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 0, output
    assert "downloaded again" in output
    assert image.read_bytes() == intact
    with run_in_thread(SimulatorConfig(state=state_file(project))) as sim:
        ledger = sim.ledger()
    assert ledger.tasks_created == INSTANCES  # the repair bought nothing
    assert ledger.images_charged == IMAGES
    again = cli("plan", "--simulate", "--json", str(project.manifest))
    assert {i["status"] for i in json.loads(again.stdout)["items"]} == {"up-to-date"}


def test_simulate_reuses_an_earlier_processes_upload_without_a_warning(
        project: Project) -> None:
    """The upload URL an earlier --simulate process recorded is the API's, not foreign."""
    first = simulate(project, "0.05")
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output
    project.edit("A logo for", "A sign for")
    second = simulate(project, "0.05")
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 0, output
    assert "warning" not in output
    with run_in_thread(SimulatorConfig(state=state_file(project))) as sim:
        ledger = sim.ledger()
    assert ledger.uploads == 1
    assert ledger.tasks_created == INSTANCES + 1


def test_a_replayed_submission_sends_the_upload_url_it_first_sent(project: Project) -> None:
    """A submission left unanswered by a killed --simulate process replays its key with the
    body it first sent: the upload URL of the earlier process's port, not this one's."""
    first = simulate(project, "0.05")
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output
    sim_lock = project.root / "manifests" / "shop.simulate.lock.json"
    lock = json.loads(sim_lock.read_text())
    logo = lock["entries"]["logo"]
    # As a kill right after the POST left it: the key recorded, the task id not yet.
    logo.update(status="submitting", task_id=None, outputs=[], cost=0, charged=0)
    sim_lock.write_text(json.dumps(lock, indent=2))
    second = simulate(project, "0.05")
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 0, output
    assert "different request body" not in output
    with run_in_thread(SimulatorConfig(state=state_file(project))) as sim:
        ledger = sim.ledger()
    assert ledger.tasks_created == INSTANCES  # the replay found the task it made
    assert ledger.images_charged == IMAGES
