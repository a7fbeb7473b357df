"""When to poll a task: its own estimate, corrected by what completed tasks showed. Pure.

The API gives each task an ``estimated_time``; real APIs over- or under-estimate
(APIMart's own example: estimate 60 s, actual 19 s) and real durations spread.
``PollModel`` plans a task's polls at a ladder of multiples of its own
estimate, ``factors[k]``, each tracking a quantile of actual/estimate (80 %,
95 %, 99 %): the first poll finds about 80 % of tasks done, the second 95 %,
and so on. Each rung is learned from the only thing polling observes, whether
a task was done when polled at that rung: a hit lowers the factor a little, a
miss raises it more, so that at equilibrium the rung's share of the tasks that
reach it are found done (a stochastic quantile tracker; it needs no exact
completion times). Past the ladder, a task is polled at gaps growing by 60 %.
A task found running that reports its ``progress`` is polled next when that
progress says it ends (elapsed x 100 / progress), instead of on the ladder, and
at least ``MIN_GAP`` after the last poll. Once progress is trusted, a miss raises
its rung no further than where that progress says the task ends: with equal
durations a whole wave misses together, and a full step would overshoot them.
Once such polls are seen to find their tasks done (progress is trusted) and
durations spread, a first poll that misses costs just one more, well-aimed
poll; the first rung then aims lower (``PROGRESS_LEVEL``: 55 % of tasks done at
it), which sees most tasks done sooner for about 1.45 polls a task (held to
``POLL_BUDGET``). With spread
durations, tasks in flight together do not share their outcome, so the rungs
also learn faster (``SPREAD_PEER_SCALE``).

Expected polls per task: 1 + 0.2 + 0.05 + 0.01 + a little ~ 1.3. Equal durations
in waves that finish together cost a little more (``bench/run_vs_naive.py``): the
first rung sits at the durations rather than a step above them, so about one wave
in three misses and is polled again a moment later.

Before anything is learned (``cold``), a few *scout* tasks poll early, at
fractions of their estimate; when enough first polls (or scouts) have finished,
the model is warm and the other tasks, still waiting for their whole estimate,
are re-planned (the executor wakes them).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

LEVELS = (0.8, 0.95, 0.99)  # the quantiles of actual/estimate the rungs track
HIT_TARGET = LEVELS[0]  # the share of first polls that should find the task done
# The first poll of a task whose submission gave no estimate (APIMart's gives none)
# tracks this quantile of actual/typical estimate: a little earlier than the ladder's
# first rung, since durations spread more around the run's typical estimate than
# around a task's own, and its reply brings the task's own estimate for the rest.
BLIND_LEVEL = 0.8
# When running tasks' ``progress`` has been seen to predict their end (the poll it
# plans finds the task done), a first poll that misses costs only one more, well-aimed
# poll: where durations spread, the first poll then tracks this lower quantile, so
# most tasks are seen done sooner, for about 1 + (1 - 0.55) = 1.45 polls a task.
PROGRESS_LEVEL = 0.55
# Polls per task are held to this budget: when finished tasks took more on average
# (progress aims late or early, clocks skew), the lower first rung rises by the
# excess, back towards LEVELS[0].
POLL_BUDGET = 1.48
PROGRESS_TRUSTED = 0.75  # the share of progress-planned polls that must find it done
PROGRESS_SEEN = 5  # progress-planned polls observed before that share is trusted
PROGRESS_MEMORY = 0.05  # the weight of each new progress-planned poll in that share
STEP = 0.1  # how fast a rung moves per poll learned from, on a log scale
# Tasks in flight together share their timing (a wave submitted at once is polled at
# once and finds the same): with ``peers`` in flight, each poll moves a rung by
# STEP x min(1, PEER_SCALE / peers), so one wave moves it about as much as one
# independent poll would, and rungs do not swing wave by wave (with equal durations
# they settle just above them: about one wave in five is polled again).
PEER_SCALE = 1.0
# Unless durations spread: then tasks in flight together do not share their outcome,
# and each poll may move a rung as if ``SPREAD_PEER_SCALE`` of the peers were its own.
# The spread is a robust standard deviation of the logarithm (``_LogSpread``) of the
# tasks' own estimates or of the durations that progress predicted exactly, whichever
# is larger (those alone would understate it: only tasks that outlast their first
# poll are predicted).
SPREAD_PEER_SCALE = 5.0
SPREAD = 0.1  # a standard deviation of log-durations above this is "spread"
SPREAD_MEMORY = 256  # the last values the spread is estimated from (see _LogSpread)
SPREAD_EVERY = 16  # values between two estimates of it (a sort of SPREAD_MEMORY values)
SCOUTS = 5  # tasks that poll early while nothing is known
WARM_AFTER = 3  # finished observations before the learned factor is trusted
SCOUT_FRACTIONS = (0.1, 0.2, 0.35, 0.5, 0.7, 1.0)  # of the estimate, a scout's polls
SCOUT_PROGRESS = 50  # the least progress (percent) a scout aims its next poll by
FOLLOW_UP = 0.05  # the first gap past the ladder, as a share of the top rung's time
FOLLOW_UP_GROWTH = 1.6
MIN_GAP = 0.02  # seconds: never a tight loop
MIN_FACTOR, MAX_FACTOR = 0.02, 50.0
BLIND_RUNG = -2  # the first poll of a task without an estimate of its own
# A task is far past what the run has learned (``PollModel.overdue``) this many times
# past the time by which the top rung (99 %) sees tasks of its estimate done, and never
# before OVERDUE_FLOOR seconds.
OVERDUE_MULTIPLE = 10.0
OVERDUE_FLOOR = 10.0
PROGRESS_RUNG = -3  # a poll planned from the task's reported progress


class _LogSpread:
    """How widely recent values spread, on a log scale: a robust standard deviation.

    Estimated from the interquartile range of the logarithms of the last
    ``SPREAD_MEMORY`` values (IQR / 1.349, the standard deviation for a normal
    distribution), not their standard deviation: at a thousand tasks in flight a busy
    loop reads some replies late, and the few far-off predictions that makes would
    otherwise pass for spread durations: equal durations read as a deviation close
    to ``SPREAD`` at 1,000 in flight.
    """

    __slots__ = ("_deviation", "_logs", "_since")

    def __init__(self) -> None:
        self._logs: deque[float] = deque(maxlen=SPREAD_MEMORY)
        self._since = 0  # values added since the deviation was last computed
        self._deviation = 0.0

    def add(self, value: float) -> None:
        if not value > 0:
            return
        self._logs.append(math.log(value))
        self._since += 1

    @property
    def deviation(self) -> float:
        """0 until PROGRESS_SEEN values are in; recomputed every SPREAD_EVERY values."""
        count = len(self._logs)
        if count < PROGRESS_SEEN:
            return 0.0
        if self._since >= SPREAD_EVERY or self._since >= count:
            ordered = sorted(self._logs)
            low, high = ordered[(count - 1) // 4], ordered[(3 * (count - 1) + 3) // 4]
            self._deviation = (high - low) / 1.349
            self._since = 0
        return self._deviation


@dataclass(slots=True)
class TaskPolls:
    """One task's polling state: its own estimate (seconds) and what its polls saw."""

    estimate: float  # the base its polls are planned from: its own estimate once known
    known: bool = False  # ``estimate`` is the task's own (else the run's typical one)
    blind: bool = False  # started without its own estimate: its first poll is ``blind``
    scout: bool = False
    resumed: bool = False  # recorded by an earlier run: its clock is unknown, not learned from
    polls: int = 0
    misses: int = 0  # polls that found it still running
    rung: int = -1  # the ladder rung its pending poll is at (-1: none; BLIND_RUNG)
    next_rung: int = 0  # the lowest rung its next poll may be at
    follow_ups: int = 0  # polls past the ladder
    last_at: float = 0.0  # elapsed seconds at the last poll
    planned: float = 0.0  # the factor its pending poll was planned with
    progress: int | None = None  # the percentage its last poll reported, if any
    progress_at: float = 0.0  # elapsed seconds by which that progress was reached
    aimed_misses: int = 0  # polls aimed by its progress that found it still running


