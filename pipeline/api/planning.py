"""``plan``: what a run would do and cost, against the lockfile, spending nothing."""

from __future__ import annotations

import os
from collections.abc import Iterable
from decimal import Decimal

from pipeline.api.source import ManifestSource, amount, place_of, selection
from pipeline.core.planning.plan import Plan
from pipeline.core.planning.selection import narrow
from pipeline.operations.project import PlanStream, plan_stream, prepare
from pipeline.operations.shards import ShardLock, shard_lock


def plan(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None,
         simulate: bool = False, lockfile: str | os.PathLike[str] | None = None,
         max_cost: Decimal | int | str | None = None, rehash: bool = False,
         jobs: Iterable[str] = (), where: Iterable[str] = (), only_failed: bool = False,
         shard: str | None = None,
         output_dir: str | os.PathLike[str] | None = None) -> Plan:
    """The plan of ``manifest``: each instance's status and cost, the total and the budget.

    ``simulate``: against the simulate side's lockfile and outputs. ``lockfile``:
    another lockfile than the one beside the manifest. ``max_cost``: a budget
    overriding the manifest's. ``rehash``: recorded images checked by their sha256,
    not only their size. ``output_dir``: a folder or a store URL (``s3://bucket/prefix``)
    instead of the manifest's ``output_dir:``. ``jobs``, ``where`` (``AXIS=VALUE``),
    ``only_failed`` and ``shard`` (``K/N``) narrow it as ``run`` would. Nothing is
    written.

    A plan over its budget is returned as any other (``plan.within_budget``); a run
    refuses it. Raises ``ManifestError``, ``LockfileError`` or ``UsageError``.
    """
    chosen = selection(jobs=jobs, where=where, only_failed=only_failed, shard=shard)
    limit = amount(max_cost, name="max_cost")
    place = place_of(manifest, root=root, simulate=simulate, lockfile=lockfile,
                     output_dir=output_dir)
    lock = None
    if chosen.shard is not None:
        own = shard_lock(place, chosen.shard)
        place, lock = place.with_lockfile(own.path), own.combined(manifest=place.manifest.name)
    prepared = prepare(place, max_cost=limit, lock=lock, rehash=rehash)
    return narrow(prepared.plan, chosen, jobs=prepared.manifest.jobs)


def shard_of(manifest: ManifestSource, shard: str, *,
             root: str | os.PathLike[str] | None = None, simulate: bool = False,
             lockfile: str | os.PathLike[str] | None = None) -> ShardLock:
    """Where shard ``K/N`` of ``manifest`` records (its lockfile) and what it starts from."""
    chosen = selection(shard=shard)
    assert chosen.shard is not None
    return shard_lock(place_of(manifest, root=root, simulate=simulate, lockfile=lockfile),
                      chosen.shard)


def plan_items(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None,
               simulate: bool = False, lockfile: str | os.PathLike[str] | None = None,
               max_cost: Decimal | int | str | None = None, rehash: bool = False,
               output_dir: str | os.PathLike[str] | None = None) -> PlanStream:
    """The whole plan of ``manifest`` item by item, for plans too large to hold.

    Iterate the stream once, then call its ``head()`` for the counts and cost. Options
    as :func:`plan` (no narrowing: a selection needs the whole plan).
    """
    limit = amount(max_cost, name="max_cost")
    return plan_stream(place_of(manifest, root=root, simulate=simulate, lockfile=lockfile,
                                output_dir=output_dir),
                       max_cost=limit, rehash=rehash)
