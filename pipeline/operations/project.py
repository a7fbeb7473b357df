"""The load → expand → plan pipeline of one manifest, in its ``Context``.

This is the seam between the pure core and the shell: it reads the manifest
and the lockfile from disk, checks which recorded outputs still exist, and
hands plain values to the core. It returns values (a ``Prepared``, a
``PlanStream``); writing them out is the views' work.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from pipeline.core.expansion.expand import Expanding, expand
from pipeline.core.expansion.instances import Expansion
from pipeline.core.lock.journal import fold_journal
from pipeline.core.lock.lockfile import Lockfile, Output
from pipeline.core.lock.moves import former_paths, plan_moves
from pipeline.core.manifest.model import Manifest
from pipeline.core.planning.plan import (
    PaidResults,
    Plan,
    PlanHead,
    PlanItem,
    Planner,
    Tally,
    make_plan,
)
from pipeline.errors import ImgspecError
from pipeline.operations.context import Context, Header, Paths
from pipeline.shell.store.lockstore import journal_path, read_journal, read_lockfile
from pipeline.shell.store.reuse_scan import Where, project_results
from pipeline.shell.store.review import read_review, reroll_keys
from pipeline.shell.store.store import OutputStore
from pipeline.shell.store.workspace import DirectoryWorkspace


def current_lock(lock_path: Path, *, manifest: str) -> Lockfile:
    """The lockfile with any journal a crashed run left folded in (read-only: nothing written)."""
    lock = read_lockfile(lock_path, manifest=manifest)
    journal = journal_path(lock_path)
    text = read_journal(journal)
    return lock if text is None else fold_journal(lock, text, source=str(journal))


@dataclass(frozen=True)
class Prepared:
    """Everything ``plan`` and ``run`` need: manifest, expansion, lockfile, plan, paths.

    The plan carries the lockfile it was made from (``lock``), as Terraform's plan
    carries its state: a run executes against that very state.
    """

    manifest: Manifest
    workspace: DirectoryWorkspace
    expansion: Expansion
    lock: Lockfile
    plan: Plan
    paths: Paths


def prepare(context: Context, *, max_cost: Decimal | None = None,
            lock: Lockfile | None = None, rehash: bool = False) -> Prepared:
    """Load, validate, expand and plan the context's manifest against its lockfile.

    ``lock``: the state to plan against when the caller already holds it (a run's
    open lock store); otherwise the lockfile (and any crash journal) is read.
    ``rehash``: check recorded images by their sha256, not only their size.
    ``output_dir`` (``--output-dir``): a folder or store URL instead of the manifest's.
    """
    manifest, workspace = context.load()
    expansion = expand(manifest, workspace)
    paths = context.locate(Header.of(manifest))
    if lock is None:
        lock = current_lock(paths.lockfile, manifest=context.manifest.name)
    folder = paths.output_folder()
    folder.check_entries(lock.entries.values())
    # ``moved:``: the plan is made against the lockfile as the moves leave it; the run
    # applies them to the lockfile and the files first.
    relocation = plan_moves(manifest.moves, lock, keys={i.key for i in expansion.instances},
                            jobs=manifest.jobs, diagnostic=manifest.document.diagnostic)
    lock = relocation.lock
    present = intact_on_disk(folder, rehash=rehash)
    if relocation.moved:
        present = found_before_move(present, former_paths(relocation.moved))
    # Re-rolls a reviewer asked for (``imgspec review``) are planned, and paid, like changes.
    rerolls = reroll_keys(read_review(context.review), lock)
    plan = make_plan(expansion, lock, present=present,
                     max_cost=max_cost, now=time.time(), rerolls=rerolls,
                     destination=paths.destination, moves=relocation.moved,
                     paid=paid_results(context, paths, lock))
    if relocation.warnings:
        plan = dataclasses.replace(plan, warnings=(*plan.warnings, *relocation.warnings))
    return Prepared(manifest, workspace, expansion, lock, plan, paths)


def found_before_move(present: Callable[[Output], bool],
                      former: Mapping[str, str]) -> Callable[[Output], bool]:
    """``present`` for a plan with moves: an output the run has yet to move is intact
    where it is now (its former path), or already where it goes (a run stopped between
    moving the files and recording the move)."""

    def either(output: Output) -> bool:
        old = former.get(output.path)
        return present(output) or (old is not None
                                   and present(dataclasses.replace(output, path=old)))

    return either


class PlanStream:
    """A whole manifest's plan made item by item as it expands, for ``plan --json``.

    Iterate it once: each instance is planned as it is expanded, and dropped by the
    caller (a million instances are never held at once). The head (counts, cost,
    orphans, warnings) is known once the last item has passed: :meth:`head`. A
    manifest with ``moved:`` is planned whole first (the moves need every instance
    key before the first item is planned), and ``whole`` holds that plan.
    """

    def __init__(self, items: Iterator[PlanItem], finish: Callable[[Tally], PlanHead],
                 *, whole: Plan | None = None) -> None:
        self.whole = whole
        self._items = items
        self._finish = finish
        self._tally = Tally()

    def __iter__(self) -> Iterator[PlanItem]:
        for item in self._items:
            self._tally.add(item)
            yield item

    def head(self) -> PlanHead:
        """The plan's head, once every item has been taken."""
        return self._finish(self._tally)


def plan_stream(context: Context, *, max_cost: Decimal | None = None,
                rehash: bool = False) -> PlanStream:
    """The plan of the context's whole manifest, as ``prepare`` makes it, one item at a time.

    Errors come as ``prepare`` raises them: the manifest's before the lockfile's.
    """
    manifest, workspace = context.load()
    if manifest.moves:
        plan = prepare(context, max_cost=max_cost, rehash=rehash).plan
        return PlanStream(iter(plan.items), lambda _tally: plan.head(), whole=plan)
    expanding = Expanding(manifest, workspace)
    paths = context.locate(Header.of(manifest))
    try:
        lock = current_lock(paths.lockfile, manifest=context.manifest.name)
        folder = paths.output_folder()
        folder.check_entries(lock.entries.values())
        rerolls = reroll_keys(read_review(context.review), lock)
    except ImgspecError:
        # ``prepare`` expands before it reads the lockfile: the manifest's errors come
        # first. Expand (planning nothing) to find them; without any, this error stands.
        for _ in expanding:
            pass
        expanding.finish()
        raise
    planner = Planner(manifest, lock, present=intact_on_disk(folder, rehash=rehash),
                      now=time.time(), rerolls=rerolls,
                      paid=paid_results(context, paths, lock))

    def finish(tally: Tally) -> PlanHead:
        return planner.head(tally, warnings=expanding.finish(), max_cost=max_cost,
                            destination=paths.destination)

    return PlanStream(map(planner.item, expanding), finish)


def paid_results(context: Context, paths: Paths, lock: Lockfile) -> PaidResults:
    """The project's paid results, on the context's side, for planning its manifest."""
    where = Where(context.project, Path(os.path.abspath(paths.manifest)),  # noqa: PTH100
                  paths.lockfile, Path(os.path.abspath(paths.outputs)),  # noqa: PTH100
                  lock_suffix=context.lock_suffix, outputs_suffix=context.outputs_suffix)
    return project_results(where, lock,
                           read_lock=lambda path: current_lock(path, manifest=path.name))


def intact_on_disk(folder: OutputStore, *, rehash: bool = False) -> Callable[[Output], bool]:
    """The plan's predicate: a recorded output is there, of the recorded size (and, with
    ``rehash``, sha256): a regular file in a folder, an object in a store."""
    return folder.present(rehash=rehash)
