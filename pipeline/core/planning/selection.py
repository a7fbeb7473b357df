"""Which instances ``plan`` and ``run`` cover: ``--job``, ``--where``, ``--only-failed``,
``--shard K/N``.

Pure: a ``Selection`` (the flags, normalised once at the command line's edge)
and a ``Plan`` go in, the narrowed ``Plan`` comes out. A selection that names
something the manifest does not have (a job, a matrix axis, a value no instance
takes) is a usage error that lists what exists, never a silent empty run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pipeline.core.expansion.matrix import same
from pipeline.core.lock.lockfile import AnyPath
from pipeline.core.planning.plan import Plan, PlanItem, PlanStatus
from pipeline.errors import UsageError

if TYPE_CHECKING:
    from pipeline.core.expansion.instances import Instance

# An axis of a big catalogue can take thousands of values: list this many, then a count.
MAX_VALUES_LISTED = 20


@dataclass(frozen=True, slots=True)
class Shard:
    """``--shard K/N``: the K-th (1-based) of N disjoint parts of a manifest's instances.

    An instance belongs to the shard of the root of its chain (the instance whose
    images it edits, and so on up): an edit runs where the image it edits is made,
    so a shard never needs another shard's output. The shard of a root is a hash
    of its key alone, so it stays put when other jobs or rows change.
    """

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, root_key: str) -> bool:
        """Whether the chain rooted at ``root_key`` belongs to this shard."""
        return shard_number(root_key, self.count) == self.index


_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> Shard:
    """``"2/4"`` → ``Shard(2, 4)``; ``UsageError`` unless 1 <= K <= N."""
    match = _SHARD.fullmatch(text)
    if not match:
        raise UsageError(f"--shard {text!r}: write K/N, e.g. --shard 1/4 (shards count from 1)")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 1 <= index <= count:
        raise UsageError(f"--shard {text}: K must be between 1 and N (N at least 1), "
                         "e.g. --shard 1/4 ... --shard 4/4")
    return Shard(index, count)


def shard_number(root_key: str, count: int) -> int:
    """The 1-based shard of a chain's root key among ``count``: a SHA-256 of the key.

    Not Python's ``hash()``: that changes between processes, and every machine of a
    CI matrix must agree.
    """
    digest = hashlib.sha256(b"imgspec-shard\0" + root_key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def chain_roots(instances: Iterable[Instance]) -> dict[str, str]:
    """Each instance's chain root: itself without upstream images, else its upstreams' root.

    An instance that edits images of several chains takes the smallest of their
    root keys (string order): deterministic, and the same on every machine. Only
    ``image_urls: [{from: ...}]`` (data) links count; a job's ``needs:`` only
    orders work and does not tie shards together. Instances come upstream first.
    """
    roots: dict[str, str] = {}
    for inst in instances:
        ups = [roots.get(up, up) for up in inst.upstream]
        roots[inst.key] = min(ups) if ups else inst.key
    return roots


def shard_lockfile(lock_path: AnyPath, shard: Shard) -> AnyPath:
    """The default lockfile of a shard: ``shop.lock.json`` → ``shop.shard-2-of-4.lock.json``.

    Beside the manifest's own, so the output paths it records (relative to its
    folder) are the same as in the lockfile the shards are merged into.
    """
    stem = lock_path.name.removesuffix(".lock.json")
    return lock_path.with_name(f"{stem}.shard-{shard.index}-of-{shard.count}.lock.json")


@dataclass(frozen=True, slots=True)
class Selection:
    """Which instances a command covers (``--job``, ``--where``, ``--only-failed``,
    ``--shard``).

    ``where`` pairs on the same axis are alternatives (any of them); pairs on
    different axes must all hold.
    """

    jobs: tuple[str, ...] = ()
    where: tuple[tuple[str, str], ...] = ()
    only_failed: bool = False
    shard: Shard | None = None

    def keeps(self, item: PlanItem, failed: frozenset[str] = frozenset()) -> bool:
        """Whether ``item`` is in the selection (``failed``: keys ``--only-failed`` reruns)."""
        if self.jobs and item.job not in self.jobs:
            return False
        if self.where and not self.matches(item):
            return False
        return not self.only_failed or item.key in failed

    def matches(self, item: PlanItem) -> bool:
        """Whether ``item``'s matrix values satisfy every ``--where`` axis."""
        values = dict(item.instance.matrix)
        return all(
            axis in values and any(matches_value(values[axis], raw) for raw in raws)
            for axis, raws in self.where_by_axis().items()
        )

    def where_by_axis(self) -> dict[str, tuple[str, ...]]:
        """The ``--where`` values grouped by axis, in the order given."""
        grouped: dict[str, tuple[str, ...]] = {}
        for axis, raw in self.where:
            grouped[axis] = (*grouped.get(axis, ()), raw)
        return grouped

    @property
    def narrows(self) -> bool:
        """Whether anything is selected away at all."""
        return bool(self.jobs or self.where or self.only_failed or self.shard)


