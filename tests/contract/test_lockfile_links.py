"""URLs a lockfile records are claims: a run sends only the API's own, and sends only the
input files its plan hashed."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from pathlib import Path

from PIL import Image

from pipeline.simulator import RunningSimulator
from tests.contract.conftest import cli
from tests.contract.test_uploads import FOUR, on_disk, run
from tests.e2e.conftest import KEY, Project, spawn
from tests.simulator.simkit import StartSim

EVIL = "https://evil.example/x.png"
FAR = 4102444800  # 2100-01-01: a URL that claims to live for ever

# Two instances now and four after them, all editing one local file.
TWO_THEN_FOUR = """\
version: 1
name: shop
budget: {max_cost: 50}
defaults: {model: wan2.7-image, size: 1K}
jobs:
  first:
    prompt: "A {{ shop }} sign"
    image_urls: [assets/mark.png]
    matrix: {shop: [bakery, florist]}
  second:
    needs: [first]
    prompt: "A {{ shop }} banner"
    image_urls: [assets/mark.png]
    matrix: {shop: [bakery, florist, grocer, baker]}
"""


def mark_sha(project: Project) -> str:
    """The sha256 of the project's input image."""
    return hashlib.sha256((project.manifest.parent / "assets" / "mark.png").read_bytes()
                          ).hexdigest()


def write_lock(project: Project, data: dict[str, object]) -> None:
    """Replace the project's lockfile, as an edit (or a merged branch) would."""
    project.lockfile.write_text(json.dumps(data, indent=2))


