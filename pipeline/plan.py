"""The plan: what a run would do, per instance, against the lockfile, and what it costs.

``make_plan`` is pure: an ``Expansion``, a ``Lockfile`` and a predicate saying
which recorded output files still exist go in; a ``Plan`` value comes out. The
``plan`` command prints it; ``run`` executes it. Nothing is threaded through as
a "dry run" flag.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Any

from pipeline.diagnostics import Diagnostic
from pipeline.identity import fingerprint
from pipeline.instances import Expansion, Instance, UpstreamInput
from pipeline.lockfile import LockEntry, Lockfile, Output
from pipeline.matrix import same
from pipeline.reroll import reroll_note, rerolled


class PlanStatus(StrEnum):
    """What the next run does with an instance."""

    NEW = "new"  # never run
    CHANGED = "changed"  # its rendered request differs from the recorded one
    REROLL = "reroll"  # a reviewer asked for new images: generated again with a new seed
    RETRY = "retry"  # the last attempt failed
    RESUME = "resume"  # a task was submitted and not finished: poll it, pay nothing new
    MISSING = "missing"  # done, but files are gone or damaged and their links expired: pay again
    DOWNLOAD = "download"  # done, files gone or damaged, links still valid: fetch again, free
    WAITING = "waiting"  # its inputs come from upstream work in this plan
    UP_TO_DATE = "up-to-date"
    SKIPPED = "skipped"  # left out by --job/--where/--only-failed


STATUS_ORDER = tuple(PlanStatus)
TO_SUBMIT = frozenset({PlanStatus.NEW, PlanStatus.CHANGED, PlanStatus.REROLL,
                       PlanStatus.RETRY, PlanStatus.MISSING, PlanStatus.WAITING})
PENDING = TO_SUBMIT | {PlanStatus.RESUME}  # work at the API; what depends on it must wait
ACTIVE = PENDING | {PlanStatus.DOWNLOAD}  # everything a run does something with
# A result link this close to its expiry is not counted on: by the time the run gets
# to it, it may be gone.
LINK_MARGIN = 120.0


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One instance and what the run will do with it."""

    instance: Instance
    status: PlanStatus
    fingerprint: str | None  # None while it waits for upstream images
    cost: Decimal  # what submitting it pre-charges (0 unless it will be submitted)
    needs: tuple[str, ...]  # instance keys that must be done first
    refetch: tuple[int, ...] = ()  # DOWNLOAD: the indexes of the images to fetch again
    reroll: int = 0  # re-rolls the instance's request includes (recorded in its lock entry)
    note: str | None = None  # REROLL: what the re-roll replaces, for the plan's reader

    @property
    def key(self) -> str:
        """The instance key."""
        return self.instance.key

    @property
    def job(self) -> str:
        """The instance's job."""
        return self.instance.job


