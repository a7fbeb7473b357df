"""imgspec init (starter manifest, merge driver, idempotent) and lock merge on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.operations.scaffold import ATTRIBUTE, DRIVER
from tests.teams.conftest import ROOT, TIMEOUT, Repo, make_env

ENTRY: dict[str, Any] = {
    "job": "gen", "fingerprint": "sha256:aa", "status": "done", "request": {}, "matrix": {},
    "seed": None, "idempotency_key": "imgspec-1", "task_id": "task_1", "attempts": 1,
    "last_error": None, "cost": 0.2, "created_at": None,
    "updated_at": "2026-01-01T00:00:00Z",
    "outputs": [{"path": "../outputs/shop/gen/x/0.png", "sha256": "a" * 64, "bytes": 3,
                 "width": 1, "height": 1}],
}


def lockfile(path: Path, **entries: Any) -> Path:
    """Write a lockfile holding ``entries``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "generator": "imgspec", "manifest": "shop.yaml",
                                "entries": entries}, indent=2))
    return path


def imgspec(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This checkout's imgspec in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=TIMEOUT, check=False,
                          env=make_env(cwd / ".shims"))


def test_init_scaffolds_registers_and_is_idempotent(repo: Repo) -> None:
    """init creates a valid starter manifest, the attribute and the driver; a second init
    changes nothing and says so."""
    repo.write(".gitattributes", "*.png binary")
    first = repo.imgspec("init")
    assert first.returncode == 0, first.stderr
    assert "created   starter manifest" in first.stdout
    assert repo.imgspec("validate", "manifests/example.yaml").returncode == 0
    assert (repo.root / ".gitattributes").read_text() == f"*.png binary\n{ATTRIBUTE}\n"
    assert repo.git("config", "--local", "merge.imgspec.driver").stdout.strip() == DRIVER
    assert repo.git("check-attr", "merge", "manifests/shop.lock.json").stdout.strip() == (
        "manifests/shop.lock.json: merge: imgspec")
    config = (repo.root / ".git" / "config").read_text()

    second = repo.imgspec("init")

    assert second.returncode == 0
    assert "created" not in second.stdout
    assert "updated" not in second.stdout
    assert second.stdout.count("unchanged") == 6
    assert (repo.root / ".gitattributes").read_text() == f"*.png binary\n{ATTRIBUTE}\n"
    assert (repo.root / ".git" / "config").read_text() == config


def test_after_init_a_simulated_run_leaves_only_files_meant_for_git(repo: Repo) -> None:
    """init ignores what runs write: after a --simulate run git sees only the manifest,
    its schema and init's own git files."""
    assert repo.imgspec("init").returncode == 0
    done = repo.imgspec("run", "--simulate", "manifests/example.yaml")
    assert done.returncode == 0, done.stderr
    assert (repo.root / "outputs" / "example.simulate").is_dir()
    status = repo.git("status", "--porcelain", "--untracked-files=all").stdout.split("\n")
    assert sorted(line for line in status if line) == [
        "?? .gitattributes", "?? .gitignore", "?? manifests/example.yaml",
        "?? schemas/manifest.schema.json"]


def test_init_points_the_starter_manifest_at_a_schema_editors_can_read(repo: Repo) -> None:
    """The starter's yaml-language-server line names the file init wrote, which is the
    schema `imgspec schema` prints; a second init over an edited copy restores it."""
    assert repo.imgspec("init").returncode == 0
    manifest = repo.root / "manifests" / "example.yaml"
    first = manifest.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schemas/manifest.schema.json"
    target = (manifest.parent / first.split("=", 1)[1]).resolve()
    printed = repo.imgspec("schema")
    assert printed.returncode == 0
    assert target.read_text() == printed.stdout
    target.write_text("{}")
    again = repo.imgspec("init")
    assert "updated   manifest schema for editors" in again.stdout
    assert target.read_text() == printed.stdout


def test_init_adds_only_the_ignore_lines_missing(repo: Repo) -> None:
    """init keeps the user's .gitignore and appends only what it lacks, once."""
    repo.write(".gitignore", "*.psd\noutputs/\n")
    assert repo.imgspec("init").returncode == 0
    assert repo.imgspec("init").returncode == 0
    lines = (repo.root / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["*.psd", "outputs/"]
    assert lines.count("outputs/") == 1
    assert "*.simulate.lock.json" in lines


def test_init_keeps_an_existing_manifest_and_outside_git_says_what_to_do(
        tmp_path: Path) -> None:
    """A folder with a manifest gets no starter; outside git the driver step is skipped
    with the way forward, and init still exits 0."""
    folder = tmp_path / "plain"
    (folder / "manifests").mkdir(parents=True)
    (folder / "manifests" / "mine.yaml").write_text("version: 1\nname: m\njobs: {}\n")
    done = imgspec(folder, "init")
    assert done.returncode == 0, done.stderr
    assert not (folder / "manifests" / "example.yaml").exists()
    assert "skipped   merge driver" in done.stdout
    assert "run `git init`, then `imgspec init` again" in done.stdout


def test_merge_into_conflict_writes_nothing(tmp_path: Path) -> None:
    """lock merge --into with a conflict exits 1, names the key and leaves every file."""
    one = lockfile(tmp_path / "a.lock.json", **{"gen@x=1": ENTRY})
    other = {**ENTRY, "outputs": [{**ENTRY["outputs"][0], "sha256": "b" * 64}]}
    two = lockfile(tmp_path / "b.lock.json", **{"gen@x=1": other})
    done = imgspec(tmp_path, "lock", "merge", "--into", "all.lock.json", str(one), str(two))
    assert done.returncode == 1
    assert "conflict: gen@x=1: both sides downloaded task task_1" in done.stderr
    assert "nothing was written" in done.stderr
    assert not (tmp_path / "all.lock.json").exists()


def test_merge_into_rebases_output_paths(tmp_path: Path) -> None:
    """A lockfile from another folder keeps naming the same files once merged."""
    source = lockfile(tmp_path / "shards" / "one" / "shop.lock.json", **{"gen@x=1": ENTRY})
    done = imgspec(tmp_path, "lock", "merge", "--into", "manifests/shop.lock.json",
                   str(source))
    assert done.returncode == 0, done.stderr
    merged = json.loads((tmp_path / "manifests" / "shop.lock.json").read_text())
    path = merged["entries"]["gen@x=1"]["outputs"][0]["path"]
    assert path == "../shards/outputs/shop/gen/x/0.png"


def test_merge_usage_errors(tmp_path: Path) -> None:
    """Two files without --into, or --into without inputs, are usage errors (exit 2)."""
    a = lockfile(tmp_path / "a.lock.json")
    assert imgspec(tmp_path, "lock", "merge", str(a), str(a)).returncode == 2
    assert imgspec(tmp_path, "lock", "merge", "--into", str(a)).returncode == 2
    missing = imgspec(tmp_path, "lock", "merge", "--into", "x.lock.json", "nope.lock.json")
    assert missing.returncode == 2
    assert "no such lockfile: nope.lock.json" in missing.stderr


def test_shim_runs_this_checkout(tmp_path: Path) -> None:
    """`imgspec` in the tests' PATH is this checkout's code (what the merge driver runs)."""
    env = make_env(tmp_path / "shims")
    done = subprocess.run(["imgspec", "lock", "--help"], env=env, text=True,
                          capture_output=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    assert "merge" in done.stdout
    assert env["PYTHONPATH"] == str(ROOT)
