"""What a change to a manifest does and costs: the spec at a revision against the working tree.

Pure: two expansions (``before`` may be absent: the manifest is new) and the
lockfile at the revision go in, a ``SpecDiff`` comes out. Reading them from git
is ``pipeline.shell.store.gitspec``'s job; rendering them is ``pipeline.views.diff``'s.

- ``items``: instances added, changed (with the request fields that changed) or
  removed, each with its cost;
- ``to_apply``: what ``imgspec run`` of the working tree would pay given the
  revision's lockfile, taking its recorded results as intact (a fresh checkout
  has no output files: whether they are on some disk is not the change's doing);
- ``before``/``after``: the spec's full cost (every instance paid once) at both
  sides, by job and by model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pipeline.core.expansion.instances import Expansion, Instance
from pipeline.core.lock.lockfile import Lockfile, Output
from pipeline.core.lock.moves import applicable, relocate
from pipeline.core.planning.plan import Plan, PlanItem, make_plan

Change = Literal["added", "changed", "removed"]
CHANGES: tuple[Change, ...] = ("added", "changed", "removed")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One request field that differs: ``prompt: "a" -> "b"`` (``None`` when absent)."""

    field: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class ItemDiff:
    """One instance that the change adds, changes or removes."""

    key: str
    job: str
    model: str
    change: Change
    fields: tuple[FieldChange, ...]
    to_apply: Decimal  # what the run of the working tree pays for it (0 when removed)
    before: Decimal  # its full cost at the revision (0 when added)
    after: Decimal  # its full cost in the working tree (0 when removed)


@dataclass(frozen=True, slots=True)
class CostGroup:
    """Costs of one job or one model."""

    to_apply: Decimal = Decimal(0)
    before: Decimal = Decimal(0)
    after: Decimal = Decimal(0)

    @property
    def delta(self) -> Decimal:
        """After minus before."""
        return self.after - self.before

    def plus(self, *, to_apply: Decimal = Decimal(0), before: Decimal = Decimal(0),
             after: Decimal = Decimal(0)) -> CostGroup:
        """This group with amounts added."""
        return CostGroup(self.to_apply + to_apply, self.before + before, self.after + after)


@dataclass(frozen=True)
class SpecDiff:
    """The difference between the spec at ``against`` and the working tree, with costs."""

    against: str
    manifest: str
    name: str
    currency: str
    items: tuple[ItemDiff, ...]
    to_apply: Decimal
    before: Decimal
    after: Decimal
    by_job: Mapping[str, CostGroup]
    by_model: Mapping[str, CostGroup]
    # Instances whose request did not change that the run still pays for: failed or
    # never done at the revision, or editing an image that changes.
    also_run: tuple[PlanItem, ...]
    plan: Plan  # the working tree's plan against the revision's lockfile

    @property
    def unchanged_to_run(self) -> int:
        """How many instances ``also_run`` holds."""
        return len(self.also_run)

    @property
    def unchanged_cost(self) -> Decimal:
        """What the ``also_run`` instances cost."""
        return sum((i.cost for i in self.also_run), Decimal(0))

    @property
    def delta(self) -> Decimal:
        """The spec's full cost after minus before."""
        return self.after - self.before

    def count(self, change: Change) -> int:
        """How many instances have this change."""
        return sum(1 for i in self.items if i.change == change)

    @property
    def empty(self) -> bool:
        """Whether nothing changed and nothing is to pay."""
        return not self.items and self.to_apply == 0


def recorded_intact(_: Output) -> bool:
    """The diff's view of the disk: a recorded result is there (a checkout has no outputs)."""
    return True


def field_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """The request fields that differ, in field-name order (absent on a side: ``None``)."""
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, _MISSING), new.get(name, _MISSING)
        if a != b:
            out.append(FieldChange(name, None if a is _MISSING else a,
                                   None if b is _MISSING else b))
    return tuple(out)


def compare(before: Expansion | None, after: Expansion, lock: Lockfile, *,
            against: str) -> SpecDiff:
    """Diff the expansion at ``against`` (``None``: the manifest is new there) with the
    working tree's; each side is priced with its own price table (``pricing:``)."""
    moves = after.manifest.moves
    if moves:  # the run applies them first: a moved result costs nothing to apply
        keys = {i.key for i in after.instances}
        lock, _, _ = relocate(lock, applicable(moves, keys, after.manifest.jobs))
    plan = make_plan(after, lock, present=recorded_intact, max_cost=None, now=None)
    pricing = after.manifest.pricing
    old = before.by_key() if before is not None else {}
    new = after.by_key()
    planned = {i.key: i for i in plan.items}

    old_pricing = before.manifest.pricing if before is not None else pricing

    def full(inst: Instance) -> Decimal:
        return pricing.cost(inst.model, inst.n)

    def full_before(inst: Instance) -> Decimal:
        return old_pricing.cost(inst.model, inst.n)

    items: list[ItemDiff] = []
    for inst in after.instances:
        prior = old.get(inst.key)
        cost = planned[inst.key].cost
        if prior is None:
            items.append(ItemDiff(inst.key, inst.job, inst.model, "added", (), cost,
                                  Decimal(0), full(inst)))
        elif prior.request != inst.request:
            items.append(ItemDiff(inst.key, inst.job, inst.model, "changed",
                                  field_changes(prior.request, inst.request), cost,
                                  full_before(prior), full(inst)))
    for inst in (before.instances if before is not None else ()):
        if inst.key not in new:
            items.append(ItemDiff(inst.key, inst.job, inst.model, "removed", (), Decimal(0),
                                  full_before(inst), Decimal(0)))
    listed = {i.key for i in items}
    rest = [p for p in plan.items if p.key not in listed and p.cost]
    costs = (full_before, full)
    by_job = _groups(items, rest, old.values(), new.values(), costs, lambda x: x.job)
    by_model = _groups(items, rest, old.values(), new.values(), costs, lambda x: x.model)
    return SpecDiff(
        against=against, manifest=after.manifest.file, name=after.manifest.name,
        currency=pricing.currency, items=tuple(items), to_apply=plan.total,
        before=sum((full_before(i) for i in old.values()), Decimal(0)),
        after=sum((full(i) for i in new.values()), Decimal(0)),
        by_job=by_job, by_model=by_model, also_run=tuple(rest), plan=plan)


def _groups(items: Iterable[ItemDiff], rest: Iterable[PlanItem], old: Iterable[Instance],
            new: Iterable[Instance],
            costs: tuple[Callable[[Instance], Decimal], Callable[[Instance], Decimal]],
            name: Callable[[Any], str]) -> dict[str, CostGroup]:
    """Costs grouped by job or model: every group either side has, in first-seen order."""
    groups: dict[str, CostGroup] = {}

    def add(group: str, **amounts: Decimal) -> None:
        groups[group] = groups.get(group, CostGroup()).plus(**amounts)

    for inst in old:
        add(name(inst), before=costs[0](inst))
    for inst in new:
        add(name(inst), after=costs[1](inst))
    for item in items:
        add(name(item), to_apply=item.to_apply)
    for planned in rest:
        add(name(planned.instance), to_apply=planned.cost)
    return groups
