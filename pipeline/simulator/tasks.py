"""Tasks, their lifecycle, idempotency keys and the billing ledger.

A task's whole future is fixed when it is created (latency, whether it will
fail or stall), and its state at any moment is computed from the clock when
asked: no timers run in the background, so a test with a manual clock sees
exactly the state a real wait would give.

Timeline of a task created at ``t0`` with latency ``L``::

    pending      t0 .. t0 + P          (P = 0 or 10% of L, by a hash of the task id)
    processing   .. t0 + L             (t0 + L * stuck_factor for a stuck task)
    completed / failed                 (failed tasks are refunded at that moment)

Result URLs are valid for ``url_ttl`` from completion; a poll after that hands
out a fresh URL (a new "epoch") valid for another ``url_ttl``, so re-polling
after an expired download works as ``APIMART.md`` advises.

Memory is bounded: a finished task is forgotten (with its Idempotency-Key)
``task_retention`` after its first URLs expired, like an API that keeps tasks
for a while; until then it can be polled. A task not finished is never forgotten.
With a state file (:mod:`pipeline.simulator.state`) every task is logged before
the reply that announces it, and a new process picks up where the last one ended.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal

from pipeline.errors import UsageError
from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.state import (
    COUNTER_NAMES,
    StateLog,
    Totals,
    compact_due,
    counters_record,
    suppressed_disk_errors,
)

SimPhase = Literal["pending", "processing", "completed", "failed"]

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_FAILURES: Final[tuple[tuple[str, str], ...]] = (
    ("generation_failed", "image generation failed; submit the request again"),
    ("content_moderation", "the output was blocked by content moderation"),
    ("internal_error", "the generation worker crashed; submit the request again"),
)


def body_digest(body: Mapping[str, object]) -> str:
    """sha256 of the canonical JSON of a request body: equal bodies, equal digests."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: JSON may carry lone surrogates, which strict UTF-8 refuses to encode.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(slots=True)
