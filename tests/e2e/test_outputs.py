"""The output folder through the real command: images kept, repaired for free, never escaped.

Every test drives ``python -m pipeline`` in a subprocess, as a user's shell would,
and checks the simulator's ledger against the images on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import KEY, ONE_PICTURE, ROOT, Project
from tests.simulator.simkit import StartSim, images_charged

MANIFEST = ONE_PICTURE


def imgspec(*args: str, cwd: Path,
            sim: RunningSimulator | None = None) -> subprocess.CompletedProcess[str]:
    """``imgspec ARGS`` in a subprocess from ``cwd`` (against ``sim`` for a run)."""
    env = {**os.environ, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    extra = ["--base-url", sim.base_url, "--yes"] if sim is not None and args[0] == "run" else []
    return subprocess.run([sys.executable, "-m", "pipeline", *args, *extra], cwd=cwd, env=env,
                          text=True, capture_output=True, timeout=120, check=False)


charged = images_charged


def images(project: Project) -> list[Path]:
    """The image files under the project's output folder."""
    return sorted(p for p in (project.root / "outputs" / "one").rglob("*.png"))


def plan_statuses(project: Project) -> dict[str, Any]:
    """``plan --json``: the status and cost of the single instance."""
    out = imgspec("plan", "--json", "manifests/one.yaml", cwd=project.root)
    assert out.returncode == 0, out.stderr
    item: dict[str, Any] = json.loads(out.stdout)["items"][0]
    return item


@pytest.fixture
def one(project: Project) -> Project:
    """A project whose manifest ``manifests/one.yaml`` is one instance of two images."""
    (project.root / "manifests" / "one.yaml").write_text(MANIFEST)
    return project


def lock_of(project: Project) -> dict[str, Any]:
    """The parsed lockfile of ``one.yaml``."""
    data: dict[str, Any] = json.loads((project.root / "manifests" / "one.lock.json").read_text())
    return data


def write_lock(project: Project, data: dict[str, Any]) -> None:
    """Replace the lockfile of ``one.yaml`` (as a merge or a colleague's edit would)."""
    (project.root / "manifests" / "one.lock.json").write_text(json.dumps(data, indent=2))


@pytest.mark.parametrize("where", ["root-relative", "manifests-relative", "elsewhere-absolute"])
def test_changed_prompt_keeps_the_new_images_and_pays_once(
        one: Project, sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory,
        where: str) -> None:
    """A changed prompt rerun from any folder, by any path, keeps its new images; reruns pay 0."""
    cwd, path = {
        "root-relative": (one.root, "manifests/one.yaml"),
        "manifests-relative": (one.root / "manifests", "one.yaml"),
        "elsewhere-absolute": (tmp_path_factory.mktemp("elsewhere"),
                               str(one.root / "manifests" / "one.yaml")),
    }[where]
    assert imgspec("run", path, cwd=cwd, sim=sim).returncode == 0
    assert len(images(one)) == 2
    assert charged(sim) == 2
    manifest = one.root / "manifests" / "one.yaml"
    manifest.write_text(manifest.read_text().replace("red apple", "green pear"))
    assert imgspec("run", path, cwd=cwd, sim=sim).returncode == 0
    assert len(images(one)) == 2
    assert charged(sim) == 4
    again = imgspec("run", path, cwd=cwd, sim=sim)
    assert again.returncode == 0
    assert "Nothing to do." in again.stdout
    assert charged(sim) == 4
    assert imgspec("verify", path, cwd=cwd).returncode == 0


def test_deleted_image_with_a_valid_link_is_downloaded_again_for_free(
        one: Project, sim: RunningSimulator) -> None:
    """A deleted image whose result link is valid is planned as download (cost 0) and restored."""
    assert imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim).returncode == 0
    first = images(one)
    digest = first[1].read_bytes()
    first[1].unlink()
    item = plan_statuses(one)
    assert (item["status"], item["cost"]) == ("download", 0)
    out = imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim)
    assert out.returncode == 0, out.stdout + out.stderr
    assert first[1].read_bytes() == digest
    assert charged(sim) == 2
    assert imgspec("verify", "manifests/one.yaml", cwd=one.root).returncode == 0


def test_truncated_image_is_seen_by_plan_and_repaired_by_run(
        one: Project, sim: RunningSimulator) -> None:
    """A truncated output is not up to date: plan says download, run restores it, verify agrees."""
    assert imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim).returncode == 0
    target = images(one)[0]
    whole = target.read_bytes()
    target.write_bytes(whole[: len(whole) // 2])
    assert imgspec("verify", "manifests/one.yaml", cwd=one.root).returncode == 1
    assert plan_statuses(one)["status"] == "download"
    assert imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim).returncode == 0
    assert target.read_bytes() == whole
    assert charged(sim) == 2
    assert imgspec("verify", "manifests/one.yaml", cwd=one.root).returncode == 0


def test_deleted_image_with_an_expired_link_is_priced_as_missing(
        one: Project, sim: RunningSimulator) -> None:
    """Once the recorded link has expired, a deleted image is missing: planned and paid again."""
    assert imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim).returncode == 0
    data = lock_of(one)
    for entry in data["entries"].values():
        for output in entry["outputs"]:
            output["expires_at"] = int(time.time()) - 10
    write_lock(one, data)
    images(one)[0].unlink()
    item = plan_statuses(one)
    assert item["status"] == "missing"
    assert item["cost"] > 0
    assert imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim).returncode == 0
    assert charged(sim) == 4
    assert len(images(one)) == 2


