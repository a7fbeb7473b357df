"""The pre-commit hooks, run by the real pre-commit tool against a temporary repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.teams.conftest import ROOT, Repo

# pre-commit builds the hooks' own environment (pip installs this checkout into it).
INSTALL_TIMEOUT = 600


@pytest.mark.timeout(INSTALL_TIMEOUT + 60)
def test_pre_commit_hooks_catch_a_broken_manifest_and_a_broken_lockfile(
        repo: Repo, tmp_path: Path) -> None:
    """imgspec-validate fails on a broken manifest and imgspec-lockfile on a broken
    lockfile, each naming the file; a valid manifest beside them passes."""
    assert repo.imgspec("init").returncode == 0
    repo.write("manifests/broken.yaml", "version: 1\nname: b\njobs:\n  a:\n    n: 99\n")
    repo.write("manifests/broken.lock.json", '{"version": 1, "entries": []}\n')
    repo.git("add", "-A")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    done = subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "--all-files"],
        cwd=repo.root, env=env, text=True, capture_output=True, timeout=INSTALL_TIMEOUT,
        check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "imgspec validate (manifests)" in out
    assert "manifests/broken.yaml:5:8: error: jobs.a.n:" in out
    assert "manifests/broken.lock.json" in out
    assert "manifests/example.yaml: valid" in out
