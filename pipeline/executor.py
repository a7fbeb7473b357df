"""Execute a ``Plan`` against the API: submit, poll, download, record; never pay twice.

The order of writes is the safety argument:

1. before a POST, the instance's lock entry records ``submitting`` with its
   Idempotency-Key (durably, in the journal);
2. right after the POST, ``running`` with the task id;
3. after every image is downloaded, verified and renamed into place, ``done``.

A crash at any point leaves an entry that the next run resumes: ``submitting``
replays the same key (the API returns the same task, no new charge) and
``running`` polls the recorded task. Only ``failed``, ``cancelled`` or an
unknown task id start a new attempt, with a new key.

Work is scheduled per instance: ``concurrency`` workers take instances whose
upstream instances are done; a failed upstream blocks its dependants and
everything else goes on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from pathlib import Path

from pipeline.client import ApiClient, Downloaded, TaskImage, TaskState
from pipeline.errors import (
    ApiError,
    AuthError,
    BalanceExhausted,
    ImgspecError,
    RequestRejected,
    TransientError,
)
from pipeline.identity import fingerprint
from pipeline.instances import DataInput, FileInput, ImageInput, Instance, UpstreamInput, UrlInput
from pipeline.journal import LockStore
from pipeline.lockfile import LockEntry, Output
from pipeline.outputs import OutputFolder, utc_now
from pipeline.plan import ACTIVE, Plan, PlanItem, PlanStatus, resolved_request
from pipeline.pricing import PriceTable
from pipeline.workspace import Workspace


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a run paces itself."""

    concurrency: int = 8
    task_timeout: float = 1800.0  # stop polling a task after this; the next run resumes it
    first_poll: float = 1.0  # before the first poll when no estimate is known yet
    max_poll_interval: float = 15.0
    url_margin: float = 600.0  # an upstream URL expiring sooner is replaced by the local file
    download_attempts: int = 3  # re-polls for fresh URLs after failed downloads
    download_give_way: float = 0.5  # longest a download waits for submissions to go first


class EventKind(StrEnum):
    """What happened, in a ``RunEvent``."""

    SUBMITTED = "submitted"  # the API accepted a new task
    RESUMED = "resumed"  # a task an earlier run submitted is polled again
    RETRY = "retry"  # a request failed for now and is retried after a wait
    DONE = "done"  # every image is on disk and recorded
    FAILED = "failed"  # this attempt failed; --only-failed retries it
    BLOCKED = "blocked"  # an upstream did not finish, so this cannot start
    UNFINISHED = "unfinished"  # left for the next run (timeout, unknown outcome)
    STOPPING = "stopping"  # the run stops early (auth, balance, budget, Ctrl-C)


TERMINAL_EVENTS = frozenset({EventKind.DONE, EventKind.FAILED, EventKind.BLOCKED,
                             EventKind.UNFINISHED})


class StopReason(StrEnum):
    """Why a run stopped before doing all of its plan."""

    AUTH = "auth"  # the API refused the key (401/403)
    BALANCE = "balance"  # the account ran out of money (402)
    BUDGET = "budget"  # the next submission would have passed the budget
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM


@dataclass(frozen=True, slots=True)
class RunEvent:
    """Something happened to one instance (or to the run, when ``key`` is None)."""

    kind: EventKind
    key: str | None
    message: str
    done: int
    failed: int
    in_flight: int  # tasks at the API not yet seen to finish: never above the concurrency
    total: int
    charged: Decimal  # see ``Tally``
    reserved: Decimal


