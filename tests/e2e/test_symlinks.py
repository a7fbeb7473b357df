"""Symbolic links in the output folder (git commits them) lead no read or write out of the project.

Each case makes one project with a finished run against the simulator, a pick in
its review file, and then one link pointing outside the project; every command
that would go through the link (``run``, ``verify``, ``gallery``, ``export
--picked``, ``review``) must refuse with the link's path, and the folder outside
must stay as it was: empty, or without a copy of the secret file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import KEY, ONE_PICTURE, ROOT

MANIFEST = ONE_PICTURE
SECRET = b"the contents of a private file outside the project"
REFUSAL_WAIT = 60.0  # seconds: a refused `review` exits at once; one that serves is killed


def imgspec(*args: str, cwd: Path,
            sim: RunningSimulator | None = None) -> subprocess.CompletedProcess[str]:
    """``imgspec ARGS`` in a subprocess from ``cwd``; one that is still going is killed."""
    env = {**os.environ, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    extra = ["--base-url", sim.base_url, "--yes"] if sim is not None and args[0] == "run" else []
    command = [sys.executable, "-m", "pipeline", *args, *extra]
    try:
        return subprocess.run(command, cwd=cwd, env=env, text=True, capture_output=True,
                              timeout=REFUSAL_WAIT, check=False)
    except subprocess.TimeoutExpired as exc:  # `review` serving: it did not refuse
        return subprocess.CompletedProcess(command, -9, str(exc.stdout), str(exc.stderr))


def ledger(sim: RunningSimulator) -> dict[str, Any]:
    """The simulator's billing ledger."""
    data: dict[str, Any] = httpx.get(f"{sim.base_url}/_sim/ledger").json()
    return data


@dataclass
class Scene:
    """A finished project, the folder outside it, and the secret file there."""

    root: Path  # the project
    outside: Path  # an empty folder outside the project
    secret: Path  # a private file outside the project

    @property
    def outputs(self) -> Path:
        return self.root / "outputs" / "one"

    def image(self) -> Path:
        """The first image of the only instance."""
        lock = json.loads((self.root / "manifests" / "one.lock.json").read_text())
        (entry,) = lock["entries"].values()
        return Path(os.path.normpath(self.root / "manifests" / entry["outputs"][0]["path"]))

    def link(self, path: Path, target: Path) -> Path:
        """Replace ``path`` (a folder or file, or nothing) by a link to ``target``."""
        if path.is_dir():
            for inner in sorted(path.rglob("*"), reverse=True):
                inner.rmdir() if inner.is_dir() else inner.unlink()
            path.rmdir()
        elif path.exists():
            path.unlink()
        path.symlink_to(target)
        return path

    def outside_files(self) -> list[Path]:
        """Everything under the outside folder, and any copy of the secret anywhere."""
        found = sorted(self.outside.rglob("*"))
        secret = self.secret.read_bytes() if self.secret.exists() else None
        copies = [p for p in self.root.rglob("*")
                  if p.is_file() and not p.is_symlink() and p.read_bytes() == secret]
        return found + copies


def link_outputs(scene: Scene) -> Path:
    return scene.link(scene.root / "outputs", scene.outside)


def link_job_folder(scene: Scene) -> Path:
    return scene.link(scene.outputs / "pic", scene.outside)


def link_instance_folder(scene: Scene) -> Path:
    return scene.link(scene.image().parent, scene.outside)


def link_image(scene: Scene) -> Path:
    image = scene.image()
    # As large as the image, so a size check alone cannot tell them apart.
    scene.secret.write_bytes(SECRET.ljust(image.stat().st_size, b"\0"))
    return scene.link(image, scene.secret)


def link_thumbs(scene: Scene) -> Path:
    return scene.link(scene.outputs / "_thumbs", scene.outside)


def link_export_destination(scene: Scene) -> Path:
    return scene.link(scene.root / "handoff", scene.outside)


def link_export_destination_into_outputs(scene: Scene) -> Path:
    return scene.link(scene.root / "handoff", scene.outputs)


