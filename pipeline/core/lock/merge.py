"""Merging lockfiles entry by entry, so that no paid result is ever lost.

Pure: ``Lockfile`` values in, a ``Merged`` value out (or ``MergeConflict``).
Used as git's merge driver (three-way: base, ours, theirs) and to fold the
lockfiles of shards (N-way, no base).

The rules, for one instance key:

- present on one side only: taken (a merge never deletes an entry; ``imgspec
  prune`` does, on purpose);
- the same on both sides, or one side unchanged from the base: the other side;
- both sides record the same task, as far as the evidence shows: the same task
  id; or the same idempotency key with no two different task ids; or one side
  never submitted (neither task id nor key, so nothing of it can be lost). Then
  the further one wins (done over in flight over failed, then the newer
  ``updated_at``), with any task id or idempotency key only the other recorded
  filled in; it is one payment, counted once, at the larger ``charged`` of the
  two (a side that recorded the task as paid elsewhere, ``paid_by``, charged 0:
  the side that paid it brings its charge and drops the note). Anything else (one
  side's task id against the other's key, two different keys) is two tasks, both
  possibly paid;
- different tasks: the winner as above (two done entries: the newer), and the
  loser is kept under ``KEY#superseded:TASK`` so its task id and idempotency
  key stay reachable and its cost stays counted: what it charged beyond the base
  entry, whose charges (history both sides carry) the winner counts; a loser whose
  task is already kept superseded keeps that record's charge. Its ``outputs`` are dropped
  there: they name the same files as the kept entry's, and the files on disk
  are left as they are. ``plan`` lists it as orphaned; ``imgspec prune`` drops it;
- the same task with two different sets of downloaded files: a conflict, since
  either choice would lose what the other side paid for and recorded.

Spend is history: the lockfiles' ``retired`` records (the spend of pruned
entries) are united, each payment once; a record whose entry the merge keeps (one
side pruned it, the other did not: a merge never deletes) is dropped, since the
entry counts that money itself. So a merge never lowers "charged so far" and never
counts a payment twice.

The winner's every other field is carried as it is (``dataclasses.replace``),
so fields added to ``LockEntry`` later survive a merge untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import PurePath
from typing import Literal

from pipeline.core.lock.lockfile import LockEntry, Lockfile, Retired, merge_retired, merge_uploads
from pipeline.errors import MergeConflict

SUPERSEDED = "#superseded:"
# Further along wins: a done result over a task in flight over a failed attempt.
RANK = {"done": 2, "running": 1, "submitting": 1, "failed": 0}

NoteKind = Literal["superseded", "filled", "upload-dropped"]


@dataclass(frozen=True, slots=True)
class MergeNote:
    """Something a merge decided that a person should know about."""

    kind: NoteKind
    key: str
    kept: str  # the kept entry's task (task id, idempotency key or "-")
    other: str  # the other side's task
    detail: str  # why, in words
    moved_to: str | None = None  # superseded: the key the other entry is kept under


@dataclass(frozen=True, slots=True)
class Conflict:
    """One key that cannot be merged without losing a paid result."""

    key: str
    reason: str


@dataclass(frozen=True)
class Merged:
    """The merged lockfile and what the merge reported."""

    lock: Lockfile
    notes: tuple[MergeNote, ...]
    sources: int  # how many lockfiles went in
    index: PurePath | str | None = None  # the output index rewritten (``--into``); a URL in a store

    @property
    def superseded(self) -> tuple[MergeNote, ...]:
        """The entries kept under a ``#superseded:`` key by this merge."""
        return tuple(n for n in self.notes if n.kind == "superseded")


def task_of(entry: LockEntry) -> str:
    """How an entry's task is named in messages: task id, else idempotency key, else ``-``."""
    return entry.task_id or entry.idempotency_key or "-"


def superseded_key(entry: LockEntry) -> str:
    """Where a losing entry is kept: ``KEY#superseded:TASK`` (stable: merging twice is a no-op)."""
    return f"{entry.key}{SUPERSEDED}{task_of(entry)}"


def same_task(a: LockEntry, b: LockEntry) -> bool:
    """Whether two entries record the same task, on the evidence (or one records none).

    Equal task ids; else equal idempotency keys (a task id on one side only does not
    contradict them: the other side never heard the reply). A task id against a key,
    or two different keys, may be two paid tasks, so they are not folded into one.
    """
    if not (a.task_id or a.idempotency_key) or not (b.task_id or b.idempotency_key):
        return True  # a side that never submitted has nothing that could be lost
    if a.task_id and b.task_id:
        return a.task_id == b.task_id
    return bool(a.idempotency_key) and a.idempotency_key == b.idempotency_key


def _order(entry: LockEntry) -> tuple[int, str, str, str]:
    # Deterministic total order: rank, then newer, then content, so the result
    # does not depend on which side is "ours" or the order shards are folded in.
    return (RANK[entry.status], entry.updated_at or "", entry.fingerprint, task_of(entry))


