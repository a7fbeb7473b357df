"""Where a manifest's lockfile and outputs live, and the load → expand → plan pipeline.

This is the seam between the pure core and the shell: it reads the manifest
and the lockfile from disk, checks which recorded outputs still exist, and
hands plain values to the core.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from pipeline.errors import ManifestError
from pipeline.expand import Expansion, expand
from pipeline.journal import fold_journal, journal_path, read_journal
from pipeline.lockfile import Lockfile, Output, lockfile_path, read_lockfile
from pipeline.manifest import load_manifest
from pipeline.model import Manifest
from pipeline.outputs import OutputFolder
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

    def output_folder(self) -> OutputFolder:
        """The output folder, with the lockfile's folder its stored paths are relative to."""
        return OutputFolder(self.outputs, self.base)


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
    """Lockfile and output folder for a manifest (``--simulate`` keeps separate ones).

    ``output_dir:`` is confined to the project, like includes and input images: a
    manifest from someone else cannot make a run write (or replace files) anywhere.
    """
    root = project_root(manifest_path)
    if manifest.output_dir is not None:
        outputs = (manifest_path.parent / manifest.output_dir).resolve()
        if outputs != root and root not in outputs.parents:
            raise ManifestError([manifest.document.diagnostic(
                ("output_dir",), f"{manifest.output_dir!r} resolves to {outputs}, outside "
                f"the project {root}",
                "give a folder inside the project (relative to the manifest), e.g. "
                f"output_dir: ../outputs/{manifest.name}")])
    else:
        outputs = root / "outputs" / manifest.name
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
    folder = paths.output_folder()
    folder.check_entries(lock.entries.values())
    plan = make_plan(expansion, lock, present=intact_on_disk(folder), max_cost=max_cost,
                     now=time.time())
    return Prepared(manifest, workspace, expansion, lock, plan, paths)


def intact_on_disk(folder: OutputFolder) -> Callable[[Output], bool]:
    """The plan's predicate: a recorded output is a regular file of the recorded size.

    Size, not hash: one ``stat`` per output keeps planning 100,000 instances fast,
    and catches truncated and half-written files; ``imgspec verify`` hashes.
    """

    def present(output: Output) -> bool:
        full = folder.confined(output.path)
        if full is None:
            return False
        try:
            info = os.stat(full)  # noqa: PTH116 (once per output, 100,000s of times)
        except OSError:
            return False
        return stat.S_ISREG(info.st_mode) and info.st_size == output.bytes

    return present
