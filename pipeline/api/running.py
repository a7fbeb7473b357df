"""``run`` and ``run_async``: carry out a manifest's plan against the API, and ``balance``.

A run plans under its run guard, refuses a plan over budget, applies ``moved:``,
checks the account's balance, asks ``confirm`` (if given) and then submits, polls
and downloads, recording every step in the lockfile. It never prompts and never
prints: the caller hears it through ``on_plan``, ``on_note`` and ``on_event``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from decimal import Decimal

from pipeline.api.source import (
    ManifestSource,
    amount,
    place_of,
    real_api,
    selection,
    simulated_api,
)
from pipeline.core.planning.pacing import RunOptions
from pipeline.core.planning.plan import Plan
from pipeline.errors import ImgspecError, UsageError
from pipeline.operations.context import Context
from pipeline.operations.run import run as running
from pipeline.operations.run.events import RunEvent, RunNote, RunResult
from pipeline.operations.run.run import RunHooks, RunRequest, outcome_error
from pipeline.shell.http.client import Balance

DEFAULT_CONCURRENCY = 8
DEFAULT_TASK_TIMEOUT = 1800.0  # seconds polling one task before leaving it to the next run


def run(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None,
        simulate: bool = False, base_url: str | None = None, api_key: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY, max_rate: float | None = None,
        task_timeout: float = DEFAULT_TASK_TIMEOUT,
        max_cost: Decimal | int | str | None = None,
        jobs: Iterable[str] = (), where: Iterable[str] = (), only_failed: bool = False,
        shard: str | None = None, lockfile: str | os.PathLike[str] | None = None,
        rehash: bool = False, ignore_balance: bool = False, balance_unit: str | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        confirm: Callable[[Plan], bool] | None = None,
        on_plan: Callable[[Plan], None] | None = None,
        on_note: Callable[[RunNote], None] | None = None,
        on_event: Callable[[RunEvent], None] | None = None,
        check: bool = False) -> RunResult:
    """Run ``manifest``: do what its plan says; run again to do only what is left.

    ``simulate``: against an in-process simulator started for the run (no key, no
    cost; its own lockfile and outputs). Otherwise ``base_url`` (default APIMart's)
    with ``api_key`` (default ``$APIMART_API_KEY``). ``concurrency``: tasks in flight
    at once (1..1000); ``max_rate``: a cap on requests per second; ``task_timeout``:
    seconds to poll one task. ``max_cost``, ``jobs``, ``where``, ``only_failed``,
    ``shard``, ``lockfile``, ``rehash``, ``output_dir`` as :func:`imgspec.plan`. ``ignore_balance``:
    skip ``GET /v1/balance``; ``balance_unit``: the balance's currency (the API does
    not say), so it can be compared with the plan.

    ``confirm(plan)`` is asked before anything is spent; False cancels
    (``UsageError``). Without it nothing is asked. ``on_plan(plan)`` hears the plan
    first, ``on_note(note)`` what is worth telling, ``on_event(event)`` progress (a
    reporter that is also a context manager is entered around the execution).

    Returns the ``RunResult`` (``complete``, ``done``, ``failed``, ``spent``, its
    ``plan``). A run that did not finish is an exception only with ``check=True``
    (``ItemsFailed``, ``BalanceExhausted``, ``Interrupted``, ``BudgetExceeded``,
    ``AuthError``...). Gates refused before spending always raise: ``BudgetExceeded``
    (over budget), ``BalanceTooLow``, ``RunGuardHeld`` (another run holds the
    manifest), ``ManifestError``, ``LockfileError``, ``UsageError``.
    """
    place, request = _inputs(manifest, root=root, simulate=simulate, base_url=base_url,
                             api_key=api_key, concurrency=concurrency, max_rate=max_rate,
                             task_timeout=task_timeout, max_cost=max_cost, jobs=jobs,
                             where=where, only_failed=only_failed, shard=shard,
                             lockfile=lockfile, rehash=rehash, ignore_balance=ignore_balance,
                             balance_unit=balance_unit, output_dir=output_dir)
    hooks = RunHooks(on_plan=on_plan, on_note=on_note, confirm=confirm, on_event=on_event)
    return _checked(running.run(place, request, hooks), check=check)


async def run_async(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None,
                    simulate: bool = False, base_url: str | None = None,
                    api_key: str | None = None, concurrency: int = DEFAULT_CONCURRENCY,
                    max_rate: float | None = None,
                    task_timeout: float = DEFAULT_TASK_TIMEOUT,
                    max_cost: Decimal | int | str | None = None,
                    jobs: Iterable[str] = (), where: Iterable[str] = (),
                    only_failed: bool = False, shard: str | None = None,
                    lockfile: str | os.PathLike[str] | None = None, rehash: bool = False,
                    ignore_balance: bool = False, balance_unit: str | None = None,
                    output_dir: str | os.PathLike[str] | None = None,
                    confirm: Callable[[Plan], bool] | None = None,
                    on_plan: Callable[[Plan], None] | None = None,
                    on_note: Callable[[RunNote], None] | None = None,
                    on_event: Callable[[RunEvent], None] | None = None,
                    check: bool = False) -> RunResult:
    """:func:`run` on the caller's running event loop; the same options and outcomes.

    Planning reads files and blocks the loop while it does; ``confirm`` is called on
    the loop too. Ctrl-C and SIGTERM stop the run cleanly when the loop runs in the
    main thread.
    """
    place, request = _inputs(manifest, root=root, simulate=simulate, base_url=base_url,
                             api_key=api_key, concurrency=concurrency, max_rate=max_rate,
                             task_timeout=task_timeout, max_cost=max_cost, jobs=jobs,
                             where=where, only_failed=only_failed, shard=shard,
                             lockfile=lockfile, rehash=rehash, ignore_balance=ignore_balance,
                             balance_unit=balance_unit, output_dir=output_dir)
    hooks = RunHooks(on_plan=on_plan, on_note=on_note, confirm=confirm, on_event=on_event)
    return _checked(await running.run_async(place, request, hooks), check=check)


def _inputs(manifest: ManifestSource, *, root: str | os.PathLike[str] | None, simulate: bool,
            base_url: str | None, api_key: str | None, concurrency: int,
            max_rate: float | None, task_timeout: float,
            max_cost: Decimal | int | str | None, jobs: Iterable[str], where: Iterable[str],
            only_failed: bool, shard: str | None, lockfile: str | os.PathLike[str] | None,
            rehash: bool, ignore_balance: bool, balance_unit: str | None,
            output_dir: str | os.PathLike[str] | None) -> tuple[Context, RunRequest]:
    """The run's place and request, every value checked before anything is read."""
    chosen = selection(jobs=jobs, where=where, only_failed=only_failed, shard=shard)
    if not 1 <= concurrency <= 1000:
        raise UsageError(f"concurrency is {concurrency}; give 1 to 1000")
    if max_rate is not None and not max_rate >= 0.1:
        raise UsageError(f"max_rate is {max_rate}; give at least 0.1 requests per second")
    if not task_timeout >= 1:
        raise UsageError(f"task_timeout is {task_timeout}; give at least 1 second")
    # The simulator is the API of a simulated run, whatever base_url says.
    api = simulated_api() if simulate else real_api(base_url=base_url, api_key=api_key,
                                                    balance_unit=balance_unit)
    request = RunRequest(selection=chosen, max_cost=amount(max_cost, name="max_cost"),
                         options=RunOptions(concurrency=concurrency, task_timeout=task_timeout),
                         max_rate=max_rate, rehash=rehash, ignore_balance=ignore_balance)
    place = place_of(manifest, root=root, simulate=simulate, lockfile=lockfile, api=api,
                     output_dir=output_dir)
    return place, request


def _checked(result: RunResult, *, check: bool) -> RunResult:
    error = outcome_error(result) if check else None
    if error is not None:
        raise error
    return result


def run_error(result: RunResult) -> ImgspecError | None:
    """The exception a run's end stands for (None: every instance is done): what
    ``check=True`` raises, and what sets the command line's exit status."""
    return outcome_error(result)


def balance(*, base_url: str | None = None, api_key: str | None = None) -> Balance:
    """The API key's balance (``GET /v1/balance``), as the API gives it.

    ``AuthError`` if the API refuses the key, ``ApiUnreachable`` if it cannot be
    reached, ``UsageError`` for a wrong base URL or no key.
    """
    from pipeline.operations.run.run import read_balance
    from pipeline.shell.eventloop import run_loop

    api = real_api(base_url=base_url, api_key=api_key, advice="")
    return run_loop(read_balance(base_url=api.base_url, api_key=api.api_key))
