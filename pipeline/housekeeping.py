"""``status``, ``verify`` and ``prune``: reading and tidying what runs have recorded."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pipeline.guard import RunGuard, guard_path
from pipeline.journal import LockStore
from pipeline.lockfile import ENTRY_STATUSES, Lockfile, lockfile_path
from pipeline.outputs import VerifyProblem, verify_outputs
from pipeline.project import current_lock, locate, prepare, read_header

InProgress = Literal["submitting", "running"]


@dataclass(frozen=True)
class StatusReport:
    """What a lockfile says: counts per recorded status, money charged, failures."""

    lockfile: Path
    counts: dict[str, int]
    charged: Decimal  # every paid attempt of every entry, net of refunds
    failed: list[tuple[str, str]]
    in_progress: list[tuple[str, InProgress, str | None]]  # key, status, task id


def status(manifest: Path, *, simulate: bool = False,
           lockfile: Path | None = None) -> StatusReport:
    """Summarise the lockfile (and any journal a crashed run left) without changing them.

    Needs no valid manifest: only the lockfile is read.
    """
    path = lockfile or lockfile_path(manifest, simulate=simulate)
    lock = current_lock(path, manifest=manifest.name)
    return summarise_lock(path, lock)


def summarise_lock(path: Path, lock: Lockfile) -> StatusReport:
    """The status report of a lockfile value."""
    counts = Counter(e.status for e in lock.entries.values())
    in_progress: list[tuple[str, InProgress, str | None]] = []
    for key, entry in sorted(lock.entries.items()):
        if entry.status == "submitting" or entry.status == "running":
            in_progress.append((key, entry.status, entry.task_id))
    return StatusReport(
        lockfile=path,
        counts={s: counts.get(s, 0) for s in ENTRY_STATUSES},
        charged=sum((e.charged for e in lock.entries.values()), Decimal(0)),
        failed=[(k, e.last_error or "") for k, e in sorted(lock.entries.items())
                if e.status == "failed"],
        in_progress=in_progress,
    )


def verify(manifest: Path, *, simulate: bool = False,
           lockfile: Path | None = None) -> tuple[int, list[VerifyProblem]]:
    """Re-hash every output the lockfile records and check the index; (files checked, problems).

    Works from the lockfile and the manifest's header alone, so a manifest that no
    longer validates never stops anyone from checking the files they have.
    """
    paths = locate(manifest, read_header(manifest), simulate=simulate, lockfile=lockfile)
    lock = current_lock(paths.lockfile, manifest=manifest.name)
    folder = paths.output_folder()
    folder.check_entries(lock.entries.values())
    done = [e for e in lock.entries.values() if e.status == "done"]
    problems = verify_outputs(done, folder)
    if not done:  # nothing generated yet: no index is owed either
        return 0, problems
    index = folder.check_index(lock.entries)
    if index is not None:
        problems.append(index)
    return sum(len(e.outputs) for e in done) + 1, problems


@dataclass(frozen=True)
class PruneResult:
    """What ``prune`` removed, including removals an interrupted prune had journaled."""

    removed: list[str]  # orphaned entries this prune removed
    recovered: list[str]  # removed by an interrupted prune: found in its journal, applied now
    recovered_updates: int  # entries an interrupted run had journaled, saved now


def prune(manifest: Path, *, simulate: bool = False,
          lockfile: Path | None = None) -> PruneResult:
    """Drop lock entries whose instances are no longer in the manifest.

    Opening the store folds in a journal an interrupted prune (or run) left, which
    may already remove orphans; those are reported too, not counted as nothing.
    """
    lock_path = lockfile or lockfile_path(manifest, simulate=simulate)
    with RunGuard(guard_path(lock_path), subject=manifest.name), LockStore.open(lock_path,
                                                         manifest=manifest.name) as store:
        prepared = prepare(manifest, simulate=simulate, lockfile=lock_path, lock=store.lock)
        orphaned = list(prepared.plan.orphaned)
        store.delete(orphaned)
        recovery = store.recovered
    return PruneResult(removed=orphaned, recovered=list(recovery.deleted),
                       recovered_updates=len(recovery.updated))
