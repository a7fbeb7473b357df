"""How a run paces itself: its options, and how fast it sends (rate bounds). Pure.

When to poll a task is ``polling``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a run paces itself."""

    concurrency: int = 8
    task_timeout: float = 1800.0  # stop polling a task after this; the next run resumes it
    first_poll: float = 1.0  # before the first poll when no estimate is known yet
    max_poll_interval: float = 15.0
    url_margin: float = 600.0  # an upstream URL expiring sooner is replaced by the local file
    download_attempts: int = 3  # tries at a completed task's results, each with fresh URLs
    repoll_backoff: float = 1.0  # seconds before the first re-poll for fresh URLs; doubles
    download_give_way: float = 0.5  # longest a download waits for submissions to go first


# -- rate bounds ------------------------------------------------------------------------


class Bound(StrEnum):
    """What holds a run back, as a run event reports it (``RunEvent.limited_by``)."""

    MAX_RATE = "max-rate"  # the user's --max-rate, a hard cap on every request
    API_RATE = "api-rate-limit"  # the API answered 429: requests of that kind slowed down
    CONCURRENCY = "concurrency"  # every --concurrency slot holds a task; more are waiting


# An adaptive bound never goes below this (requests/s): a long Retry-After pauses instead.
MIN_ADAPTIVE_RATE = 0.2
BACKOFF_FACTOR = 0.5  # multiplicative decrease on a 429
RECOVERY_STEP = 0.02  # each success at a bounded rate raises it by 2 % (gradual recovery)
UNBOUND_AFTER = 60.0  # seconds without a 429, at twice the rate that met one: unbounded again


class AdaptiveRate:
    """A request rate bound that follows what the API says, not a guess. Pure: the
    caller passes the time (``time.monotonic()``).

    Unbounded until the API answers 429 (there is no evidence of a limit before).
    A 429 halves the rate (starting from the rate recently sent) and, with a
    ``Retry-After``, pauses every request of this kind until then. Each success
    raises the rate by 2 %; after ``UNBOUND_AFTER`` s without a 429 and at twice
    the rate that met the last one, the bound is lifted. ``cap`` (``--max-rate``)
    is a hard ceiling that holds whatever the API says.

    ``reserve`` books the next free slot, so concurrent callers are spaced (no lock
    needed on one event loop: nothing awaits between reading and booking).
    """

    __slots__ = (
        "_last_limit",
        "_limited_at",
        "_next",
        "_paused_until",
        "_recent_rate",
        "_window_count",
        "_window_start",
        "cap",
        "held_at",
        "held_by",
        "rate",
    )

    def __init__(self, *, cap: float | None = None) -> None:
        self.cap = cap
        self.rate: float | None = None  # the adaptive bound; None: no evidence of a limit
        self._next = 0.0
        self._paused_until = 0.0
        self._last_limit = 0.0  # the rate that met the last 429
        self._limited_at = -math.inf
        self._window_start = 0.0
        self._window_count = 0
        self._recent_rate = 0.0  # requests/s booked over the last whole second
        self.held_by: Bound | None = None  # the bound that last made a request wait
        self.held_at = -math.inf

    def effective(self) -> float | None:
        """The rate in force: the adaptive bound, under the hard cap; None: unbounded."""
        if self.rate is None:
            return self.cap
        return self.rate if self.cap is None else min(self.rate, self.cap)

    def reserve(self, now: float) -> float:
        """Book a request; seconds the caller must wait before sending it (0: at once)."""
        if now - self._window_start >= 1.0:
            elapsed = now - self._window_start
            self._recent_rate = self._window_count / elapsed if elapsed < 2.0 else 0.0
            self._window_start, self._window_count = now, 0
        self._window_count += 1
        rate = self.effective()
        slot = max(now, self._next, self._paused_until)
        self._next = slot + (1.0 / rate if rate is not None else 0.0)
        delay = slot - now
        if delay > 0:
            adaptive = (self._paused_until > now
                        or (self.rate is not None and (self.cap is None or self.rate < self.cap)))
            self.held_by = Bound.API_RATE if adaptive else Bound.MAX_RATE
            self.held_at = now
        return delay

    def limited(self, now: float, retry_after: float | None) -> None:
        """The API answered 429: slow down (and pause until ``retry_after`` s from now)."""
        current = self.rate
        if current is None:  # the first evidence: start from what was being sent
            current = max(self._recent_rate, self._window_count / max(now - self._window_start,
                                                                      1.0))
            if self.cap is not None:
                current = min(current, self.cap)
        # Several requests in flight meet the same limit: one decrease per 429 burst.
        if now - self._limited_at >= 1.0 / max(current, MIN_ADAPTIVE_RATE) or self.rate is None:
            self.rate = max(MIN_ADAPTIVE_RATE, current * BACKOFF_FACTOR)
            self._last_limit = current
        self._limited_at = now
        if retry_after is not None and retry_after > 0:
            self._paused_until = max(self._paused_until, now + retry_after)
        self.held_by, self.held_at = Bound.API_RATE, now

    def succeeded(self, now: float) -> None:
        """A request of this kind was answered without a 429: recover gradually."""
        if self.rate is None:
            return
        self.rate *= 1.0 + RECOVERY_STEP
        if (now - self._limited_at >= UNBOUND_AFTER and self.rate >= 2 * self._last_limit):
            self.rate = None
        elif self.cap is not None and self.rate > self.cap:
            self.rate = self.cap

    def holding(self, now: float, within: float = 1.0) -> Bound | None:
        """The bound that made a request wait in the last ``within`` seconds, if any."""
        return self.held_by if now - self.held_at <= within else None
