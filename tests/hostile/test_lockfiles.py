"""Hostile lockfiles and journals: mutated real ones are read and work, or refused cleanly.

The seed is a lockfile a simulated run really wrote (some tasks failing, so done
and failed entries); ``lockfile_mutations`` changes values, types, keys and text.
``bench/fuzz_lockfiles.py`` runs the same mutations by the ten thousand.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from random import Random
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli.main import cli
from pipeline.core.lock.lockfile import parse_lockfile
from pipeline.shell.store.lockstore import journal_path
from tests.hostile.lockfile_mutations import (
    RealProject,
    fold_journal_text,
    journal_of,
    make_real_project,
    mutated_journal,
    mutated_lockfile,
    read_lockfile_text,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> RealProject:
    """The e2e manifest, run once against a fast simulator with some tasks failing."""
    return make_real_project(tmp_path_factory.mktemp("real"))


def test_the_seed_is_a_real_mixed_lockfile(real: RealProject) -> None:
    """The seed lockfile came from a run and holds done entries with outputs (and reads)."""
    lock = parse_lockfile(real.text)
    assert any(e.status == "done" and e.outputs for e in lock.entries.values())
    assert read_lockfile_text(real.text, real.expansion, real.lockfile.parent) is None


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_mutated_lockfiles_are_read_or_refused_cleanly(real: RealProject, rng: Random) -> None:
    """A mutated lockfile is a LockfileError, or is accepted and plans, reports, round-trips."""
    read_lockfile_text(mutated_lockfile(rng, real.text), real.expansion, real.lockfile.parent)


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_mutated_journals_are_folded_or_refused_cleanly(real: RealProject, rng: Random) -> None:
    """A mutated journal folds (and the result works downstream) or is a LockfileError."""
    lock = parse_lockfile(real.text)
    fold_journal_text(lock, mutated_journal(rng, journal_of(lock)), real.expansion,
                      real.lockfile.parent)


@settings(max_examples=max(10, EXAMPLES // 6), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False), journal=st.booleans())
def test_status_and_plan_on_mutated_files_exit_0_1_or_3(real: RealProject, rng: Random,
                                                        journal: bool) -> None:
    """`imgspec status` and `plan` on a mutated lockfile or journal never hit an internal error."""
    with tempfile.TemporaryDirectory() as tmp:
        manifests = Path(tmp) / "manifests"
        shutil.copytree(real.manifest.parent, manifests,
                        ignore=shutil.ignore_patterns("*.lock.json", "*.guard"))
        lock_path = manifests / real.lockfile.name
        if journal:
            lock_path.write_text(real.text, encoding="utf-8")
            text = mutated_journal(rng, journal_of(parse_lockfile(real.text)))
            target = journal_path(lock_path)
        else:
            text = mutated_lockfile(rng, real.text)
            target = lock_path
        # Lone surrogates cannot be UTF-8: as bytes they are an undecodable file.
        target.write_bytes(text.encode("utf-8", "surrogatepass"))
        for command in ("status", "plan"):
            result = CliRunner().invoke(cli, [command, str(manifests / "shop.yaml")])
            assert result.exit_code in (0, 1, 3), result.output
            assert "internal error" not in result.output
            assert result.exception is None or isinstance(result.exception, SystemExit)


# --- the issue's values, through the real command line ------------------------------------


def project_copy(real: RealProject, root: Path) -> Path:
    """A copy of the real project's manifests folder (with its lockfile) under ``root``."""
    shutil.copytree(real.manifest.parent, root / "manifests",
                    ignore=shutil.ignore_patterns("*.guard"))
    return root / "manifests" / "shop.yaml"


