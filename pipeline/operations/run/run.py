"""A run: take the run guard, fold any crash journal, plan, pass the gates, execute, index.

The edge (``pipeline.api``) builds where the run happens (a ``Context``) and what it
was asked (a ``RunRequest``); ``run`` and ``run_async`` do the rest, telling the
caller through ``RunHooks``. Nothing here prompts or prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.core.apimart.links import LinkTrust
from pipeline.core.apimart.prices import money
from pipeline.core.planning.pacing import RunOptions
from pipeline.core.planning.plan import ACTIVE, Plan
from pipeline.core.planning.selection import Selection, narrow
from pipeline.errors import (
    ApiError,
    ApiUnreachable,
    AuthError,
    BalanceExhausted,
    BalanceTooLow,
    BudgetExceeded,
    ImgspecError,
    Interrupted,
    ItemsFailed,
    UsageError,
)
from pipeline.operations.context import Api, Context
from pipeline.operations.project import Prepared, prepare
from pipeline.operations.relocate import apply_moves
from pipeline.operations.run.events import (
    BalanceNote,
    EventKind,
    MovesApplied,
    NothingToDo,
    RunEvent,
    RunNote,
    RunResult,
    ShardNote,
    StopReason,
)
from pipeline.operations.run.executor import Executor
from pipeline.operations.shards import shard_lock
from pipeline.operations.spend import paid_tasks
from pipeline.shell.eventloop import run_loop
from pipeline.shell.http.client import ApiClient, Balance
from pipeline.shell.http.retrying import RetryEvent
from pipeline.shell.store.guard import RunGuard, guard_path
from pipeline.shell.store.lockstore import LockStore


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What a run was asked to do, checked once at the edge (where it happens: a ``Context``)."""

    selection: Selection = field(default_factory=Selection)
    max_cost: Decimal | None = None
    options: RunOptions = field(default_factory=RunOptions)
    max_rate: float | None = None
    rehash: bool = False  # recorded images checked by their sha256, not only their size
    ignore_balance: bool = False  # do not ask GET /v1/balance before submitting


@dataclass(frozen=True, slots=True)
class RunHooks:
    """What a caller hears from a run, and the one question it is asked.

    ``on_plan``: the plan about to run, before any gate. ``on_note``: things worth
    telling that are neither events nor errors. ``confirm``: asked once the gates
    are passed and before anything is submitted (only for a plan with work); False
    cancels (``UsageError``), None never asks. ``on_event``: progress; if it is also a
    context manager (a reporter with a live display) it is entered around the
    execution alone.
    """

    on_plan: Callable[[Plan], None] | None = None
    on_note: Callable[[RunNote], None] | None = None
    confirm: Callable[[Plan], bool] | None = None
    on_event: Callable[[RunEvent], None] | None = None

    def note(self, note: RunNote) -> None:
        """Tell ``on_note``, if anyone listens."""
        if self.on_note is not None:
            self.on_note(note)

    def progress(self) -> contextlib.AbstractContextManager[object]:
        """``on_event`` entered, when it is a context manager; else nothing to enter."""
        if isinstance(self.on_event, contextlib.AbstractContextManager):
            return self.on_event
        return contextlib.nullcontext()


def select(prepared: Prepared, selection: Selection) -> Plan:
    """The plan narrowed to the selection; unknown jobs, axes and values are usage errors."""
    return narrow(prepared.plan, selection, jobs=prepared.manifest.jobs)


def run(context: Context, request: RunRequest, hooks: RunHooks = RunHooks()) -> RunResult:
    """Plan and execute the context's manifest on an event loop of its own.

    The plan (and the lock store it was made from) exists before the loop starts, so
    the loop's collector never walks it (``eventloop.quiet_collector``).
    """
    with run_session(context, request, hooks) as session:
        if not session.gate():
            return session.nothing_done()
        if session.balance_due:
            run_loop(session.check_balance())
        session.confirm()
        with hooks.progress():
            return run_loop(session.execute())


async def run_async(context: Context, request: RunRequest,
                    hooks: RunHooks = RunHooks()) -> RunResult:
    """``run`` on the caller's running event loop (planning blocks it while it reads files)."""
    with run_session(context, request, hooks) as session:
        if not session.gate():
            return session.nothing_done()
        await session.check_balance()
        session.confirm()
        with hooks.progress():
            return await session.execute()


@contextlib.contextmanager
def run_session(context: Context, request: RunRequest,
                hooks: RunHooks) -> Iterator[RunSession]:
    """Hold the run guard and the lock store while a run is planned and executed.

    A shard first folds the manifest's lockfile into its own. The journal of a
    crashed run is folded into the lockfile before planning, so its recorded tasks
    show up as ``resume`` and are polled, not resubmitted. A simulated API is started
    under the guard: one process at a time uses the simulated account's state file.
    """
    api = context.api
    if api is None:
        raise UsageError("a run needs an API to talk to")
    shard = request.selection.shard
    if shard is not None:
        lock = shard_lock(context, shard)
        lock.sync(manifest=context.manifest.name)
        context = context.with_lockfile(lock.path)
        hooks.note(ShardNote(lock))
    with RunGuard(guard_path(context.lockfile), subject=context.manifest.name), \
            LockStore.open(context.lockfile, manifest=context.manifest.name) as store, \
            contextlib.ExitStack() as stack:
        # Planned against the state the store holds: the lockfile and its journal are
        # read once, and the run executes against exactly what its plan was made from.
        prepared = prepare(context, max_cost=request.max_cost, lock=store.lock,
                           rehash=request.rehash)
        plan = select(prepared, request.selection)
        if api.simulator is not None:
            base_url = stack.enter_context(api.simulator(store.path))
            context = context.with_api(api.served_at(base_url, currency=plan.currency))
        yield RunSession(context, request, hooks, prepared, plan, store)


