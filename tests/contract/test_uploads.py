"""Uploads for local images: once per content across instances and runs, durable before
anything is paid, and the inline reading still available."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.lock.journal import fold_journal, upload_line
from pipeline.core.lock.lockfile import (
    Lockfile,
    Upload,
    dump_lockfile,
    merge_uploads,
    parse_lockfile,
)
from pipeline.errors import LockfileError
from pipeline.shell.store.lockstore import LockStore
from tests.contract.conftest import cli
from tests.e2e.conftest import Project
from tests.simulator.simkit import StartSim

SHA = "ab" * 32
FOUR = """\
version: 1
name: shop
budget: {max_cost: 50}
defaults: {model: wan2.7-image, size: 1K}
jobs:
  logo:
    prompt: "A logo for a {{ shop }}"
    image_urls: [assets/mark.png]
    matrix:
      shop: [bakery, florist, grocer, baker]
"""


def run(project: Project, base_url: str, *extra: str) -> Any:
    """`imgspec run` of the project's manifest in a subprocess."""
    return cli("run", str(project.manifest), "--base-url", base_url, "--yes", *extra)


def on_disk(project: Project) -> list[Path]:
    """The images in the output folder."""
    return sorted(p for p in project.outputs.rglob("*.png"))


def test_local_image_is_uploaded_once_across_instances_and_runs(
        project: Project, start_sim: StartSim) -> None:
    """Four instances share one upload; a later run reuses it until it nears expiry."""
    sim = start_sim(accept_data_uris=False)
    project.manifest.write_text(FOUR)
    first = run(project, sim.base_url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert sim.ledger().uploads == 1
    uploads = project.lock()["uploads"]
    ((sha, upload),) = uploads.items()
    assert upload["url"].startswith(sim.base_url + "/uploads/")
    assert upload["expires_at"] > time.time() + 71 * 3600
    project.edit("A logo for", "A sign for")
    second = run(project, sim.base_url)
    assert second.returncode == 0, second.stdout + second.stderr
    assert sim.ledger().uploads == 1
    assert sim.ledger().tasks_created == 8
    data = project.lock()
    data["uploads"][sha]["expires_at"] = int(time.time()) + 3600  # within the margin
    project.lockfile.write_text(json.dumps(data, indent=2))
    project.edit("A sign for", "A banner for")
    third = run(project, sim.base_url)
    assert third.returncode == 0, third.stdout + third.stderr
    assert sim.ledger().uploads == 2
    assert project.lock()["uploads"][sha]["url"] != upload["url"]
    assert len(on_disk(project)) == 4


def test_inline_inputs_send_data_uris_and_upload_nothing(project: Project,
                                                         start_sim: StartSim) -> None:
    """``inputs: inline`` works where data URIs are accepted; the fingerprints do not change."""
    sim = start_sim()
    project.manifest.write_text(FOUR)
    planned = json.loads(cli("plan", "--json", str(project.manifest)).stdout)
    project.manifest.write_text("inputs: inline\n" + FOUR)
    inline = json.loads(cli("plan", "--json", str(project.manifest)).stdout)
    assert [i["fingerprint"] for i in planned["items"]] == \
        [i["fingerprint"] for i in inline["items"]]
    ran = run(project, sim.base_url)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert sim.ledger().uploads == 0
    assert sim.ledger().images_charged == len(on_disk(project)) == 4
    assert "uploads" not in project.lock()


def test_inline_fails_clearly_before_paying_where_data_uris_are_refused(
        project: Project, start_sim: StartSim) -> None:
    """With data URIs refused, ``inline`` fails each item with the API's reason, unpaid."""
    sim = start_sim(accept_data_uris=False)
    project.manifest.write_text("inputs: inline\n" + FOUR)
    ran = run(project, sim.base_url)
    assert ran.returncode == 4, ran.stdout + ran.stderr
    assert "data URIs are no longer accepted" in ran.stdout
    ledger = sim.ledger()
    assert ledger.tasks_created == 0
    assert ledger.images_charged == 0


def test_upload_faults_and_lost_replies_never_cause_a_second_charge(
        project: Project, start_sim: StartSim) -> None:
    """5xx, resets and lost upload replies are redone; each instance is charged once."""
    sim = start_sim(accept_data_uris=False, seed=5,
                    faults={"upload.5xx": 0.3, "upload.reset": 0.3, "upload.lost_reply": 0.3})
    project.manifest.write_text(FOUR)
    ran = run(project, sim.base_url)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    ledger = sim.ledger()
    # Seed 5: the first upload's reply is lost (stored, counted), the next is reset.
    assert ledger.faults == {"upload.lost_reply": 1, "upload.reset": 1}
    assert ledger.uploads == 2
    assert ledger.tasks_created == 4
    assert ledger.images_charged == len(on_disk(project)) == 4
    assert ledger.replays == 0
    assert len(project.lock()["uploads"]) == 1


def test_lockfile_uploads_round_trip_and_are_read_strictly() -> None:
    """The uploads section survives dump and parse; a bad hash or field is refused."""
    lock = Lockfile(manifest="shop.yaml", uploads={SHA: Upload("https://u.test/a.png", 99)})
    text = dump_lockfile(lock)
    assert parse_lockfile(text) == lock
    assert "uploads" not in dump_lockfile(Lockfile(manifest="shop.yaml"))
    data = json.loads(text)
    data["uploads"]["not-a-hash"] = data["uploads"][SHA]
    with pytest.raises(LockfileError, match="not-a-hash"):
        parse_lockfile(json.dumps(data))
    data = json.loads(text)
    data["uploads"][SHA]["size"] = 3
    with pytest.raises(LockfileError, match="size"):
        parse_lockfile(json.dumps(data))


def test_upload_journal_lines_fold_and_merge_keeps_the_longest_lived(tmp_path: Path) -> None:
    """A journaled upload survives a crash; merging sides keeps each image's latest URL."""
    lock = fold_journal(Lockfile(manifest="m"), upload_line(SHA, Upload("https://a/1", 5)),
                        source="j")
    assert lock.uploads == {SHA: Upload("https://a/1", 5)}
    path = tmp_path / "m.lock.json"
    (tmp_path / "m.lock.journal").write_text(upload_line(SHA, Upload("https://a/2", 9)))
    with LockStore.open(path, manifest="m") as store:
        assert store.uploads[SHA].url == "https://a/2"
    assert parse_lockfile(path.read_text()).uploads[SHA].expires_at == 9
    merged = merge_uploads({SHA: Upload("https://a/1", 5)}, {SHA: Upload("https://a/2", 9)})
    assert merged[SHA].url == "https://a/2"
