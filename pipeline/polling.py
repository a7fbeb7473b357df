"""When to poll a task: its own estimate, corrected by what completed tasks showed. Pure.

The API gives each task an ``estimated_time``; real APIs over- or under-estimate
(APIMart's own example: estimate 60 s, actual 19 s). ``PollModel`` learns one
number, ``factor``: the first poll of a task comes at ``factor`` times its own
estimate, and ``factor`` tracks the ``HIT_TARGET`` quantile of actual/estimate.
It is learned from the only thing polling observes, whether a task was done at
its first poll: a hit lowers the factor a little, a miss raises it more, so that
at equilibrium ``HIT_TARGET`` of first polls find the task done (a stochastic
quantile tracker; it needs no exact completion times). A task missed at its
first poll is polled again soon, at gaps growing by 60 %.

Before anything is learned (``cold``), a few *scout* tasks poll early, at
fractions of their estimate; when enough first polls (or scouts) have finished,
the model is warm and the other tasks, still waiting for their whole estimate,
are re-planned (the executor wakes them).

Expected polls per task: 1 + (1 - HIT_TARGET) x (a few follow-ups) ~ 1.25.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HIT_TARGET = 0.8  # the share of first polls that should find the task done
STEP = 0.1  # how fast ``factor`` moves, on a log scale
SCOUTS = 5  # tasks that poll early while nothing is known
WARM_AFTER = 3  # finished observations before the learned factor is trusted
SCOUT_FRACTIONS = (0.1, 0.2, 0.35, 0.5, 0.7, 1.0)  # of the estimate, a scout's polls
FOLLOW_UP = 0.05  # the first gap after a miss, as a share of the predicted duration
FOLLOW_UP_GROWTH = 1.6
MIN_GAP = 0.02  # seconds: never a tight loop
MIN_FACTOR, MAX_FACTOR = 0.02, 50.0


@dataclass(slots=True)
class TaskPolls:
    """One task's polling state: its own estimate (seconds) and what its polls saw."""

    estimate: float
    scout: bool = False
    resumed: bool = False  # recorded by an earlier run: its clock is unknown, not learned from
    polls: int = 0
    misses: int = 0  # polls that found it still running
    last_at: float = 0.0  # elapsed seconds at the last poll


class PollModel:
    """Plans each task's polls from its own estimate and the learned ``factor``."""

    def __init__(self, *, default_estimate: float = 1.0, max_interval: float = 15.0) -> None:
        self.default_estimate = default_estimate
        self.max_interval = max_interval
        self.factor = 1.0
        self.observed = 0  # first-poll outcomes and finished scouts learned from
        self.scouts_sent = 0
        self._scout_ratios: list[float] = []

    @property
    def cold(self) -> bool:
        """Too little is known yet to trust ``factor``."""
        return self.observed < WARM_AFTER

    def start(self, estimate: float | None, *, resumed: bool = False) -> TaskPolls:
        """A task's polling state, from the estimate its submission reply gave (if any)."""
        own = estimate if estimate is not None and estimate > 0 else self.default_estimate
        scout = self.cold and not resumed and self.scouts_sent < SCOUTS
        if scout:
            self.scouts_sent += 1
        return TaskPolls(own, scout=scout, resumed=resumed)

    def predicted(self, task: TaskPolls) -> float:
        """Seconds after its start at which ``task`` is most likely seen done."""
        return task.estimate * self.factor

    def delay(self, task: TaskPolls, elapsed: float) -> float:
        """Seconds from now (``elapsed`` s after the task started) until its next poll."""
        if task.resumed and task.polls == 0:
            return 0.0
        if task.scout and task.polls < len(SCOUT_FRACTIONS):
            at = task.estimate * SCOUT_FRACTIONS[task.polls]
            return max(at - elapsed, MIN_GAP if task.polls else 0.0)
        if task.misses == 0 and task.polls == 0:
            # 1 % (at least 5 ms) past the prediction: an exact estimate is met, not missed.
            at = self.predicted(task) * 1.01 + 0.005
            return max(at - elapsed, 0.0)
        # Missed: again soon, then at gaps growing by 60 %, up to the longest interval.
        misses = max(task.misses - (len(SCOUT_FRACTIONS) - 1 if task.scout else 0), 1)
        gap = max(MIN_GAP, FOLLOW_UP * self.predicted(task) * FOLLOW_UP_GROWTH ** (misses - 1))
        at = task.last_at + min(gap, self.max_interval)
        return max(at - elapsed, MIN_GAP)

    def observe(self, task: TaskPolls, elapsed: float, *, finished: bool) -> bool:
        """Learn from a poll made ``elapsed`` s after the task started; True if it made
        the model warm (the caller re-plans the tasks waiting meanwhile)."""
        was_cold = self.cold
        first = task.polls == 0
        task.polls += 1
        task.last_at = elapsed
        if not finished:
            task.misses += 1
        if task.resumed:
            return False
        ratio = elapsed / task.estimate
        if task.scout:
            if finished:
                self._scout_ratios.append(ratio)
                self.observed += 1
                if was_cold and not self.cold:
                    # The largest of a few upper bounds: a high quantile, on the safe side.
                    self.factor = _clamp(max(self._scout_ratios))
        elif first:
            # A poll delayed past the plan (a wake-up, a busy loop) says nothing about
            # whether the plan would have been met when it found the task done; a late
            # miss says the plan would have missed too, and vice versa.
            planned = self.factor
            if finished and ratio <= planned * 1.1:
                self.factor = _clamp(self.factor * math.exp(-STEP * (1 - HIT_TARGET)))
                self.observed += 1
            elif not finished and ratio >= planned * 0.9:
                self.factor = _clamp(self.factor * math.exp(STEP * HIT_TARGET))
                self.observed += 1
        return was_cold and not self.cold


def _clamp(factor: float) -> float:
    return min(MAX_FACTOR, max(MIN_FACTOR, factor))
