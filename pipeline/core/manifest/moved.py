"""The manifest's ``moved:`` block (and ``imgspec lock mv``'s arguments): its items, and
the checks of them a manifest can fail.

A move names either two jobs (``from: shot``, ``to: packshot``) or two instance keys
(``from: shot@c=red``); what a move does to a lockfile is ``pipeline.core.lock.moves``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from pipeline.core.manifest.diagnostics import Diagnostic
from pipeline.core.manifest.document import DocPath


class DiagnosticAt(Protocol):
    """Makes a diagnostic at a document path (``Document.diagnostic``'s shape)."""

    def __call__(self, path: DocPath, message: str, hint: str = "", *,
                 severity: str = "error") -> Diagnostic: ...


@dataclass(frozen=True, slots=True)
class Move:
    """One ``moved:`` item (or the arguments of ``lock mv``): a job or instance key to
    another."""

    source: str
    target: str
    path: DocPath = ()  # the item in the manifest, for positions

    @property
    def of_job(self) -> bool:
        """Whether it moves a whole job (no ``@`` in its source)."""
        return "@" not in self.source


def move_errors(moves: tuple[Move, ...], jobs: Collection[str],
                diagnostic: DiagnosticAt) -> list[Diagnostic]:
    """The errors of the manifest's moves that need no expansion: a move to itself, a job
    moved to a key or back, two moves to one destination, a cycle, a job ``from`` that
    is still a job of the manifest."""
    errors: list[Diagnostic] = []
    targets: dict[str, Move] = {}
    for index, move in enumerate(moves):
        if move.source == move.target:
            errors.append(diagnostic((*move.path, "to"), f"{move.source!r} is moved to itself",
                                     "remove this move, or give the new name in to:"))
            continue
        if move.of_job != ("@" not in move.target):
            errors.append(diagnostic((*move.path, "to"), f"{move.source!r} and {move.target!r} "
                                     "are not both jobs or both instance keys",
                                     "move a job to a job (shot → packshot) or a key to a key "
                                     "(shot@c=red → shot@colour=red)"))
            continue
        if move.of_job and move.source in jobs:
            errors.append(diagnostic((*move.path, "from"), f"job {move.source!r} still exists "
                                     "in the manifest", "a move's from: is the old name: "
                                     "rename the job, or remove this move"))
        earlier = targets.get(move.target)
        if earlier is not None:
            errors.append(diagnostic((*move.path, "to"), f"{move.target!r} is already the "
                                     f"destination of the move from {earlier.source!r} "
                                     f"(moved[{moves.index(earlier)}])",
                                     "each destination takes one source: remove one move"))
        else:
            targets[move.target] = move
        if _cycles(moves, index):
            errors.append(diagnostic((*move.path, "from"), f"the moves from {move.source!r} "
                                     "lead back to it (a cycle)",
                                     "moves go one way, from old names to new: remove one"))
    return sorted(errors, key=Diagnostic.sort_key)


def _cycles(moves: tuple[Move, ...], start: int) -> bool:
    """Whether following the moves from ``moves[start]``'s target comes back to its source,
    ``moves[start]`` being the first move of that cycle (a cycle is reported once)."""
    by_source = {m.source: i for i, m in enumerate(moves) if m.source != m.target}
    members = [start]
    name = moves[start].target
    while name in by_source:
        index = by_source[name]
        if index in members:
            return index == start and start == min(members)
        members.append(index)
        name = moves[index].target
    return False


def check_moves(moves: tuple[Move, ...], keys: Collection[str], jobs: Collection[str],
                diagnostic: DiagnosticAt) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """(errors, warnings) of the moves that need the instance keys: an instance key
    ``from`` that still exists is an error; a ``to`` that names nothing of the manifest
    is a warning (that move is not applied, so fixing a typo later still works)."""
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    sources = {m.source for m in moves}  # a chain's middle names nothing of the manifest
    for move in moves:
        if move.of_job:
            if move.target not in jobs and move.target not in sources:
                warnings.append(diagnostic(
                    (*move.path, "to"), f"job {move.target!r} is not in the manifest, so "
                    "nothing is moved to it", "give the job's new name", severity="warning"))
            continue
        if move.source in keys:
            errors.append(diagnostic((*move.path, "from"), f"instance {move.source!r} still "
                                     "exists in the manifest", "a move's from: is the old "
                                     "key: change the instance, or remove this move"))
        if move.target not in keys and move.target not in sources:
            warnings.append(diagnostic(
                (*move.path, "to"), f"instance {move.target!r} is not in the manifest, so "
                "nothing is moved to it", "give the instance's new key (see `imgspec plan`)",
                severity="warning"))
    return errors, warnings
