"""The event loop a command runs on, and how the cycle collector behaves under it.

Every asyncio entry point (``run``, ``balance``, the simulator's ``serve``) goes
through :func:`run_loop`, so all of them get the same two things:

- **uvloop** (libuv under asyncio's API) where it is installed, which is
  everywhere but Windows. At a thousand tasks in flight the loop is what limits
  a run, and uvloop takes about a quarter less CPU per task than asyncio's own
  (``bench/run_throughput.py``).
- **A quiet cycle collector.** A loop serving many requests allocates many
  short-lived objects per request, over a large heap that lives as long as the
  loop does: a run's plan and lock store, the simulator's tasks. With CPython's
  default thresholds (a young collection every 700 net allocations, full ones
  as the heap grows) collections walk that heap over and over, a large share of
  a large run's CPU (``bench/run_throughput.py``; figures in ``bench/RESULTS.md``).
  What exists when the loop starts is frozen, so no collection walks it at all.

Both are undone when the loop ends: a caller in a longer-lived process (the
tests) gets its collector back as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

# The young generation is collected every 50,000 net allocations instead of 700, and
# the older ones seldom: what lives long was frozen when the loop started.
GC_THRESHOLDS = (50_000, 20, 1000)


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on a fresh event loop (uvloop's where it is installed),
    with the cycle collector kept off the heap that was there before it."""
    with quiet_collector():
        try:
            import uvloop
        except ImportError:
            return asyncio.run(main)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)


@contextlib.contextmanager
def quiet_collector() -> Iterator[None]:
    """Freeze what is alive now and collect cycles seldom, until the block ends."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
