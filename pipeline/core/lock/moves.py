"""``moved:`` blocks and ``imgspec lock mv``: a lock entry, its history and its files follow
a renamed job or instance key, as Terraform's ``moved`` blocks and ``state mv`` do.

Pure: the manifest's moves, checked in ``pipeline.core.manifest.moved``
(``move_errors`` on the manifest alone, ``check_moves`` once the instance keys are
known), are applied to a ``Lockfile`` value (:func:`relocate`), giving the lockfile
the plan is made against and the list of what moved; nothing here reads or writes a
file. The run applies the same relocations to the lock store and the output folder
(``pipeline.operations.relocate``).

A move names either two jobs (``from: shot``, ``to: packshot``: every entry
``shot@...`` becomes ``packshot@...``, and ``shot`` itself, the key of a job
without a matrix, ``packshot``) or two instance keys (``from: shot@c=red``).
Moves chain (``a`` to ``b``, then ``b`` to ``c``: ``a``'s entries end at ``c``).
A move whose source has no entry is done already and says nothing; one whose
destination already has an entry is not applied (a warning: nothing is
overwritten). An output recorded in the source's instance folder is re-pointed to
the destination's folder; the run moves the file, checking its sha256 first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from pipeline.core.expansion.identity import folder_name
from pipeline.core.lock.lockfile import LockEntry, Lockfile, Output
from pipeline.core.manifest.diagnostics import Diagnostic
from pipeline.core.manifest.moved import DiagnosticAt, Move, check_moves
from pipeline.errors import ManifestError


@dataclass(frozen=True, slots=True)
class Moved:
    """One lock entry the plan moves: from its old key to its new one, its files with it.

    ``files`` pairs each output path that changes folder: (old path, new path).
    """

    source: str
    target: str
    entry: LockEntry  # under its new key, outputs re-pointed
    files: tuple[tuple[str, str], ...] = ()


def job_of(key: str) -> str:
    """The job part of an instance key (``shot@c=red`` → ``shot``)."""
    return key.partition("@")[0]


def moved_key(key: str, move: Move) -> str | None:
    """``key`` after ``move``, or None when the move does not concern it."""
    if move.of_job:
        job, at, values = key.partition("@")
        return None if job != move.source else f"{move.target}{at}{values}"
    return move.target if key == move.source else None


def final_key(key: str, moves: tuple[Move, ...]) -> str | None:
    """Where ``key`` ends after following the chain of moves, or None if none applies."""
    current, seen = key, {key}
    moved = False
    while True:
        step = next((k for m in moves if (k := moved_key(current, m)) is not None), None)
        if step is None or step in seen:
            return current if moved else None
        current = step
        seen.add(step)
        moved = True


def applicable(moves: tuple[Move, ...], keys: Collection[str],
               jobs: Collection[str]) -> tuple[Move, ...]:
    """The moves a plan applies: those whose destination the manifest has (see
    :func:`check_moves`'s warning about the others)."""
    return tuple(m for m in moves
                 if (m.target in jobs if m.of_job else m.target in keys)
                 or any(n.source == m.target for n in moves))


def relocate(lock: Lockfile, moves: tuple[Move, ...]) -> tuple[Lockfile, tuple[Moved, ...],
                                                               tuple[str, ...]]:
    """``lock`` with the moves applied; what moved; and the sources not moved because
    their destination already has an entry (nothing is overwritten)."""
    entries = lock.entries
    planned: dict[str, str] = {}
    for key in sorted(entries):
        target = final_key(key, moves)
        if target is not None:
            planned[key] = target
    arriving: dict[str, str] = {}
    refused: list[str] = []
    for key, target in planned.items():
        if (target in entries and target not in planned) or target in arriving:
            refused.append(key)
        else:
            arriving[target] = key
    moved = tuple(move_entry(entries[source], target) for target, source in
                  sorted(arriving.items(), key=lambda kv: kv[1]))
    if not moved:
        return lock, (), tuple(refused)
    gone = {m.source for m in moved}
    kept = {k: e for k, e in entries.items() if k not in gone}
    kept.update({m.target: m.entry for m in moved})
    return replace(lock, entries=kept), moved, tuple(refused)


def move_entry(entry: LockEntry, target: str) -> Moved:
    """``entry`` under the key ``target``, its outputs re-pointed to the new instance folder.

    Its money, task, attempts and seed go with it: the history is the instance's.
    """
    job = job_of(target)
    old_tail = (entry.job, folder_name(entry.key))
    new_tail = (job, folder_name(target))
    files: list[tuple[str, str]] = []
    outputs: list[Output] = []
    for output in entry.outputs:
        parts = output.path.split("/")
        if len(parts) >= 3 and tuple(parts[-3:-1]) == old_tail and old_tail != new_tail:
            path = "/".join((*parts[:-3], *new_tail, parts[-1]))
            files.append((output.path, path))
            outputs.append(replace(output, path=path))
        else:
            outputs.append(output)
    return Moved(entry.key, target, replace(entry, key=target, job=job, outputs=tuple(outputs)),
                 tuple(files))


def former_paths(moved: tuple[Moved, ...]) -> Mapping[str, str]:
    """New output path → the old one, for the plan to find a file the run has yet to move."""
    return {new: old for m in moved for old, new in m.files}


@dataclass(frozen=True, slots=True)
class Relocation:
    """What the manifest's moves do to a lockfile: the lockfile to plan against, the
    entries moved, and the warnings (moves with nowhere to go, or refused)."""

    lock: Lockfile
    moved: tuple[Moved, ...] = ()
    warnings: tuple[Diagnostic, ...] = ()


def plan_moves(moves: tuple[Move, ...], lock: Lockfile, *, keys: Collection[str],
               jobs: Collection[str], diagnostic: DiagnosticAt) -> Relocation:
    """Check the manifest's moves against its instance ``keys`` and apply them to ``lock``.

    ``ManifestError`` (every error, with positions) when a move is invalid.
    """
    if not moves:
        return Relocation(lock)
    errors, warnings = check_moves(moves, keys, jobs, diagnostic)
    if errors:
        raise ManifestError(errors)
    relocated, moved, refused = relocate(lock, applicable(moves, keys, jobs))
    for source in refused:
        move = next(m for m in moves if moved_key(source, m) is not None)
        target = final_key(source, moves)
        warnings.append(diagnostic(
            (*move.path, "to"), f"{target!r} already has a lock entry, so {source!r} is not "
            "moved onto it", f"keep one: `imgspec prune` drops {source!r} once it is orphaned",
            severity="warning"))
    return Relocation(relocated, moved, tuple(warnings))
