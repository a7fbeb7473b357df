"""Poll pacing: when the executor asks the API about a task again."""

from __future__ import annotations

import pytest

from pipeline.pacing import RunOptions, next_poll_delay

OPTIONS = RunOptions(max_poll_interval=15.0)


def delay(elapsed: float, estimate: float, polls: int) -> float:
    """next_poll_delay with the default options."""
    return next_poll_delay(elapsed=elapsed, estimate=estimate, polls=polls, options=OPTIONS)


def test_first_poll_waits_for_the_estimate_plus_one_percent() -> None:
    """Before the estimate, the poll is due at the estimate plus a 1 % margin."""
    assert delay(0.0, 30.0, 0) == pytest.approx(30.3)
    assert delay(10.0, 30.0, 0) == pytest.approx(20.3)


def test_margin_is_at_least_five_milliseconds() -> None:
    """A short estimate still gets 5 ms of margin for coarse clocks."""
    assert delay(0.0, 0.2, 0) == pytest.approx(0.205)


def test_an_overdue_task_is_polled_again_soon_then_less_often() -> None:
    """After the estimate: a fiftieth of it, growing by half each time."""
    assert [round(delay(31.0, 30.0, polls), 3) for polls in (1, 2, 3)] == [0.6, 0.9, 1.35]


def test_overdue_polls_are_at_least_twenty_milliseconds_apart() -> None:
    """A tiny estimate does not turn into a tight polling loop."""
    assert delay(1.0, 0.1, 1) == pytest.approx(0.02)


def test_overdue_polls_are_capped_by_max_poll_interval() -> None:
    """However long a task is stuck, polls stay max_poll_interval apart at most."""
    assert delay(5000.0, 600.0, 40) == 15.0
