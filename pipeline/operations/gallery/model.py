"""The gallery model: what the gallery page shows, built from plain values.

Pure: the expansion, the lockfile, the plan and the review decisions go in,
with a function saying where an output's image and thumbnail are (or that its
file is gone); a frozen ``Gallery`` comes out. ``pipeline.operations.gallery.page``
renders it as HTML, ``pipeline.operations.gallery.site`` writes the files.

Every instance appears, whatever its state, with one slot per image it has or
will have, so a grid of slots stays aligned when some have no image.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal

from pipeline.core.apimart.rules import REQUEST_FIELDS
from pipeline.core.expansion.instances import Expansion, Instance
from pipeline.core.lock.lockfile import LockEntry, Lockfile, Output
from pipeline.core.planning.plan import Plan, PlanItem, PlanStatus
from pipeline.shell.store.review import Decision, Review, Verdict, current

State = Literal["done", "failed", "blocked", "waiting", "missing", "stale", "reroll",
                "running", "pending"]
STATES: tuple[State, ...] = ("done", "failed", "blocked", "waiting", "missing", "stale",
                             "reroll", "running", "pending")
AxisKind = Literal["matrix", "field", "image"]
# Request fields that make poor axes: free text, structured values, or (seed) different
# for every instance by design.
NOT_AXES = frozenset({"prompt", "negative_prompt", "seed", "image_urls", "bbox_list",
                      "color_palette"})
_BY_STATUS: Mapping[PlanStatus, State] = {
    PlanStatus.UP_TO_DATE: "done", PlanStatus.REROLL: "reroll", PlanStatus.DOWNLOAD: "missing",
    PlanStatus.MISSING: "missing", PlanStatus.CHANGED: "stale", PlanStatus.RETRY: "failed",
    PlanStatus.RESUME: "running", PlanStatus.NEW: "pending", PlanStatus.SKIPPED: "pending",
    PlanStatus.WAITING: "waiting", PlanStatus.REUSE: "pending",
}


@dataclass(frozen=True, slots=True)
class ImageFiles:
    """Where an output's image and its thumbnail are, relative to the gallery page."""

    href: str
    thumb: str


@dataclass(frozen=True, slots=True)
class Picture:
    """One image slot of an instance; ``files`` is None when there is no image to show."""

    index: int
    files: ImageFiles | None
    sha256: str | None
    width: int | None
    height: int | None
    verdict: Verdict | None


@dataclass(frozen=True, slots=True)
class Entry:
    """One instance as the page shows it."""

    key: str
    job: str
    state: State
    values: tuple[tuple[str, str], ...]  # axis name → value label (matrix and field axes)
    prompt: str
    request: Mapping[str, Any]  # what made the images (recorded), else what will be sent
    seed: int | None
    task_id: str | None
    cost: Decimal  # paid so far
    planned: Decimal  # what the next run would pay for it
    time: str | None  # when it last changed (lockfile's updated_at)
    error: str | None  # the API's message for a failure; why it is blocked
    note: str | None  # the plan's note (a re-roll's new seed)
    pictures: tuple[Picture, ...]


@dataclass(frozen=True, slots=True)
class Axis:
    """A dimension the page can lay a grid out on, with its values in first-seen order."""

    name: str
    kind: AxisKind
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JobView:
    """One job: its axes and its instances, in expansion order."""

    id: str
    axes: tuple[Axis, ...]
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Gallery:
    """Everything the gallery page shows."""

    name: str
    manifest: str
    currency: str
    jobs: tuple[JobView, ...]

    def counts(self) -> dict[State, int]:
        """Instances per state (every state present, zero or not)."""
        out = dict.fromkeys(STATES, 0)
        for job in self.jobs:
            for entry in job.entries:
                out[entry.state] += 1
        return out


Locate = Callable[[Output], ImageFiles | None]


def build_gallery(expansion: Expansion, lock: Lockfile, plan: Plan, review: Review, *,
                  locate: Locate) -> Gallery:
    """The gallery of a manifest: every instance of ``expansion`` in its state.

    ``plan`` is the unnarrowed plan made from ``lock``; ``locate(output)`` says where
    a recorded image and its thumbnail are, or None when its file is gone.
    """
    items = {item.key: item for item in plan.items}
    decisions = current(review, lock)
    states: dict[str, State] = {}
    by_job: dict[str, list[Entry]] = {}
    for inst in expansion.instances:
        item = items[inst.key]
        entry = lock.entries.get(inst.key)
        state, why = _state(item, entry, states)
        states[inst.key] = state
        by_job.setdefault(inst.job, []).append(
            _entry(inst, item, entry, state, why, decisions, locate))
    jobs = []
    for job_id in (j for j in expansion.manifest.jobs if j in expansion.job_order):
        instances = [i for i in expansion.instances if i.job == job_id]
        entries = by_job.get(job_id, [])
        axes = job_axes(instances)
        jobs.append(JobView(job_id, axes, tuple(_with_values(e, i, axes)
                                                for e, i in zip(entries, instances,
                                                                strict=True))))
    return Gallery(plan.name, plan.manifest, plan.currency, tuple(jobs))


