"""``import imgspec`` as installed: typed (py.typed) for mypy --strict, and in the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import imgspec
import pipeline.api

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plan_and_run.py"


def test_the_example_passes_mypy_strict_against_the_installed_package(tmp_path: Path) -> None:
    """mypy --strict on the example, outside the checkout: imgspec is found installed, typed."""
    script = tmp_path / "plan_and_run.py"
    shutil.copy(EXAMPLE, script)
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(tmp_path / "cache"), "--config-file", os.devnull, str(script)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found in 1 source file" in done.stdout


def test_the_wheel_ships_imgspec_and_both_py_typed_markers(tmp_path: Path) -> None:
    """pip wheel: imgspec/__init__.py, imgspec/py.typed and pipeline/py.typed are in it."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
         str(ROOT)], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("imgspec-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"imgspec/__init__.py", "imgspec/py.typed", "pipeline/py.typed",
            "pipeline/api/__init__.py"} <= names


def test_imgspec_exports_exactly_what_it_lists() -> None:
    """Every name in imgspec.__all__ resolves, and every API function is among them."""
    missing = [name for name in imgspec.__all__ if not hasattr(imgspec, name)]
    assert missing == []
    assert set(pipeline.api.__all__) <= set(imgspec.__all__)
