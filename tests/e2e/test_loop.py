"""The event loop a run is driven by: uvloop's where it is installed."""

from __future__ import annotations

import asyncio
import signal

import pytest

from pipeline.shell.eventloop import run_loop


def test_runs_use_uvloop_where_it_is_installed() -> None:
    """run_loop drives a command's coroutine on uvloop (a dependency off Windows)."""
    pytest.importorskip("uvloop")

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run_loop(which()).startswith("uvloop")


def test_the_loop_takes_signal_handlers_and_worker_threads() -> None:
    """What a run needs of its loop (Ctrl-C handlers, to_thread, timeouts) works on it."""

    async def needs() -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: None)
        loop.remove_signal_handler(signal.SIGTERM)
        async with asyncio.timeout(5):
            return await asyncio.to_thread(lambda: 42)

    assert run_loop(needs()) == 42


def test_the_cycle_collector_is_quiet_during_a_run_and_restored_after() -> None:
    """While a run's loop runs, what existed before is frozen and collections are rare;
    afterwards the collector is as it was (a longer-lived caller keeps its settings)."""
    import gc

    from pipeline.shell.eventloop import GC_THRESHOLDS

    before = gc.get_threshold()

    async def inside() -> tuple[tuple[int, int, int], int]:
        return gc.get_threshold(), gc.get_freeze_count()

    thresholds, frozen = run_loop(inside())
    assert thresholds == GC_THRESHOLDS
    assert frozen > 0  # the objects alive before the loop (modules, at least)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