class Task:
    """One generation task; its future is decided at creation."""

    id: str
    model: str
    n: int
    width: int
    height: int
    created_at: float
    latency: float
    pending_until: float
    done_at: float
    fails: bool
    stuck: bool
    image_keys: tuple[bytes, ...]
    colours: tuple[tuple[int, int, int], ...]
    watermark: bool
    variant: int  # hash bits choosing between documented reply shapes
    charge: Decimal
    error_code: str = ""
    error_message: str = ""
    key: str | None = None  # the Idempotency-Key that created it
    digest: str = ""  # body_digest of the request, for replays under ``key``
    refunded: bool = False
    # (epoch, origin, reply bytes) of the last completed-poll reply: it is the hot path.
    reply_cache: tuple[int, str, bytes] | None = None
    estimate: int = 0  # the estimated_time it reports; 0: the ceiling of its latency

    def status_at(self, now: float) -> tuple[SimPhase, int]:
        """The status and progress (0-100) the API would report at ``now``."""
        if now >= self.done_at:
            if self.fails:
                return "failed", self._progress(self.done_at)
            return "completed", 100
        if now < self.pending_until:
            return "pending", 0
        return "processing", self._progress(now)

    def _progress(self, now: float) -> int:
        if self.latency <= 0:
            return 99
        # Capped below 100: only a completed task is at 100, and a stuck one stays at 99.
        return max(1, min(99, int(100 * (now - self.created_at) / self.latency)))

    @property
    def estimated_time(self) -> int:
        """Whole seconds the task is expected to take: the honest ceiling of its latency,
        unless the simulator was told to estimate wrongly (``estimate_factor``)."""
        return self.estimate or math.ceil(self.latency)

    def epoch_at(self, now: float, ttl: float) -> int:
        """Which generation of result URLs is current at ``now`` (0 until the first expiry)."""
        return max(0, math.floor((now - self.done_at) / ttl))

    def expires_at(self, epoch: int, ttl: float) -> int:
        """Unix second at which the URLs of ``epoch`` stop working."""
        return int(self.done_at + (epoch + 1) * ttl)

    def to_record(self) -> dict[str, object]:
        """The task as a state-file record (everything fixed at creation)."""
        return {
            "k": "task", "id": self.id, "model": self.model, "n": self.n,
            "width": self.width, "height": self.height, "created_at": self.created_at,
            "latency": self.latency, "pending_until": self.pending_until,
            "done_at": self.done_at, "fails": self.fails, "stuck": self.stuck,
            "image_keys": [k.hex() for k in self.image_keys],
            "colours": [list(c) for c in self.colours], "watermark": self.watermark,
            "variant": self.variant, "charge": str(self.charge),
            "error_code": self.error_code, "error_message": self.error_message,
            "key": self.key, "digest": self.digest, "estimate": self.estimate,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Task:
        """The task a record describes; KeyError/TypeError/ValueError if it is damaged."""
        colours = tuple((int(c[0]), int(c[1]), int(c[2])) for c in record["colours"])
        key = record["key"]
        return cls(
            id=str(record["id"]), model=str(record["model"]), n=int(record["n"]),
            width=int(record["width"]), height=int(record["height"]),
            created_at=float(record["created_at"]), latency=float(record["latency"]),
            pending_until=float(record["pending_until"]), done_at=float(record["done_at"]),
            fails=bool(record["fails"]), stuck=bool(record["stuck"]),
            image_keys=tuple(bytes.fromhex(k) for k in record["image_keys"]),
            colours=colours, watermark=bool(record["watermark"]),
            variant=int(record["variant"]), charge=Decimal(str(record["charge"])),
            error_code=str(record["error_code"]), error_message=str(record["error_message"]),
            key=None if key is None else str(key), digest=str(record["digest"]),
            estimate=int(record.get("estimate", 0)),
        )


@dataclass(frozen=True, slots=True)
class Ledger:
    """What the simulator has received and charged, at one moment."""

    submissions: int  # POSTs received, including rejected and faulted ones
    rejected: int  # POSTs refused by auth, rules, idempotency or balance (not faults)
    tasks_created: int
    tasks_failed: int  # tasks whose failure time has passed (and were refunded)
    replays: int  # POSTs answered from an Idempotency-Key's earlier task
    polls: int  # GET /v1/tasks/... received
    images_charged: int  # images pre-charged, less those of failed tasks
    cost_charged: Decimal  # CNY, likewise
    currency: str
    downloads: int  # image GETs received
    downloads_ok: int  # image GETs answered with the complete image
    faults: Mapping[str, int] = field(default_factory=dict)  # injected, per kind
    uploads: int = 0  # input images accepted by POST /v1/uploads/images (free)

    def to_json(self) -> dict[str, object]:
        """The ledger as JSON-ready data (cost as a string, to keep it exact)."""
        return {
            "submissions": self.submissions,
            "rejected": self.rejected,
            "tasks_created": self.tasks_created,
            "tasks_failed": self.tasks_failed,
            "replays": self.replays,
            "polls": self.polls,
            "images_charged": self.images_charged,
            "cost_charged": str(self.cost_charged),
            "currency": self.currency,
            "downloads": self.downloads,
            "downloads_ok": self.downloads_ok,
            "uploads": self.uploads,
            "faults": dict(self.faults),
        }


class TaskStore:
    """All tasks and counters of one simulator. Used only from its event loop thread.

    With ``config.state`` the tasks, Idempotency-Keys and ledger are loaded from
    that file and every new task is appended to it before it is announced.
    """

    def __init__(self, config: SimulatorConfig, fault_counts: dict[str, int] | None = None) -> None:
        self.config = config
        self.tasks: dict[str, Task] = {}
        self.idempotency: dict[str, tuple[str, str]] = {}  # key -> (body digest, task id)
        # The fault injector's counts: restored from the state file, saved with the counters.
        self.fault_counts: dict[str, int] = fault_counts if fault_counts is not None else {}
        self._fail_heap: list[tuple[float, str]] = []  # (done_at, id) of tasks that will fail
        self._evict_heap: list[tuple[float, str]] = []  # (forget at, id) of every task
        self.submissions = 0
        self.rejected = 0
        self.replays = 0
        self.polls = 0
        self.downloads = 0
        self.downloads_ok = 0
        self.uploads = 0
        self.tasks_created = 0
        self.tasks_failed = 0
        self.images_charged = 0
        self.cost_charged = Decimal("0.00")
        self._log: StateLog | None = None
        self._saved: tuple[int, ...] = ()
        self._next_save = 0.0
        if config.state is not None:
            self._load(config.state)
        # A new process must not hand out the ids of an earlier one again.
        suffix = f":{self.tasks_created}" if self.tasks_created else ""
        self._ids = random.Random(f"{config.seed}:task-ids{suffix}")
        self._latency = random.Random(f"{config.seed}:latency{suffix}")
        self._failure = random.Random(f"{config.seed}:failure-kind{suffix}")

    # -- the state file ---------------------------------------------------------------

    def _load(self, path: Path) -> None:
        log, loaded = StateLog.open(path, seed=self.config.seed)
        self._log = log
        try:
            totals = loaded.totals
            now = self.config.clock()
            kept: list[Task] = []
            for record in loaded.tasks:
                try:
                    task = Task.from_record(record)
                except (KeyError, TypeError, ValueError, IndexError, ArithmeticError) as err:
                    raise UsageError(
                        f"{path}: a task record of the simulator's state file is damaged "
                        f"({type(err).__name__}); delete the file to start the simulated "
                        "account afresh") from err
                if now >= self._forget_at(task):
                    _fold(totals, task)  # finished long ago: only its money is kept
                else:
                    kept.append(task)
            self.tasks_created = totals.tasks_created
            self.tasks_failed = totals.tasks_failed
            self.images_charged = totals.images_charged
            self.cost_charged = totals.cost_charged
            for name, value in totals.counters.items():
                setattr(self, name, value)
            self.fault_counts.update(totals.faults)
            for task in kept:
                self._admit(task)
            if compact_due(loaded, len(loaded.tasks) - len(kept)):
                base = Totals(
                    tasks_created=totals.tasks_created, tasks_failed=totals.tasks_failed,
                    images_charged=totals.images_charged, cost_charged=totals.cost_charged,
                    counters=self._counters(), faults=dict(self.fault_counts))
                log.rewrite(seed=self.config.seed, totals=base,
                            tasks=[t.to_record() for t in kept])
            self._saved = self._snapshot()
        except BaseException:
            log.close()
            raise

    def _counters(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in COUNTER_NAMES}

    def _snapshot(self) -> tuple[int, ...]:
        return (*self._counters().values(), *self.fault_counts.values())

    def _forget_at(self, task: Task) -> float:
        return task.done_at + self.config.url_ttl + self.config.task_retention

    def _admit(self, task: Task) -> None:
        """Add a task (new or loaded) with its charge, key and timers."""
        self.tasks[task.id] = task
        self.tasks_created += 1
        self.images_charged += task.n
        self.cost_charged += task.charge
        if task.key is not None:
            self.idempotency[task.key] = (task.digest, task.id)
        if task.fails:
            heapq.heappush(self._fail_heap, (task.done_at, task.id))
        heapq.heappush(self._evict_heap, (self._forget_at(task), task.id))

    def tick(self, now: float) -> None:
        """Housekeeping on each request: forget expired tasks, save changed counters.

        Cheap when there is nothing to do (two comparisons), so it runs on the hot path.
        """
        heap = self._evict_heap
        if heap and heap[0][0] <= now:
            self.settle(now)  # refund before forgetting: a failure's refund stays counted
            while heap and heap[0][0] <= now:
                _, task_id = heapq.heappop(heap)
                task = self.tasks.pop(task_id, None)
                key = None if task is None else task.key
                if key is not None and self.idempotency.get(key, ("", ""))[1] == task_id:
                    del self.idempotency[key]
        if self._log is not None:
            mono = time.monotonic()
            if mono >= self._next_save:
                self._next_save = mono + 1.0
                self.save_counters()

    def save_counters(self) -> None:
        """Append the request counters if they changed since last saved (best effort)."""
        if self._log is None:
            return
        snapshot = self._snapshot()
        if snapshot == self._saved:
            return
        with suppressed_disk_errors():
            self._log.append({"k": "counters",
                              "c": counters_record(self._counters(), self.fault_counts)})
            self._saved = snapshot

    def close(self) -> None:
        """Save the counters and close the state file, if any. Calling it twice is harmless."""
        if self._log is not None:
            self.save_counters()
            self._log.close()
            self._log = None

    # -- tasks --------------------------------------------------------------------------

    def _new_id(self) -> str:
        while True:
            bits = self._ids.getrandbits(130)
            suffix = "".join(_CROCKFORD[(bits >> (5 * i)) & 31] for i in range(26))
            task_id = "task_" + suffix
            if task_id not in self.tasks:
                return task_id

    def can_afford(self, model: str, n: int) -> bool:
        """Whether the configured balance covers pre-charging ``n`` images of ``model``."""
        if self.config.balance is None:
            return True
        return self.cost_charged + self.config.prices.cost(model, n) <= self.config.balance

    def create(
        self,
        body: Mapping[str, object],
        *,
        digest: str,
        size: tuple[int, int],
        now: float,
        fails: bool,
        stuck: bool,
        colours: tuple[tuple[int, int, int], ...] = (),
        key: str | None = None,
    ) -> Task:
        """Create and pre-charge a task for a valid ``body`` (remembered under ``key``).

        With a state file the task is logged first: a task a client is told about
        is on disk. OSError if it cannot be logged (then nothing is created).
        """
        model = str(body["model"])
        n_value = body.get("n", 1)
        n = n_value if isinstance(n_value, int) else 1
        task_id = self._new_id()
        low, high = self.config.latency
        if high == low:
            latency = low
        elif self.config.latency_shape == "log-uniform" and low > 0:
            latency = math.exp(self._latency.uniform(math.log(low), math.log(high)))
        else:
            latency = self._latency.uniform(low, high)
        factor = self.config.estimate_factor
        estimate = 0 if factor == 1.0 else max(1, math.ceil(latency * factor))
        variant = hashlib.sha256(task_id.encode()).digest()[0]
        pending = 0.1 * latency if variant & 8 else 0.0
        lasts = latency * (self.config.stuck_factor if stuck and not fails else 1.0)
        # Without a seed the API picks one, so equal bodies then give different images.
        seed_part = "" if "seed" in body else task_id
        keys = tuple(
            hashlib.sha256(f"{digest}:{i}:{seed_part}".encode()).digest() for i in range(n)
        )
        task = Task(
            id=task_id,
            model=model,
            n=n,
            width=size[0],
            height=size[1],
            created_at=now,
            latency=latency,
            pending_until=now + pending,
            done_at=now + lasts,
            fails=fails,
            stuck=stuck and not fails,
            image_keys=keys,
            colours=colours,
            watermark=body.get("watermark") is True,
            variant=variant,
            charge=self.config.prices.cost(model, n),
            key=key,
            digest=digest,
            estimate=estimate,
        )
        if fails:
            task.error_code, task.error_message = self._failure.choice(_FAILURES)
        if self._log is not None:
            # Written before the reply is sent; the page cache outlives a killed process,
            # so no fsync is needed for the next process to find it.
            record = task.to_record()
            record["c"] = counters_record(self._counters(), self.fault_counts)
            self._log.append(record)
            self._saved = self._snapshot()
        self._admit(task)
        return task

    def settle(self, now: float) -> None:
        """Refund every task whose failure time has passed and is not refunded yet."""
        heap = self._fail_heap
        while heap and heap[0][0] <= now:
            _, task_id = heapq.heappop(heap)
            task = self.tasks.get(task_id)
            if task is not None:
                self._refund(task)

    def settle_task(self, task: Task, now: float) -> None:
        """Refund ``task`` if it has failed by ``now`` (a poll just saw it)."""
        if task.fails and now >= task.done_at:
            self._refund(task)

    def _refund(self, task: Task) -> None:
        if task.refunded:
            return
        task.refunded = True
        self.tasks_failed += 1
        self.images_charged -= task.n
        self.cost_charged -= task.charge

    def ledger(self, now: float, faults: Mapping[str, int]) -> Ledger:
        """A snapshot of the counters, with failures up to ``now`` refunded."""
        self.settle(now)
        return Ledger(
            submissions=self.submissions,
            rejected=self.rejected,
            tasks_created=self.tasks_created,
            tasks_failed=self.tasks_failed,
            replays=self.replays,
            polls=self.polls,
            images_charged=self.images_charged,
            cost_charged=self.cost_charged,
            currency=self.config.prices.currency,
            downloads=self.downloads,
            downloads_ok=self.downloads_ok,
            uploads=self.uploads,
            faults={name: count for name, count in faults.items() if count},
        )


def _fold(totals: Totals, task: Task) -> None:
    """Add a forgotten (finished) task's charge, and refund if it failed, to ``totals``."""
    totals.tasks_created += 1
    if task.fails:
        totals.tasks_failed += 1
    else:
        totals.images_charged += task.n
        totals.cost_charged += task.charge
