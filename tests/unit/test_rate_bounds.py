"""Rate bounds: unbounded until the API limits, then adaptive; --max-rate a hard cap."""

from __future__ import annotations

import pytest

from pipeline.pacing import (
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
    waits = send(gate, 10, start=12.0, spacing=0.0)
    assert waits[-1] == pytest.approx(9 / rate, rel=0.01)
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
    """Each success raises the rate by RECOVERY_STEP; much later, it is unbounded again."""
    gate = AdaptiveRate()
    send(gate, 21, start=0.0, spacing=0.05)  # 20/s
    gate.limited(1.0, retry_after=None)
    assert gate.rate is not None
    before = gate.rate
    gate.succeeded(1.1)
    assert gate.rate == pytest.approx(before * (1 + RECOVERY_STEP))
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
    assert gate.holding(5.0) is None  # the last wait is a second old