def parse_where(pairs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``("shop=bakery",)`` → ``(("shop", "bakery"),)``; UsageError for a pair without ``=``."""
    out = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--where {pair!r}: write AXIS=VALUE, e.g. --where season=winter")
        out.append((name.strip(), value.strip()))
    return tuple(out)


def spelling(value: Any) -> str:
    """How a matrix value is written on the command line: strings bare, the rest as in YAML."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def matches_value(value: Any, raw: str) -> bool:
    """Whether the matrix ``value`` is what ``--where AXIS=raw`` names.

    The matrix's own comparison decides (``matrix.same``), so ``--where`` agrees
    with ``exclude``/``include``; a command-line word is always a string, so the
    value's YAML spelling (``4``, ``true``) and Python's (``True``) match too.
    """
    return same(value, raw) or raw == spelling(value) or raw == str(value)


def narrow(plan: Plan, selection: Selection, *, jobs: Iterable[str]) -> Plan:
    """``plan`` narrowed to ``selection`` (``jobs``: the manifest's job ids).

    Unknown jobs and axes, and ``--where`` values no instance takes, are usage
    errors naming what exists. ``--only-failed`` may select nothing: then there
    is simply nothing to do.
    """
    known = list(jobs)
    unknown = [j for j in selection.jobs if j not in known]
    if unknown:
        raise UsageError(f"--job {unknown[0]}: no such job; jobs: {', '.join(known)}")
    if not selection.narrows:
        return plan
    if selection.where:
        _check_where(plan, selection)
    failed = failed_work(plan) if selection.only_failed else frozenset()
    if selection.shard is None:
        return plan.select(lambda item: selection.keeps(item, failed))
    shard = selection.shard
    roots = chain_roots(i.instance for i in plan.items)
    mine = frozenset(k for k, root in roots.items() if shard.holds(root))
    narrowed = plan.select(lambda item: item.key in mine and selection.keeps(item, failed))
    return _confine(narrowed, mine)


def _confine(plan: Plan, mine: frozenset[str]) -> Plan:
    """Skip whatever ``Plan.select`` pulled in from other shards.

    Image links never cross shards (chains share a root), so what it can pull in
    is only a job's ``needs:`` ordering: that is another shard's work, and running
    it here too would pay for it twice.
    """
    if all(i.key in mine or i.status == PlanStatus.SKIPPED for i in plan.items):
        return plan
    items = tuple(i if i.key in mine or i.status == PlanStatus.SKIPPED
                  else replace(i, status=PlanStatus.SKIPPED, cost=Decimal(0))
                  for i in plan.items)
    return replace(plan, items=items)



def failed_work(plan: Plan) -> frozenset[str]:
    """Failed and unfinished instances, plus the dependants their failure blocked."""
    kept = {i.key for i in plan.items if i.status in (PlanStatus.RETRY, PlanStatus.RESUME)}
    for item in plan.items:  # upstream before downstream, so one pass suffices
        if item.status != PlanStatus.UP_TO_DATE and any(n in kept for n in item.needs):
            kept.add(item.key)
    return frozenset(kept)


def _check_where(plan: Plan, selection: Selection) -> None:
    """UsageError unless every ``--where`` axis exists and each value matches an instance."""
    scope = [i for i in plan.items if not selection.jobs or i.job in selection.jobs]
    rows = [dict(i.instance.matrix) for i in scope]
    within = (f" of job{'s' if len(selection.jobs) > 1 else ''} {', '.join(selection.jobs)}"
              if selection.jobs else "")
    for axis, raws in selection.where_by_axis().items():
        values = [row[axis] for row in rows if axis in row]
        if not values:
            axes = sorted({a for row in rows for a in row})
            listed = ", ".join(axes) if axes else "none (no job has a matrix)"
            raise UsageError(f"--where {axis}={raws[0]}: no instance{within} has a matrix "
                             f"axis {axis!r}; axes: {listed}")
        for raw in raws:
            if not any(matches_value(v, raw) for v in values):
                raise UsageError(f"--where {axis}={raw}: no instance{within} has {axis} "
                                 f"{raw!r}; {axis} is one of: {_listing(values)}")
    if not any(selection.matches(i) for i in scope):
        pairs = " ".join(f"--where {a}={r}" for a, r in selection.where)
        raise UsageError(f"{pairs}: no instance{within} matches all of these together "
                         "(each matches some on its own); drop or change one")


def _listing(values: Iterable[Any]) -> str:
    """The distinct values, sorted (numbers by size), the first ``MAX_VALUES_LISTED`` shown."""
    distinct: dict[str, Any] = {}
    for value in values:
        distinct.setdefault(spelling(value), value)
    ordered = sorted(distinct, key=lambda s: _order(distinct[s], s))
    shown = ", ".join(ordered[:MAX_VALUES_LISTED])
    more = len(ordered) - MAX_VALUES_LISTED
    if more > 0:
        return (f"{shown}, ... ({more:,} more of {len(ordered):,}; "
                "`imgspec plan --json` lists every instance's values)")
    return shown


def _order(value: Any, text: str) -> tuple[int, float, str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), text)
    return (1, 0.0, text)
