"""The layers hold, checked by the project's own tools: ``lint-imports`` (import-linter,
the contracts in pyproject's ``[tool.importlinter]``) passes, and it fails on a copy of
the package whose core imports an I/O library, ``os`` or a shell module, or closes an
import circle; ruff refuses a core module that reads a file through ``pathlib.Path``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(sys.executable).parent
# A leaf of the core: what it imports today is only the standard library and errors.
CORE_MODULE = Path("pipeline/core/apimart/models.py")
LAYERS = "cli > api | views > operations > simulator > shell > core > errors"
CORE_PURE = "the core imports no I/O library and no file access"
NO_CIRCLES = "no import circle between the packages or modules of one folder"


def run_tool(name: str, *args: str, root: Path) -> subprocess.CompletedProcess[str]:
    """The real ``name`` command (installed beside this Python) run in ``root``, whose
    ``pipeline`` package is the one it reads."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(TOOLS / name), *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def copy_with(tmp_path: Path, added: str) -> Path:
    """The package and its pyproject.toml, copied into ``tmp_path``, with ``added`` put
    at the top of a core module (after its ``__future__`` import)."""
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    module = tmp_path / CORE_MODULE
    head = "from __future__ import annotations\n"
    text = module.read_text(encoding="utf-8")
    assert head in text
    module.write_text(text.replace(head, head + added, 1), encoding="utf-8")
    return tmp_path


def test_lint_imports_passes() -> None:
    """Every import-linter contract of pyproject.toml is kept by the package as it is."""
    done = run_tool("lint-imports", "--no-cache", root=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(("added", "contract", "message", "culprit"), [
    ("import aiohttp\n", CORE_PURE, "pipeline.core is not allowed to import aiohttp",
     "pipeline.core.apimart.models -> aiohttp"),
    ("import os\n\n\ndef peek(path: str) -> int:\n    return os.open(path, os.O_RDONLY)\n",
     CORE_PURE, "pipeline.core is not allowed to import os", "pipeline.core.apimart.models -> os"),
    ("from pipeline.shell.store import files\n", LAYERS,
     "pipeline.core is not allowed to import pipeline.shell",
     "pipeline.core.apimart.models -> pipeline.shell.store"),
    # prices.py imports the catalogue from models.py: this closes a circle.
    ("from pipeline.core.apimart import prices\n", NO_CIRCLES,
     "No cycles are allowed in pipeline.core.apimart", ".prices -> .models"),
], ids=["aiohttp", "os.open", "shell", "circle"])
def test_lint_imports_catches_a_core_module_that_breaks_a_contract(
        tmp_path: Path, added: str, contract: str, message: str, culprit: str) -> None:
    """A core module that imports aiohttp, uses os.open, imports a shell module or closes
    an import circle breaks the contract that forbids it, and lint-imports names it."""
    done = run_tool("lint-imports", "--no-cache", root=copy_with(tmp_path, added))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{contract} BROKEN" in done.stdout
    assert message in done.stdout
    assert culprit in done.stdout


def test_ruff_refuses_a_core_module_that_reads_a_file_through_pathlib(tmp_path: Path) -> None:
    """``pathlib.Path`` (whose methods read files) is banned in the core; PurePath is not."""
    added = ("from pathlib import Path, PurePath\n\n\n"
             "def peek(path: str) -> str:\n"
             "    return Path(path).read_text() + PurePath(path).name\n")
    root = copy_with(tmp_path, added)
    done = run_tool("ruff", "check", "--no-cache", "--select", "TID251", str(CORE_MODULE),
                    root=root)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "TID251 `pathlib.Path` is banned: the core reads no file" in done.stdout
    assert done.stdout.count("TID251") == 1
