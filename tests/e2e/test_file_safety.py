"""Files on disk after hostile or unlucky moments: a writer killed mid-write leaves no
temp file behind the next command, a live writer's temp file is left alone, files
respect the umask, and inputs that are not regular files are refused without blocking."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import IMAGES, KEY, ROOT, Project
from tests.gallery.helpers import REROLLED, Server, imgspec, lock_entries, storefronts

# A name ``write_atomic`` could give a temp file of ``target`` (8 characters of its
# alphabet), as a write killed before its rename leaves it.
KILLED = "k1lled_0"
GUARD = 60.0  # seconds: a hang guard, never a timing assertion

# Writes ``argv[3]`` to ``argv[2]`` through the real write_atomic, pausing after the first
# piece: says "writing" and waits for a line on stdin before writing the rest.
WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from pipeline.shell.store.files import write_atomic

    def pieces():
        yield sys.argv[3][:10]
        print("writing", flush=True)
        sys.stdin.readline()
        yield sys.argv[3][10:]

    write_atomic(Path(sys.argv[2]), pieces())
    print("written", flush=True)
""")


def leave_temp(target: Path) -> Path:
    """The temp file a write of ``target`` killed before its rename leaves: half a text."""
    temp = target.with_name(f".{target.name}.{KILLED}.tmp")
    temp.write_text('{"version": 1, "entr')
    return temp


def temps(folder: Path) -> list[str]:
    """The temp files of atomic writes in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def cli(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, run from the project's root."""
    env = {**os.environ, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=project.root,
                          env=env, text=True, capture_output=True, timeout=120, check=False)


def run(project: Project, sim: RunningSimulator) -> subprocess.CompletedProcess[str]:
    """`imgspec run` of the project against ``sim``, from the project's root."""
    done = cli(project, "run", "manifests/shop.yaml", "--base-url", sim.base_url, "--yes")
    assert done.returncode == 0, done.stderr
    return done


def images_on_disk(project: Project) -> int:
    """The images in the project's output folder."""
    return len(list(project.outputs.rglob("*.png")))