def merge_entries(a: LockEntry, b: LockEntry,
                  base: LockEntry | None = None) -> tuple[list[LockEntry], list[MergeNote]]:
    """The entries to keep for one key (the winner first) and the notes; may raise
    ``MergeConflict``."""
    if a == b:
        return [a], []
    if base is not None and a == base:
        return [b], []
    if base is not None and b == base:
        return [a], []
    winner, loser = (a, b) if _order(a) >= _order(b) else (b, a)
    if same_task(a, b):
        if (winner.status == loser.status == "done" and winner.outputs and loser.outputs
                and [o.sha256 for o in winner.outputs] != [o.sha256 for o in loser.outputs]):
            raise MergeConflict([winner.key], [
                f"{winner.key}: both sides downloaded task {task_of(winner)} but recorded "
                "different files (sha256 differ)"])
        filled = dataclasses.replace(
            winner, task_id=winner.task_id or loser.task_id,
            idempotency_key=winner.idempotency_key or loser.idempotency_key)
        if loser.charged > winner.charged:
            filled = dataclasses.replace(filled, charged=loser.charged, cost=loser.cost,
                                         paid_by=loser.paid_by)
        notes = []
        if filled != winner:
            notes.append(MergeNote("filled", winner.key, task_of(filled), task_of(loser),
                                   "kept the task id / idempotency key only the other side "
                                   "had recorded"))
        return [filled], notes
    # Both sides carry the charges of the history they share (an entry's ``charged``
    # counts all its attempts): the winner keeps that money, the loser only its own.
    shared = min(base.charged, loser.charged) if base is not None else Decimal(0)
    moved = dataclasses.replace(loser, key=superseded_key(loser), outputs=(),
                                charged=loser.charged - shared)
    if winner.status == loser.status == "done":
        why = ("both sides have a done result"
               + (" for different requests" if winner.fingerprint != loser.fingerprint else "")
               + "; kept the newer, the other's files are left in place")
    else:
        why = f"kept the {winner.status} entry over the {loser.status} one"
    note = MergeNote("superseded", winner.key, task_of(winner), task_of(loser), why,
                     moved_to=moved.key)
    return [winner, moved], [note]


def merge_locks(sides: Sequence[Lockfile], *, base: Lockfile | None = None) -> Merged:
    """Merge lockfiles (``base``: their common ancestor, for git's three-way merge).

    Raises ``MergeConflict`` naming every key that cannot be merged; nothing is
    half-merged: the caller writes the result only when this returns.
    """
    if not sides:
        raise ValueError("merge_locks needs at least one lockfile")
    base_entries: Mapping[str, LockEntry] = base.entries if base is not None else {}
    merged: dict[str, LockEntry] = {}
    notes: list[MergeNote] = []
    conflicts: list[str] = []
    reasons: list[str] = []
    for side in sides:
        for key in sorted(side.entries):
            entry = side.entries[key]
            held = merged.get(key)
            if held is None:
                merged[key] = entry
                continue
            try:
                kept, said = merge_entries(held, entry, _base_of(key, entry, base_entries))
            except MergeConflict as exc:
                conflicts.extend(exc.keys)
                reasons.extend(exc.reasons)
                continue
            notes.extend(said)
            merged[key] = kept[0]
            _keep_superseded(merged, kept[1:], conflicts, reasons)
    if conflicts:
        raise MergeConflict(conflicts, reasons)
    manifest = next((s.manifest for s in sides if s.manifest), "")
    uploads = merge_uploads(*(s.uploads for s in sides))  # free to redo: never a conflict
    return Merged(Lockfile(manifest=manifest, entries=merged, uploads=uploads,
                           retired=_retired(sides, merged)), tuple(notes), len(sides))


def _base_of(key: str, entry: LockEntry,
             base: Mapping[str, LockEntry]) -> LockEntry | None:
    """The merge base's entry ``entry`` descends from: the one of its key, else (a key
    both sides moved it to, by ``moved:`` or ``lock mv``) the one entry of the base made
    at the same time for the same matrix values (a move keeps both)."""
    if key in base:
        return base[key]
    if entry.created_at is None:
        return None
    found = [e for e in base.values()
             if e.created_at == entry.created_at and e.matrix == entry.matrix]
    return found[0] if len(found) == 1 else None


def _retired(sides: Sequence[Lockfile], merged: Mapping[str, LockEntry]) -> tuple[Retired, ...]:
    """The sides' retired records, each payment once, less those whose entry is kept."""
    kept = {(e.key, e.task_id, e.idempotency_key) for e in merged.values()}
    return tuple(r for r in merge_retired(*(s.retired for s in sides))
                 if (r.key, r.task_id, r.idempotency_key) not in kept)


def _keep_superseded(merged: dict[str, LockEntry], extra: Iterable[LockEntry],
                     conflicts: list[str], reasons: list[str]) -> None:
    for entry in extra:
        held = merged.get(entry.key)
        if held is None or held == entry:
            merged[entry.key] = entry
            continue
        # One key, one task, one payment, counted at the larger charge of the two
        # records: a loser whose task is already kept superseded (an earlier merge
        # superseded it) counts only what it paid beyond this merge's base, often 0,
        # and must not wipe out the charge the kept record carries.
        charged = max(held.charged, entry.charged)
        if _order(entry) > _order(held):
            # The same superseded task recorded further along on another side.
            merged[entry.key] = dataclasses.replace(entry, charged=charged)
        elif _order(entry) == _order(held):
            conflicts.append(entry.key)
            reasons.append(f"{entry.key}: recorded twice with different contents")
        else:
            merged[entry.key] = dataclasses.replace(held, charged=charged)
