"""The layers hold: the pure core imports no I/O module, directly or through another."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"

# The pure core: data in, data out. Files reach it only through a ``Workspace`` (the
# port ``workspace.py`` defines); no clock, no network, no process.
CORE = (
    "core.apimart.models", "core.manifest.diagnostics", "core.planning.diff",
    "core.manifest.document", "errors", "core.expansion.expand", "core.expansion.fanout",
    "core.manifest.graph", "core.expansion.identity", "core.apimart.images",
    "core.expansion.instances", "core.lock.lifecycle", "core.lock.lockfile", "core.lock.merge",
    "core.lock.schema", "core.manifest.load", "core.expansion.matrix", "core.planning.pacing",
    "core.planning.plan", "core.planning.polling", "core.apimart.prices",
    "core.apimart.replies", "core.expansion.reroll", "core.apimart.rules",
    "core.manifest.schema", "core.planning.selection", "core.manifest.model",
    "core.templates.bounds", "core.templates.sandbox", "core.templates.render",
    "core.apimart.links", "core.lock.moves", "core.lock.reuse", "views.balance", "views.diff",
    "views.graph", "views.plan", "views.status", "views.teams", "views.reference",
    "shell.http.endpoint",
)
# The shell: the modules that talk to disks, networks, processes and clocks.
SHELL = frozenset({
    "cli.main", "shell.http.client", "operations.run.executor", "shell.store.files",
    "operations.gallery.site", "shell.store.gitspec", "shell.store.guard",
    "operations.housekeeping", "shell.store.journal", "operations.run.eventloop",
    "operations.merge_driver", "shell.store.outputs", "operations.project",
    "shell.http.retrying", "operations.gallery.server", "operations.run.run",
    "operations.scaffold", "operations.run.scheduler", "shell.http.sendable",
    "operations.shards", "simulator", "shell.http.uploads", "views.progress",
    "shell.http.downloads", "shell.http.gates", "operations.spend", "operations.relocate",
    "shell.store.confine", "operations.adopt", "shell.store.reuse_scan",
    "shell.store.store", "shell.store.layout", "shell.store.objectstore",
})
# Libraries that do I/O or run an event loop: none of them in the core.
IO_LIBRARIES = frozenset({
    "aiohttp", "asyncio", "httpx", "httpx_aiohttp", "rich", "shutil", "socket", "stamina",
    "subprocess", "tempfile", "threading",
})


@cache
def imports_of(module: str) -> tuple[frozenset[str], frozenset[str]]:
    """(pipeline modules, top-level foreign modules) that ``module`` imports anywhere in it."""
    path = PACKAGE.joinpath(*module.split("."))
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(source.read_text(encoding="utf-8"))
    ours: set[str] = set()
    foreign: set[str] = set()
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue  # imports for type checking only never run
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "pipeline":
                names = [f"pipeline.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("pipeline."):
                ours.add(name.removeprefix("pipeline."))
            else:
                foreign.add(name.split(".")[0])
    return frozenset(ours), frozenset(foreign)


def reachable(module: str) -> set[str]:
    """Every pipeline module ``module`` imports, transitively."""
    seen: set[str] = set()
    stack = [module]
    while stack:
        for found in imports_of(stack.pop())[0]:
            name = found if PACKAGE.joinpath(*found.split(".")).with_suffix(".py").exists() \
                or PACKAGE.joinpath(*found.split(".")).is_dir() else found.rsplit(".", 1)[0]
            if name not in seen:
                seen.add(name)
                stack.append(name)
    return seen


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_shell_module(module: str) -> None:
    """A core module reaches no shell module through any chain of imports."""
    shell = {m for m in reachable(module) if m in SHELL or m.split(".")[0] in SHELL}
    assert not shell, f"{module} imports {sorted(shell)}"


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_io_library(module: str) -> None:
    """Neither a core module nor anything it imports uses a networking or I/O library."""
    for name in {module, *reachable(module)}:
        used = imports_of(name)[1] & IO_LIBRARIES
        assert not used, f"{module} reaches {name}, which imports {sorted(used)}"


def test_every_module_is_placed() -> None:
    """Each module of the package is named core or shell here (or is a known other room)."""
    others = {
        "__init__", "__main__", "operations.run.events", "operations.gallery.model",
        "operations.gallery.review", "views", "shell.store.workspace",
        "operations.gallery.page", "cli", "core", "core.apimart", "core.expansion", "core.lock",
        "core.manifest", "core.planning", "core.templates", "operations", "operations.gallery",
        "operations.run", "shell", "shell.http", "shell.store"
    }
    found = {p.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
             for p in PACKAGE.rglob("*.py") if "simulator" not in p.parts}
    found = {m.removesuffix(".__init__") for m in found}
    unplaced = found - set(CORE) - SHELL - others
    assert not unplaced, f"place these in CORE or SHELL: {sorted(unplaced)}"