# (how the link is made, the commands that must refuse, the --picked destination, the
# exit code of a refusal: 1 for a link that leads out, 2 for a destination in outputs)
Form = tuple[Callable[[Scene], Path], tuple[str, ...], str, int]
EVERY_READER = ("run", "verify", "gallery", "export", "review")
FORMS: dict[str, Form] = {
    "outputs folder": (link_outputs, EVERY_READER, "handoff", 1),
    "job folder": (link_job_folder, EVERY_READER, "handoff", 1),
    "instance folder": (link_instance_folder, EVERY_READER, "handoff", 1),
    "image": (link_image, EVERY_READER, "handoff", 1),
    "_thumbs": (link_thumbs, ("gallery",), "handoff", 1),
    "export destination": (link_export_destination, ("export",), "handoff", 1),
    "export destination into outputs": (link_export_destination_into_outputs, ("export",),
                                        "handoff", 2),
    "`..` in the export destination": (lambda scene: scene.outputs, ("export",),
                                       "outputs/x/../one/handoff", 2),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_a_symlink_in_the_output_folder_is_refused_and_nothing_outside_is_touched(
        tmp_path: Path, sim: RunningSimulator, form: str) -> None:
    """Every link form (out of the project, or into outputs) is refused by path; nothing leaks."""
    make, refusing, dest, code = FORMS[form]
    root = tmp_path.resolve() / "project"
    (root / "manifests").mkdir(parents=True)
    (root / "manifests" / "one.yaml").write_text(MANIFEST)
    scene = Scene(root, tmp_path.resolve() / "outside", tmp_path.resolve() / "secret")
    scene.outside.mkdir()
    (scene.outputs / "x").mkdir(parents=True)
    first = imgspec("run", "manifests/one.yaml", cwd=root, sim=sim)
    assert first.returncode == 0, first.stdout + first.stderr
    lock = json.loads((root / "manifests" / "one.lock.json").read_text())
    (key, entry), = lock["entries"].items()
    (root / "manifests" / "one.review.yaml").write_text(
        "version: 1\ndecisions:\n"
        f"  - key: {json.dumps(key)}\n    image: 0\n"
        f"    sha256: {entry['outputs'][0]['sha256']}\n    verdict: pick\n")
    paid = ledger(sim)
    assert paid["images_charged"] == 2
    assert Decimal(paid["cost_charged"]) == Decimal(str(entry["cost"]))

    link = make(scene)
    commands = {
        "run": ("run", "manifests/one.yaml", "--rehash"),
        "verify": ("verify", "manifests/one.yaml"),
        "gallery": ("gallery", "manifests/one.yaml"),
        "export": ("export", "manifests/one.yaml", "--picked", dest),
        "review": ("review", "manifests/one.yaml"),
    }
    for name in refusing:
        done = imgspec(*commands[name], cwd=root, sim=sim)
        told = done.stdout + done.stderr
        assert done.returncode == code, f"{name}: exit {done.returncode}\n{told}"
        assert (str(link) if code == 1 else f"--picked {dest} ") in told, f"{name}: {told}"
        assert "Traceback" not in told
        assert ("symbolic link" if code == 1 else "inside the output folder") in told, told
    assert scene.outside_files() == []
    assert not (scene.outputs / "handoff").exists()
    assert ledger(sim) == paid  # nothing was submitted or downloaded through the link


def test_links_that_stay_inside_the_project_are_followed(
        tmp_path: Path, sim: RunningSimulator) -> None:
    """An outputs folder linked to another folder of the project works like a real one."""
    root = tmp_path.resolve() / "project"
    (root / "manifests").mkdir(parents=True)
    (root / "manifests" / "one.yaml").write_text(MANIFEST)
    (root / "store").mkdir()
    (root / "outputs").symlink_to("store")
    first = imgspec("run", "manifests/one.yaml", cwd=root, sim=sim)
    assert first.returncode == 0, first.stdout + first.stderr
    made = sorted(p.name for p in (root / "store" / "one").rglob("*.png"))
    assert made == ["0.png", "1.png"]
    lock = json.loads((root / "manifests" / "one.lock.json").read_text())
    (key, entry), = lock["entries"].items()
    (root / "manifests" / "one.review.yaml").write_text(
        "version: 1\ndecisions:\n"
        f"  - key: {json.dumps(key)}\n    image: 1\n"
        f"    sha256: {entry['outputs'][1]['sha256']}\n    verdict: pick\n")
    for args in (("verify", "manifests/one.yaml"), ("gallery", "manifests/one.yaml"),
                 ("export", "manifests/one.yaml", "--picked", str(tmp_path / "handoff"))):
        done = imgspec(*args, cwd=root)
        assert done.returncode == 0, f"{args[0]}: {done.stdout}{done.stderr}"
    assert list((root / "store" / "one" / "_thumbs").rglob("*.jpg"))
    assert sorted(p.name for p in (tmp_path / "handoff").rglob("*") if p.is_file()) == [
        "1.png", "meta.json"]
    assert ledger(sim)["images_charged"] == 2


def test_a_run_refuses_a_linked_job_folder_before_it_pays(
        tmp_path: Path, sim: RunningSimulator) -> None:
    """A job folder that links outside before the first run: refused, nothing submitted."""
    root = tmp_path.resolve() / "project"
    (root / "manifests").mkdir(parents=True)
    (root / "manifests" / "one.yaml").write_text(MANIFEST)
    outside = tmp_path.resolve() / "outside"
    outside.mkdir()
    (root / "outputs" / "one").mkdir(parents=True)
    (root / "outputs" / "one" / "pic").symlink_to(outside)
    done = imgspec("run", "manifests/one.yaml", cwd=root, sim=sim)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{root / 'outputs' / 'one' / 'pic'} is a symbolic link to {outside}" in done.stderr
    assert list(outside.iterdir()) == []
    assert ledger(sim)["submissions"] == 0
