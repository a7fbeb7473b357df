"""``imgspec run``: take the run guard, fold any crash journal, plan, execute, write the index.

The CLI normalises options into a ``RunSettings`` value at the edge and calls
``prepare_run`` (to show the plan and ask) and then ``execute_run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.core.apimart.links import LinkTrust
from pipeline.core.apimart.prices import money
from pipeline.core.lock.lockfile import lockfile_path
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
)
from pipeline.operations.project import Prepared, prepare
from pipeline.operations.run.eventloop import run_loop
from pipeline.operations.run.events import EventKind, RunEvent, RunResult, StopReason
from pipeline.operations.run.executor import Executor
from pipeline.operations.spend import paid_tasks
from pipeline.shell.http.client import ApiClient, Balance
from pipeline.shell.http.retrying import RetryEvent
from pipeline.shell.store.guard import RunGuard, guard_path
from pipeline.shell.store.journal import LockStore


@dataclass(frozen=True, slots=True)
class RunSettings:
    """Everything ``run`` was asked to do, checked once at the edge."""

    manifest: Path
    simulate: bool
    base_url: str
    api_key: str
    selection: Selection
    max_cost: Decimal | None
    options: RunOptions
    max_rate: float | None
    lockfile: Path | None = None  # --lockfile: another lockfile than the one beside the manifest
    rehash: bool = False  # --rehash: recorded images checked by their sha256, not only size
    # --ignore-balance: do not ask GET /v1/balance before submitting.
    ignore_balance: bool = False
    # --balance-unit: the account's balance unit (the API does not say); None: unknown.
    balance_unit: str | None = None
    # --output-dir: a folder or store URL instead of the manifest's output_dir:.
    output_dir: str | None = None


def select(prepared: Prepared, selection: Selection) -> Plan:
    """The plan narrowed to the selection; unknown jobs, axes and values are usage errors."""
    return narrow(prepared.plan, selection, jobs=prepared.manifest.jobs)


@contextlib.contextmanager
def run_session(settings: RunSettings) -> Iterator[tuple[Prepared, Plan, LockStore]]:
    """Hold the run guard and the lock store while a run is planned and executed.

    The journal of a crashed run is folded into the lockfile before planning, so
    its recorded tasks show up as ``resume`` and are polled, not resubmitted.
    """
    lock_path = settings.lockfile or lockfile_path(settings.manifest,
                                                   simulate=settings.simulate)
    with RunGuard(guard_path(lock_path), subject=settings.manifest.name), LockStore.open(
        lock_path, manifest=settings.manifest.name
    ) as store:
        # Planned against the state the store holds: the lockfile and its journal are
        # read once, and the run executes against exactly what its plan was made from.
        prepared = prepare(settings.manifest, simulate=settings.simulate,
                           max_cost=settings.max_cost, lockfile=lock_path, lock=store.lock,
                           rehash=settings.rehash, output_dir=settings.output_dir)
        plan = select(prepared, settings.selection)
        yield prepared, plan, store


def outcome_error(result: RunResult, *, budget: Decimal | None = None) -> ImgspecError | None:
    """The one place a run's end becomes an exception, and so an exit code (None: all done).

    Each way a run can stop maps to one exception; its message says what to do next.
    """
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


def balance_gate(settings: RunSettings, plan: Plan) -> str | None:
    """Before submitting: read the balance and :func:`check_balance` the plan.

    A refused key is an AuthError, and an API that cannot be connected to an
    ApiUnreachable (nothing can be submitted anyway: the run stops before anything is
    recorded); a balance that cannot be read otherwise (a proxy without the endpoint,
    a failure after connecting) only gives a note, since the 402 of a submission still
    stops a run the account cannot pay.
    """
    if settings.ignore_balance or plan.total <= 0:
        return None
    try:
        balance = run_loop(read_balance(base_url=settings.base_url,
                                        api_key=settings.api_key))
    except (AuthError, ApiUnreachable):
        raise
    except ApiError as exc:
        return f"the balance could not be read ({exc}); not checked"
    return check_balance(plan, balance, unit=settings.balance_unit)


async def execute_run(settings: RunSettings, prepared: Prepared, plan: Plan, store: LockStore,
                      *, on_event: Callable[[RunEvent], None] | None = None) -> RunResult:
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

    async with ApiClient(base_url=settings.base_url, api_key=settings.api_key,
                         max_rate=settings.max_rate, on_retry=on_retry) as client:
        executor = Executor(plan, client=client, store=store, outputs=outputs,
                            workspace=prepared.workspace, pricing=prepared.manifest.pricing,
                            options=settings.options, on_event=on_event,
                            inputs=prepared.manifest.inputs,
                            links=LinkTrust.for_base_url(settings.base_url,
                                                         simulator=settings.simulate),
                            paid_tasks=paid_tasks(store.path, store.lock,
                                                  manifest=settings.manifest))
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
