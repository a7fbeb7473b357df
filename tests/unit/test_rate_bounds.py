"""Rate bounds: unbounded until the API limits, then adaptive; --max-rate a hard cap."""

from __future__ import annotations

import pytest

from pipeline.core.planning.pacing import (
    BACKOFF_FACTOR,
    MIN_ADAPTIVE_RATE,
    RECOVERY_STEP,
    UNBOUND_AFTER,
    AdaptiveRate,
    Bound,
)


def send(gate: AdaptiveRate, count: int, *, start: float, spacing: float) -> list[float]:
    """Book ``count`` requests ``spacing`` s apart from ``start``; the waits they were given."""
    return [gate.reserve(start + i * spacing) for i in range(count)]


def release_all(gate: AdaptiveRate) -> list[float]:
    """Let every queued request go as soon as its slot comes; when each went."""
    went = []
    while (due := gate.due()) is not None:
        assert gate.release(due)
        went.append(due)
    return went


def test_without_evidence_nothing_waits() -> None:
    """By default a gate never delays a request: no hidden cap on polls or downloads."""
    gate = AdaptiveRate()
    assert send(gate, 5000, start=100.0, spacing=0.0) == [0.0] * 5000
    assert gate.rate is None
    assert gate.holding(100.0) is None


def test_a_429_lowers_the_rate_to_half_of_what_was_sent() -> None:
    """A 429 after ~50 requests/s bounds the gate at about half of that."""
    gate = AdaptiveRate()
    send(gate, 101, start=10.0, spacing=0.02)  # 50/s over two seconds
    gate.limited(12.0, retry_after=None)
    assert gate.rate == pytest.approx(50 * BACKOFF_FACTOR, rel=0.1)
    rate = gate.rate
    assert rate is not None
    waits = send(gate, 10, start=12.0, spacing=0.0)  # one interval after the last sent
    assert waits[-1] == pytest.approx(10 / rate, rel=0.01)
    assert gate.holding(12.0) == Bound.API_RATE


def test_each_further_429_burst_lowers_it_again_but_not_below_the_floor() -> None:
    """Multiplicative decrease, one step per burst, bounded below."""
    gate = AdaptiveRate()
    gate.reserve(0.0)
    now = 0.0
    rates = []
    for _ in range(30):
        now += 10.0
        gate.limited(now, retry_after=None)
        assert gate.rate is not None
        rates.append(gate.rate)
    assert rates == sorted(rates, reverse=True)
    assert rates[-1] == MIN_ADAPTIVE_RATE


def test_retry_after_pauses_every_request_of_that_kind() -> None:
    """A Retry-After of 3 s holds the next request for 3 s, whoever sends it."""
    gate = AdaptiveRate()
    gate.reserve(50.0)
    gate.limited(50.0, retry_after=3.0)
    assert gate.reserve(50.5) == pytest.approx(2.5)


def test_recovery_is_gradual_then_the_bound_is_lifted() -> None:
    """Each success raises the rate by RECOVERY_STEP at least; much later, it is unbounded
    again."""
    gate = AdaptiveRate()
    send(gate, 21, start=0.0, spacing=0.05)  # 20/s
    gate.limited(1.0, retry_after=None)
    assert gate.rate is not None
    before = gate.rate
    gate.succeeded(1.0)
    assert gate.rate == pytest.approx(before * (1 + RECOVERY_STEP))
    assert gate.rate < 20
    now = 1.1
    while gate.rate is not None and now < 10_000:
        now += 0.5
        gate.succeeded(now)
    assert gate.rate is None
    assert now >= 1.0 + UNBOUND_AFTER


def test_the_hard_cap_holds_and_is_named() -> None:
    """``--max-rate`` 10 spaces requests 0.1 s apart and is reported as the bound."""
    gate = AdaptiveRate(cap=10.0)
    waits = send(gate, 4, start=0.0, spacing=0.0)
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert gate.holding(0.0) == Bound.MAX_RATE
    assert release_all(gate) == pytest.approx([0.1, 0.2, 0.3])
    assert gate.holding(5.0) is None  # the last wait is seconds old


def test_waiting_requests_follow_recovery_not_the_rate_they_arrived_at() -> None:
    """After one 429, 98 queued requests and 98 successes, the next request waits
    seconds at the recovered rate, not the ~98 s its place had at the rate of the 429."""
    gate = AdaptiveRate()
    assert send(gate, 2, start=0.0, spacing=0.0) == [0.0, 0.0]
    gate.limited(0.05, retry_after=1.0)
    assert gate.rate == pytest.approx(1.0)
    waits = send(gate, 98, start=0.06, spacing=0.0)
    assert waits[-1] == pytest.approx(98 - 0.01, abs=0.05)  # at 1/s, after the pause
    for _ in range(98):
        gate.succeeded(0.06)
    assert gate.rate == pytest.approx(6.96, abs=0.05)
    assert gate.reserve(0.06) < 20  # the 99 queued ahead go at ~7/s: ~15 s, not 99 s
    went = []
    while (due := gate.due()) is not None:  # each goes when due, and succeeds
        assert gate.release(due)
        gate.succeeded(due)
        went.append(due)
    assert len(went) == 99
    assert went[-1] < 20
    assert 0 < gate.reserve(went[-1]) < 1  # back at several requests a second


def test_a_lifted_bound_lets_every_queued_request_go_at_once() -> None:
    """Once the bound is lifted, nothing queued waits for slots booked at the old rate."""
    gate = AdaptiveRate()
    gate.reserve(0.0)
    gate.limited(0.0, retry_after=None)  # 1 request in the first second: 0.5/s
    send(gate, 50, start=0.0, spacing=0.0)
    now = 0.0
    while gate.rate is not None:
        now += 1.0
        gate.succeeded(now)
    assert now <= UNBOUND_AFTER + 1
    assert gate.release(now)
    assert sum(gate.release(now) for _ in range(60)) == 49


def test_a_wait_without_max_rate_is_never_named_max_rate() -> None:
    """With no cap, a request held back is named the API's rate limit, and once the
    bound is lifted nothing is held back (no wait is blamed on a --max-rate not given)."""
    gate = AdaptiveRate()
    gate.reserve(0.0)
    now = 0.0
    while gate.rate != MIN_ADAPTIVE_RATE:  # a long 429 burst: down to the floor
        now += 10.0
        gate.limited(now, retry_after=None)
    send(gate, 100, start=now, spacing=0.0)  # 500 s of slots at the floor rate
    assert gate.holding(now) == Bound.API_RATE
    while gate.rate is not None:  # answers without 429 until the bound is lifted
        now += 1.0
        gate.succeeded(now)
    assert gate.reserve(now) == 0.0
    assert gate.holding(now) is None
    assert gate.held_by != Bound.MAX_RATE