@dataclass(frozen=True)
class Plan:
    """Every instance's status and cost, the orphaned lock entries, and the budget."""

    manifest: str
    name: str
    currency: str
    items: tuple[PlanItem, ...]
    orphaned: tuple[str, ...]
    budget: Decimal | None
    warnings: tuple[Diagnostic, ...] = ()
    destination: str | None = None  # the output folder, as the user would name it

    def counts(self) -> dict[str, int]:
        """Instances per status (every status present, zero or not)."""
        out = {s.value: 0 for s in STATUS_ORDER}
        for item in self.items:
            out[item.status.value] += 1
        out["orphaned"] = len(self.orphaned)
        return out

    @cached_property
    def submitting(self) -> tuple[PlanItem, ...]:
        """The items a run will submit (and pay for); computed once, the plan is frozen."""
        return tuple(i for i in self.items if i.status in TO_SUBMIT)

    @property
    def has_work(self) -> bool:
        """Whether a run would do anything at all (submit, poll or download)."""
        return any(i.status in ACTIVE for i in self.items)

    @cached_property
    def images(self) -> int:
        """Images the run will pay for."""
        return sum(i.instance.n for i in self.submitting)

    @cached_property
    def total(self) -> Decimal:
        """The exact cost of the run."""
        return sum((i.cost for i in self.items), Decimal(0))

    def cost_by(self, attribute: Callable[[PlanItem], str]) -> dict[str, Decimal]:
        """Cost summed by a property of the items (job, model), zero-cost groups left out."""
        out: dict[str, Decimal] = {}
        for item in self.submitting:
            name = attribute(item)
            out[name] = out.get(name, Decimal(0)) + item.cost
        return out

    @property
    def within_budget(self) -> bool:
        """Whether the run's cost fits the budget (always, without one)."""
        return self.budget is None or self.total <= self.budget

    def select(self, keep: Callable[[PlanItem], bool]) -> Plan:
        """A plan in which items not kept become ``skipped`` (cost 0).

        Upstream work a kept item waits for is kept too, so the run can feed it.
        """
        by_key = {i.key: i for i in self.items}
        wanted = {i.key for i in self.items if keep(i)}
        stack = list(wanted)
        while stack:
            for need in by_key[stack.pop()].needs:
                if need in by_key and need not in wanted and by_key[need].status in ACTIVE:
                    wanted.add(need)
                    stack.append(need)
        items = tuple(
            i if i.key in wanted else replace(i, status=PlanStatus.SKIPPED, cost=Decimal(0))
            for i in self.items
        )
        return replace(self, items=items)


def make_plan(
    expansion: Expansion,
    lock: Lockfile,
    *,
    present: Callable[[Output], bool],
    max_cost: Decimal | None = None,
    now: float | None = None,
    rerolls: Collection[str] = frozenset(),
    destination: str | None = None,
) -> Plan:
    """Diff the expansion against the lockfile; ``present(output)`` says if it is intact.

    ``max_cost`` (from the command line) overrides the manifest's budget. ``now`` (Unix
    time) is when the plan is made: a missing image whose result link is still valid
    then is fetched again for free (``download``); without it, every link counts as
    expired.

    ``rerolls``: keys of instances a reviewer asked to re-roll (``review.reroll_keys``).
    One that is otherwise done is planned as ``reroll``: its next re-roll count gives it
    a new seed (``reroll.rerolled``). An instance re-rolled before keeps the seed of
    its recorded count, so its fingerprint stays the same. ``destination`` names the
    output folder the plan writes to (shown with the plan).
    """
    manifest = expansion.manifest
    pricing = manifest.pricing
    by_job: dict[str, list[str]] = {}
    for inst in expansion.instances:
        by_job.setdefault(inst.job, []).append(inst.key)
    statuses: dict[str, PlanStatus] = {}
    items: list[PlanItem] = []
    for inst in expansion.instances:
        needs = tuple(inst.upstream) + tuple(k for job in inst.needs for k in by_job.get(job, ()))
        entry = lock.entries.get(inst.key)
        count = entry.reroll if entry is not None else 0
        made = rerolled(inst, count)
        status, fp, refetch = _status(made, entry, statuses, lock.entries, present, now)
        note = link_note(status, entry, refetch, present, now)
        if inst.key in rerolls and status in _DONE:
            count += 1
            made = rerolled(inst, count)
            request = resolved_request(made, lock.entries)
            fp = None if request is None else fingerprint(request)
            status, refetch, note = PlanStatus.REROLL, (), reroll_note(inst)
        statuses[inst.key] = status
        cost = pricing.cost(made.model, made.n) if status in TO_SUBMIT else Decimal(0)
        items.append(PlanItem(made, status, fp, cost, needs, refetch, count, note))
    keys = set(statuses)
    orphaned = tuple(sorted(k for k in lock.entries if k not in keys))
    return Plan(
        manifest=manifest.file,
        name=manifest.name,
        currency=pricing.currency,
        items=tuple(items),
        orphaned=orphaned,
        budget=max_cost if max_cost is not None else manifest.budget,
        warnings=expansion.warnings,
        destination=destination,
    )


