"""A download's worker-thread call is awaited to its end, however often the run is cancelled."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pipeline.shell.http.image_fetch import uncancelled as _uncancelled


def test_a_second_cancel_still_waits_for_the_worker_thread() -> None:
    """Ctrl-C then the loop's shutdown: the file is closed only once the thread is done."""
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def work() -> None:
        started.set()
        release.wait(30)  # bounded: only guards against a hang
        finished.set()

    async def download() -> None:
        try:
            await _uncancelled(asyncio.to_thread(work))
        finally:
            seen.append(finished.is_set())  # where the client closes the descriptor

    async def scenario() -> None:
        task = asyncio.create_task(download())
        await asyncio.to_thread(started.wait, 30)
        for _ in range(2):  # the run's cancellation, then the shutdown's
            task.cancel()
            for _ in range(5):
                await asyncio.sleep(0)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert seen == [True]