@dataclass
class RunSession:
    """A run between planning and its end, under its guard: the steps ``run`` takes."""

    context: Context
    request: RunRequest
    hooks: RunHooks
    prepared: Prepared
    plan: Plan
    store: LockStore

    @property
    def api(self) -> Api:
        """The API this run talks to (a started simulator's, under ``--simulate``)."""
        assert self.context.api is not None  # run_session refuses a context without one
        return self.context.api

    def gate(self) -> bool:
        """Everything before money: show the plan, check the budget, apply ``moved:``.

        False when there is nothing to do (the index is rewritten all the same).
        """
        plan = self.plan
        if self.hooks.on_plan is not None:
            self.hooks.on_plan(plan)
        check_budget(plan)
        if plan.moves:
            apply_moves(plan.moves, self.store, self.prepared.paths.output_folder())
            self.hooks.note(MovesApplied(plan.moves))
        if not plan.has_work:
            write_index(self.prepared, self.store)
            self.hooks.note(NothingToDo())
            return False
        return True

    def nothing_done(self) -> RunResult:
        """The result of a run whose plan had no work."""
        return RunResult(plan=self.plan, outputs=self.prepared.paths.shown)

    @property
    def balance_due(self) -> bool:
        """Whether the balance is read before submitting (not for a free plan)."""
        return not self.request.ignore_balance and self.plan.total > 0

    async def check_balance(self) -> None:
        """Before submitting: read the balance and :func:`check_balance` the plan.

        A refused key is an AuthError, and an API that cannot be connected to an
        ApiUnreachable (nothing can be submitted anyway: the run stops before anything
        is recorded); a balance that cannot be read otherwise (a proxy without the
        endpoint, a failure after connecting) only gives a note, since the 402 of a
        submission still stops a run the account cannot pay.
        """
        if not self.balance_due:
            return
        api = self.api
        try:
            balance = await read_balance(base_url=api.base_url, api_key=api.api_key)
        except (AuthError, ApiUnreachable):
            raise
        except ApiError as exc:
            self.hooks.note(BalanceNote(f"the balance could not be read ({exc}); not checked"))
            return
        note = check_balance(self.plan, balance, unit=api.balance_unit)
        if note is not None:
            self.hooks.note(BalanceNote(note))

    def confirm(self) -> None:
        """Ask ``hooks.confirm`` before spending; a no is ``UsageError`` (nothing submitted)."""
        if self.hooks.confirm is not None and not self.hooks.confirm(self.plan):
            raise UsageError("cancelled; nothing was submitted")

    async def execute(self) -> RunResult:
        """Execute the plan; its result carries the plan and the output folder."""
        result = await execute_run(self.context, self.request, self.prepared, self.plan,
                                   self.store, on_event=self.hooks.on_event)
        result.plan, result.outputs = self.plan, self.prepared.paths.shown
        return result


def outcome_error(result: RunResult) -> ImgspecError | None:
    """The one place a run's end becomes an exception, and so an exit code (None: all done).

    Each way a run can stop maps to one exception; its message says what to do next.
    """
    budget = None if result.plan is None else result.plan.budget
    if result.fatal is not None:
        # 401/403: the API refused the key (exit 6); it cannot be reached (exit 6, or 2
        # for https to a plain http server).
        return result.fatal
    if result.stopped == StopReason.INTERRUPTED:
        return Interrupted("interrupted; everything recorded is kept: run again to resume")
    if result.stopped == StopReason.BALANCE:
        return BalanceExhausted(_balance_advice(result), status=402)
    if result.stopped == StopReason.BUDGET:
        return BudgetExceeded("stopped submitting at the budget; raise it to continue",
                              cost=result.spent, budget=budget)
    if not result.complete:
        advice = ("some instances did not finish; see above. Rerun with --only-failed to "
                  "retry them")
        if result.replan:
            advice += (f" ({len(result.replan):,} had an input changed during the run: a "
                       "plain rerun plans them with the new file)")
        return ItemsFailed(advice,
                           failed=[k for k, _ in result.failed],
                           unfinished=[k for k, _ in result.unfinished],
                           blocked=result.blocked)
    return None


