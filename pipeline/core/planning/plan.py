"""The plan: what a run would do, per instance, against the lockfile, and what it costs.

``make_plan`` is pure: an ``Expansion``, a ``Lockfile`` and a predicate saying
which recorded output files still exist go in; a ``Plan`` value comes out. The
``plan`` command prints it; ``run`` executes it. Nothing is threaded through as
a "dry run" flag.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Any

from pipeline.core.expansion.identity import content_key, fingerprint
from pipeline.core.expansion.instances import Expansion, Instance, UpstreamInput
from pipeline.core.expansion.matrix import same
from pipeline.core.expansion.reroll import reroll_note, rerolled
from pipeline.core.lock.lifecycle import repolls
from pipeline.core.lock.lockfile import LockEntry, Lockfile, Output
from pipeline.core.lock.moves import Moved
from pipeline.core.lock.reuse import PaidImage, PaidResult, Reuse, choose, gone_note
from pipeline.core.manifest.diagnostics import Diagnostic
from pipeline.core.manifest.model import Manifest


class PlanStatus(StrEnum):
    """What the next run does with an instance."""

    NEW = "new"  # never run
    CHANGED = "changed"  # its rendered request differs from the recorded one
    REROLL = "reroll"  # a reviewer asked for new images: generated again with a new seed
    RETRY = "retry"  # the last attempt failed (free when it only re-polls: ``PlanItem.repoll``)
    RESUME = "resume"  # a task was submitted and not finished: poll it, pay nothing new
    MISSING = "missing"  # done, but files are gone or damaged and their links expired: pay again
    DOWNLOAD = "download"  # done, files gone or damaged, links still valid: fetch again, free
    REUSE = "reuse"  # the same request was paid for in the project: its images, free
    WAITING = "waiting"  # its inputs come from upstream work in this plan
    UP_TO_DATE = "up-to-date"
    SKIPPED = "skipped"  # left out by --job/--where/--only-failed


STATUS_ORDER = tuple(PlanStatus)
TO_SUBMIT = frozenset({PlanStatus.NEW, PlanStatus.CHANGED, PlanStatus.REROLL,
                       PlanStatus.RETRY, PlanStatus.MISSING, PlanStatus.WAITING})
PENDING = TO_SUBMIT | {PlanStatus.RESUME}  # work at the API; what depends on it must wait
ACTIVE = PENDING | {PlanStatus.DOWNLOAD, PlanStatus.REUSE}  # everything a run does
# The statuses whose request the project may already have paid for under another name.
_FINDABLE = frozenset({PlanStatus.NEW, PlanStatus.CHANGED, PlanStatus.MISSING})
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
    reuse: Reuse | None = None  # REUSE: the paid result and how its images arrive
    # RETRY of a paid task whose results could not be fetched: it is polled again for
    # fresh links, at no cost, instead of being submitted again.
    repoll: bool = False

    @property
    def pays(self) -> bool:
        """Whether the run submits (and pays for) this item."""
        return self.status in TO_SUBMIT and not self.repoll

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
    # Lock entries the run moves to new keys first (``moved:``), with their files.
    moves: tuple[Moved, ...] = ()
    spent: Decimal = Decimal(0)  # what the lockfile records as charged so far
    max_total: Decimal | None = None  # budget.max_total: spent so far plus this plan

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
        return tuple(i for i in self.items if i.pays)

    @property
    def has_work(self) -> bool:
        """Whether a run would do anything with an instance (submit, poll or download);
        ``moves`` are applied before, whatever else there is."""
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
        """Whether the run's cost fits both budgets (always, without them)."""
        return fits(self.total, budget=self.budget, spent=self.spent, max_total=self.max_total)

    @property
    def run_cap(self) -> Decimal | None:
        """What this run may spend at most: ``max_cost``, and what ``max_total`` leaves."""
        return run_cap(self.budget, spent=self.spent, max_total=self.max_total)

    def head(self) -> PlanHead:
        """The plan without its items, its figures summed up."""
        return PlanHead(self.manifest, self.name, self.currency, self.orphaned, self.budget,
                        Tally.of(self.items), self.warnings, self.destination,
                        moved=len(self.moves), spent=self.spent, max_total=self.max_total)

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


