"""Where a manifest's lockfile and outputs live, and the load → expand → plan pipeline.

This is the seam between the pure core and the shell: it reads the manifest
and the lockfile from disk, checks which recorded outputs still exist, and
hands plain values to the core.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from pipeline.expand import Expansion, expand
from pipeline.journal import fold_journal, journal_path, read_journal
from pipeline.lockfile import Lockfile, lockfile_path, read_lockfile
from pipeline.manifest import load_manifest
from pipeline.model import Manifest
from pipeline.plan import Plan, make_plan
from pipeline.workspace import DirectoryWorkspace


@dataclass(frozen=True, slots=True)
class Paths:
    """The files that belong to one manifest."""

    manifest: Path
    lockfile: Path
    outputs: Path  # outputs/<name> (or output_dir:), holding one folder per job

    @property
    def base(self) -> Path:
        """Output paths in the lockfile are relative to the lockfile's folder."""
        return self.lockfile.parent


def project_root(manifest_path: Path) -> Path:
    """The project that holds the manifest: the parent of an enclosing ``manifests/`` folder.

    Outputs follow from the manifest's location, not from the current directory.
    """
    folder = manifest_path.resolve().parent
    for candidate in (folder, *folder.parents):
        if candidate.name == "manifests":
            return candidate.parent
    return folder


def paths_for(manifest_path: Path, manifest: Manifest, *, simulate: bool = False) -> Paths:
    """Lockfile and output folder for a manifest (``--simulate`` keeps separate ones)."""
    if manifest.output_dir is not None:
        outputs = (manifest_path.parent / manifest.output_dir).resolve()
    else:
        outputs = project_root(manifest_path) / "outputs" / manifest.name
    if simulate:
        outputs = outputs.with_name(outputs.name + ".simulate")
    return Paths(manifest_path, lockfile_path(manifest_path, simulate=simulate), outputs)


def current_lock(lock_path: Path, *, manifest: str) -> Lockfile:
    """The lockfile with any journal a crashed run left folded in (read-only: nothing written)."""
    lock = read_lockfile(lock_path, manifest=manifest)
    journal = journal_path(lock_path)
    text = read_journal(journal)
    return lock if text is None else fold_journal(lock, text, source=str(journal))


@dataclass(frozen=True)
class Prepared:
    """Everything ``plan`` and ``run`` need: manifest, expansion, lockfile, plan, paths."""

    manifest: Manifest
    workspace: DirectoryWorkspace
    expansion: Expansion
    lock: Lockfile
    plan: Plan
    paths: Paths


def prepare(
    manifest_path: Path, *, simulate: bool = False, max_cost: Decimal | None = None
) -> Prepared:
    """Load, validate, expand and plan a manifest against its lockfile."""
    manifest, workspace = load_manifest(manifest_path)
    expansion = expand(manifest, workspace)
    paths = paths_for(manifest_path, manifest, simulate=simulate)
    lock = current_lock(paths.lockfile, manifest=manifest_path.name)
    base = str(paths.base)

    def present(relpath: str) -> bool:
        # os.path over pathlib: this runs once per recorded output, 100,000s of times.
        return os.path.isfile(os.path.join(base, relpath))  # noqa: PTH113, PTH118

    plan = make_plan(expansion, lock, present=present, max_cost=max_cost)
    return Prepared(manifest, workspace, expansion, lock, plan, paths)