def _balance_advice(result: RunResult) -> str:
    """What to do after a 402: top up, then a plain rerun (``--only-failed`` would skip
    the instances never submitted, which are most of what is left)."""
    left = len(result.unfinished) + len(result.blocked)
    failed = (f" ({len(result.failed):,} instance(s) also failed; the rerun retries them)"
              if result.failed else "")
    return (f"the account's balance ran out: {left:,} instance(s) were not done{failed}. "
            "Top up the APIMart account, then run the same command again: it submits "
            "only what is left and pays nothing twice")


def check_budget(plan: Plan) -> None:
    """Refuse (exit 3) a plan whose exact cost passes the budget, or with the spend
    recorded so far passes ``budget.max_total``."""
    if plan.max_total is not None and plan.spent + plan.total > plan.max_total:
        raise BudgetExceeded(
            f"spent so far {money(plan.spent, plan.currency)} and this plan "
            f"{money(plan.total, plan.currency)} come to "
            f"{money(plan.spent + plan.total, plan.currency)}, more than budget.max_total "
            f"{money(plan.max_total, plan.currency)}; nothing was submitted. Narrow it with "
            "--job/--where or raise budget.max_total", cost=plan.spent + plan.total,
            budget=plan.max_total)
    if not plan.within_budget and plan.budget is not None:
        raise BudgetExceeded(
            f"the plan costs {money(plan.total, plan.currency)}, more than the budget of "
            f"{money(plan.budget, plan.currency)}; nothing was submitted. Narrow it with "
            "--job/--where or raise budget.max_cost / --max-cost", cost=plan.total,
            budget=plan.budget)


async def read_balance(*, base_url: str, api_key: str) -> Balance:
    """The key's balance from ``GET /v1/balance``."""
    async with ApiClient(base_url=base_url, api_key=api_key) as client:
        return await client.balance()


def check_balance(plan: Plan, balance: Balance, *, unit: str | None) -> str | None:
    """Refuse (``BalanceTooLow``, exit 8) a plan the balance cannot cover; else a note or None.

    Compared only when the quota is unlimited or the balance's ``unit`` (the API does
    not say it; ``--balance-unit``) is the plan's currency; otherwise the note says
    why nothing was compared.
    """
    if balance.unlimited:
        return None
    assert balance.remain is not None
    if unit is None or unit.strip().upper() != plan.currency.upper():
        shown = "unknown" if unit is None else unit
        return (f"balance {balance.remain} (unit {shown}) not compared with the plan's "
                f"{money(plan.total, plan.currency)}: give --balance-unit {plan.currency} if the "
                "account is billed in it")
    if plan.total > balance.remain:
        raise BalanceTooLow(needed=plan.total, available=balance.remain,
                            currency=plan.currency)
    return None


async def execute_run(context: Context, request: RunRequest, prepared: Prepared, plan: Plan,
                      store: LockStore, *,
                      on_event: Callable[[RunEvent], None] | None = None) -> RunResult:
    """Execute the plan; Ctrl-C or SIGTERM stops it cleanly (``StopReason.INTERRUPTED``)."""
    outputs = prepared.paths.output_folder()
    # Folders that link out of the output folder are refused now, before anything is paid.
    active = [(item.job, item.key) for item in plan.items if item.status in ACTIVE]
    outputs.check_folders(active)
    outputs.clean_temp_files(active)
    executor: Executor | None = None

    def on_retry(event: RetryEvent) -> None:
        if executor is not None:
            executor.emit(EventKind.RETRY, None,
                          f"{event.operation} attempt {event.attempt} failed "
                          f"({event.error}); retrying in {event.wait:.1f} s")

    api = context.api
    assert api is not None  # run_session refuses a context without one
    async with ApiClient(base_url=api.base_url, api_key=api.api_key,
                         max_rate=request.max_rate, on_retry=on_retry) as client:
        executor = Executor(plan, client=client, store=store, outputs=outputs,
                            workspace=prepared.workspace, pricing=prepared.manifest.pricing,
                            options=request.options, on_event=on_event,
                            inputs=prepared.manifest.inputs,
                            links=LinkTrust.for_base_url(api.base_url,
                                                         simulator=context.simulate),
                            paid_tasks=paid_tasks(store.path, store.lock,
                                                  manifest=context.manifest))
        result = await _interruptible(executor.run(), executor)
    await store.settle()  # journal writes still in flight (after Ctrl-C, say)
    store.checkpoint()
    write_index(prepared, store)
    return result


def write_index(prepared: Prepared, store: LockStore) -> Path | str:
    """Rewrite ``index.json`` from the lock store: every run ends with a current index,
    including one that had nothing else to do (so a deleted index comes back)."""
    return prepared.paths.output_folder().write_index(
        prepared.expansion, store.entries, str(prepared.paths.manifest))


async def _interruptible(work: Coroutine[Any, Any, RunResult],
                         executor: Executor) -> RunResult:
    """Run ``work``; the first SIGINT/SIGTERM cancels it and marks the result interrupted."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        executor.emit(EventKind.STOPPING, None, "interrupted: recording state, then exiting")
        task.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests) or no signal support: Ctrl-C still raises
    try:
        result: RunResult = await task
    except asyncio.CancelledError:
        if not interrupted:
            raise
        result = executor.result
        result.stopped = StopReason.INTERRUPTED
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return result