class Writer:
    """A process in the middle of ``write_atomic(target, text)``: the real function,
    paused after its first piece (so the temp file exists and is held)."""

    def __init__(self, target: Path, text: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(ROOT), str(target), text],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "writing\n"

    def finish(self) -> str:
        """Let it write the rest and rename; what it printed then."""
        out, err = self.process.communicate("go\n", timeout=GUARD)
        assert self.process.returncode == 0, err
        return out

    def kill(self) -> None:
        """SIGKILL it where it is, inside write_atomic."""
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=GUARD)
        assert self.process.returncode == -signal.SIGKILL


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Commands started meanwhile run under umask 022 (a team's usual)."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


# -- temp files left by killed writes --------------------------------------------------


def test_a_write_killed_mid_way_leaves_no_temp_file_after_the_next_run(
        project: Project, sim: RunningSimulator) -> None:
    """A process SIGKILLed inside write_atomic of the lockfile leaves its temp file; the
    next run removes it, and the lockfile it did not replace is intact."""
    run(project, sim)
    before = project.lockfile.read_text()
    writer = Writer(project.lockfile, json.dumps({"version": 1, "entries": {}}))
    assert len(temps(project.lockfile.parent)) == 1
    writer.kill()
    assert len(temps(project.lockfile.parent)) == 1  # the kill left it
    assert project.lockfile.read_text() == before
    run(project, sim)
    assert temps(project.lockfile.parent) == []
    assert sim.ledger().images_charged == images_on_disk(project) == IMAGES


def test_a_live_writers_temp_file_is_left_alone(project: Project,
                                                sim: RunningSimulator) -> None:
    """A run that writes index.json while another process is still writing it removes
    nothing of that writer's: its write completes, and only then is the temp file gone."""
    run(project, sim)
    index = project.outputs / "index.json"
    writer = Writer(index, json.dumps({"written": "by the other process"}))
    (theirs,) = temps(project.outputs)
    run(project, sim)
    assert temps(project.outputs) == [theirs]
    assert writer.finish() == "written\n"
    assert temps(project.outputs) == []
    assert json.loads(index.read_text()) == {"written": "by the other process"}


def test_the_next_run_removes_temp_files_of_killed_lockfile_and_index_writes(
        project: Project, sim: RunningSimulator) -> None:
    """Temp files beside the lockfile and index.json, as killed writes leave them, are
    gone after the next run; files of other names are untouched."""
    run(project, sim)
    leave_temp(project.lockfile)
    leave_temp(project.outputs / "index.json")
    unrelated = project.lockfile.with_name(".notes.txt.tmp")
    unrelated.write_text("mine")
    run(project, sim)
    assert temps(project.lockfile.parent) == [unrelated.name]
    assert temps(project.outputs) == []


def test_prune_removes_the_temp_file_of_a_killed_prune(project: Project,
                                                        sim: RunningSimulator) -> None:
    """A prune killed while writing the lockfile leaves its temp file; the next prune
    removes it."""
    run(project, sim)
    project.edit("  logo:\n", "  logo-gone:\n")
    leave_temp(project.lockfile)
    done = cli(project, "prune", "manifests/shop.yaml")
    assert done.returncode == 0, done.stderr
    assert temps(project.lockfile.parent) == []


def test_lock_merge_into_removes_killed_temps_and_writes_a_relative_manifest(
        project: Project, sim: RunningSimulator) -> None:
    """lock merge --into, after one killed while writing the lockfile and index.json,
    leaves no temp file, and index.json names the manifest by a relative path."""
    run(project, sim)
    shard = project.root / "shards" / "a.lock.json"
    shard.parent.mkdir()
    shard.write_text(project.lockfile.read_text())
    leave_temp(project.lockfile)
    leave_temp(project.outputs / "index.json")
    done = cli(project, "lock", "merge", "--into", "manifests/shop.lock.json",
               "shards/a.lock.json")
    assert done.returncode == 0, done.stderr
    assert temps(project.lockfile.parent) == []
    assert temps(project.outputs) == []
    index = json.loads((project.outputs / "index.json").read_text())
    assert index["manifest"] == "manifests/shop.yaml"


# -- modes ------------------------------------------------------------------------------


def mode(path: Path) -> int:
    """A file's permission bits."""
    return stat.S_IMODE(path.stat().st_mode)


def test_files_written_follow_the_umask(project: Project, sim: RunningSimulator,
                                        umask_022: None) -> None:
    """Under umask 022 the lockfile, index.json and the gallery's index.html are 0644,
    readable by a team sharing the checkout, not 0600."""
    run(project, sim)
    done = cli(project, "gallery", "manifests/shop.yaml")
    assert done.returncode == 0, done.stderr
    assert mode(project.lockfile) == 0o644
    assert mode(project.outputs / "index.json") == 0o644
    assert mode(project.outputs / "index.html") == 0o644
    assert sim.ledger().images_charged == images_on_disk(project) == IMAGES


def test_a_review_decision_follows_the_umask_and_removes_a_killed_write(
        tmp_path: Path, umask_022: None) -> None:
    """A decision in `imgspec review` writes the review file 0644 under umask 022, and
    removes the temp file a killed write of it left."""
    manifest = storefronts(tmp_path)
    imgspec("run", "--simulate", str(manifest), cwd=tmp_path)
    review_file = manifest.with_name("storefronts.review.yaml")
    leave_temp(review_file)
    entry = lock_entries(manifest.with_name("storefronts.simulate.lock.json"))[REROLLED]
    server = Server(manifest)
    try:
        answer = httpx.post(server.url + "api/decide", timeout=30, json={
            "client": "page-of-one", "key": REROLLED, "image": 0,
            "sha256": entry["outputs"][0]["sha256"], "verdict": "pick"})
    finally:
        server.stop()
    assert answer.status_code == 200
    assert mode(review_file) == 0o644
    assert temps(manifest.parent) == []


# -- inputs that are not regular files ---------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_a_fifo_as_input_image_is_refused_not_waited_for(project: Project,
                                                          command: str) -> None:
    """A FIFO where an input image should be: validate and plan say so, naming it, at
    once (opening it would wait for a writer for ever)."""
    image = project.root / "manifests" / "assets" / "mark.png"
    image.unlink()
    os.mkfifo(image)
    done = cli(project, command, "manifests/shop.yaml")
    assert done.returncode == 1
    assert "assets/mark.png: is a FIFO (named pipe), not a regular file" in done.stderr
    assert str(image) in done.stderr


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_a_fifo_as_csv_include_is_refused_not_waited_for(project: Project,
                                                          command: str) -> None:
    """A FIFO named by `matrix: {include: ...}`: refused, naming it, at once."""
    project.edit("      season: [spring, winter]\n",
                 "      season: [spring, winter]\n      include: rows.csv\n")
    rows = project.root / "manifests" / "rows.csv"
    os.mkfifo(rows)
    done = cli(project, command, "manifests/shop.yaml")
    assert done.returncode == 1
    assert "rows.csv: is a FIFO (named pipe), not a regular file" in done.stderr
    assert str(rows) in done.stderr


def test_a_fifo_as_the_lockfile_is_refused_not_waited_for(project: Project) -> None:
    """A FIFO where the manifest's lockfile should be: plan says so, naming it, at once."""
    os.mkfifo(project.lockfile)
    done = cli(project, "plan", "manifests/shop.yaml")
    assert done.returncode != 0
    assert "is a FIFO (named pipe), not a regular file" in done.stderr
    assert "shop.lock.json" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_fifo_as_another_manifests_lockfile_or_meta_is_passed_over(
        project: Project, sim: RunningSimulator) -> None:
    """FIFOs where another manifest's lockfile and a kept folder's meta.json would be:
    the search for paid results leaves them out and the plan still comes, at once."""
    run(project, sim)
    os.mkfifo(project.root / "manifests" / "other.lock.json")
    kept = project.outputs / "kept-folder"
    kept.mkdir(parents=True)
    os.mkfifo(kept / "meta.json")
    project.edit("A logo for", "A round logo for")  # new requests: the search for results runs
    done = cli(project, "plan", "manifests/shop.yaml")
    assert done.returncode == 0, done.stderr
    assert "1 changed" in done.stdout


def test_a_fifo_as_the_review_file_is_refused_not_waited_for(project: Project,
                                                            sim: RunningSimulator) -> None:
    """A FIFO where the review file should be: the gallery says so, naming it, at once."""
    run(project, sim)
    os.mkfifo(project.root / "manifests" / "shop.review.yaml")
    done = cli(project, "gallery", "manifests/shop.yaml")
    assert done.returncode != 0
    assert "shop.review.yaml" in done.stderr
    assert "is a FIFO (named pipe), not a regular file" in done.stderr
    assert "Traceback" not in done.stderr
