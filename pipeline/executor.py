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

This module is the per-instance state machine (submit or resume, poll,
download, record); ``scheduler`` runs it over the graph of instances,
``lifecycle`` names what each step records, ``sendable`` encodes inputs off the
event loop, ``polling`` says when to poll, ``pacing`` how fast to send, and
``events`` is what the run reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

from pipeline import adopt, lifecycle, sendable
from pipeline.client import ApiClient, TaskImage, TaskState
from pipeline.downloads import Downloaded
from pipeline.errors import AuthError, BalanceExhausted, RequestRejected, TransientError
from pipeline.events import EventKind, RunEvent, RunResult, StopReason
from pipeline.identity import fingerprint
from pipeline.instances import Instance
from pipeline.journal import LockStore
from pipeline.lockfile import LockEntry, Output
from pipeline.outputs import OutputFolder, utc_now
from pipeline.pacing import Bound, RunOptions
from pipeline.plan import ACTIVE, Plan, PlanItem, PlanStatus, resolved_request
from pipeline.polling import PollModel
from pipeline.pricing import PriceTable
from pipeline.scheduler import run_graph
from pipeline.spec import InputsMode
from pipeline.uploads import Inputs
from pipeline.workspace import Workspace

__all__ = ["Executor", "RunOptions"]


@dataclass(frozen=True, slots=True)
class _Flight:
    """A task in flight at the API, and when (``time.monotonic()``) its clock started."""

    task_id: str
    started: float | None  # None when not known: polling then counts from now
    resumed: bool = False  # recorded by an earlier run: poll at once
    estimate: float | None = None  # the task's own estimated_time, from the submit reply


class _Stop(Exception):
    """Ends one instance's work early without failing it (budget, balance, fatal)."""