def test_a_foreign_upload_url_in_the_lockfile_is_ignored_and_the_image_uploaded(
        project: Project, start_sim: StartSim) -> None:
    """An ``uploads`` entry on another host never replaces the local file: it is uploaded."""
    sim = start_sim(accept_data_uris=False)
    project.manifest.write_text(FOUR)
    first = run(project, sim.base_url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert sim.ledger().uploads == 1
    data = project.lock()
    data["uploads"] = {mark_sha(project): {"url": EVIL, "expires_at": FAR}}
    write_lock(project, data)
    project.edit("A logo for", "A sign for")
    second = run(project, sim.base_url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "evil.example" in second.stdout
    assert "not the API's" in second.stdout
    ledger = sim.ledger()
    assert ledger.uploads == 2  # the file went up again, not the foreign URL
    assert ledger.tasks_created == ledger.images_charged == 8
    assert project.lock()["uploads"][mark_sha(project)]["url"].startswith(
        sim.base_url + "/uploads/")
    assert len(on_disk(project)) == 4


def test_a_foreign_result_link_is_not_sent_for_an_upstream_image(
        project: Project, start_sim: StartSim) -> None:
    """A recorded result link on another host is not sent downstream: the file on disk is."""
    sim = start_sim(accept_data_uris=False)
    first = run(project, sim.base_url)
    assert first.returncode == 0, first.stdout + first.stderr
    uploaded = sim.ledger().uploads  # the logo's input only
    data = project.lock()
    for entry in data["entries"].values():
        for output in entry.get("outputs", []):
            output["url"] = EVIL
    write_lock(project, data)
    project.edit("at night", "by night")
    second = run(project, sim.base_url)
    assert second.returncode == 0, second.stdout + second.stderr
    ledger = sim.ledger()
    # The two night edits sent their upstream images from disk, one upload each.
    assert ledger.uploads == uploaded + 2
    assert ledger.tasks_created == 7 + 2


def test_merge_drops_a_foreign_upload_url_instead_of_keeping_the_longest_lived(
        project: Project, start_sim: StartSim, tmp_path: Path) -> None:
    """`lock merge` keeps the API's upload URL over a foreign one that claims to live longer."""
    sim = start_sim(accept_data_uris=False)
    project.manifest.write_text(FOUR)
    first = run(project, sim.base_url)
    assert first.returncode == 0, first.stdout + first.stderr
    good = project.lock()
    sha = mark_sha(project)
    evil = json.loads(json.dumps(good))
    evil["uploads"][sha] = {"url": EVIL, "expires_at": FAR}
    (tmp_path / "evil.lock.json").write_text(json.dumps(evil))
    merged = cli("lock", "merge", "--into", str(project.lockfile),
                 str(tmp_path / "evil.lock.json"), env={"APIMART_BASE_URL": sim.base_url})
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert "evil.example" in merged.stdout
    assert "dropped" in merged.stdout
    assert project.lock()["uploads"] == good["uploads"]
    project.edit("A logo for", "A sign for")
    second = run(project, sim.base_url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert sim.ledger().uploads == 1  # the good URL is reused
    assert sim.ledger().images_charged == 8


def swap_after_first_job(project: Project, sim: RunningSimulator, shift: list[float],
                         new_bytes: bytes) -> threading.Thread:
    """A thread that, once the first job's two tasks exist, rewrites the input file and
    then lets the simulator's clock run on, so those tasks finish only after the swap."""

    def swap() -> None:
        deadline = time.monotonic() + 60
        while sim.ledger().tasks_created < 2:
            assert time.monotonic() < deadline, "the first job was never submitted"
            time.sleep(0.02)
        (project.manifest.parent / "assets" / "mark.png").write_bytes(new_bytes)
        shift[0] = 120.0

    thread = threading.Thread(target=swap)
    thread.start()
    return thread


def run_with_a_swap(project: Project, start_sim: StartSim, new_bytes: bytes
                    ) -> tuple[str, RunningSimulator]:
    """Run TWO_THEN_FOUR while the input is swapped between the two jobs' submissions."""
    shift = [0.0]
    sim = start_sim(accept_data_uris=False, latency=(60.0, 60.0), estimate_factor=1 / 60,
                    clock=lambda: time.time() + shift[0])
    project.manifest.write_text(TWO_THEN_FOUR)
    process = spawn(["run", str(project.manifest), "--base-url", sim.base_url, "--yes"])
    thread = swap_after_first_job(project, sim, shift, new_bytes)
    output, _ = process.communicate(timeout=120)
    thread.join(timeout=60)
    assert process.returncode == 4, output
    return output, sim


def test_an_input_changed_between_plan_and_run_is_neither_uploaded_nor_paid(
        project: Project, start_sim: StartSim) -> None:
    """A file rewritten mid-run fails the items not yet sent; the next plan tells the truth."""
    buffer = io.BytesIO()
    Image.new("RGB", (320, 320), (200, 40, 40)).save(buffer, format="PNG")
    output, sim = run_with_a_swap(project, start_sim, buffer.getvalue())
    assert output.count("changed since the plan") >= 4, output
    assert "a plain rerun plans them with the new file" in output
    ledger = sim.ledger()
    assert ledger.uploads == 1  # the planned file only
    assert ledger.tasks_created == ledger.images_charged == 2
    assert len(on_disk(project)) == 2
    plan = cli("plan", "--json", str(project.manifest))
    statuses = {i["key"]: i["status"] for i in json.loads(plan.stdout)["items"]}
    made = {k: s for k, s in statuses.items() if k.startswith("first@")}
    never = {k: s for k, s in statuses.items() if k.startswith("second@")}
    assert set(made.values()) == {"changed"}, statuses  # made from the old file
    assert set(never.values()) == {"new"}, statuses  # never sent: nothing recorded
    assert len(never) == 4


def test_a_non_image_swapped_in_is_not_uploaded(project: Project,
                                                start_sim: StartSim) -> None:
    """A text file put in place of the input after the plan is refused before any upload."""
    output, sim = run_with_a_swap(project, start_sim, b"not an image at all\n" * 100)
    assert output.count("changed since the plan") >= 4, output
    assert "upload refused" not in output
    ledger = sim.ledger()
    assert ledger.uploads == 1
    assert ledger.tasks_created == 2
    assert KEY not in output
