"""``status``, ``verify`` and ``prune``: reading and tidying what runs have recorded."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pipeline.core.lock.lockfile import ENTRY_STATUSES, Lockfile
from pipeline.operations.context import Context, Paths
from pipeline.operations.project import current_lock, prepare
from pipeline.shell.store.guard import RunGuard, guard_path
from pipeline.shell.store.lockstore import LockStore
from pipeline.shell.store.outputs import VerifyProblem, verify_outputs

InProgress = Literal["submitting", "running"]


@dataclass(frozen=True)
class StatusReport:
    """What a lockfile says: counts per recorded status, money charged, failures."""

    lockfile: Path
    counts: dict[str, int]
    charged: Decimal  # every paid attempt of every entry, and of entries since removed
    failed: list[tuple[str, str]]
    in_progress: list[tuple[str, InProgress, str | None]]  # key, status, task id


def status(context: Context) -> StatusReport:
    """Summarise the lockfile (and any journal a crashed run left) without changing them.

    Needs no valid manifest: only the lockfile is read.
    """
    lock = current_lock(context.lockfile, manifest=context.manifest.name)
    return summarise_lock(context.lockfile, lock)


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
        charged=lock.charged,
        failed=[(k, e.last_error or "") for k, e in sorted(lock.entries.items())
                if e.status == "failed"],
        in_progress=in_progress,
    )


def verify(context: Context) -> tuple[int, list[VerifyProblem]]:
    """Re-hash every output the lockfile records and check the index; (files checked, problems).

    Works from the lockfile and the manifest's header alone, so a manifest that no
    longer validates never stops anyone from checking the files they have.
    """
    paths = context.locate(context.header())
    lock = current_lock(paths.lockfile, manifest=context.manifest.name)
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
    """What ``prune`` removed (or, with ``dry_run``, would remove), and the images it left.

    Includes removals an interrupted prune had journaled.
    """

    removed: list[str]  # orphaned entries this prune removed (would remove)
    recovered: list[str]  # removed by an interrupted prune: found in its journal, applied now
    recovered_updates: int  # entries an interrupted run had journaled, saved now
    kept_files: list[str] = field(default_factory=list)  # images of removed entries left
    deleted_files: list[str] = field(default_factory=list)  # images removed (--outputs)
    retired: Decimal = Decimal(0)  # what the removed entries were charged: kept as history
    charged: Decimal = Decimal(0)  # the lockfile's "charged so far" after the prune
    dry_run: bool = False


def prune(context: Context, *, dry_run: bool = False, outputs: bool = False) -> PruneResult:
    """Drop lock entries whose instances are no longer in the manifest.

    What they were charged stays in the lockfile's ``retired`` history, so "charged so
    far" never drops. Their images stay on disk (and are listed) unless ``outputs``:
    removing paid images is asked for explicitly. ``dry_run`` writes nothing, and says
    what would go. Opening the store folds in a journal an interrupted prune (or run)
    left, which may already remove orphans; those are reported too.
    """
    lock_path, manifest = context.lockfile, context.manifest
    if dry_run:
        prepared = prepare(context)
        return _pruned(prepared.lock, list(prepared.plan.orphaned), prepared.paths,
                       recovered=[], updates=0, outputs=outputs, dry_run=True)
    with RunGuard(guard_path(lock_path), subject=manifest.name), LockStore.open(lock_path,
                                                         manifest=manifest.name) as store:
        prepared = prepare(context, lock=store.lock)
        # An orphan the manifest's moves have yet to carry to its key (a run applies
        # them) is not in the store under that key yet: it is pruned after that run.
        orphaned = [k for k in prepared.plan.orphaned if k in store.entries]
        before = store.lock
        store.delete(orphaned)
        recovery = store.recovered
        # The removals are durable (journaled) before any image is deleted.
        return _pruned(before, orphaned, prepared.paths, recovered=list(recovery.deleted),
                       updates=len(recovery.updated), outputs=outputs, dry_run=False,
                       after=store.lock)


def _pruned(lock: Lockfile, orphaned: list[str], paths: Paths, *, recovered: list[str],
            updates: int, outputs: bool, dry_run: bool,
            after: Lockfile | None = None) -> PruneResult:
    """The result of pruning ``orphaned`` from ``lock``; removes their images if ``outputs``
    (and not ``dry_run``). ``after``: the lockfile as the prune left it."""
    folder = paths.output_folder()
    gone = set(orphaned)
    # An image a remaining entry still names is never an orphan's to remove.
    still = {o.path for key, e in lock.entries.items() if key not in gone for o in e.outputs}
    files = sorted({o.path for key in orphaned for o in lock.entries[key].outputs
                    if o.path not in still and folder.exists(o.path)})
    deleted: list[str] = []
    if outputs and not dry_run:
        folder.remove_files(files)
        deleted, files = files, []
    elif outputs:
        deleted, files = files, []
    retired = sum((lock.entries[k].charged for k in orphaned), Decimal(0))
    # A dry run removes nothing, and a real one moves the money to ``retired``: either
    # way "charged so far" is what it was.
    charged = (after if after is not None else lock).charged
    return PruneResult(removed=orphaned, recovered=recovered, recovered_updates=updates,
                       kept_files=files, deleted_files=deleted, retired=retired,
                       charged=charged, dry_run=dry_run)
