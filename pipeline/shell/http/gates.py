"""Waiting for a rate bound's slot: the hard cap of ``--max-rate`` (``RateLimiter``) and
the asyncio side of ``pacing.AdaptiveRate`` (``RateGate``, one per kind of request).

Requests that cannot go at once wait in order, each on a future; one timer per
gate wakes the first when the rate in force gives it a slot. A 429 slows the
queue down, a recovery speeds it up and a lifted bound lets everyone go at once,
because nothing is booked ahead. A request costs one future and no timer of its
own, so thousands may wait on one gate.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Mapping

from pipeline.core.apimart.replies import parse_retry_after
from pipeline.core.planning.pacing import AdaptiveRate, Bound


class RateLimiter:
    """Spaces requests at least ``1 / rate`` seconds apart, across all callers: the
    hard cap of ``--max-rate``.

    Each caller reserves the next free slot before sleeping. No lock is needed:
    nothing awaits between reading and writing ``_next``, and asyncio switches
    tasks only at an await.
    """

    __slots__ = ("_interval", "_next", "held_at")

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0
        self.held_at = -math.inf  # when a request last had to wait for its slot

    async def wait(self) -> None:
        """Wait for this request's slot."""
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            self.held_at = now
            await asyncio.sleep(slot - now)


def learn(gate: RateGate, status: int, headers: Mapping[str, str]) -> None:
    """Tell ``gate`` how the API answered: a 429 slows it down, anything else lets it recover."""
    now = time.monotonic()
    if status == 429:
        gate.limited(now, parse_retry_after(headers.get("Retry-After"), now=time.time()))
    else:
        gate.succeeded(now)


class RateGate:
    """One kind of request's rate bound (``adaptive``) and the requests waiting for it.

    Use from one event loop; ``through`` before a request is sent, then ``limited``
    or ``succeeded`` with how the API answered.
    """

    __slots__ = ("_timer", "_timer_at", "_waiters", "adaptive")

    def __init__(self, adaptive: AdaptiveRate | None = None) -> None:
        self.adaptive = adaptive if adaptive is not None else AdaptiveRate()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    async def through(self) -> None:
        """Wait until this request may be sent (at once while nothing bounds the rate)."""
        if self.adaptive.reserve(time.monotonic()) == 0.0:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._arm()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                self._forget(waiter)
            raise

    def limited(self, now: float, retry_after: float | None) -> None:
        """The API answered 429 (see ``AdaptiveRate.limited``)."""
        self.adaptive.limited(now, retry_after)
        self._arm()

    def succeeded(self, now: float) -> None:
        """The API answered without a 429: the waiting requests may go sooner."""
        self.adaptive.succeeded(now)
        if self._waiters:
            self._arm()

    def holding(self, now: float, within: float = 1.0) -> Bound | None:
        """The bound holding requests of this kind back (see ``AdaptiveRate.holding``)."""
        return self.adaptive.holding(now, within)

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        # Cancelled while queued: out of the queue, unless the timer already took it out.
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return
        self.adaptive.withdraw()
        self._arm()

    def _arm(self) -> None:
        """Wake the queue when its first request is due; earlier if the rate went up."""
        due = self.adaptive.due()
        if due is None or not self._waiters:
            return
        if self._timer is not None:
            if self._timer_at <= due:
                return  # wakes in time, and re-arms for the rest
            self._timer.cancel()
        self._timer_at = due
        self._timer = asyncio.get_running_loop().call_later(
            max(0.0, due - time.monotonic()), self._release)

    def _release(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = time.monotonic()
        while self._waiters:
            first = self._waiters[0]
            if first.cancelled():
                self._waiters.popleft()
                self.adaptive.withdraw()
                continue
            if not self.adaptive.release(now):
                break
            self._waiters.popleft()
            first.set_result(None)
        self._arm()
