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
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Literal

from pipeline.simulator.config import SimulatorConfig

Status = Literal["pending", "processing", "completed", "failed"]

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
    refunded: bool = False
    # (epoch, origin, reply bytes) of the last completed-poll reply: it is the hot path.
    reply_cache: tuple[int, str, bytes] | None = None

    def status_at(self, now: float) -> tuple[Status, int]:
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
        """Whole seconds the task is expected to take: the honest ceiling of its latency."""
        return math.ceil(self.latency)

    def epoch_at(self, now: float, ttl: float) -> int:
        """Which generation of result URLs is current at ``now`` (0 until the first expiry)."""
        return max(0, math.floor((now - self.done_at) / ttl))

    def expires_at(self, epoch: int, ttl: float) -> int:
        """Unix second at which the URLs of ``epoch`` stop working."""
        return int(self.done_at + (epoch + 1) * ttl)


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
            "faults": dict(self.faults),
        }


class TaskStore:
    """All tasks and counters of one simulator. Used only from its event loop thread."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.tasks: dict[str, Task] = {}
        self.idempotency: dict[str, tuple[str, str]] = {}  # key -> (body digest, task id)
        self._ids = random.Random(f"{config.seed}:task-ids")
        self._latency = random.Random(f"{config.seed}:latency")
        self._failure = random.Random(f"{config.seed}:failure-kind")
        self._fail_heap: list[tuple[float, str]] = []  # (done_at, id) of tasks that will fail
        self.submissions = 0
        self.rejected = 0
        self.replays = 0
        self.polls = 0
        self.downloads = 0
        self.downloads_ok = 0
        self.tasks_failed = 0
        self.images_charged = 0
        self.cost_charged = Decimal("0.00")

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
    ) -> Task:
        """Create and pre-charge a task for a valid ``body``."""
        model = str(body["model"])
        n_value = body.get("n", 1)
        n = n_value if isinstance(n_value, int) else 1
        task_id = self._new_id()
        low, high = self.config.latency
        latency = low if high == low else self._latency.uniform(low, high)
        variant = hashlib.sha256(task_id.encode()).digest()[0]
        pending = 0.1 * latency if variant & 8 else 0.0
        lasts = latency * (self.config.stuck_factor if stuck and not fails else 1.0)
        # Without a seed the API picks one, so equal bodies then give different images.
        seed_part = "" if "seed" in body else task_id
        keys = tuple(
            hashlib.sha256(f"{digest}:{i}:{seed_part}".encode()).digest() for i in range(n)
        )
        charge = self.config.prices.cost(model, n)
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
            charge=charge,
        )
        if fails:
            task.error_code, task.error_message = self._failure.choice(_FAILURES)
            heapq.heappush(self._fail_heap, (task.done_at, task_id))
        self.tasks[task_id] = task
        self.images_charged += n
        self.cost_charged += charge
        return task

    def settle(self, now: float) -> None:
        """Refund every task whose failure time has passed and is not refunded yet."""
        heap = self._fail_heap
        while heap and heap[0][0] <= now:
            _, task_id = heapq.heappop(heap)
            self._refund(self.tasks[task_id])

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
            tasks_created=len(self.tasks),
            tasks_failed=self.tasks_failed,
            replays=self.replays,
            polls=self.polls,
            images_charged=self.images_charged,
            cost_charged=self.cost_charged,
            currency=self.config.prices.currency,
            downloads=self.downloads,
            downloads_ok=self.downloads_ok,
            faults={name: count for name, count in faults.items() if count},
        )
