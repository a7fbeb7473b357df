"""``status``, ``verify`` and ``prune``: reading and tidying what runs have recorded."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.guard import RunGuard, guard_path
from pipeline.journal import LockStore
from pipeline.lockfile import ENTRY_STATUSES, Lockfile, json_number, lockfile_path
from pipeline.outputs import VerifyProblem, verify_outputs
from pipeline.project import current_lock, locate, prepare, read_header


@dataclass(frozen=True)
class StatusReport:
    """What a lockfile says: counts per recorded status, money charged, failures."""

    lockfile: Path
    counts: dict[str, int]
    charged: Decimal
    failed: list[tuple[str, str]]
    in_progress: list[tuple[str, str]]

    def to_json(self) -> dict[str, Any]:
        """The stable ``status --json`` form."""
        return {
            "lockfile": str(self.lockfile),
            "counts": self.counts,
            "charged": json_number(self.charged),
            "failed": [{"key": k, "error": e} for k, e in self.failed],
            "in_progress": [{"key": k, "task_id": t} for k, t in self.in_progress],
        }

    def text(self, currency: str = "CNY") -> str:
        """The human form."""
        from pipeline.pricing import money

        lines = [f"{self.lockfile}: " + (", ".join(
            f"{n} {s}" for s, n in self.counts.items() if n) or "no entries"),
            f"charged so far: {money(self.charged, currency)}"]
        lines += [f"  failed   {k}: {e}" for k, e in self.failed]
        lines += [f"  running  {k} (task {t})" for k, t in self.in_progress]
        return "\n".join(lines) + "\n"


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
    return StatusReport(
        lockfile=path,
        counts={s: counts.get(s, 0) for s in ENTRY_STATUSES},
        charged=sum((e.cost for e in lock.entries.values()), Decimal(0)),
        failed=[(k, e.last_error or "") for k, e in sorted(lock.entries.items())
                if e.status == "failed"],
        in_progress=[(k, e.task_id or "-") for k, e in sorted(lock.entries.items())
                     if e.status in ("submitting", "running")],
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
    index = folder.check_index(lock.entries)
    if index is not None:
        problems.append(index)
    return sum(len(e.outputs) for e in done) + 1, problems


def prune(manifest: Path, *, simulate: bool = False, lockfile: Path | None = None) -> list[str]:
    """Drop lock entries whose instances are no longer in the manifest; the removed keys."""
    lock_path = lockfile or lockfile_path(manifest, simulate=simulate)
    with RunGuard(guard_path(lock_path), subject=manifest.name), LockStore.open(lock_path,
                                                         manifest=manifest.name) as store:
        prepared = prepare(manifest, simulate=simulate, lockfile=lock_path, lock=store.lock)
        orphaned = list(prepared.plan.orphaned)
        store.delete(orphaned)
    return orphaned
