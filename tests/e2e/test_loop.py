"""The event loop a run is driven by: uvloop's where it is installed."""

from __future__ import annotations

import asyncio
import signal

import pytest

from pipeline.run import run_loop


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