def label(value: Any) -> str:
    """A value as an axis label: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           sort_keys=True)


def job_axes(instances: list[Instance]) -> tuple[Axis, ...]:
    """The matrix axes, the request fields that vary, and the image index when ``n > 1``."""
    matrix: dict[str, dict[str, None]] = {}
    for inst in instances:
        for name, value in inst.matrix:
            matrix.setdefault(name, {})[label(value)] = None
    for inst in instances:  # an include row may lack an axis
        names = {name for name, _ in inst.matrix}
        for name, seen in matrix.items():
            if name not in names:
                seen[_missing(inst, name)] = None
    fields: dict[str, dict[str, None]] = {}
    for name in REQUEST_FIELDS:
        if name in NOT_AXES or name in matrix:
            continue
        seen = {label(inst.request.get(name)): None for inst in instances}
        if len(seen) > 1:
            fields[name] = seen
    axes = [Axis(n, "matrix", tuple(v)) for n, v in matrix.items()]
    axes += [Axis(n, "field", tuple(v)) for n, v in fields.items()]
    most = max((_slots(i, None) for i in instances), default=1)
    if most > 1:
        name = "image" if "image" not in matrix and "image" not in fields else "image index"
        axes.append(Axis(name, "image", tuple(str(i) for i in range(most))))
    return tuple(axes)


def _missing(inst: Instance, axis: str) -> str:
    """The value of an axis an instance's matrix lacks: the request's, for a field; else ""."""
    return label(inst.request[axis]) if axis in REQUEST_FIELDS and axis in inst.request else ""


def _slots(inst: Instance, entry: LockEntry | None) -> int:
    return max(inst.n, len(entry.outputs) if entry is not None else 0, 1)


def _state(item: PlanItem, entry: LockEntry | None,
           states: Mapping[str, State]) -> tuple[State, str | None]:
    state = _BY_STATUS[item.status]
    if state == "waiting":
        stuck = [k for k in item.instance.upstream if states.get(k) in ("failed", "blocked")]
        if stuck:
            return "blocked", f"upstream {stuck[0]} is {states[stuck[0]]}"
        return "waiting", None
    if state in ("failed", "stale") and entry is not None and entry.status == "failed":
        return state, entry.last_error or "the last attempt failed"
    return state, None


def _entry(inst: Instance, item: PlanItem, entry: LockEntry | None, state: State,
           why: str | None, decisions: Mapping[tuple[str, int], Decision],
           locate: Locate) -> Entry:
    outputs = entry.outputs if entry is not None else ()
    pictures = []
    for index in range(_slots(inst, entry)):
        output = outputs[index] if index < len(outputs) else None
        decision = decisions.get((inst.key, index))
        pictures.append(Picture(
            index=index,
            files=None if output is None else locate(output),
            sha256=None if output is None else output.sha256,
            width=None if output is None else output.width,
            height=None if output is None else output.height,
            verdict=None if decision is None else decision.verdict))
    request = dict(entry.request) if entry is not None and entry.request else dict(
        item.instance.request)
    return Entry(
        key=inst.key, job=inst.job, state=state, values=(),
        prompt=str(request.get("prompt", "")),
        request={k: v for k, v in request.items() if k != "prompt"},
        seed=entry.seed if entry is not None else item.instance.seed,
        task_id=entry.task_id if entry is not None else None,
        cost=entry.cost if entry is not None else Decimal(0),
        planned=item.cost,
        time=entry.updated_at if entry is not None else None,
        error=why, note=item.note, pictures=tuple(pictures))


def _with_values(entry: Entry, inst: Instance, axes: tuple[Axis, ...]) -> Entry:
    matrix = dict(inst.matrix)
    values = []
    for axis in axes:
        if axis.kind == "matrix":
            values.append((axis.name, label(matrix[axis.name]) if axis.name in matrix
                           else _missing(inst, axis.name)))
        elif axis.kind == "field":
            values.append((axis.name, label(inst.request.get(axis.name))))
    return replace(entry, values=tuple(values))