# A re-roll replaces images that exist (or existed, unchanged): otherwise the instance
# is generated again anyway, and the decision about its old image no longer applies.
_DONE = frozenset({PlanStatus.UP_TO_DATE, PlanStatus.DOWNLOAD, PlanStatus.MISSING})


def resolved_request(inst: Instance, entries: Mapping[str, LockEntry]) -> dict[str, Any] | None:
    """The request with upstream images by content hash, or None if one is not yet known."""
    if not inst.upstream:
        return dict(inst.request)
    refs = []
    for item in inst.inputs:
        if isinstance(item, UpstreamInput):
            entry = entries.get(item.key)
            if entry is None or entry.status != "done" or item.index >= len(entry.outputs):
                return None
            refs.append(f"{item.ref}@sha256={entry.outputs[item.index].sha256}")
        else:
            refs.append(item.ref)
    return {**inst.request, "image_urls": refs}


def _status(
    inst: Instance,
    entry: LockEntry | None,
    statuses: Mapping[str, PlanStatus],
    entries: Mapping[str, LockEntry],
    present: Callable[[Output], bool],
    now: float | None,
) -> tuple[PlanStatus, str | None, tuple[int, ...]]:
    if any(statuses.get(up) in PENDING for up in inst.upstream):
        return PlanStatus.WAITING, None, ()
    request = resolved_request(inst, entries)
    if request is None:
        return PlanStatus.WAITING, None, ()
    fp = fingerprint(request)
    if entry is None:
        return PlanStatus.NEW, fp, ()
    if entry.fingerprint != fp:
        return PlanStatus.CHANGED, fp, ()
    if entry.status == "failed":
        return PlanStatus.RETRY, fp, ()
    if entry.status in ("submitting", "running"):
        return PlanStatus.RESUME, fp, ()
    if not entry.outputs:
        return PlanStatus.MISSING, fp, ()
    bad = tuple(i for i, o in enumerate(entry.outputs) if not present(o))
    if not bad:
        return PlanStatus.UP_TO_DATE, fp, ()
    if now is not None and all(_link_valid(entry.outputs[i], now) for i in bad):
        return PlanStatus.DOWNLOAD, fp, bad
    return PlanStatus.MISSING, fp, ()


def link_note(status: PlanStatus, entry: LockEntry | None, refetch: tuple[int, ...],
              present: Callable[[Output], bool], now: float | None) -> str | None:
    """What the plan says of result links: a ``download`` is free until the link
    expires; a ``missing`` image whose link has expired must be paid for again."""
    if entry is None or not entry.outputs:
        return None
    if status == PlanStatus.DOWNLOAD:
        until = min(entry.outputs[i].expires_at or 0 for i in refetch)
        return f"free: its link is valid until {_utc(until)}"
    if status != PlanStatus.MISSING:
        return None
    bad = [o for o in entry.outputs if not present(o)]
    if now is None or not bad:
        return None
    expired = [o.expires_at for o in bad if o.url is not None and o.expires_at is not None]
    if not expired:
        return "image gone and no link recorded: generating it again is paid"
    return (f"image gone, its link expired at {_utc(min(expired))} (or too soon to count "
            "on): generating it again is paid")


def _utc(when: int) -> str:
    """Unix seconds as a UTC time (pure: the instant is absolute)."""
    return datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _link_valid(output: Output, now: float) -> bool:
    return (output.url is not None and output.expires_at is not None
            and output.expires_at > now + LINK_MARGIN)


def matches_where(item: PlanItem, where: Iterable[tuple[str, str]]) -> bool:
    """``--where AXIS=VALUE`` filters: every pair must equal the item's matrix value."""
    values = dict(item.instance.matrix)
    return all(
        name in values and (same(values[name], raw) or str(values[name]) == raw)
        for name, raw in where
    )
