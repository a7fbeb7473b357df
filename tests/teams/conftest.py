"""Teams-in-git fixtures: real git repositories in temporary folders, imgspec in subprocesses.

``imgspec`` on the PATH of these subprocesses is a shim that runs this checkout's
code (``sys.executable -m pipeline`` with PYTHONPATH set), so a merge driver
registered by ``imgspec init`` (``imgspec lock merge ...``) runs the code under
test when ``git merge`` calls it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import KEY, project, sim, start_sim  # noqa: F401 (fixtures)
from tests.unit.conftest import build  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120  # seconds: guards against a hang only


@dataclass
class Repo:
    """A git repository with imgspec available as ``imgspec`` on its PATH."""

    root: Path
    env: dict[str, str]

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run git in the repository."""
        done = subprocess.run(["git", *args], cwd=self.root, env=self.env, text=True,
                              capture_output=True, timeout=TIMEOUT, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def imgspec(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run imgspec (this checkout's) in the repository."""
        return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=self.root,
                              env=self.env, text=True, capture_output=True, timeout=TIMEOUT,
                              check=False)

    def write(self, relpath: str, text: str) -> None:
        """Write a file of the work tree."""
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def commit(self, message: str) -> None:
        """Stage everything and commit."""
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def lock(self, relpath: str = "manifests/shop.lock.json") -> dict[str, Any]:
        """A lockfile's JSON."""
        data: dict[str, Any] = json.loads((self.root / relpath).read_text())
        return data


def make_env(shims: Path) -> dict[str, str]:
    """The environment of imgspec and git subprocesses: this checkout's code first on PATH."""
    shims.mkdir(parents=True, exist_ok=True)
    shim = shims / "imgspec"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pipeline "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({
        "PATH": f"{shims}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "APIMART_API_KEY": KEY,
        # Never read the user's global git configuration, never write it.
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(shims),
    })
    return env


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    """An empty git repository (branch main, a test identity in its own config)."""
    env = make_env(tmp_path / "shims")
    which = subprocess.run(["sh", "-c", "command -v imgspec"], env=env, text=True,
                           capture_output=True, check=True, timeout=TIMEOUT)
    assert which.stdout.strip() == str(tmp_path / "shims" / "imgspec")
    root = tmp_path / "repo"
    root.mkdir()
    made = Repo(root, env)
    made.git("init", "-q", "-b", "main")
    made.git("config", "user.name", "Test")
    made.git("config", "user.email", "test@example.com")
    made.git("config", "commit.gpgsign", "false")
    made.write(".gitignore", "outputs/\n*.journal\n*.guard\n")
    yield made
    shutil.rmtree(root, ignore_errors=True)
