"""A project's files beside its manifests: setting it up, schemas, diffs, lockfiles."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pipeline.api.source import DEFAULT_BASE_URL
from pipeline.core.lock.merge import Merged
from pipeline.core.planning.diff import SpecDiff
from pipeline.operations.scaffold import InitResult


def init(folder: str | os.PathLike[str] = ".") -> InitResult:
    """Set ``folder`` up: a starter manifest if it has none, and the lockfile merge driver
    in ``.gitattributes`` and the repository's git config. Safe to rerun."""
    from pipeline.operations.scaffold import init as scaffold

    return scaffold(Path(os.fspath(folder)))


def schema(which: Literal["manifest", "lockfile"] = "manifest") -> str:
    """The JSON Schema (draft 2020-12) of a manifest or of a lockfile, as text."""
    from pipeline.shell.store.schemas import schema_dir

    return (schema_dir() / f"{which}.schema.json").read_text(encoding="utf-8")


def diff(manifest: str | os.PathLike[str], *, against: str = "HEAD") -> SpecDiff:
    """What the working tree's manifest adds, changes and removes against git revision
    ``against``, and what applying it costs."""
    from pipeline.shell.store.gitspec import spec_diff

    return spec_diff(Path(os.fspath(manifest)), against=against)


def check_lockfile(path: str | os.PathLike[str]) -> None:
    """``LockfileError`` unless ``path`` is a lockfile the schema accepts."""
    from pipeline.shell.store.lockstore import read_lockfile

    read_lockfile(Path(os.fspath(path)))


def merge(files: Sequence[str | os.PathLike[str]], *, into: str | os.PathLike[str] | None = None,
          name: str | None = None, base_url: str | None = None) -> Merged:
    """Merge lockfiles entry by entry, losing no paid task (``MergeConflict`` otherwise).

    With ``into``: ``files`` (and ``into`` itself, if it exists) into ``into``.
    Without: ``files`` are git's BASE OURS THEIRS, the result written to OURS.
    Upload URLs off ``base_url``'s site are dropped.
    """
    from pipeline.errors import UsageError
    from pipeline.operations.merge_driver import merge_driver, merge_into

    origin = base_url or DEFAULT_BASE_URL  # as given: only its site is compared
    paths = [Path(os.fspath(f)) for f in files]
    if into is not None:
        return merge_into(Path(os.fspath(into)), paths, base_url=origin)
    if len(paths) == 3:
        base, ours, theirs = paths
        return merge_driver(base, ours, theirs, name=name, base_url=origin)
    raise UsageError("give BASE OURS THEIRS (git's %O %A %B), or --into X and the "
                     "lockfiles to merge into X")
