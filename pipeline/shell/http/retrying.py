"""Retrying a request: stamina's backoff, the server's Retry-After, and retry events.

What is worth retrying is a :class:`~pipeline.errors.TransientError` whose
``retryable`` is set (the manual's table in docs/running.md, decided in
:func:`pipeline.core.apimart.replies.error_for_status`); :func:`retrying` applies the policy
to one request's attempts. Backoff before retry k (1-based) is
``min(WAIT_MAX, WAIT_INITIAL * 2**(k-1)) + uniform(0, WAIT_JITTER)``, bounded by
attempts and time; a ``Retry-After`` replaces it, and one that would pass the
deadline ends the retries at once (the error carries ``retry_after`` so the
caller can pause).

stamina's instrumentation hooks are global; :func:`report_retries_as_events`
routes them to whoever is retrying, per asyncio task, as typed ``RetryEvent``s.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final, TypeVar

import stamina
from stamina.instrumentation import RetryDetails

from pipeline.errors import TransientError

__all__ = ["WAIT_INITIAL", "WAIT_JITTER", "WAIT_MAX", "RetryEvent",
           "report_retries_as_events", "retrying"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

WAIT_INITIAL: Final = 0.5
WAIT_MAX: Final = 30.0
WAIT_JITTER: Final = 1.0


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """Passed to ``on_retry`` before each backoff sleep.

    ``attempt`` is the number (1-based) of the attempt that just failed, ``wait``
    the seconds before the next one, ``error`` the failure's message (key masked).
    """

    operation: str  # "submit", "poll", "download", "balance" or "upload"
    attempt: int
    wait: float
    error: str


# The operation being retried and who wants to hear of it, per asyncio task: stamina's
# instrumentation hooks are global, so one hook reads who is listening from here.
_RETRY_LISTENER: ContextVar[tuple[str, Callable[[RetryEvent], None] | None]] = ContextVar(
    "imgspec_retry_listener", default=("", None))


def _report_retry(details: RetryDetails) -> None:
    """stamina's hook: each retry becomes a ``RetryEvent`` for the client that made it."""
    operation, listener = _RETRY_LISTENER.get()
    if listener is None:
        return
    error = details.caused_by
    _log.debug("%s attempt %d failed (%s); retrying in %.2f s", operation,
               details.retry_num, error, details.wait_for)
    listener(RetryEvent(operation, details.retry_num, details.wait_for, str(error)))


def report_retries_as_events() -> None:
    """Route stamina's retry hooks to the clients' ``on_retry`` (and nowhere else).

    stamina's default hooks log a warning per retry (``stamina.retry_scheduled``),
    which would print raw log lines on a user's terminal and over the progress
    display; imgspec reports retries as run events instead, or not at all. Every
    ``ApiClient`` calls this when it is made (setting the same hooks again changes
    nothing), so no command can retry with stamina's defaults in place.
    """
    stamina.instrumentation.set_on_retry_hooks([_report_retry])


async def retrying(operation: str, call: Callable[[], Awaitable[T]], *, attempts: int,
                   timeout: float, on_retry: Callable[[RetryEvent], None] | None) -> T:
    """``call()``, retried with stamina while it raises a TransientError worth retrying:
    at most ``attempts`` attempts within ``timeout`` seconds, each retry told to
    ``on_retry`` (a ``RetryEvent``) before its backoff.

    stamina computes the jittered exponential backoff from the wait settings and
    bounds it by attempts and time; the hook only decides what is retried, and
    overrides the wait when the server said how long (``Retry-After``). Each retry
    reaches ``on_retry`` through stamina's own instrumentation (``RetryDetails``).
    """
    started = time.monotonic()
    # The first attempt goes straight through: stamina's retry context costs more
    # than a request's own parsing, and almost every request succeeds at once. A
    # failure is replayed into stamina as its first attempt, so the attempts, the
    # backoff and the retry hooks are exactly stamina's.
    try:
        return await call()
    except TransientError as exc:
        first: TransientError | None = exc

    def backoff_hook(exc: BaseException) -> bool | float:
        # stamina asks this after each failure: False re-raises, True retries after
        # stamina's backoff, a float retries after that many seconds.
        if not isinstance(exc, TransientError) or not exc.retryable:
            # 500 and kin (the retry table in docs/running.md), and a local disk error, which
            # will not heal by retrying the download.
            return False
        if exc.retry_after is None:
            return True
        # A small spread keeps many tasks told "1 s" from returning in lockstep.
        wait = exc.retry_after + random.uniform(0, WAIT_JITTER / 4)
        if time.monotonic() - started + wait > timeout:
            return False  # the caller gets the error, which carries retry_after
        return wait

    token = _RETRY_LISTENER.set((operation, on_retry))
    try:
        async for attempt in stamina.retry_context(
            on=backoff_hook,
            attempts=attempts,
            timeout=timeout,
            wait_initial=WAIT_INITIAL,
            wait_max=WAIT_MAX,
            wait_jitter=WAIT_JITTER,
        ):
            with attempt:
                if first is not None:
                    failed, first = first, None
                    raise failed
                return await call()
    finally:
        _RETRY_LISTENER.reset(token)
    raise AssertionError("unreachable: stamina re-raises the last error")
