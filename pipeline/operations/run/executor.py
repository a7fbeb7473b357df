"""Execute a ``Plan`` against the API: submit, poll, download, record; never pay twice.

The order of writes is the safety argument:

1. before a POST, the instance's lock entry records ``submitting`` with its
   Idempotency-Key (durably, in the journal);
2. right after the POST, ``running`` with the task id;
3. after every image is downloaded, verified and renamed into place, ``done``.

A crash at any point leaves an entry that the next run resumes: ``submitting``
replays the same key (the API returns the same task, no new charge) and
``running`` polls the recorded task. Only a task that failed, was cancelled or is
unknown to the API starts a new attempt, with a new key. A completed task whose
results cannot be fetched (links imgspec will not use, downloads that keep failing)
is paid for: it is polled again for fresh links, with backoff, and if that does not
help it is recorded ``failed`` for its ``results``, which the next run polls again
for free (``lifecycle.repolls``) while the API keeps the task.

A task far past what the run has learned of its tasks' durations
(``PollModel.overdue``) does not hold the run: once only such tasks (and work that
waits for them) remain, the run ends, leaving them recorded for the next run.

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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

from pipeline.core.apimart.links import LinkTrust
from pipeline.core.apimart.prices import PriceTable
from pipeline.core.expansion.identity import fingerprint
from pipeline.core.expansion.instances import Instance
from pipeline.core.lock import lifecycle
from pipeline.core.lock.lockfile import Failure, LockEntry, Output
from pipeline.core.manifest.model import InputsMode
from pipeline.core.manifest.workspace import Workspace
from pipeline.core.planning.pacing import Bound, RunOptions
from pipeline.core.planning.plan import ACTIVE, Plan, PlanItem, PlanStatus, resolved_request
from pipeline.core.planning.polling import PollModel
from pipeline.errors import (
    ApiUnreachable,
    AuthError,
    BadResultLink,
    BalanceExhausted,
    InputChanged,
    RequestRejected,
    StoreError,
    TransientError,
)
from pipeline.operations import adopt
from pipeline.operations.run.events import EventKind, RunEvent, RunResult, StopReason
from pipeline.operations.run.scheduler import run_graph
from pipeline.shell.http import sendable
from pipeline.shell.http.client import ApiClient, TaskImage, TaskState
from pipeline.shell.http.downloads import Downloaded
from pipeline.shell.http.uploads import Inputs
from pipeline.shell.store.lockstore import LockStore
from pipeline.shell.store.outputs import utc_now
from pipeline.shell.store.store import OutputStore

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
                 outputs: OutputStore, workspace: Workspace, pricing: PriceTable,
                 options: RunOptions, on_event: Callable[[RunEvent], None] | None = None,
                 clock: Callable[[], float] = time.time, inputs: InputsMode = "upload",
                 polling: PollModel | None = None, links: LinkTrust | None = None,
                 paid_tasks: Mapping[str, str] | None = None) -> None:
        self.plan = plan
        # Task id → where the project's lockfiles record it as paid (``spend.paid_tasks``).
        self.paid_tasks: Mapping[str, str] = paid_tasks or {}
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
        # Which links recorded in the lockfile may be sent or fetched (the API's site);
        # without one, none is.
        self.links = links if links is not None else LinkTrust(("", "", None))
        self.inputs = Inputs(mode=inputs, client=client, store=store, workspace=workspace,
                             clock=clock, links=self.links,
                             warn=lambda message: self.emit(EventKind.WARNING, None, message))
        # Far-past tasks: those waiting past ``polling.overdue``, the items being
        # processed and those finished (returned or blocked); ``give_up`` is set once
        # nothing else is left, and ends the far-past tasks' waits.
        self.overdue: set[str] = set()
        self.inside: set[str] = set()
        self.finished: set[str] = set()
        self.give_up = asyncio.Event()

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
            self.finished.add(child.key)
            self.emit(EventKind.BLOCKED, child.key, f"upstream {parent.key} did not finish")

        async def work(item: PlanItem) -> bool:
            self.inside.add(item.key)
            try:
                return await self.process(item)
            finally:
                self.inside.discard(item.key)
                self.finished.add(item.key)
                self._check_overdue()

        # Twice as many workers as task slots: a worker downloading a finished task's
        # images has given its slot back, so another can submit meanwhile.
        await run_graph(self.items, work, workers=2 * self.options.concurrency,
                        on_blocked=blocked)
        return self.result

    def _check_overdue(self) -> None:
        """Set ``give_up`` when every item left is a far-past task or waits for one."""
        if self.give_up.is_set() or not self.overdue or not self.inside <= self.overdue:
            return
        held = set(self.overdue)
        for item in self.items:  # in plan order: an item's needs come before it
            if item.key in self.finished or item.key in held:
                continue
            if not any(need in held for need in item.needs):
                return  # work that can go on without them
            held.add(item.key)
        self.give_up.set()
        self.emit(EventKind.STOPPING, None,
                  f"only {len(self.overdue):,} task(s) far past this run's others remain: "
                  "ending the run; they are still at the API, and the next run collects "
                  "them without paying again")

    # -- one instance ------------------------------------------------------------------

    async def process(self, item: PlanItem) -> bool:
        """Submit (or resume), poll and download one instance; True when it is done."""
        key = item.key
        if self.result.fatal is not None:
            return False
        try:
            if item.status == PlanStatus.DOWNLOAD:
                return await self.refetch(item)
            if item.status == PlanStatus.REUSE:
                return await self.reuse(item)
            async with self.slots:  # a slot is a task in flight at the API
                try:
                    flight = await self.submit(item)
                    if flight is None:
                        return False
                    got = await self.wait(item, flight)
                finally:
                    self.result.tally.landed(key)
                if got is None:
                    return False
                self.result.tally.settle(key, refunded=False)
            return await self.collect(item, flight.task_id, got)
        except _Stop:
            return False
        except StoreError as exc:
            # The result is paid and still at the API: nothing was recorded for what the
            # store did not confirm, so the next run fetches it again, free.
            message = f"{exc}; the next run stores it again, paying nothing new"
            self.result.unfinished.append((key, message))
            self.emit(EventKind.UNFINISHED, key, message)
            return False
        except AuthError as exc:
            self.result.fatal = exc
            self.result.stopped = StopReason.AUTH
            self.emit(EventKind.STOPPING, key, str(exc))
            return False
        except ApiUnreachable as exc:
            self._unreachable(key, exc)
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
        if item.repoll:
            # The plan priced this at nothing: the paid task is polled again, never
            # bought again here (a task found gone is priced by the next plan).
            if entry is None or entry.task_id is None or not lifecycle.repolls(entry):
                self.result.unfinished.append((key, "its lock entry changed since the plan"))
                self.emit(EventKind.UNFINISHED, key, "its lock entry changed since the plan")
                return None
            self.result.tally.took_off(key)
            self.emit(EventKind.RESUMED, key, entry.task_id)
            return _Flight(entry.task_id, started=None, resumed=True)
        request = resolved_request(inst, self.store.entries)
        if request is None:  # an upstream finished without the image this one needs
            await self._fail(item, None, "an upstream image is missing", failure="refused")
            return None
        fp = fingerprint(request)
        replay = lifecycle.is_replay(entry, fp)
        cost = self.pricing.cost(inst.model, inst.n)
        if self.submitting_stopped is not None:
            self.result.unfinished.append((key, f"not submitted ({self.submitting_stopped})"))
            raise _Stop
        budget = self.plan.run_cap  # max_cost, and what max_total leaves of it
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
        except ApiUnreachable:
            await self._not_sent(key, entry, base)
            raise
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
                                     output_file=self.outputs.local_file, links=self.links)
            # Uploads first (durable), ``submitting`` after: nothing paid hangs on an
            # upload that is not confirmed, and a replay sends the same URLs.
            recorded = self.store.get(key)
            # A replayed key must send the body it sent before: the recorded upload URLs,
            # while they work at all.
            replay = recorded is not None and recorded.idempotency_key == base.idempotency_key
            try:
                body["image_urls"] = await self.inputs.image_urls(found, replay=replay)
            except ApiUnreachable:
                raise  # nothing recorded yet; the run stops (see process)
            except RequestRejected as exc:
                await self._fail(item, None, f"input image upload refused: {exc.api_message}",
                                 failure="refused")
                return None
            except InputChanged as exc:  # not the planned file: nothing sent, nothing recorded
                self.result.replan.append(key)
                await self._fail(item, None, str(exc), failure="refused")
                return None
            except TransientError as exc:
                self.result.unfinished.append((key, f"not submitted: input upload failed: {exc}"))
                self.emit(EventKind.UNFINISHED, key, f"input upload failed: {exc}")
                return None
        earlier = self.store.get(key)
        # This entry sent the very same key before (a crash left it ``submitting``): a
        # replay is then of its own sending, paid and not yet recorded.
        own_earlier = (earlier is not None and earlier.status == "submitting"
                       and earlier.idempotency_key == base.idempotency_key)
        await self.store.commit(base)
        try:
            state = await self.client.submit(body, idempotency_key=base.idempotency_key)
            replied = self.monotonic()
        except RequestRejected as exc:
            await self._fail(item, base, exc.api_message, failure="refused")
            return None
        except BalanceExhausted as exc:
            # A 402 is a definite refusal: no task exists. Left ``submitting``, the entry
            # would plan as a free resume and its replay would pay unseen by the plan and
            # the balance check; recorded as not submitted, the next plan prices it.
            await self.store.commit(lifecycle.failed(
                base, f"not submitted: {exc.api_message}", failure="refused", refunded=False,
                now=utc_now()))
            self.submitting_stopped = "balance exhausted"
            self.result.stopped = StopReason.BALANCE
            self.result.unfinished.append((key, f"not submitted: {exc.api_message}"))
            self.emit(EventKind.STOPPING, key, "the account's balance is exhausted (HTTP 402)")
            raise _Stop from exc
        except ApiUnreachable:
            raise  # the POST never left this machine (see submit)
        except TransientError as exc:
            # The POST may or may not have created a task: keep the key, replay it next run.
            self.result.unfinished.append((key, f"submission outcome unknown: {exc}"))
            self.emit(EventKind.UNFINISHED, key, str(exc))
            raise _Stop from exc
        sent_before = own_earlier or state.resent
        noted = self.paid_tasks.get(state.task_id)
        created = None
        if state.replayed and sent_before and noted is None:
            created = await self._made_at(state.task_id)
        paid_by = lifecycle.paid_elsewhere(
            replayed=state.replayed, sent_before=sent_before, recorded=noted,
            created=created, first_sent=base.updated_at)
        if paid_by is not None:
            cost = Decimal(0)
        self.result.spent += cost
        self.result.tally.took_off(key, cost)
        # The API's request id and replay marker go on the journal line: a replayed
        # reply is the earlier task, on record as not a second charge.
        await self.store.commit(lifecycle.running(base, state.task_id, cost, now=utc_now(),
                                                  paid_by=paid_by),
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

    async def _made_at(self, task_id: str) -> float | None:
        """When the API made task ``task_id`` (its poll's ``created``), None if unknown.

        Asked only of a replay answering a key this lockfile sent before, to tell
        whether that sending made the task (``lifecycle.paid_elsewhere``). Not knowing
        counts the task as this lockfile's charge: a figure too high, never too low.
        """
        try:
            return (await self.client.poll(task_id)).created
        except (RequestRejected, TransientError):
            return None

    async def wait(self, item: PlanItem,
                   flight: _Flight) -> TaskState | BadResultLink | None:
        """Poll until the task completes (its state, or the refusal of its result links,
        which ``collect`` polls again for), fails, or is given up on (None).

        Each task is polled from its own estimate as ``self.polling`` corrects it; a
        task waiting while the model is still cold is woken when it warms up, so an
        over-estimating API does not hold its slot for the whole estimate. A task is
        given up on at ``options.task_timeout``, or once it is far past what the run has
        learned (``PollModel.overdue``) and nothing else is left to do; either way it
        stays recorded and the next run polls it.
        """
        task_id = flight.task_id
        started = self.monotonic() if flight.started is None else flight.started
        plan = self.polling.start(flight.estimate, resumed=flight.resumed)
        try:
            while True:
                elapsed = self.monotonic() - started
                if elapsed > self.options.task_timeout:
                    self.result.unfinished.append(
                        (item.key, f"task {task_id} still running after "
                                   f"{self.options.task_timeout:.0f} s; the next run polls it"))
                    self.emit(EventKind.UNFINISHED, item.key, task_id)
                    return None
                delay = self.polling.delay(plan, elapsed)
                bound = self.polling.overdue(plan)
                if bound is not None and elapsed > bound:
                    if item.key not in self.overdue:
                        self.overdue.add(item.key)
                        self._check_overdue()
                    if self.give_up.is_set():
                        message = (f"task {task_id} is still running at the API after "
                                   f"{elapsed:.0f} s, far past this run's other tasks; the "
                                   "next run polls it again, paying nothing new")
                        self.result.unfinished.append((item.key, message))
                        self.emit(EventKind.UNFINISHED, item.key, message)
                        return None
                    if delay > 0 and await self._until(self.give_up, delay):
                        continue  # nothing else is left: give it up
                elif delay > 0 and self.polling.cold and not plan.scout and not self.warm.is_set():
                    if await self._until(self.warm, delay):
                        continue  # re-plan with what the model has learned
                elif delay > 0:
                    if bound is not None and bound - elapsed < delay:
                        # Awake at the bound, to be counted as far past it then.
                        await self.sleep(bound - elapsed + 0.005)
                        continue
                    await self.sleep(delay)
                asked = self.monotonic()
                try:
                    state = await self.client.poll(task_id)
                except ApiUnreachable:
                    raise  # the task stays recorded ``running``; the run stops (see process)
                except TransientError:
                    plan.polls += 1
                    plan.last_at = asked - started
                    continue  # the client already retried; keep polling until the deadline
                except BadResultLink as exc:
                    return exc  # completed and paid: ``collect`` polls again for good links
                except RequestRejected as exc:
                    await self._fail(item, self.store.get(item.key),
                                     f"task {task_id}: {exc.api_message}", failure="task-gone")
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
                                     state.error or f"the task was {state.status}",
                                     failure="task-failed", refunded=True)
                    return None
        finally:
            self.overdue.discard(item.key)

    async def _until(self, event: asyncio.Event, delay: float) -> bool:
        """Wait ``delay`` s, or less if ``event`` is set meanwhile (then True)."""
        with contextlib.suppress(TimeoutError):
            # A timeout scope, not wait_for: no task made per wait (Python 3.11).
            async with asyncio.timeout(delay):
                await event.wait()
            return True
        return False

    async def collect(self, item: PlanItem, task_id: str,
                      got: TaskState | BadResultLink) -> bool:
        """Download every image, rename into place, record done and write meta.json.

        The task is completed and paid for, so results that cannot be fetched are never
        bought again here: up to ``options.download_attempts`` tries, each after polling
        the task again for fresh links (waiting ``options.repoll_backoff`` s, doubling).
        If all fail, the attempt is recorded failed for its ``results``, and the next run
        polls the task again, free; a failure whose outcome is unknown (network, 5xx)
        leaves the entry as it is, for the next run to resume.
        """
        inst, key = item.instance, item.key
        state = got if isinstance(got, TaskState) else None
        problem, unknown = str(got) if state is None else "", False
        for attempt in range(self.options.download_attempts):
            if attempt:
                await self.sleep(self.options.repoll_backoff * 2 ** (attempt - 1))
                try:  # fresh URLs for this try
                    state = await self.client.poll(task_id)
                except BadResultLink as exc:
                    state, problem, unknown = None, str(exc), False
                except RequestRejected as exc:
                    await self._fail(item, self.store.get(key),
                                     f"task {task_id}: {exc.api_message}", failure="task-gone")
                    return False
                except TransientError as exc:
                    state, problem, unknown = None, str(exc), True
            if state is None:
                continue
            if state.status != "completed" or not state.images:
                state, problem, unknown = None, "the task completed without images", False
                continue
            await self._give_way()
            temps = [self.outputs.temp_path(inst.job, key, index)
                     for index in range(len(state.images))]
            try:
                fetched = [(temp, image, await self.client.download(image.url, temp))
                           for temp, image in zip(temps, state.images, strict=True)]
            except (RequestRejected, TransientError) as exc:
                for temp in temps:
                    temp.unlink(missing_ok=True)
                problem, unknown = str(exc), isinstance(exc, TransientError)
                continue
            except BaseException:
                for temp in temps:
                    temp.unlink(missing_ok=True)
                raise
            entry = self.store.get(key)
            assert entry is not None
            done = await asyncio.to_thread(self._install, inst, fetched, entry)
            await self.store.commit(done)
            stale = [o.path for o in entry.outputs[len(done.outputs):]]
            if stale:  # a smaller ``n`` than last time: its extra images go, once recorded
                await asyncio.to_thread(self.outputs.remove_images, stale)
            self.result.done.append(key)
            self.emit(EventKind.DONE, key, f"{len(done.outputs)} image(s)")
            return True
        if unknown:
            self.result.unfinished.append((key, f"download failed: {problem}"))
            self.emit(EventKind.UNFINISHED, key, problem)
            return False
        await self._fail(item, self.store.get(key),
                         f"the results cannot be downloaded: {problem}; the next run polls "
                         f"task {task_id} again for fresh links, paying nothing new",
                         failure="results")
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
            try:
                final, _ = await adopt.fetch_by_link(
                    output.url, output.sha256, links=self.links, client=self.client,
                    outputs=self.outputs, job=item.job, key=key, index=index,
                    previous=output.path)
            except adopt.Unfinished as exc:
                self.result.unfinished.append((key, str(exc)))
                self.emit(EventKind.UNFINISHED, key, str(exc))
                return False
            except adopt.Unavailable as exc:
                await self.store.commit(lifecycle.link_forgotten(
                    replace(entry, outputs=tuple(outputs)), index, now=utc_now()))
                message = (f"image {index}: {exc}; the next plan shows it as missing "
                           "(generating it again is paid)")
                self.result.failed.append((key, message))
                self.emit(EventKind.FAILED, key, message)
                return False
            outputs[index] = replace(output, path=self.outputs.relative(final))
        done = lifecycle.refreshed(entry, tuple(outputs), now=utc_now())
        await self.store.commit(done)
        await asyncio.to_thread(self.outputs.write_meta, item.instance, done, self.plan.manifest)
        self.result.done.append(key)
        self.emit(EventKind.DONE, key, f"{len(item.refetch)} image(s) downloaded again")
        return True

    async def reuse(self, item: PlanItem) -> bool:
        """Take the images of a result the project already paid for (``operations.adopt``)."""
        key = item.key
        await self._give_way()
        try:
            done = await adopt.adopt(item, client=self.client, outputs=self.outputs,
                                     links=self.links,
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

    def _unreachable(self, key: str, exc: ApiUnreachable) -> None:
        """The API cannot be reached: stop the run, as every other request would fail the
        same way. ``key`` stays for the next run (its entry says where it was)."""
        self.result.unfinished.append((key, "left for the next run: the API cannot be reached"))
        if self.result.fatal is None:
            self.result.fatal = exc
            self.result.stopped = StopReason.UNREACHABLE
            self.submitting_stopped = "the API cannot be reached"
            self.emit(EventKind.STOPPING, key, str(exc))

    async def _not_sent(self, key: str, previous: LockEntry | None, base: LockEntry) -> None:
        """Undo the ``submitting`` record ``base`` of a POST that never left this machine.

        This POST made no task, so the entry goes back to ``previous`` and the next plan
        shows the instance as before this run. A ``previous`` left ``submitting`` stays
        so, key and all: the earlier POST that used the key may have made a task.
        """
        if self.store.get(key) is not base:
            return  # nothing recorded yet (an upload could not connect)
        if previous is None:
            # On the loop, not in a thread: it changes the entries the loop reads. A
            # failure path, taken at most once per task slot before the run stops.
            self.store.delete([key])
        else:
            await self.store.commit(previous)

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
                                         sha256=info.sha256,
                                         previous=before[index] if index < len(before) else None)
            outputs.append(Output(self.outputs.relative(final), info.sha256, info.bytes,
                                  info.width, info.height, image.url, image.expires_at))
        done = lifecycle.done(entry, tuple(outputs), now=utc_now())
        self.outputs.write_meta(inst, done, self.plan.manifest)
        return done

    async def _fail(self, item: PlanItem, entry: LockEntry | None, message: str, *,
                    failure: Failure, refunded: bool = False) -> None:
        """Record the attempt as failed for ``failure``; ``refunded`` when the API does not
        charge for it."""
        if entry is not None:
            await self.store.commit(lifecycle.failed(entry, message, failure=failure,
                                                     refunded=refunded, now=utc_now()))
        if refunded:
            # Only what this run pre-charged comes back off its spending: a task an
            # earlier run submitted was never counted in it (the budget must not grow).
            self.result.spent -= self.result.tally.holds.get(item.key, Decimal(0))
        self.result.tally.settle(item.key, refunded=refunded)
        self.result.failed.append((item.key, message))
        self.emit(EventKind.FAILED, item.key, message)