@dataclass
class Tally:
    """What the progress display reads: the tasks at the API now, and the money they hold.

    The API pre-charges a task's images when it is submitted and refunds a task
    that fails. ``charged`` is what this run's finished tasks cost; ``reserved``
    is the pre-charge of this run's tasks not yet seen to finish, which becomes
    charged or is refunded. A task an earlier run submitted is in flight but
    holds none of this run's money.
    """

    flying: set[str] = field(default_factory=set)
    holds: dict[str, Decimal] = field(default_factory=dict)
    charged: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)

    @property
    def in_flight(self) -> int:
        """Tasks at the API that the run is watching."""
        return len(self.flying)

    def took_off(self, key: str, cost: Decimal | None = None) -> None:
        """``key``'s task is at the API; ``cost``: what this run's submission pre-charged."""
        self.flying.add(key)
        if cost is not None:
            self.holds[key] = cost
            self.reserved += cost

    def landed(self, key: str) -> None:
        """The run stopped watching ``key``'s task (finished, or left to the next run)."""
        self.flying.discard(key)

    def settle(self, key: str, *, refunded: bool) -> None:
        """``key``'s task finished: its pre-charge is now charged, or was refunded."""
        amount = self.holds.pop(key, Decimal(0))
        self.reserved -= amount
        if not refunded:
            self.charged += amount


@dataclass
class RunResult:
    """What a run achieved; ``stopped`` names why it stopped early, if it did."""

    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    unfinished: list[tuple[str, str]] = field(default_factory=list)
    spent: Decimal = Decimal(0)
    stopped: StopReason | None = None
    fatal: ApiError | None = None
    tally: Tally = field(default_factory=Tally)

    @property
    def complete(self) -> bool:
        """Every instance of the plan is done."""
        return not (self.failed or self.blocked or self.unfinished or self.stopped)


def idempotency_key(key: str, fp: str, attempt: int) -> str:
    """Stable per instance, request and attempt, so a replay after a crash reuses it."""
    digest = hashlib.sha256(f"{key}\0{fp}\0{attempt}".encode()).hexdigest()
    return f"imgspec-{digest[:40]}"


def next_poll_delay(*, elapsed: float, estimate: float, polls: int,
                    options: RunOptions) -> float:
    """Seconds until the next poll of a task whose clock started ``elapsed`` seconds ago.

    Until the estimate has passed, wait for it plus a small margin (1 %, at least
    5 ms), so the first poll usually finds the task done. A task still running
    after that is polled again soon, a fiftieth of the estimate later (at least
    20 ms), then half as long again each time, up to ``max_poll_interval``: a
    task found just short of done costs one cheap extra poll, and a stuck task
    is not polled in a tight loop.
    """
    if elapsed < estimate:
        return estimate - elapsed + max(0.005, estimate * 0.01)
    overdue = max(polls - 1, 0)  # polls made after the estimate had passed
    return min(options.max_poll_interval, max(0.02, estimate / 50) * 1.5 ** overdue)


@dataclass(frozen=True, slots=True)
class _Flight:
    """A task in flight at the API, and when (``time.monotonic()``) its clock started."""

    task_id: str
    started: float | None  # None when not known: polling then counts from now
    resumed: bool = False  # recorded by an earlier run: poll at once


class _Stop(Exception):
    """Ends one instance's work early without failing it (budget, balance, fatal)."""