class PollModel:
    """Plans each task's polls from its own estimate and the learned ladder ``factors``."""

    def __init__(self, *, default_estimate: float = 1.0, max_interval: float = 15.0,
                 peers: int = 1) -> None:
        self.default_estimate = default_estimate
        peers = max(peers, 1)
        self._narrow_step = STEP * min(1.0, PEER_SCALE / peers)
        self._spread_step = STEP * min(1.0, SPREAD_PEER_SCALE / peers)
        # Running spreads of log(seconds): of progress-predicted durations, of estimates.
        self._durations = _LogSpread()
        self._estimate_spread = _LogSpread()
        self.max_interval = max_interval
        # Until learned: the estimate itself, then a little later, then later still.
        self.factors = [1.0, 1.03, 1.08]
        self.blind = 1.0  # the first rung of a task without an estimate of its own
        self.observed = 0  # first-poll outcomes and finished scouts learned from
        self.scouts_sent = 0
        self._scout_ratios: list[float] = []
        # The run's typical estimate (a running mean of the tasks' own): the base of a
        # task whose submission reply gave none (APIMart's does not; its polls do).
        self.typical: float | None = None
        self._estimates = 0
        # How often a poll planned from a running task's progress found it done.
        self.progress_seen = 0
        self.progress_hits = 0.0
        # Polls per finished task (a running mean over about the last 200 tasks).
        self.finished = 0
        self.polls_per_task = 1.0

    @property
    def step(self) -> float:
        """How far one poll's outcome moves a rung, on a log scale (see PEER_SCALE)."""
        return self._spread_step if self.spread > SPREAD else self._narrow_step

    @property
    def spread(self) -> float:
        """How widely durations spread (see SPREAD_PEER_SCALE); 0 until enough are seen."""
        return max(self._durations.deviation, self._estimate_spread.deviation)

    @property
    def progress_trusted(self) -> bool:
        """Reported progress has predicted the end of tasks well enough to aim by it."""
        return (self.progress_seen >= PROGRESS_SEEN
                and self.progress_hits >= PROGRESS_TRUSTED)

    @property
    def first_level(self) -> float:
        """The quantile of durations a task's first poll aims at (see PROGRESS_LEVEL).

        Lower only where it pays: with durations that spread (equal ones are seen done
        soon by any quantile) and progress to aim the second poll by.
        """
        if self.progress_trusted and self.spread > SPREAD:
            excess = max(0.0, self.polls_per_task - POLL_BUDGET)
            return min(LEVELS[0], PROGRESS_LEVEL + excess)
        return LEVELS[0]

    @property
    def factor(self) -> float:
        """The first rung: a task's first poll comes at this multiple of its estimate."""
        return self.factors[0]

    @property
    def cold(self) -> bool:
        """Too little is known yet to trust ``factors``."""
        return self.observed < WARM_AFTER

    def start(self, estimate: float | None, *, resumed: bool = False) -> TaskPolls:
        """A task's polling state, from the estimate its submission reply gave (if any).

        Without one, its first poll is planned from the run's typical estimate and the
        later ones from its own, as soon as a poll reply tells it.
        """
        scout = self.cold and not resumed and self.scouts_sent < SCOUTS
        if scout:
            self.scouts_sent += 1
        if estimate is not None and estimate > 0:
            self._saw(estimate)
            return TaskPolls(estimate, known=True, scout=scout, resumed=resumed)
        base = self.typical if self.typical is not None else self.default_estimate
        return TaskPolls(base, scout=scout, resumed=resumed, blind=True)

    def overdue(self, task: TaskPolls) -> float | None:
        """Seconds after its start past which ``task`` is far past what this run has
        learned; None while the model is cold (nothing learned, no bound).

        ``OVERDUE_MULTIPLE`` (10) times the learned 99th percentile of the durations of
        tasks of its estimate (its estimate times the top rung), and at least
        ``OVERDUE_FLOOR`` (10 s). Ten times the 99th percentile is well past a slow
        task: it is one the API has lost track of for now. For APIMart's tasks (under a
        minute) that is about the 10 minutes its official client gives a task; the floor
        keeps a run of sub-second tasks from giving up on one that a busy event loop
        merely read late. The executor ends the run once only such tasks remain; they
        stay recorded, and the next run polls them (a new clock, nothing new paid).
        """
        if self.cold:
            return None
        return max(OVERDUE_FLOOR, OVERDUE_MULTIPLE * task.estimate * self.factors[-1])

    def _saw(self, estimate: float) -> None:
        self._estimate_spread.add(estimate)
        self._estimates += 1
        previous = self.typical or 0.0
        self.typical = previous + (estimate - previous) / self._estimates

    def predicted(self, task: TaskPolls) -> float:
        """Seconds after its start at which ``task`` is most likely seen done."""
        return task.estimate * self.factors[0]

    def delay(self, task: TaskPolls, elapsed: float) -> float:
        """Seconds from now (``elapsed`` s after the task started) until its next poll.

        Calling it again before the poll (after a wake-up) re-plans the same poll.
        """
        task.rung = -1
        first = task.polls == 0
        if task.resumed and first:
            return 0.0
        scouting = task.scout and task.polls < len(SCOUT_FRACTIONS)
        # A scout aims by its progress once that is fine enough (an end it predicts is
        # then within 2 %): what it finds sets the first rungs of every task.
        if scouting and (task.progress is None or task.progress < SCOUT_PROGRESS):
            at = task.estimate * SCOUT_FRACTIONS[task.polls]
            return max(at - elapsed, 0.0 if first else MIN_GAP)
        if first and task.blind:
            # From the run's typical estimate as it is now (a task that started before
            # any was known is re-planned from it on its wake-up).
            if self.typical is not None:
                task.estimate = self.typical
            task.rung = BLIND_RUNG if self.typical is not None else -1
            task.planned = self.blind
            return max(task.estimate * self.blind + 0.005 - elapsed, 0.0)
        if not first and task.progress is not None and 0 < task.progress < 100:
            # A running task said how far along it is: poll when that says it ends. A
            # prediction already passed (a stalled task) falls back to the schedule.
            at = task.progress_at * 100 / task.progress + 0.005
            if task.last_at < at < task.last_at + MIN_GAP and not task.aimed_misses:
                # Due within the shortest gap of the last poll (a first poll that just
                # missed, at 99 %): the shortest gap, not the ladder's next rung. Once
                # only: a task stuck at 99 % is not polled every MIN_GAP.
                at = task.last_at + MIN_GAP
            if at >= task.last_at + MIN_GAP:
                if at - elapsed <= self.max_interval:  # a capped prediction tests nothing
                    task.rung, task.planned = PROGRESS_RUNG, at
                return min(at - elapsed, self.max_interval) if at > elapsed else MIN_GAP
        if not task.resumed:
            for rung in range(task.next_rung, len(self.factors)):
                # 5 ms past the rung: an exact estimate on a coarse clock is met, not missed.
                at = task.estimate * self.factors[rung] + 0.005
                if first or at >= task.last_at + MIN_GAP:  # a rung already passed is skipped
                    task.rung, task.planned = rung, self.factors[rung]
                    return max(at - elapsed, 0.0 if first else MIN_GAP)
        # Past the ladder: again soon, then at gaps growing by 60 %, up to the longest.
        scale = task.estimate * self.factors[-1]
        gap = max(MIN_GAP, FOLLOW_UP * scale * FOLLOW_UP_GROWTH ** task.follow_ups)
        return max(task.last_at + min(gap, self.max_interval) - elapsed, MIN_GAP)

    def observe(self, task: TaskPolls, elapsed: float, *, finished: bool,
                estimate: float | None = None, progress: int | None = None,
                replied: float | None = None) -> bool:
        """Learn from a poll made ``elapsed`` s after the task started, whose reply
        (read ``replied`` s after the start) gave ``estimate`` and ``progress``
        (percent); True if it made the model warm (the caller re-plans the tasks
        waiting meanwhile).

        The end a progress predicts is reckoned from halfway between the request and
        the reply: the API measured the progress somewhere between the two.
        """
        # Halfway between asking and reading the reply: on a busy loop a reply may be
        # read well after the API measured its progress, and aiming from the reply
        # would see the task done late; aiming from the asking, early.
        measured = (elapsed + max(elapsed, replied or elapsed)) / 2
        ends = None  # when its progress says the task ends, as a multiple of its base
        if not finished and progress is not None and 0 < progress < 100 and self.progress_trusted:
            ends = measured * 100 / progress / task.estimate
        warmed = self._observe(task, elapsed, finished=finished, ends=ends)
        task.progress = None if finished else progress
        task.progress_at = measured
        if not task.known and estimate is not None and estimate > 0:
            task.estimate, task.known = estimate, True  # its next polls: from its own
            self._saw(estimate)
        return warmed

    def _observe(self, task: TaskPolls, elapsed: float, *, finished: bool,
                 ends: float | None) -> bool:
        was_cold = self.cold
        rung, task.rung = task.rung, -1
        scouting = task.scout and task.polls < len(SCOUT_FRACTIONS)
        task.polls += 1
        task.last_at = elapsed
        if not finished:
            task.misses += 1
        if task.resumed:
            return False
        if finished and not task.scout:
            self.finished += 1
            weight = 1 / min(self.finished, 200)
            self.polls_per_task += weight * (task.polls - self.polls_per_task)
        ratio = elapsed / task.estimate
        if rung == PROGRESS_RUNG:
            task.aimed_misses += not finished
            self.progress_seen += 1
            weight = max(PROGRESS_MEMORY, 1 / self.progress_seen)
            self.progress_hits += weight * (finished - self.progress_hits)
            if finished:
                self._durations.add(task.planned)
        elif rung == BLIND_RUNG:
            task.next_rung = 1  # its own estimate plans the rest of the ladder
            if self._learn_blind(ratio / task.planned, finished=finished, ends=ends):
                self.observed += 1
        elif rung >= 0:
            task.next_rung = rung + 1
            if self._learn(rung, ratio / task.planned, finished=finished, ends=ends):
                self.observed += rung == 0
        elif task.blind and rung == -1 and task.polls == 1:
            task.next_rung = 1  # a blind poll planned from no estimate at all: not learned
        elif not scouting:
            task.follow_ups += 1
        if task.scout and finished:
            self._scout_ratios.append(ratio)
            self.observed += 1
            if was_cold and not self.cold:
                # The largest of a few upper bounds: a high quantile, on the safe side.
                top = _clamp(max(self._scout_ratios))
                self.factors = [top, top * 1.03, top * 1.08]
                self.blind = top
        return was_cold and not self.cold

    def _learn_blind(self, lag: float, *, finished: bool, ends: float | None) -> bool:
        """Move the blind first rung towards its quantile (see ``_learn``)."""
        level = min(self.first_level, BLIND_LEVEL)  # lower only in the progress regime
        if finished and lag <= 1.1:
            self.blind = _clamp(self.blind * math.exp(-self.step * (1 - level)))
        elif not finished and lag >= 0.9:
            self.blind = _raised(self.blind, self.step * level, ends)
        else:
            return False
        return True

    def _learn(self, rung: int, lag: float, *, finished: bool, ends: float | None) -> bool:
        """Move rung ``rung`` towards its quantile; False if the poll says nothing of it.

        ``lag``: when the poll was made, as a multiple of when it was planned. A poll
        delayed past its plan (a wake-up, a busy loop) that finds the task done says
        nothing of whether the plan would have; a late miss says it would have missed
        too, and vice versa for an early poll. ``ends``: where a miss's trusted progress
        says the task ends (see ``_raised``).
        """
        factor = self.factors[rung]
        levels = (self.first_level, *LEVELS[1:])
        below = levels[rung - 1] if rung else 0.0
        target = (levels[rung] - below) / (1.0 - below)  # P(done here | not done before)
        if finished and lag <= 1.1:
            self.factors[rung] = _clamp(factor * math.exp(-self.step * (1 - target)))
        elif not finished and lag >= 0.9:
            self.factors[rung] = _raised(factor, self.step * target, ends)
        else:
            return False
        # The rungs stay in order, each at least 1 % above the one below: the rung
        # just learned pushes those above it up and those below it down.
        for k in range(rung + 1, len(self.factors)):
            self.factors[k] = max(self.factors[k], self.factors[k - 1] * 1.01)
        for k in range(rung - 1, -1, -1):
            self.factors[k] = min(self.factors[k], self.factors[k + 1] / 1.01)
        return True


def _raised(factor: float, move: float, ends: float | None) -> float:
    """``factor`` raised by ``move`` (log scale) after a miss, but not past where the
    task's trusted progress says it ends (``ends``, a multiple of the same base).

    With equal durations a whole wave misses together, and full steps would lift the
    rung well past the durations only to creep back down a wave at a time, every
    first poll late meanwhile. Progress says how far the rung fell short; it never
    lowers the rung.
    """
    raised = factor * math.exp(move)
    if ends is not None:
        raised = min(raised, max(factor, ends))
    return _clamp(raised)


def _clamp(factor: float) -> float:
    return min(MAX_FACTOR, max(MIN_FACTOR, factor))
