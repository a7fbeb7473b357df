"""A manifest's files, found once: the lockfile read once per run, ``--lockfile``, broken manifests.

Driven through ``python -m pipeline`` in subprocesses against the simulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import KEY, ROOT, Project

# Runs imgspec with an audit hook that counts how often the lockfile and the journal
# are opened for reading, and prints the counts as JSON on stderr at exit.
COUNTING = """
import atexit, json, os, sys
lock, journal = sys.argv[1], sys.argv[2]
counts = {"lockfile": 0, "journal": 0}
def hook(event, args):
    if event != "open" or not isinstance(args[0], (str, os.PathLike)):
        return
    path, mode, flags = os.fspath(args[0]), args[1], args[2]
    reading = (isinstance(mode, str) and "r" in mode and "+" not in mode) or (
        mode is None and (flags & os.O_ACCMODE) == os.O_RDONLY)
    if not reading:
        return
    for name, wanted in (("lockfile", lock), ("journal", journal)):
        if os.path.abspath(path) == wanted:
            counts[name] += 1
sys.addaudithook(hook)
atexit.register(lambda: print("COUNTS " + json.dumps(counts), file=sys.stderr))
sys.argv = ["imgspec", *sys.argv[3:]]
from pipeline.cli.main import main
main()
"""


def imgspec(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``imgspec ARGS`` from ``cwd`` in a subprocess."""
    env = {**os.environ, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          text=True, capture_output=True, timeout=120, check=False)


def test_a_run_reads_the_lockfile_and_the_journal_once_each(
        project: Project, sim: RunningSimulator) -> None:
    """One run reads the lockfile once and the crash journal once, then plans from memory."""
    first = imgspec("run", str(project.manifest), "--base-url", sim.base_url, "--yes",
                    cwd=project.root)
    assert first.returncode == 0, first.stdout + first.stderr
    journal = project.lockfile.with_name("shop.lock.journal")
    journal.write_text("")  # as a crash leaves it: present, folded in at the next start
    project.edit("A logo for", "An emblem for")
    env = {**os.environ, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", COUNTING, str(project.lockfile), str(journal),
         "run", str(project.manifest), "--base-url", sim.base_url, "--yes"],
        cwd=project.root, env=env, text=True, capture_output=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    counts = json.loads(out.stderr.rsplit("COUNTS ", 1)[1])
    assert counts == {"lockfile": 1, "journal": 1}


def test_verify_and_status_work_on_a_manifest_that_no_longer_validates(
        project: Project, sim: RunningSimulator) -> None:
    """A broken job does not stop verify (files and index) or status (the lockfile)."""
    assert imgspec("run", str(project.manifest), "--base-url", sim.base_url, "--yes",
                   cwd=project.root).returncode == 0
    project.edit("n: 2", "n: 2\n    colour: '{{ undefined_thing }}'")  # unknown field
    assert imgspec("validate", str(project.manifest), cwd=project.root).returncode == 1
    verify = imgspec("verify", str(project.manifest), cwd=project.root)
    assert verify.returncode == 0, verify.stderr
    assert "0 problem(s)" in verify.stdout
    status = imgspec("status", "--json", str(project.manifest), cwd=project.root)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counts"]["done"] == 7


def test_lockfile_option_keeps_a_lockfile_of_its_own(
        project: Project, sim: RunningSimulator) -> None:
    """``--lockfile`` writes and reads that file; the default lockfile is left alone."""
    other = project.root / "shards" / "one.lock.json"
    other.parent.mkdir()
    ran = imgspec("run", "manifests/shop.yaml", "--lockfile", "shards/one.lock.json",
                  "--base-url", sim.base_url, "--yes", cwd=project.root)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert other.is_file()
    assert not project.lockfile.exists()
    plan = imgspec("plan", "--json", "manifests/shop.yaml", "--lockfile",
                   "shards/one.lock.json", cwd=project.root)
    assert {i["status"] for i in json.loads(plan.stdout)["items"]} == {"up-to-date"}
    for command in ("verify", "status", "prune"):
        out = imgspec(command, "manifests/shop.yaml", "--lockfile", "shards/one.lock.json",
                      cwd=project.root)
        assert out.returncode == 0, (command, out.stderr)
    default = imgspec("plan", "--json", "manifests/shop.yaml", cwd=project.root)
    # Nothing recorded in the default lockfile, but the project paid for every request
    # (in the other lockfile): the default's plan reuses them, for nothing.
    assert {i["status"] for i in json.loads(default.stdout)["items"]} == {"reuse"}