@dataclass(slots=True)
class Tally:
    """A plan's figures, summed as its items pass: counts per status, what is submitted,
    and its cost (in total, per model, per job). ``Plan``'s own figures agree."""

    counts: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in STATUS_ORDER})
    instances: int = 0  # to submit
    images: int = 0  # to pay for
    total: Decimal = Decimal(0)
    by_model: dict[str, Decimal] = field(default_factory=dict)  # submitted items only
    by_job: dict[str, Decimal] = field(default_factory=dict)  # submitted items only

    @classmethod
    def of(cls, items: Iterable[PlanItem]) -> Tally:
        """The figures of ``items``."""
        tally = cls()
        for item in items:
            tally.add(item)
        return tally

    def add(self, item: PlanItem) -> None:
        """Count one more item."""
        status = item.status
        self.counts[status.value] += 1
        if item.pays:
            inst, cost = item.instance, item.cost
            self.instances += 1
            self.images += inst.n
            self.total += cost
            model = inst.model
            self.by_model[model] = self.by_model.get(model, Decimal(0)) + cost
            self.by_job[inst.job] = self.by_job.get(inst.job, Decimal(0)) + cost
        elif item.cost:
            self.total += item.cost


@dataclass(frozen=True)
class PlanHead:
    """Everything of a plan but its items, whose figures ``tally`` holds: what
    ``plan --json`` writes before the items, known once every item has passed."""

    manifest: str
    name: str
    currency: str
    orphaned: tuple[str, ...]
    budget: Decimal | None
    tally: Tally
    warnings: tuple[Diagnostic, ...] = ()
    destination: str | None = None
    moved: int = 0
    spent: Decimal = Decimal(0)
    max_total: Decimal | None = None

    @property
    def within_budget(self) -> bool:
        """Whether the run's cost fits both budgets (always, without them)."""
        return fits(self.tally.total, budget=self.budget, spent=self.spent,
                    max_total=self.max_total)


def fits(total: Decimal, *, budget: Decimal | None, spent: Decimal,
         max_total: Decimal | None) -> bool:
    """Whether a plan costing ``total`` fits ``max_cost`` (``budget``) and, with what was
    ``spent`` so far, ``max_total``."""
    return ((budget is None or total <= budget)
            and (max_total is None or spent + total <= max_total))


def run_cap(budget: Decimal | None, *, spent: Decimal,
            max_total: Decimal | None) -> Decimal | None:
    """The most one run may spend: ``max_cost``, and what ``max_total`` leaves of it."""
    if max_total is None:
        return budget
    left = max(max_total - spent, Decimal(0))
    return left if budget is None else min(budget, left)