class Executor:
    """Runs one plan; create one per run."""

    def __init__(self, plan: Plan, *, client: ApiClient, store: LockStore,
                 outputs: OutputFolder, workspace: Workspace, pricing: PriceTable,
                 options: RunOptions, on_event: Callable[[RunEvent], None] | None = None,
                 clock: Callable[[], float] = time.time, inputs: InputsMode = "upload",
                 polling: PollModel | None = None) -> None:
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
        # When to poll each task: its own estimate, corrected by what finished tasks showed.
        self.polling = polling or PollModel(default_estimate=options.first_poll,
                                            max_interval=options.max_poll_interval,
                                            peers=options.concurrency)
        self.warm = asyncio.Event()  # set when the model has learned: wakes waiting tasks
        self.monotonic: Callable[[], float] = time.monotonic  # replaced by tests, with sleep
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.submitting_stopped: str | None = None
        self.slots = asyncio.Semaphore(options.concurrency)
        self.submissions = 0  # between recording ``submitting`` and recording the reply
        self.no_submissions = asyncio.Event()
        self.no_submissions.set()
        self.inputs = Inputs(mode=inputs, client=client, store=store, workspace=workspace,
                             clock=clock)

    # -- events ------------------------------------------------------------------------

    def emit(self, kind: EventKind, key: str | None, message: str = "") -> None:
        if self.on_event is not None:
            tally = self.result.tally
            self.on_event(RunEvent(kind, key, message, len(self.result.done),
                                   len(self.result.failed), tally.in_flight, len(self.items),
                                   tally.charged, tally.reserved, self.limited_by()))

    def limited_by(self) -> Bound | None:
        """The bound holding the run back now: a rate bound that made a request wait in
        the last second, else the concurrency when every slot is taken and more wait."""
        held = self.client.holding()
        if held is not None:
            return held
        if self.slots.locked() and len(self.result.tally.flying) < len(self.items) - (
                len(self.result.done) + len(self.result.failed)):
            return Bound.CONCURRENCY
        return None

    # -- scheduling --------------------------------------------------------------------

    async def run(self) -> RunResult:
        """Process every pending item; returns when all are finished, blocked or stopped."""

        def blocked(child: PlanItem, parent: PlanItem) -> None:
            self.result.blocked.append(child.key)
            self.emit(EventKind.BLOCKED, child.key, f"upstream {parent.key} did not finish")

        # Twice as many workers as task slots: a worker downloading a finished task's
        # images has given its slot back, so another can submit meanwhile.
        await run_graph(self.items, self.process, workers=2 * self.options.concurrency,
                        on_blocked=blocked)
        return self.result

    # -- one instance ------------------------------------------------------------------

    async def process(self, item: PlanItem) -> bool:
        """Submit (or resume), poll and download one instance; True when it is done."""
        key = item.key
        if self.result.fatal is not None:
            return False
        if item.status == PlanStatus.DOWNLOAD:
            return await self.refetch(item)
        if item.status == PlanStatus.REUSE:
            return await self.reuse(item)
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
        replay = lifecycle.is_replay(entry, fp)
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
        base = lifecycle.begin_attempt(inst, request, fp, entry, reroll=item.reroll,
                                       now=utc_now())
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
        body = dict(inst.request)
        if inst.inputs:
            found = sendable.sources(inst.inputs, self.store.entries, now=self.clock(),
                                     url_margin=self.options.url_margin,
                                     output_file=self.outputs.absolute)
            # Uploads first (durable), ``submitting`` after: nothing paid hangs on an
            # upload that is not confirmed, and a replay sends the same URLs.
            recorded = self.store.get(key)
            # A replayed key must send the body it sent before: the recorded upload URLs,
            # while they work at all.
            replay = recorded is not None and recorded.idempotency_key == base.idempotency_key
            try:
                body["image_urls"] = await self.inputs.image_urls(found, replay=replay)
            except RequestRejected as exc:
                await self._fail(item, None, f"input image upload refused: {exc.api_message}")
                return None
            except TransientError as exc:
                self.result.unfinished.append((key, f"not submitted: input upload failed: {exc}"))
                self.emit(EventKind.UNFINISHED, key, f"input upload failed: {exc}")
                return None
        await self.store.commit(base)
        try:
            state = await self.client.submit(body, idempotency_key=base.idempotency_key)
            replied = self.monotonic()
        except RequestRejected as exc:
            await self._fail(item, base, exc.api_message)
            return None
        except BalanceExhausted as exc:
            # A 402 is a definite refusal: no task exists. Left ``submitting``, the entry
            # would plan as a free resume and its replay would pay unseen by the plan and
            # the balance check; recorded as not submitted, the next plan prices it.
            await self.store.commit(lifecycle.failed(
                base, f"not submitted: {exc.api_message}", refunded=False, now=utc_now()))
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
        # The API's request id and replay marker go on the journal line: a replayed
        # reply is the earlier task, on record as not a second charge.
        await self.store.commit(lifecycle.running(base, state.task_id, cost, now=utc_now()),
                                submission={"task_id": state.task_id,
                                            "request_id": state.request_id,
                                            "replayed": state.replayed})
        self.emit(EventKind.SUBMITTED, key, state.task_id)
        # The task's clock is timed from our reading the reply: the API created the task
        # before it replied, and measured (the simulator's clock against ours, 10,000
        # tasks @1,000 in flight) the reply was read 5 ms after the creation at the
        # median and 55 ms at the 99th percentile, while the request had been sent 17 ms
        # before it at the median and 200 ms at the 99th (the API queues a burst of
        # submissions). The narrower that spread, the closer ``polling`` can aim.
        return _Flight(state.task_id, started=replied, estimate=state.estimated_time)

    async def wait(self, item: PlanItem, flight: _Flight) -> TaskState | None:
        """Poll until the task completes (its state) or fails, or the deadline passes (None).

        Each task is polled from its own estimate as ``self.polling`` corrects it; a
        task waiting while the model is still cold is woken when it warms up, so an
        over-estimating API does not hold its slot for the whole estimate.
        """
        task_id = flight.task_id
        started = self.monotonic() if flight.started is None else flight.started
        plan = self.polling.start(flight.estimate, resumed=flight.resumed)
        while True:
            elapsed = self.monotonic() - started
            if elapsed > self.options.task_timeout:
                self.result.unfinished.append(
                    (item.key, f"task {task_id} still running after "
                               f"{self.options.task_timeout:.0f} s; the next run polls it"))
                self.emit(EventKind.UNFINISHED, item.key, task_id)
                return None
            delay = self.polling.delay(plan, elapsed)
            if delay > 0 and self.polling.cold and not plan.scout and not self.warm.is_set():
                woken = False
                with contextlib.suppress(TimeoutError):
                    # A timeout scope, not wait_for: no task made per wait (Python 3.11).
                    async with asyncio.timeout(delay):
                        await self.warm.wait()
                    woken = True
                if woken:
                    continue  # re-plan with what the model has learned
            elif delay > 0:
                await self.sleep(delay)
            asked = self.monotonic()
            try:
                state = await self.client.poll(task_id)
            except TransientError:
                plan.polls += 1
                plan.last_at = asked - started
                continue  # the client already retried; keep polling until the deadline
            except RequestRejected as exc:
                await self._fail(item, self.store.get(item.key),
                                 f"task {task_id}: {exc.api_message}")
                return None
            at = (state.asked_at if state.asked_at is not None else asked) - started
            if self.polling.observe(plan, at, finished=state.finished,
                                    estimate=state.estimated_time, progress=state.progress,
                                    replied=self.monotonic() - started):
                self.warm.set()
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
            done = await asyncio.to_thread(self._install, inst, got, entry)
            await self.store.commit(done)
            stale = [o.path for o in entry.outputs[len(done.outputs):]]
            if stale:  # a smaller ``n`` than last time: its extra images go, once recorded
                await asyncio.to_thread(self.outputs.remove_images, stale)
            self.result.done.append(key)
            self.emit(EventKind.DONE, key, f"{len(done.outputs)} image(s)")
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
                await self.store.commit(lifecycle.link_forgotten(
                    replace(entry, outputs=tuple(outputs)), index, now=utc_now()))
                message = (f"image {index}: {problem}; the next plan shows it as missing "
                           "(generating it again is paid)")
                self.result.failed.append((key, message))
                self.emit(EventKind.FAILED, key, message)
                return False
            final = await asyncio.to_thread(self.outputs.install, temp, item.job, key, index,
                                            got.format, output.path)
            outputs[index] = replace(output, path=self.outputs.relative(final))
        done = lifecycle.refreshed(entry, tuple(outputs), now=utc_now())
        await self.store.commit(done)
        await asyncio.to_thread(self.outputs.write_meta, item.instance, done, self.plan.manifest)
        self.result.done.append(key)
        self.emit(EventKind.DONE, key, f"{len(item.refetch)} image(s) downloaded again")
        return True

    async def reuse(self, item: PlanItem) -> bool:
        """Take the images of a result the project already paid for (``pipeline.adopt``)."""
        key = item.key
        await self._give_way()
        try:
            done = await adopt.adopt(item, client=self.client, outputs=self.outputs,
                                     store=self.store, now=self.clock())
        except adopt.Unfinished as exc:
            self.result.unfinished.append((key, str(exc)))
            self.emit(EventKind.UNFINISHED, key, str(exc))
            return False
        except adopt.Unavailable as exc:
            failed = adopt.unavailable(item, self.store, str(exc))
            await self.store.commit(failed)
            message = f"{failed.last_error}; the next plan prices it (generating it is paid)"
            self.result.failed.append((key, message))
            self.emit(EventKind.FAILED, key, message)
            return False
        await self.store.commit(done)
        await asyncio.to_thread(self.outputs.write_meta, item.instance, done, self.plan.manifest)
        self.result.done.append(key)
        self.emit(EventKind.DONE, key, f"{len(done.outputs)} image(s) reused from "
                                       f"{done.reused_from} (free)")
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
            async with asyncio.timeout(self.options.download_give_way):
                await self.no_submissions.wait()

    def _install(self, inst: Instance, got: list[tuple[Path, TaskImage, Downloaded]],
                 entry: LockEntry) -> LockEntry:
        """(In a worker thread.) Rename verified downloads into place and write meta.json;
        the ``done`` entry to record.

        One trip to a worker thread per instance, not one per step: at a thousand tasks
        in flight each trip is loop work. meta.json is written before the entry is
        recorded: it is a readable copy of it, and a crash in between only means the
        next run (which resumes the task) writes it again.
        """
        before = [o.path for o in entry.outputs]
        outputs = []
        for index, (temp, image, info) in enumerate(got):
            final = self.outputs.install(temp, inst.job, inst.key, index, info.format,
                                         before[index] if index < len(before) else None)
            outputs.append(Output(self.outputs.relative(final), info.sha256, info.bytes,
                                  info.width, info.height, image.url, image.expires_at))
        done = lifecycle.done(entry, tuple(outputs), now=utc_now())
        self.outputs.write_meta(inst, done, self.plan.manifest)
        return done

    async def _fail(self, item: PlanItem, entry: LockEntry | None, message: str, *,
                    refunded: bool = False) -> None:
        """Record the attempt as failed; ``refunded`` when the API does not charge for it."""
        if entry is not None:
            await self.store.commit(lifecycle.failed(entry, message, refunded=refunded,
                                                     now=utc_now()))
        if refunded:
            # Only what this run pre-charged comes back off its spending: a task an
            # earlier run submitted was never counted in it (the budget must not grow).
            self.result.spent -= self.result.tally.holds.get(item.key, Decimal(0))
        self.result.tally.settle(item.key, refunded=refunded)
        self.result.failed.append((item.key, message))
        self.emit(EventKind.FAILED, item.key, message)
