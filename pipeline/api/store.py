"""What runs recorded: ``status``, ``verify``, ``prune``, and moving lock entries."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.api.source import ManifestSource, place_of
from pipeline.operations import housekeeping
from pipeline.operations.housekeeping import PruneResult, StatusReport
from pipeline.operations.relocate import LockMove, lock_mv
from pipeline.shell.store.outputs import VerifyProblem


def status(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None,
           simulate: bool = False, lockfile: str | os.PathLike[str] | None = None
           ) -> StatusReport:
    """What the lockfile says: counts per status, money charged, failures, tasks in flight.

    Reads only the lockfile (and a crashed run's journal), so the manifest need not
    validate. ``simulate``: the simulate side's lockfile; ``lockfile``: another one.
    Raises ``LockfileError`` when it cannot be read.
    """
    return housekeeping.status(place_of(manifest, root=root, simulate=simulate,
                                        lockfile=lockfile))


@dataclass(frozen=True, slots=True)
class Verification:
    """What ``verify`` checked: files (and the index) hashed, and what did not match."""

    checked: int
    problems: tuple[VerifyProblem, ...]

    @property
    def intact(self) -> bool:
        """Every recorded output is on disk as recorded, and the index agrees."""
        return not self.problems


def verify(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None,
           simulate: bool = False, lockfile: str | os.PathLike[str] | None = None,
           output_dir: str | os.PathLike[str] | None = None) -> Verification:
    """Re-hash every output the lockfile records and check ``index.json``.

    Needs only the manifest's ``name:`` and ``output_dir:`` (or ``output_dir``: a
    folder or a store URL instead of the manifest's). Damage is reported, not
    raised (``Verification.problems``); ``LockfileError`` if the lockfile is unreadable.
    """
    checked, problems = housekeeping.verify(place_of(manifest, root=root, simulate=simulate,
                                                     lockfile=lockfile,
                                                     output_dir=output_dir))
    return Verification(checked, tuple(problems))


def prune(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None,
          simulate: bool = False, lockfile: str | os.PathLike[str] | None = None,
          dry_run: bool = False, outputs: bool = False,
          output_dir: str | os.PathLike[str] | None = None) -> PruneResult:
    """Drop lockfile entries whose instances are no longer in the manifest.

    Their spend stays counted as history; their images stay on disk unless
    ``outputs`` (removed only under the output folder or store prefix, which
    ``output_dir`` can name). ``dry_run``: say what would go, change nothing. Holds the run guard
    (``RunGuardHeld`` while a run holds the manifest).
    """
    return housekeeping.prune(place_of(manifest, root=root, simulate=simulate,
                                       lockfile=lockfile, output_dir=output_dir),
                              dry_run=dry_run, outputs=outputs)


def move(manifest: ManifestSource, source: str, target: str, *,
         root: str | os.PathLike[str] | None = None, simulate: bool = False,
         lockfile: str | os.PathLike[str] | None = None, dry_run: bool = False) -> LockMove:
    """Move a lock entry (``source`` a key) or all of a job's (``source`` a job) to
    ``target``, with its files, so a rename is not paid again. ``UsageError`` when
    nothing is at ``source`` or ``target`` is taken."""
    return lock_mv(place_of(manifest, root=root, simulate=simulate, lockfile=lockfile),
                   source, target, dry_run=dry_run)