def make_plan(
    expansion: Expansion,
    lock: Lockfile,
    *,
    present: Callable[[Output], bool],
    max_cost: Decimal | None = None,
    now: float | None = None,
    rerolls: Collection[str] = frozenset(),
    destination: str | None = None,
    moves: tuple[Moved, ...] = (),
    spent: Decimal | None = None,
    paid: PaidResults | None = None,
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
    output folder the plan writes to (shown with the plan). ``moves``: the entries
    ``moves.plan_moves`` moved in ``lock`` (the run moves them first). ``spent``: the
    spend recorded so far, for ``budget.max_total`` (default: ``lock``'s).

    ``paid``: the project's paid results (``reuse``). An instance that would be
    submitted (new, changed, missing) whose request has one is planned as ``reuse``.
    """
    planner = Planner(expansion.manifest, lock, present=present, now=now, rerolls=rerolls,
                      paid=paid)
    items = tuple(planner.item(inst) for inst in expansion.instances)
    return Plan(
        manifest=expansion.manifest.file,
        name=expansion.manifest.name,
        currency=expansion.manifest.pricing.currency,
        items=items,
        orphaned=planner.orphaned(),
        budget=max_cost if max_cost is not None else expansion.manifest.budget,
        warnings=expansion.warnings,
        destination=destination,
        moves=moves,
        spent=lock.charged if spent is None else spent,
        max_total=expansion.manifest.max_total,
    )


class Planner:
    """``make_plan``'s work, one instance at a time, in the expansion's order.

    Remembers only what later instances ask about: the statuses of the jobs others
    take images from, the keys of the jobs others ``need``, and which lock entries
    were met (the rest are orphaned). So a plan can be made, and written, while its
    instances stream past (``plan --json``); ``make_plan`` gathers the same items.
    """

    def __init__(self, manifest: Manifest, lock: Lockfile, *, present: Callable[[Output], bool],
                 now: float | None = None, rerolls: Collection[str] = frozenset(),
                 paid: PaidResults | None = None) -> None:
        self.manifest = manifest
        self.lock = lock
        self.pricing = manifest.pricing
        self.present = present
        self.now = now
        self.rerolls = rerolls
        self._sources = frozenset(ref.job for job in manifest.jobs.values()
                                  for _, ref in job.upstream_refs)
        self._needed = frozenset(need for job in manifest.jobs.values() for need in job.needs)
        self._statuses: dict[str, PlanStatus] = {}  # of instances of ``_sources`` jobs
        self._keys: dict[str, list[str]] = {}  # instance keys of ``_needed`` jobs, by job
        self._met: set[str] = set()  # lock entries some instance has
        self.paid = paid
        # Images of reused upstream instances, by key: what their downstream edits.
        self._reused: dict[str, tuple[str, ...]] = {}

    def item(self, inst: Instance) -> PlanItem:
        """What the run does with ``inst`` (every job it ``needs`` has passed already)."""
        entries = self.lock.entries
        keys = self._keys
        needs = tuple(inst.upstream) + tuple(k for job in inst.needs for k in keys.get(job, ()))
        entry = entries.get(inst.key)
        count = entry.reroll if entry is not None else 0
        made = rerolled(inst, count)
        reused = self._reused
        # An entry recorded under another seed derivation: its own seed, if that is all
        # that differs (tried first: after an upgrade, that is every such entry).
        kept = made if entry is None else recorded_seed(made, entry, count)
        found = None
        if kept is not made and entry is not None:
            found = _status(kept, entry, self._statuses, entries, self.present, self.now,
                            reused)
            if found[1] == entry.fingerprint:
                made = kept
            else:
                found = None
        status, fp, refetch, request = found or _status(
            made, entry, self._statuses, entries, self.present, self.now, reused)
        note = link_note(status, entry, refetch, self.present, self.now)
        reuse: Reuse | None = None
        if inst.key in self.rerolls and status in _DONE:
            count += 1
            made = rerolled(inst, count)
            request = resolved_request(made, entries, reused)
            fp = None if request is None else fingerprint(request)
            status, refetch, note = PlanStatus.REROLL, (), reroll_note(inst)
        elif status in _FINDABLE and self.paid is not None and request is not None:
            if self.paid.empty():  # found out once: a project with nothing paid costs no more
                self.paid = None
            else:
                candidates = self.paid.candidates(content_key(request, fp))
                reuse = self.paid.choose(candidates, self.now) if candidates else None
                if reuse is not None:
                    status, refetch, note = PlanStatus.REUSE, (), reuse.note
                    reused[inst.key] = tuple(i.output.sha256 for i in reuse.result.images)
                elif candidates and note is None:
                    note = gone_note(candidates)
        if entry is not None:
            self._met.add(inst.key)
        if inst.job in self._sources:
            self._statuses[inst.key] = status
        if inst.job in self._needed:
            keys.setdefault(inst.job, []).append(inst.key)
        repoll = status == PlanStatus.RETRY and repolls(entry)
        if repoll:
            note = repoll_note(entry)
        cost = (self.pricing.cost(made.model, made.n) if status in TO_SUBMIT and not repoll
                else Decimal(0))
        return PlanItem(made, status, fp, cost, needs, refetch, count, note, reuse, repoll)

    def orphaned(self) -> tuple[str, ...]:
        """Lock entries no instance has had so far (all of them, once every one has passed)."""
        return tuple(sorted(k for k in self.lock.entries if k not in self._met))

    def head(self, tally: Tally, *, warnings: tuple[Diagnostic, ...] = (),
             max_cost: Decimal | None = None, destination: str | None = None) -> PlanHead:
        """The head of the plan whose every item has passed, ``tally`` counting them;
        the options are ``make_plan``'s."""
        manifest = self.manifest
        return PlanHead(manifest.file, manifest.name, self.pricing.currency, self.orphaned(),
                        max_cost if max_cost is not None else manifest.budget, tally,
                        warnings, destination, spent=self.lock.charged,
                        max_total=manifest.max_total)


# A re-roll replaces images that exist (or existed, unchanged): otherwise the instance
# is generated again anyway, and the decision about its old image no longer applies.
_DONE = frozenset({PlanStatus.UP_TO_DATE, PlanStatus.DOWNLOAD, PlanStatus.MISSING})


def resolved_request(inst: Instance, entries: Mapping[str, LockEntry],
                     reused: Mapping[str, tuple[str, ...]] | None = None
                     ) -> dict[str, Any] | None:
    """The request with upstream images by content hash, or None if one is not yet known.

    ``reused``: the images (sha256) of upstream instances the plan reuses, not yet in
    the lockfile.
    """
    if not inst.upstream:
        return dict(inst.request)
    refs = []
    for item in inst.inputs:
        if isinstance(item, UpstreamInput):
            shas = reused.get(item.key) if reused else None
            if shas is not None and item.index < len(shas):
                refs.append(f"{item.ref}@sha256={shas[item.index]}")
                continue
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
    reused: Mapping[str, tuple[str, ...]],
) -> tuple[PlanStatus, str | None, tuple[int, ...], Mapping[str, Any] | None]:
    if any(statuses.get(up) in PENDING for up in inst.upstream):
        return PlanStatus.WAITING, None, (), None
    # Without upstream images the request is the instance's own (fingerprint only reads it).
    request = inst.request if not inst.upstream else resolved_request(inst, entries, reused)
    if request is None:
        return PlanStatus.WAITING, None, (), None
    fp = fingerprint(request)
    if entry is None:
        return PlanStatus.NEW, fp, (), request
    if entry.fingerprint != fp:
        return PlanStatus.CHANGED, fp, (), request
    if entry.status == "failed":
        return PlanStatus.RETRY, fp, (), request
    if entry.status in ("submitting", "running"):
        return PlanStatus.RESUME, fp, (), request
    if not entry.outputs:
        return PlanStatus.MISSING, fp, (), request
    bad = tuple(i for i, o in enumerate(entry.outputs) if not present(o))
    if not bad:
        return PlanStatus.UP_TO_DATE, fp, (), request
    if now is not None and all(_link_valid(entry.outputs[i], now) for i in bad):
        return PlanStatus.DOWNLOAD, fp, bad, request
    return PlanStatus.MISSING, fp, (), request


def recorded_seed(inst: Instance, entry: LockEntry | None, count: int) -> Instance:
    """``inst`` with the seed its lock entry recorded, when imgspec chose both seeds.

    A seed imgspec derived (or a re-roll's) may have been derived another way by an
    earlier imgspec: the entry keeps the seed it recorded, and so stays up to date,
    as long as the rest of its request is the same (the caller compares
    fingerprints). A seed the manifest fixes is never replaced. Returns ``inst``
    itself when there is nothing to try.
    """
    if (entry is None or entry.seed is None or inst.seed is None or entry.seed == inst.seed
            or not (inst.derived_seed or count)):
        return inst
    return replace(inst, seed=entry.seed, request={**inst.request, "seed": entry.seed})


class PaidResults:
    """The project's paid results as the planner asks for them: the candidates of a
    content key, and the one to reuse (``intact`` says if an image's file is whole)."""

    def __init__(self, candidates: Callable[[str], tuple[PaidResult, ...]],
                 intact: Callable[[PaidImage], bool],
                 empty: Callable[[], bool] = lambda: False) -> None:
        self.candidates = candidates
        self.intact = intact
        self.empty = empty  # whether there is no paid result at all (asked once)

    def choose(self, candidates: tuple[PaidResult, ...], now: float | None) -> Reuse | None:
        """The candidate to reuse at ``now``, or None (see ``reuse.choose``)."""
        return choose(candidates, intact=self.intact, now=now)


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


def repoll_note(entry: LockEntry | None) -> str:
    """What the plan says of a ``retry`` that only polls its paid task again."""
    task = entry.task_id if entry is not None else None
    return (f"free: re-polls task {task} for fresh result links; it completed and was "
            "paid, its results could not be fetched")


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
