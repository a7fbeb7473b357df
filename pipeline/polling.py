"""When to poll a task: its own estimate, corrected by what completed tasks showed. Pure.

The API gives each task an ``estimated_time``; real APIs over- or under-estimate
(APIMart's own example: estimate 60 s, actual 19 s) and real durations spread.
``PollModel`` plans a task's polls at a ladder of multiples of its own
estimate, ``factors[k]``, each tracking a quantile of actual/estimate (70 %,
90 %, 97 %): the first poll finds about 70 % of tasks done, the second 90 %,
and so on. Each rung is learned from the only thing polling observes, whether
a task was done when polled at that rung: a hit lowers the factor a little, a
miss raises it more, so that at equilibrium the rung's share of the tasks that
reach it are found done (a stochastic quantile tracker; it needs no exact
completion times). Past the ladder, a task is polled at gaps growing by 60 %.

Expected polls per task: 1 + 0.3 + 0.1 + 0.03 + a little ~ 1.45 at most; a
narrow distribution costs fewer (the upper rungs sit just above the first).

Before anything is learned (``cold``), a few *scout* tasks poll early, at
fractions of their estimate; when enough first polls (or scouts) have finished,
the model is warm and the other tasks, still waiting for their whole estimate,
are re-planned (the executor wakes them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LEVELS = (0.7, 0.9, 0.97)  # the quantiles of actual/estimate the rungs track
HIT_TARGET = LEVELS[0]  # the share of first polls that should find the task done
STEP = 0.1  # how fast ``factor`` moves, on a log scale
SCOUTS = 5  # tasks that poll early while nothing is known
WARM_AFTER = 3  # finished observations before the learned factor is trusted
SCOUT_FRACTIONS = (0.1, 0.2, 0.35, 0.5, 0.7, 1.0)  # of the estimate, a scout's polls
FOLLOW_UP = 0.05  # the first gap past the ladder, as a share of the top rung's time
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
    """Plans each task's polls from its own estimate and the learned ladder ``factors``."""

    def __init__(self, *, default_estimate: float = 1.0, max_interval: float = 15.0) -> None:
        self.default_estimate = default_estimate
        self.max_interval = max_interval
        # Until learned: the estimate itself, then a little later, then later still.
        self.factors = [1.0, 1.03, 1.08]
        self.observed = 0  # first-poll outcomes and finished scouts learned from
        self.scouts_sent = 0
        self._scout_ratios: list[float] = []

    @property
    def factor(self) -> float:
        """The first rung: a task's first poll comes at this multiple of its estimate."""
        return self.factors[0]

    @property
    def cold(self) -> bool:
        """Too little is known yet to trust ``factors``."""
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
        return task.estimate * self.factors[0]

    def delay(self, task: TaskPolls, elapsed: float) -> float:
        """Seconds from now (``elapsed`` s after the task started) until its next poll."""
        if task.resumed and task.polls == 0:
            return 0.0
        if task.scout and task.polls < len(SCOUT_FRACTIONS):
            at = task.estimate * SCOUT_FRACTIONS[task.polls]
            return max(at - elapsed, MIN_GAP if task.polls else 0.0)
        rung = task.polls - (len(SCOUT_FRACTIONS) if task.scout else 0)
        if 0 <= rung < len(self.factors) and not task.resumed:
            # 5 ms past the rung: an exact estimate on a coarse clock is met, not missed.
            at = task.estimate * self.factors[rung] + 0.005
            return max(at - elapsed, MIN_GAP if task.polls else 0.0)
        # Past the ladder: again soon, then at gaps growing by 60 %, up to the longest.
        past = max(rung - len(self.factors), 0)
        scale = task.estimate * self.factors[-1]
        gap = max(MIN_GAP, FOLLOW_UP * scale * FOLLOW_UP_GROWTH ** past)
        at = task.last_at + min(gap, self.max_interval)
        return max(at - elapsed, MIN_GAP)

    def observe(self, task: TaskPolls, elapsed: float, *, finished: bool) -> bool:
        """Learn from a poll made ``elapsed`` s after the task started; True if it made
        the model warm (the caller re-plans the tasks waiting meanwhile)."""
        was_cold = self.cold
        rung = task.polls
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
                    top = _clamp(max(self._scout_ratios))
                    self.factors = [top, top * 1.03, top * 1.08]
        elif rung < len(self.factors) and self._learn(rung, ratio, finished=finished):
            self.observed += rung == 0
        return was_cold and not self.cold

    def _learn(self, rung: int, ratio: float, *, finished: bool) -> bool:
        """Move rung ``rung`` towards its quantile; False if the poll says nothing of it.

        A poll delayed past its rung (a wake-up, a busy loop) that finds the task done
        says nothing of whether the rung would have; a late miss says it would have
        missed too, and vice versa for an early poll.
        """
        planned = self.factors[rung]
        below = LEVELS[rung - 1] if rung else 0.0
        target = (LEVELS[rung] - below) / (1.0 - below)  # P(done here | not done before)
        if finished and ratio <= planned * 1.1:
            self.factors[rung] = _clamp(planned * math.exp(-STEP * (1 - target)))
        elif not finished and ratio >= planned * 0.9:
            self.factors[rung] = _clamp(planned * math.exp(STEP * target))
        else:
            return False
        # The rungs stay in order, each at least 1 % above the one below.
        for k in range(1, len(self.factors)):
            self.factors[k] = max(self.factors[k], self.factors[k - 1] * 1.01)
        for k in range(len(self.factors) - 2, -1, -1):
            self.factors[k] = min(self.factors[k], self.factors[k + 1] / 1.01)
        return True


def _clamp(factor: float) -> float:
    return min(MAX_FACTOR, max(MIN_FACTOR, factor))