def test_dead_link_fails_without_paying_and_the_next_plan_says_missing(
        one: Project, start_sim: StartSim) -> None:
    """A link the plan thought valid but the server refuses: the run pays nothing, then missing."""
    first = start_sim()
    assert imgspec("run", "manifests/one.yaml", cwd=one.root, sim=first).returncode == 0
    first.stop()
    second = start_sim()  # a new API that never made these images: their links 404
    data = lock_of(one)
    for entry in data["entries"].values():
        for output in entry["outputs"]:
            output["url"] = output["url"].replace(first.base_url, second.base_url)
    write_lock(one, data)
    images(one)[0].unlink()
    out = imgspec("run", "manifests/one.yaml", cwd=one.root, sim=second)
    assert out.returncode == 4, out.stdout + out.stderr
    assert "missing" in out.stdout
    assert charged(second) == 0
    assert plan_statuses(one)["status"] == "missing"


def test_deleted_index_is_reported_by_verify_and_restored_by_run(
        one: Project, sim: RunningSimulator) -> None:
    """verify notices a deleted index.json; a run with nothing else to do writes it again."""
    assert imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim).returncode == 0
    index = one.root / "outputs" / "one" / "index.json"
    index.unlink()
    out = imgspec("verify", "manifests/one.yaml", cwd=one.root)
    assert out.returncode == 1
    assert "index.json" in out.stderr
    again = imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim)
    assert again.returncode == 0
    assert "Nothing to do." in again.stdout
    assert index.is_file()
    assert imgspec("verify", "manifests/one.yaml", cwd=one.root).returncode == 0


@pytest.mark.parametrize("evil", ["../../victim.txt", "ABSOLUTE",
                                  "../outputs/one/../../victim.txt"])
def test_lockfile_paths_outside_the_output_folder_are_refused(
        one: Project, sim: RunningSimulator, evil: str) -> None:
    """Lockfile paths outside the output folder: plan, run, verify refuse; nothing is touched."""
    assert imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim).returncode == 0
    victim = one.root.parent / "victim.txt"
    victim.write_text("thesis")
    data = lock_of(one)
    entry = next(iter(data["entries"].values()))
    entry["outputs"][0]["path"] = str(victim) if evil == "ABSOLUTE" else evil
    write_lock(one, data)
    manifest = one.root / "manifests" / "one.yaml"
    manifest.write_text(manifest.read_text().replace("red apple", "green pear"))
    for command in ("plan", "run", "verify"):
        out = imgspec(command, "manifests/one.yaml", cwd=one.root, sim=sim)
        assert out.returncode == 1, (command, out.stdout, out.stderr)
        # A form no lockfile holds (absolute, "..") is refused by the lockfile's schema;
        # a well-formed path that leaves the output folder by the output folder's check.
        assert ("outside the output folder" in out.stderr
                or 'entry "pic": outputs[0].path' in out.stderr), out.stderr
        assert "Traceback" not in out.stderr
    assert victim.read_text() == "thesis"
    assert charged(sim) == 2


def test_output_dir_outside_the_project_is_refused_with_its_position(
        one: Project) -> None:
    """``output_dir:`` pointing out of the project is an error at its line, before any run."""
    manifest = one.root / "manifests" / "one.yaml"
    manifest.write_text(MANIFEST.replace("name: one\n", "name: one\noutput_dir: ../../away\n"))
    out = imgspec("plan", "manifests/one.yaml", cwd=one.root)
    assert out.returncode == 1
    assert "one.yaml:3:13: error: output_dir:" in out.stderr
    assert "outside the project" in out.stderr
    assert not (one.root.parent / "away").exists()


def test_output_dir_inside_the_project_is_shown_and_used(
        one: Project, sim: RunningSimulator) -> None:
    """An ``output_dir:`` inside the project is where the images land."""
    manifest = one.root / "manifests" / "one.yaml"
    manifest.write_text(MANIFEST.replace("name: one\n", "name: one\noutput_dir: ../renders\n"))
    assert imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim).returncode == 0
    assert len(list((one.root / "renders").rglob("*.png"))) == 2


def test_same_size_corruption_is_found_by_rehash_and_repaired(
        one: Project, sim: RunningSimulator) -> None:
    """A flipped byte keeps the size: plan --rehash sees it, run --rehash fetches it again."""
    assert imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim).returncode == 0
    target = images(one)[0]
    whole = target.read_bytes()
    target.write_bytes(whole[:-20] + bytes([whole[-20] ^ 0xFF]) + whole[-19:])
    assert imgspec("verify", "manifests/one.yaml", cwd=one.root).returncode == 1
    assert plan_statuses(one)["status"] == "up-to-date"
    rehashed = imgspec("plan", "--json", "--rehash", "manifests/one.yaml", cwd=one.root)
    assert json.loads(rehashed.stdout)["items"][0]["status"] == "download"
    assert imgspec("run", "--rehash", "manifests/one.yaml", cwd=one.root, sim=sim).returncode == 0
    assert target.read_bytes() == whole
    assert charged(sim) == 2
    assert imgspec("verify", "manifests/one.yaml", cwd=one.root).returncode == 0


def test_plan_shows_where_the_images_go(one: Project) -> None:
    """The plan names the output folder, as text and in JSON."""
    text = imgspec("plan", "manifests/one.yaml", cwd=one.root)
    assert "Outputs: outputs/one/" in text.stdout
    data = json.loads(imgspec("plan", "--json", "manifests/one.yaml", cwd=one.root).stdout)
    assert data["outputs"] == "outputs/one/"


def test_verify_before_any_run_finds_nothing_wrong(one: Project) -> None:
    """A project never run has no outputs and owes no index: verify exits 0."""
    out = imgspec("verify", "manifests/one.yaml", cwd=one.root)
    assert out.returncode == 0, out.stderr
    assert "0 file(s) checked, 0 problem(s)" in out.stdout