def imgspec(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline ARGS` with this worktree's code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("IMGSPEC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


def set_field(lock_path: Path, key: str, field: str, token: str, *, output: int | None = None
              ) -> None:
    """Set ``field`` of entry ``key`` (or of its output ``output``) to the raw JSON ``token``."""
    data: dict[str, Any] = json.loads(lock_path.read_text(encoding="utf-8"))
    target = data["entries"][key]
    if output is not None:
        target = target["outputs"][output]
    target[field] = "@@token@@"
    lock_path.write_text(json.dumps(data, indent=2).replace('"@@token@@"', token),
                         encoding="utf-8")


def done_key(real: RealProject) -> str:
    """A done entry of the real lockfile (it has outputs)."""
    lock = parse_lockfile(real.text)
    return next(k for k, e in sorted(lock.entries.items()) if e.status == "done" and e.outputs)


@pytest.mark.parametrize(("field", "token", "what"), [
    ("attempts", "1e400", "attempts: must be a finite number"),
    ("cost", "Infinity", "cost: must be a finite number"),
    ("cost", "NaN", "cost: must be a finite number (found NaN)"),
    ("cost", "-0.5", "cost: must be at least 0"),
    ("task_id", "12345", "task_id: must be a string or null (found 12345)"),
    ("idempotency_key", "12345", "idempotency_key: must be a string or null (found 12345)"),
    ("request", '"a string"', 'request: must be an object (found "a string")'),
    ("matrix", '["a", "list"]', "matrix: must be an object"),
])
def test_status_refuses_each_issue_value_naming_file_entry_and_field(
        real: RealProject, tmp_path: Path, field: str, token: str, what: str) -> None:
    """`imgspec status` exits 1 with FILE:LINE:COL, the entry, the field and a fix; no traceback."""
    manifest = project_copy(real, tmp_path)
    key = done_key(real)
    set_field(manifest.with_name("shop.lock.json"), key, field, token)
    result = imgspec("status", str(manifest))
    assert result.returncode == 1, result.stderr
    assert re.search(rf"shop\.lock\.json:\d+:\d+: entry \"{re.escape(key)}\": "
                     rf"{re.escape(what)}", result.stderr), result.stderr
    assert "restore the lockfile from git" in result.stderr
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr


@pytest.mark.parametrize(("command", "field", "token", "what"), [
    ("plan", "width", "1e400", "outputs[0].width: must be a finite number"),
    ("plan", "path", '"/home/me/thesis.txt"', "outputs[0].path: \"/home/me/thesis.txt\" is "
                                               "absolute"),
    ("plan", "path", '"../outputs/shop/../../../home/thesis.txt"',
     "outputs[0].path: \"../outputs/shop/../../../home/thesis.txt\" has a '..' segment"),
    ("prune", "path", '"..\\\\..\\\\home\\\\thesis.txt"',
     'outputs[0].path: "..\\\\..\\\\home\\\\thesis.txt" contains a backslash'),
])
def test_plan_and_prune_refuse_bad_outputs(real: RealProject, tmp_path: Path, command: str,
                                           field: str, token: str, what: str) -> None:
    """An output path outside the format, or an overflowing width, stops plan/prune (exit 1)."""
    manifest = project_copy(real, tmp_path)
    key = done_key(real)
    lock_path = manifest.with_name("shop.lock.json")
    set_field(lock_path, key, field, token, output=0)
    before = lock_path.read_bytes()
    result = imgspec(command, str(manifest))
    assert result.returncode == 1, result.stderr
    assert f'entry "{key}": {what}' in result.stderr
    assert "Traceback" not in result.stderr
    assert lock_path.read_bytes() == before  # nothing was rewritten


def test_damaged_journal_line_is_named_by_status_and_plan(real: RealProject,
                                                          tmp_path: Path) -> None:
    """A journal line with a bad value (not a torn end) is exit 1 naming line, entry, field."""
    manifest = project_copy(real, tmp_path)
    lock = parse_lockfile(real.text)
    lines = journal_of(lock)
    record = json.loads(lines[0])
    record["entry"]["attempts"] = "@@"
    lines[0] = json.dumps(record).replace('"@@"', "1e400") + "\n"
    journal = manifest.with_name("shop.lock.journal")
    journal.write_text("".join(lines), encoding="utf-8")
    for command in ("status", "plan"):
        result = imgspec(command, str(manifest))
        assert result.returncode == 1, result.stderr
        assert re.search(r"shop\.lock\.journal:1: journal line is damaged \(entry \"[^\"]+\": "
                         r"attempts: must be a finite number", result.stderr), result.stderr
        assert "Traceback" not in result.stderr
    journal.write_text("".join(lines[1:]) + lines[0][:50], encoding="utf-8")  # a torn end
    assert imgspec("status", str(manifest)).returncode == 0