class Executor:
    """Runs one plan; create one per run."""

    def __init__(self, plan: Plan, *, client: ApiClient, store: LockStore,
                 outputs: OutputFolder, workspace: Workspace, pricing: PriceTable,
                 options: RunOptions, on_event: Callable[[RunEvent], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.plan = plan
        self.client = client
        self.store = store
        self.outputs = outputs
        self.workspace = workspace
        self.pricing = pricing
        self.options = options
        self.on_event = on_event
        self.clock = clock
        self.result = RunResult()
        self.items = [i for i in plan.items if i.status in ACTIVE]
        self.pending = {i.key for i in self.items}
        self.estimate: float | None = None  # the latest estimated_time the API gave
        self.submitting_stopped: str | None = None
        self.finished: dict[str, bool] = {}  # key -> succeeded
        self.slots = asyncio.Semaphore(options.concurrency)
        self.submissions = 0  # between recording ``submitting`` and recording the reply
        self.no_submissions = asyncio.Event()
        self.no_submissions.set()

    # -- events ------------------------------------------------------------------------

    def emit(self, kind: EventKind, key: str | None, message: str = "") -> None:
        if self.on_event is not None:
            tally = self.result.tally
            self.on_event(RunEvent(kind, key, message, len(self.result.done),
                                   len(self.result.failed), tally.in_flight, len(self.items),
                                   tally.charged, tally.reserved))

    # -- scheduling --------------------------------------------------------------------

    async def run(self) -> RunResult:
        """Process every pending item; returns when all are finished, blocked or stopped."""
        dependants: dict[str, list[PlanItem]] = {}
        waiting: dict[str, int] = {}
        ready: deque[PlanItem] = deque()
        for item in self.items:
            needs = [n for n in item.needs if n in self.pending]
            waiting[item.key] = len(needs)
            for need in needs:
                dependants.setdefault(need, []).append(item)
            if not needs:
                ready.append(item)
        queue: asyncio.Queue[PlanItem | None] = asyncio.Queue()
        for item in ready:
            queue.put_nowait(item)
        remaining = len(self.items)
        # Twice as many workers as task slots: a worker downloading a finished task's
        # images has given its slot back, so another can submit meanwhile.
        workers_n = max(1, min(2 * self.options.concurrency, remaining))
        self.slots = asyncio.Semaphore(self.options.concurrency)

        def finish(item: PlanItem, ok: bool) -> None:
            nonlocal remaining
            self.finished[item.key] = ok
            remaining -= 1
            for child in dependants.get(item.key, ()):
                waiting[child.key] -= 1
                if not ok and child.key not in self.finished:
                    self.result.blocked.append(child.key)
                    self.emit(EventKind.BLOCKED, child.key, f"upstream {item.key} did not finish")
                    finish(child, False)
                elif waiting[child.key] == 0 and child.key not in self.finished:
                    queue.put_nowait(child)
            if remaining == 0:
                for _ in range(workers_n):
                    queue.put_nowait(None)

        async def worker() -> None:
            while (item := await queue.get()) is not None:
                if item.key in self.finished:
                    continue
                ok = await self.process(item)
                finish(item, ok)

        if remaining == 0:
            return self.result
        workers = [asyncio.create_task(worker()) for _ in range(workers_n)]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        return self.result

    # -- one instance ------------------------------------------------------------------

    async def process(self, item: PlanItem) -> bool:
        """Submit (or resume), poll and download one instance; True when it is done."""
        key = item.key
        if self.result.fatal is not None:
            return False
        if item.status == PlanStatus.DOWNLOAD:
            return await self.refetch(item)
        try:
            async with self.slots:  # a slot is a task in flight at the API
                try:
                    flight = await self.submit(item)
                    if flight is None:
                        return False
                    state = await self.wait(item, flight)
                finally:
                    self.result.tally.landed(key)
                if state is None:
                    return False
                self.result.tally.settle(key, refunded=False)
            return await self.collect(item, flight.task_id, state)
        except _Stop:
            return False
        except AuthError as exc:
            self.result.fatal = exc
            self.result.stopped = StopReason.AUTH
            self.emit(EventKind.STOPPING, key, str(exc))
            return False

    async def submit(self, item: PlanItem) -> _Flight | None:
        """The task to poll: the recorded one when resuming, else a fresh submission."""
        inst, key = item.instance, item.key
        entry = self.store.get(key)
        if (item.status == PlanStatus.RESUME and entry is not None and entry.status == "running"
                and entry.task_id):
            self.result.tally.took_off(key)
            self.emit(EventKind.RESUMED, key, entry.task_id)
            return _Flight(entry.task_id, started=None, resumed=True)
        request = resolved_request(inst, self.store.entries)
        if request is None:  # an upstream finished without the image this one needs
            await self._fail(item, None, "an upstream image is missing")
            return None
        fp = fingerprint(request)
        replay = (entry is not None and entry.status == "submitting"
                  and entry.fingerprint == fp and entry.idempotency_key is not None)
        if replay and entry is not None and entry.idempotency_key is not None:
            attempt, idem = entry.attempts, entry.idempotency_key
        else:
            attempt = (entry.attempts if entry else 0) + 1
            idem = idempotency_key(key, fp, attempt)
        cost = self.pricing.cost(inst.model, inst.n)
        if self.submitting_stopped is not None:
            self.result.unfinished.append((key, f"not submitted ({self.submitting_stopped})"))
            raise _Stop
        budget = self.plan.budget
        if not replay and budget is not None and self.result.spent + cost > budget:
            self.submitting_stopped = "budget"
            self.result.stopped = StopReason.BUDGET
            self.result.unfinished.append((key, "not submitted: the budget would be passed"))
            self.emit(EventKind.STOPPING, key, "budget reached: no further submissions")
            raise _Stop
        now = utc_now()
        base = LockEntry(
            key=key, job=inst.job, fingerprint=fp, status="submitting", request=request,
            matrix=dict(inst.matrix), seed=inst.seed, idempotency_key=idem, task_id=None,
            attempts=attempt, last_error=None, cost=Decimal(0),
            charged=entry.charged if entry else Decimal(0),  # earlier attempts stay paid
            created_at=entry.created_at if entry and entry.created_at else now, updated_at=now,
            outputs=entry.outputs if entry else ())
        self.submissions += 1
        self.no_submissions.clear()
        try:
            return await self._post(item, base, cost)
        finally:
            self.submissions -= 1
            if not self.submissions:
                self.no_submissions.set()

    async def _post(self, item: PlanItem, base: LockEntry, cost: Decimal) -> _Flight | None:
        """Record ``submitting``, POST, record ``running``: the new task, if it was created."""
        inst, key = item.instance, item.key
        assert base.idempotency_key is not None
        await self.store.commit(base)
        body = {**inst.request, **({"image_urls": self._sendable(inst.inputs)}
                                   if inst.inputs else {})}
        try:
            state = await self.client.submit(body, idempotency_key=base.idempotency_key)
        except RequestRejected as exc:
            await self._fail(item, base, exc.api_message)
            return None
        except BalanceExhausted as exc:
            self.submitting_stopped = "balance exhausted"
            self.result.stopped = StopReason.BALANCE
            self.result.unfinished.append((key, f"not submitted: {exc.api_message}"))
            self.emit(EventKind.STOPPING, key, "the account's balance is exhausted (HTTP 402)")
            raise _Stop from exc
        except TransientError as exc:
            # The POST may or may not have created a task: keep the key, replay it next run.
            self.result.unfinished.append((key, f"submission outcome unknown: {exc}"))
            self.emit(EventKind.UNFINISHED, key, str(exc))
            raise _Stop from exc
        self.result.spent += cost
        self.result.tally.took_off(key, cost)
        await self.store.commit(replace(base, status="running", task_id=state.task_id,
                                        cost=cost, charged=base.charged + cost,
                                        updated_at=utc_now()))
        self.emit(EventKind.SUBMITTED, key, state.task_id)
        # The API starts the task's clock when the request reaches it: not before we
        # sent it, and usually just after. Timing polls from our reading the reply
        # instead would add, every cycle, however long that reply waited behind other
        # work on a busy loop. A poll that comes a little early is followed by a short
        # one (``next_poll_delay``).
        return _Flight(state.task_id, started=state.asked_at)

    async def wait(self, item: PlanItem, flight: _Flight) -> TaskState | None:
        """Poll until the task completes (its state) or fails, or the deadline passes (None)."""
        task_id = flight.task_id
        resumed = flight.resumed
        started = time.monotonic() if flight.started is None else flight.started
        polls = 0
        while True:
            elapsed = time.monotonic() - started
            if elapsed > self.options.task_timeout:
                self.result.unfinished.append(
                    (item.key, f"task {task_id} still running after "
                               f"{self.options.task_timeout:.0f} s; the next run polls it"))
                self.emit(EventKind.UNFINISHED, item.key, task_id)
                return None
            estimate = self.estimate if self.estimate is not None else self.options.first_poll
            delay = 0.0 if resumed and polls == 0 else next_poll_delay(
                elapsed=elapsed, estimate=estimate, polls=polls, options=self.options)
            await asyncio.sleep(delay)
            polls += 1
            try:
                state = await self.client.poll(task_id)
            except TransientError:
                continue  # the client already retried; keep polling until the deadline
            except RequestRejected as exc:
                await self._fail(item, self.store.get(item.key),
                                 f"task {task_id}: {exc.api_message}")
                return None
            if state.estimated_time is not None:
                self.estimate = state.estimated_time
            if state.status == "completed":
                return state
            if state.status in ("failed", "cancelled"):
                # "Failed requests are not charged" (the API's pricing notes).
                await self._fail(item, self.store.get(item.key),
                                 state.error or f"the task was {state.status}", refunded=True)
                return None

    async def collect(self, item: PlanItem, task_id: str, state: TaskState) -> bool:
        """Download every image, rename into place, record done and write meta.json."""
        inst, key = item.instance, item.key
        for attempt in range(self.options.download_attempts):
            if not state.images:
                await self._fail(item, self.store.get(key), "the task completed without images")
                return False
            await self._give_way()
            temps = [self.outputs.temp_path(inst.job, key, index)
                     for index in range(len(state.images))]
            try:
                got = [(temp, image, await self.client.download(image.url, temp))
                       for temp, image in zip(temps, state.images, strict=True)]
            except (RequestRejected, TransientError) as exc:
                for temp in temps:
                    temp.unlink(missing_ok=True)
                if attempt + 1 == self.options.download_attempts:
                    if isinstance(exc, RequestRejected):
                        # Refused even with fresh URLs (expired results, say): resuming
                        # would refuse forever, so this attempt fails and the next run
                        # starts a new one.
                        await self._fail(item, self.store.get(key),
                                         f"the results cannot be downloaded: {exc}")
                        return False
                    self.result.unfinished.append((key, f"download failed: {exc}"))
                    self.emit(EventKind.UNFINISHED, key, str(exc))
                    return False
                try:  # fresh URLs for the next try
                    state = await self.client.poll(task_id)
                except (RequestRejected, TransientError):
                    continue
                continue
            except BaseException:
                for temp in temps:
                    temp.unlink(missing_ok=True)
                raise
            entry = self.store.get(key)
            assert entry is not None
            before = [o.path for o in entry.outputs]
            outputs = await asyncio.to_thread(self._install, inst, got, before)
            done = replace(entry, status="done", outputs=outputs, last_error=None,
                           updated_at=utc_now())
            await self.store.commit(done)
            await asyncio.to_thread(self._tidy, inst, done, before[len(outputs):])
            self.result.done.append(key)
            self.emit(EventKind.DONE, key, f"{len(outputs)} image(s)")
            return True
        return False

    async def refetch(self, item: PlanItem) -> bool:
        """Download again, at no cost, the images of a done instance that are gone or damaged.

        Only the images the plan named, from the links the lockfile recorded; each must
        be the very image recorded (same sha256). A link that no longer works is
        forgotten, so the next plan prices the instance as ``missing`` instead of
        trying it again: this run never pays for what its plan said was free.
        """
        key = item.key
        entry = self.store.get(key)
        assert entry is not None
        outputs = list(entry.outputs)
        for index in item.refetch:
            output = outputs[index]
            await self._give_way()
            temp = self.outputs.temp_path(item.job, key, index)
            problem: str | None = None
            try:
                got = await self.client.download(output.url or "", temp)
                if got.sha256 != output.sha256:
                    problem = "the link now serves a different image"
            except RequestRejected as exc:
                problem = f"the link no longer works ({exc})"
            except TransientError as exc:
                temp.unlink(missing_ok=True)
                self.result.unfinished.append((key, f"download failed: {exc}"))
                self.emit(EventKind.UNFINISHED, key, str(exc))
                return False
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            if problem is not None:
                temp.unlink(missing_ok=True)
                outputs[index] = replace(output, url=None, expires_at=None)
                await self.store.commit(replace(entry, outputs=tuple(outputs),
                                                updated_at=utc_now()))
                message = (f"image {index}: {problem}; the next plan shows it as missing "
                           "(generating it again is paid)")
                self.result.failed.append((key, message))
                self.emit(EventKind.FAILED, key, message)
                return False
            final = await asyncio.to_thread(self.outputs.install, temp, item.job, key, index,
                                            got.format, output.path)
            outputs[index] = replace(output, path=self.outputs.relative(final))
        done = replace(entry, outputs=tuple(outputs), updated_at=utc_now())
        await self.store.commit(done)
        await asyncio.to_thread(self.outputs.write_meta, item.instance, done, self.plan.manifest)
        self.result.done.append(key)
        self.emit(EventKind.DONE, key, f"{len(item.refetch)} image(s) downloaded again")
        return True

    # -- helpers -----------------------------------------------------------------------

    async def _give_way(self) -> None:
        """Let submissions in progress go first, for at most ``options.download_give_way`` s.

        When a wave of tasks completes at once, each completion frees a slot for a
        new submission and also needs a download. The submissions are on the run's
        critical path (the API idles until they arrive) and the downloads are not,
        so on a busy event loop the downloads wait their turn.
        """
        if self.no_submissions.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.no_submissions.wait(), self.options.download_give_way)

    def _install(self, inst: Instance, got: list[tuple[Path, TaskImage, Downloaded]],
                 before: list[str]) -> tuple[Output, ...]:
        """(In a worker thread.) Rename verified downloads into place; their outputs."""
        outputs = []
        for index, (temp, image, info) in enumerate(got):
            final = self.outputs.install(temp, inst.job, inst.key, index, info.format,
                                         before[index] if index < len(before) else None)
            outputs.append(Output(self.outputs.relative(final), info.sha256, info.bytes,
                                  info.width, info.height, image.url, image.expires_at))
        return tuple(outputs)

    def _tidy(self, inst: Instance, done: LockEntry, stale: list[str]) -> None:
        """(In a worker thread.) Remove images a smaller ``n`` left over; write meta.json."""
        self.outputs.remove_images(stale)
        self.outputs.write_meta(inst, done, self.plan.manifest)

    async def _fail(self, item: PlanItem, entry: LockEntry | None, message: str, *,
                    refunded: bool = False) -> None:
        """Record the attempt as failed; ``refunded`` when the API does not charge for it."""
        if entry is not None:
            cost, charged = entry.cost, entry.charged
            if refunded and entry.status == "running":
                cost, charged = Decimal(0), max(entry.charged - entry.cost, Decimal(0))
            await self.store.commit(replace(entry, status="failed", last_error=message,
                                            cost=cost, charged=charged, updated_at=utc_now()))
        if refunded:
            # Only what this run pre-charged comes back off its spending: a task an
            # earlier run submitted was never counted in it (the budget must not grow).
            self.result.spent -= self.result.tally.holds.get(item.key, Decimal(0))
        self.result.tally.settle(item.key, refunded=refunded)
        self.result.failed.append((item.key, message))
        self.emit(EventKind.FAILED, item.key, message)

    def _sendable(self, inputs: tuple[ImageInput, ...]) -> list[str]:
        """The image_urls to send: URLs as they are, local files and stale URLs as data URIs."""
        out = []
        for item in inputs:
            if isinstance(item, UrlInput):
                out.append(item.url)
            elif isinstance(item, DataInput):
                out.append(item.uri)
            elif isinstance(item, FileInput):
                out.append(_data_uri(item.mime, self.workspace.read_bytes(item.path)))
            else:
                out.append(self._upstream(item))
        return out

    def _upstream(self, item: UpstreamInput) -> str:
        entry = self.store.get(item.key)
        if entry is None or entry.status != "done" or item.index >= len(entry.outputs):
            raise ImgspecError(f"upstream image {item.ref} is not available")
        output = entry.outputs[item.index]
        fresh = output.expires_at is not None and output.expires_at > (
            self.clock() + self.options.url_margin)
        if output.url and fresh:
            return output.url
        path = self.outputs.absolute(output.path)
        fmt = path.suffix.lstrip(".").lower()
        return _data_uri(f"image/{'jpeg' if fmt == 'jpg' else fmt}", path.read_bytes())


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"

