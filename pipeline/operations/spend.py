"""Money is the account's: which tasks the project's lockfiles already record as paid.

A submission the API answers with a task that another lockfile of the project (the
lockfile of another manifest, a shard's, or another entry of this one) already
records is not a second charge: the run records it as charged 0 here, with a note of
where it was paid (``lifecycle.paid_elsewhere``). This module finds those records;
it reads lockfiles and nothing else, and never writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.lock.lockfile import Lockfile
from pipeline.errors import LockfileError
from pipeline.operations.context import project_root
from pipeline.shell.store.lockstore import read_lockfile

SIMULATED = ".simulate.lock.json"


def paid_tasks(lock_path: Path, lock: Lockfile, *, manifest: Path) -> dict[str, str]:
    """Task id → where it is recorded as paid, over the project's lockfiles.

    ``lock`` is this lockfile's current state (its entries and retired records count
    too). A ``--simulate`` lockfile has an account of its own (the simulated API's
    state beside it), so only its own records apply; a real one is compared with the
    project's other real lockfiles only. A lockfile that cannot be read is passed
    over: it would only have saved a note, never cost money.
    """
    root = project_root(manifest)
    own = _shown(lock_path, root)
    found: dict[str, str] = {}
    if not lock_path.name.endswith(SIMULATED):
        for path in _lockfiles(lock_path, root):
            try:
                other = read_lockfile(path)
            except LockfileError:
                continue
            found.update(_paid(other, _shown(path, root)))
    found.update(_paid(lock, own))
    return found


def _paid(lock: Lockfile, shown: str) -> Iterator[tuple[str, str]]:
    """(task id, where) of every payment ``lock`` records."""
    for entry in lock.entries.values():
        if entry.task_id is not None and entry.charged > 0 and entry.paid_by is None:
            yield entry.task_id, f"{shown}: {entry.key}"
    for record in lock.retired:
        if record.task_id is not None:
            yield record.task_id, f"{shown}: {record.key} (pruned)"


def _lockfiles(lock_path: Path, root: Path) -> list[Path]:
    """The real lockfiles beside this one and under the project's ``manifests/``."""
    folders = {lock_path.parent.resolve()}
    manifests = root / "manifests"
    found: set[Path] = set()
    for folder in folders:
        found.update(folder.glob("*.lock.json"))
    if manifests.is_dir():
        found.update(manifests.rglob("*.lock.json"))
    mine = lock_path.resolve()
    return sorted(p for p in found
                  if p.resolve() != mine and not p.name.endswith(SIMULATED) and p.is_file())


def _shown(path: Path, root: Path) -> str:
    """A lockfile as a note names it: relative to the project when inside it."""
    try:
        return Path(os.path.relpath(path.resolve(), root)).as_posix()
    except ValueError:
        return str(path)
