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
RECOVERY_STEP = 0.02  # each success at a bounded rate raises it by at least 2 %
# Recovery also follows a cubic of the time since the decrease (as TCP CUBIC and the
# AWS SDKs' adaptive retry mode): back at the rate that met the 429 after
# cbrt(rate x (1 - BACKOFF_FACTOR) / CUBIC_SCALE) s (1.4 s from 2/s, 3.6 s from 100/s),
# then faster and faster. Per success alone, a run that sends little would need
# minutes to come back from one 429.
CUBIC_SCALE = 0.4  # requests/s per s^3
UNBOUND_AFTER = 60.0  # seconds without a 429, at twice the rate that met one: unbounded again


class AdaptiveRate:
    """A request rate bound that follows what the API says, not a guess. Pure: the
    caller passes the time (``time.monotonic()``).

    Unbounded until the API answers 429 (there is no evidence of a limit before).
    A 429 halves the rate (starting from the rate recently sent) and, with a
    ``Retry-After``, pauses every request of this kind until then. Successes raise
    the rate again (see ``CUBIC_SCALE``); after ``UNBOUND_AFTER`` s without a 429 and
    at twice the rate that met the last one, the bound is lifted. ``cap``
    (``--max-rate``) is a hard ceiling that holds whatever the API says.

    Requests that cannot go at once queue, in order, and nothing is booked ahead:
    the first in the queue goes when the rate in force *then* gives it a slot
    (``due``, ``release``), so a recovery or a lifted bound speeds up the requests
    already waiting. The caller wakes them (``pipeline.shell.http.gates``); no lock is needed on
    one event loop, as nothing awaits between reading and changing the state.
    """

    __slots__ = (
        "_decreased_at",
        "_last_limit",
        "_last_sent",
        "_limited_at",
        "_paused_until",
        "_queued",
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
        self._last_sent = -math.inf  # when the last request was let go
        self._queued = 0  # requests waiting for a slot, first come first served
        self._paused_until = 0.0
        self._last_limit = 0.0  # the rate that met the last 429
        self._limited_at = -math.inf
        self._decreased_at = -math.inf
        self._window_start = 0.0
        self._window_count = 0
        self._recent_rate = 0.0  # requests/s sent over the last whole second
        self.held_by: Bound | None = None  # the bound that last made a request wait
        self.held_at = -math.inf

    def effective(self) -> float | None:
        """The rate in force: the adaptive bound, under the hard cap; None: unbounded."""
        if self.rate is None:
            return self.cap
        return self.rate if self.cap is None else min(self.rate, self.cap)

    def reserve(self, now: float) -> float:
        """Ask to send a request at ``now``. 0.0: it may go now, and has taken its slot.

        Otherwise it joins the queue and the value (> 0) is how long it would wait if
        the rate in force now held; it goes when ``release`` lets it.
        """
        rate = self.effective()
        head = self._next_free(rate)
        if head <= now and (self._queued == 0 or rate is None):
            self._send(now)
            return 0.0
        wait = max(head - now, 0.0) + (self._queued / rate if rate is not None else 0.0)
        self._queued += 1
        self._hold(now)
        return wait

    def due(self) -> float | None:
        """When the first queued request may go, at the rate in force; None: no queue."""
        return self._next_free(self.effective()) if self._queued else None

    def release(self, now: float) -> bool:
        """Let the first queued request go if its slot has come; whether one went."""
        if not self._queued or self._next_free(self.effective()) > now:
            return False
        self._queued -= 1
        self._send(now)
        self._hold(now)
        return True

    def withdraw(self) -> None:
        """A queued request gave up waiting (it was cancelled)."""
        self._queued = max(0, self._queued - 1)

    def _next_free(self, rate: float | None) -> float:
        # One interval after the last request sent, at the rate in force: not a slot
        # booked when the request arrived.
        if rate is None:
            return self._paused_until
        return max(self._paused_until, self._last_sent + 1.0 / rate)

    def _send(self, now: float) -> None:
        if now - self._window_start >= 1.0:
            elapsed = now - self._window_start
            self._recent_rate = self._window_count / elapsed if elapsed < 2.0 else 0.0
            self._window_start, self._window_count = now, 0
        self._window_count += 1
        self._last_sent = now

    def _hold(self, now: float) -> None:
        self.held_by, self.held_at = self._bound(now), now

    def _bound(self, now: float) -> Bound | None:
        """The bound a request waiting at ``now`` waits for: the API's (a pause, or an
        adaptive rate under the cap), else the cap; None if neither is in force."""
        if self._paused_until > now or (self.rate is not None
                                         and (self.cap is None or self.rate < self.cap)):
            return Bound.API_RATE
        return Bound.MAX_RATE if self.cap is not None else None

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
            self._decreased_at = now
        self._limited_at = now
        if retry_after is not None and retry_after > 0:
            self._paused_until = max(self._paused_until, now + retry_after)
        self.held_by, self.held_at = Bound.API_RATE, now

    def succeeded(self, now: float) -> None:
        """A request of this kind was answered without a 429: recover."""
        if self.rate is None:
            return
        self.rate = max(self.rate * (1.0 + RECOVERY_STEP), self._cubic(now))
        if (now - self._limited_at >= UNBOUND_AFTER and self.rate >= 2 * self._last_limit):
            self.rate = None
        elif self.cap is not None and self.rate > self.cap:
            self.rate = self.cap

    def _cubic(self, now: float) -> float:
        # W(t) = C (t - K)^3 + W_max, with W(0) = W_max x BACKOFF_FACTOR.
        peak = self._last_limit
        knee = math.cbrt(peak * (1.0 - BACKOFF_FACTOR) / CUBIC_SCALE)
        return CUBIC_SCALE * (now - self._decreased_at - knee) ** 3 + peak

    def holding(self, now: float, within: float = 1.0) -> Bound | None:
        """The bound holding requests back: the one they queue for now, else the one
        that made a request wait in the last ``within`` seconds, if any."""
        if self._queued:
            return self._bound(now)
        return self.held_by if now - self.held_at <= within else None
