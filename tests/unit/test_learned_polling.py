"""Polling that learns: each task's own estimate, corrected by what finished tasks showed."""

from __future__ import annotations

import asyncio
import heapq
import random
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.core.apimart.replies import TaskState
from pipeline.core.planning.pacing import RunOptions
from pipeline.core.planning.polling import (
    HIT_TARGET,
    MIN_GAP,
    OVERDUE_FLOOR,
    POLL_BUDGET,
    PROGRESS_LEVEL,
    SCOUT_FRACTIONS,
    SCOUTS,
    SPREAD,
    WARM_AFTER,
    PollModel,
    TaskPolls,
)
from pipeline.operations.run.executor import Executor, _Flight


def finish_task(model: PollModel, estimate: float, duration: float) -> tuple[int, float]:
    """Poll one task (virtual time) until done: (polls, seconds seen late)."""
    task = model.start(estimate)
    elapsed = 0.0
    while True:
        elapsed += model.delay(task, elapsed)
        done = elapsed >= duration
        model.observe(task, elapsed, finished=done)
        if done:
            return task.polls, elapsed - duration


def warm_with_a_new_task(seconds: float, *, finished: int) -> tuple[PollModel, TaskPolls]:
    """A model that saw ``finished`` tasks take exactly their ``seconds`` estimate, and a
    new task of that estimate whose first poll is planned."""
    model = PollModel()
    for _ in range(finished):
        finish_task(model, seconds, seconds)
    task = model.start(seconds)
    model.delay(task, 0.0)
    return model, task


def test_each_task_is_polled_from_its_own_estimate() -> None:
    """Warm and exact: a 10 s task and a 40 s task are first polled at 10 s and 40 s."""
    model = PollModel()
    for _ in range(SCOUTS + 20):
        finish_task(model, 20.0, 20.0)
    short, long = model.start(10.0), model.start(40.0)
    assert model.delay(short, 0.0) == pytest.approx(10.0 * model.factor + 0.005)
    assert model.delay(long, 0.0) == pytest.approx(40.0 * model.factor + 0.005)
    assert 0.9 < model.factor < 1.1


def test_scouts_poll_early_while_nothing_is_known() -> None:
    """The first tasks poll at fractions of their estimate; the others wait for it."""
    model = PollModel()
    scouts = [model.start(30.0) for _ in range(SCOUTS)]
    assert all(task.scout for task in scouts)
    assert model.delay(scouts[0], 0.0) == pytest.approx(30.0 * SCOUT_FRACTIONS[0])
    other = model.start(30.0)
    assert not other.scout
    assert model.delay(other, 0.0) == pytest.approx(30.0 + 0.005)


def test_an_over_estimating_api_is_learned_from_the_scouts() -> None:
    """Tasks done at a third of their estimate: once warm, polls come near a third."""
    model = PollModel()
    for _ in range(WARM_AFTER):
        _polls, _late = finish_task(model, 60.0, 19.0)
    assert not model.cold
    assert model.factor < 0.5
    later = model.start(60.0)
    assert model.delay(later, 0.0) < 30.0


@pytest.mark.parametrize(("low", "high", "factor", "lateness"), [
    (1.0, 1.0, 3.0, 0.06),  # over-estimated threefold
    (10.0, 10.0, 0.5, 0.06),  # under-estimated by half
    (0.5, 8.0, 3.0, 0.08),  # a wide spread, over-estimated
    # Whole-second estimates of 1..3 s: actual/estimate spreads over 0.5..1, and with
    # at most 1.5 polls a task no schedule sees them all done much sooner than this.
    (1.0, 3.0, 1.0, 0.19),
])
def test_polls_stay_few_and_tasks_are_seen_done_soon(low: float, high: float,
                                                     factor: float, lateness: float) -> None:
    """Over 3,000 tasks: <= 1.5 polls each, seen done within a small share of a task."""
    rng = random.Random(5)
    model = PollModel()
    polls = late = total = 0.0
    for _ in range(3000):
        duration = rng.uniform(low, high)
        estimate = max(1.0, float(int(duration * factor + 0.999)))
        got, seen_late = finish_task(model, estimate, duration)
        polls += got
        late += seen_late
        total += duration
    assert polls / 3000 <= 1.5
    assert late / total <= lateness


def test_the_first_poll_finds_about_the_target_share_done() -> None:
    """The factor settles where HIT_TARGET of first polls find the task done."""
    rng = random.Random(9)
    model = PollModel()
    hits = 0
    for index in range(4000):
        polls, _late = finish_task(model, 10.0, rng.uniform(3.0, 9.0))
        hits += polls == 1 and index >= 1000
    assert abs(hits / 3000 - HIT_TARGET) < 0.05


@dataclass
class FakeApi:
    """Tasks that take ``duration`` virtual seconds; records when each was polled."""

    duration: float
    now: float = 0.0
    polls: list[tuple[str, float]] = field(default_factory=list)
    started: dict[str, float] = field(default_factory=dict)

    async def poll(self, task_id: str) -> TaskState:
        """The task, completed once its duration has passed (virtual time)."""
        self.polls.append((task_id, self.now))
        done = self.now - self.started[task_id] >= self.duration
        return TaskState(task_id, "completed" if done else "processing", None, None, (), None,
                         asked_at=self.now)

    def holding(self) -> None:
        """No rate bound in play."""


def executor_on(api: FakeApi) -> Executor:
    """An executor whose clock and sleep are the fake API's virtual time."""
    plan: Any = SimpleNamespace(items=[])
    executor = Executor(plan, client=api, store=None, outputs=None,  # type: ignore[arg-type]
                        workspace=None, pricing=None, options=RunOptions())  # type: ignore[arg-type]

    async def sleep(seconds: float) -> None:
        api.now += seconds

    executor.monotonic = lambda: api.now
    executor.sleep = sleep
    return executor


def test_the_executor_does_not_hold_a_slot_for_an_over_estimate() -> None:
    """Estimate 60 s, tasks done in 19 s: once learned, a task is seen done soon after 19 s."""
    api = FakeApi(duration=19.0)
    executor = executor_on(api)

    async def main() -> None:
        for number in range(SCOUTS + 3):
            task_id = f"t{number}"
            api.started[task_id] = api.now
            item = SimpleNamespace(key=task_id)
            state = await executor.wait(item, _Flight(task_id, api.now,  # type: ignore[arg-type]
                                                      estimate=60.0))
            assert state is not None
            assert state.status == "completed"

    asyncio.run(main())
    last = [at - api.started["t7"] for task, at in api.polls if task == "t7"]
    assert len(last) <= 2  # the first rung finds ~70 % done; the next one the rest
    assert last[0] < 30.0
    assert 19.0 <= last[-1] < 23.0


def test_the_executor_uses_each_tasks_own_estimate() -> None:
    """Two warm tasks with estimates 20 s and 80 s are first polled at different times."""
    api = FakeApi(duration=20.0)
    executor = executor_on(api)

    async def one(task_id: str, estimate: float) -> None:
        api.started[task_id] = api.now
        item = SimpleNamespace(key=task_id)
        await executor.wait(item, _Flight(task_id, api.now,  # type: ignore[arg-type]
                                          estimate=estimate))

    async def main() -> None:
        for number in range(SCOUTS):
            await one(f"s{number}", 20.0)
        api.duration = 5.0
        await one("short", 5.0)
        api.duration = 30.0
        await one("long", 30.0)

    asyncio.run(main())
    first = {task: at - api.started[task] for task, at in reversed(api.polls)}
    assert first["short"] < 7.0
    assert first["long"] > 4 * first["short"]


def test_an_estimate_first_given_by_a_poll_plans_the_later_polls() -> None:
    """No estimate at submission (APIMart gives it in polls): the first poll uses the
    run's typical estimate, the next ones the task's own."""
    model = PollModel(default_estimate=1.0)
    for _ in range(SCOUTS):
        model.start(None)
    task = model.start(None)
    assert model.delay(task, 0.0) == pytest.approx(1.0 * model.factors[0] + 0.005)
    model.observe(task, 1.0, finished=False, estimate=40.0)
    assert task.known
    assert model.delay(task, 1.0) == pytest.approx(40.0 * model.factors[1] + 0.005 - 1.0)
    assert model.typical == 40.0
    assert model.start(None).estimate == 40.0  # the next task starts from the typical one


def run_waves(model: PollModel, *, tasks: int, slots: int, duration: float,
              estimate: float) -> tuple[float, float]:
    """``tasks`` tasks through ``slots`` slots in virtual time, no estimate at submission
    (polls reveal it): (polls per task, makespan). Waiting tasks are re-planned (as the
    executor wakes them) whenever the model warms up."""
    clock = 0.0
    queue: list[tuple[float, int]] = []
    plans: dict[int, tuple[TaskPolls, float]] = {}
    next_id = 0

    def launch(now: float) -> None:
        nonlocal next_id
        task = model.start(None)
        plans[next_id] = (task, now)
        heapq.heappush(queue, (now + model.delay(task, 0.0), next_id))
        next_id += 1

    for _ in range(min(slots, tasks)):
        launch(0.0)
    polls = 0
    while queue:
        clock, ident = heapq.heappop(queue)
        task, started = plans[ident]
        elapsed = clock - started
        done = elapsed >= duration
        polls += 1
        if model.observe(task, elapsed, finished=done, estimate=estimate):
            replanned = []
            for at, other in queue:
                waiting, since = plans[other]
                if waiting.polls == 0 and not waiting.scout:
                    at = clock + model.delay(waiting, clock - since)
                replanned.append((at, other))
            queue[:] = replanned
            heapq.heapify(queue)
        if done:
            del plans[ident]
            if next_id < tasks:
                launch(clock)
        else:
            heapq.heappush(queue, (clock + model.delay(task, elapsed), ident))
    return polls / tasks, clock



def test_a_first_wave_without_estimates_does_not_mislead_the_model() -> None:
    """1,000 tasks @100, estimates 3x too high and given only by polls: a few waves'
    worth of learning, then each task is seen done soon after 1 s, in <= 1.5 polls."""
    model = PollModel(default_estimate=1.0, peers=100)  # as the executor makes it
    polls, makespan = run_waves(model, tasks=1000, slots=100, duration=1.0, estimate=3.0)
    assert polls <= 1.5
    assert model.blind * 3.0 < 1.3
    assert makespan < 10 * 1.25  # the ideal is 10 waves of 1 s


def test_a_running_task_is_polled_when_its_progress_says_it_ends() -> None:
    """Found 40 % done after 2 s: the next poll comes at 5 s, not on the ladder."""
    model = PollModel()
    for _ in range(SCOUTS + 5):
        finish_task(model, 4.0, 4.0)
    task = model.start(4.0)
    model.delay(task, 0.0)
    model.observe(task, 2.0, finished=False, progress=40)
    assert model.delay(task, 2.0) == pytest.approx(3.005)


def test_a_stalled_progress_falls_back_to_the_schedule() -> None:
    """A prediction already passed (progress 90 % long ago) never makes a tight loop."""
    model = PollModel()
    task = model.start(10.0)
    model.delay(task, 0.0)
    model.observe(task, 10.0, finished=False, progress=99)
    model.observe(task, 10.2, finished=False, progress=1)
    assert model.delay(task, 10.2) >= 0.02


def test_waves_of_tasks_that_share_their_timing_do_not_make_the_rungs_swing() -> None:
    """Deterministic 1 s tasks in waves of 100 with honest estimates: the first poll
    stays near 1 s wave after wave (with peers=100), and polls stay few."""
    model = PollModel(default_estimate=1.0, peers=100)
    polls, makespan = run_waves(model, tasks=3000, slots=100, duration=1.0, estimate=1.0)
    assert 0.9 < model.blind < 1.2
    assert polls <= 1.35
    assert makespan < 30 * 1.1


def test_a_stuck_task_is_polled_at_most_max_interval_apart_and_never_in_a_tight_loop() -> None:
    """However long a task runs, polls come 20 ms to ``max_interval`` apart."""
    model = PollModel(max_interval=15.0)
    task = model.start(0.1)
    elapsed = 0.0
    gaps = []
    for _ in range(60):
        gap = model.delay(task, elapsed)
        gaps.append(gap)
        elapsed += gap
        model.observe(task, elapsed, finished=False)
    assert min(gaps[1:]) >= 0.02
    assert max(gaps) <= 15.0
    assert gaps[-1] == 15.0


def finish_reporting_progress(model: PollModel, estimate: float | None,
                              duration: float) -> tuple[int, float]:
    """Poll one task (virtual time) that reports linear progress, as the simulator
    does, and its estimate in poll replies only: (polls, seconds seen late)."""
    task = model.start(estimate)
    elapsed = 0.0
    while True:
        elapsed += model.delay(task, elapsed)
        done = elapsed >= duration
        progress = None if done else max(1, min(99, int(100 * elapsed / duration)))
        model.observe(task, elapsed, finished=done, estimate=max(1.0, float(int(duration) + 1)),
                      progress=progress)
        if done:
            return task.polls, elapsed - duration


def test_progress_that_predicts_the_end_lets_first_polls_come_earlier() -> None:
    """Once progress-planned polls find tasks done, the first poll aims at a lower
    quantile: about PROGRESS_LEVEL of tasks done at it, still <= 1.5 polls a task."""
    rng = random.Random(3)
    model = PollModel(default_estimate=2.0)
    hits = polls = 0
    for index in range(4000):
        got, _late = finish_reporting_progress(model, None, rng.uniform(1.0, 3.0))
        if index >= 1000:
            hits += got == 1
            polls += got
    assert model.progress_trusted
    assert PROGRESS_LEVEL <= model.first_level < PROGRESS_LEVEL + 0.05
    assert abs(hits / 3000 - model.first_level) < 0.07
    assert polls / 3000 <= 1.5


def test_progress_that_misleads_is_not_trusted() -> None:
    """Progress that says nothing of the end (stuck at 1 %) leaves the first poll's level."""
    model = PollModel(default_estimate=2.0)
    for _ in range(200):
        task = model.start(2.0)
        elapsed = 0.0
        while True:
            elapsed += model.delay(task, elapsed)
            done = elapsed >= 2.5
            model.observe(task, elapsed, finished=done, progress=None if done else 1)
            if done:
                break
    assert not model.progress_trusted
    assert model.first_level == HIT_TARGET


def test_spread_durations_are_learned_faster_than_equal_ones() -> None:
    """Equal durations share their outcome wave by wave (small steps); spread ones do not."""
    equal, spread = PollModel(peers=100), PollModel(peers=100)
    rng = random.Random(4)
    for _ in range(300):
        finish_reporting_progress(equal, None, 2.0)
        finish_reporting_progress(spread, None, rng.uniform(1.0, 3.0))
    assert equal.spread < 0.1 < spread.spread
    assert spread.step > equal.step


def test_waves_of_spread_tasks_reporting_progress_stay_within_the_poll_budget() -> None:
    """1,000 tasks @100 of 1..3 s, no estimate at submission: <= 1.5 polls a task, and
    the first polls move from the cold start towards the lower quantile."""
    rng = random.Random(8)
    model = PollModel(default_estimate=1.0, peers=100)
    durations = [rng.uniform(1.0, 3.0) for _ in range(1000)]
    queue: list[tuple[float, int]] = []
    plans: dict[int, tuple[TaskPolls, float]] = {}
    polls = 0
    for ident in range(100):
        task = model.start(None)
        plans[ident] = (task, 0.0)
        heapq.heappush(queue, (model.delay(task, 0.0), ident))
    launched = 100
    while queue:
        clock, ident = heapq.heappop(queue)
        task, started = plans[ident]
        elapsed = clock - started
        duration = durations[ident]
        done = elapsed >= duration
        polls += 1
        model.observe(task, elapsed, finished=done, estimate=float(int(duration) + 1),
                      progress=None if done else max(1, int(100 * elapsed / duration)))
        if done:
            if launched < len(durations):
                fresh = model.start(None)
                plans[launched] = (fresh, clock)
                heapq.heappush(queue, (clock + model.delay(fresh, 0.0), launched))
                launched += 1
        else:
            heapq.heappush(queue, (clock + model.delay(task, elapsed), ident))
    assert polls / 1000 <= 1.5
    assert model.progress_trusted
    assert model.blind < 1.0  # below the typical estimate: earlier than the cold start


def test_first_polls_rise_when_tasks_take_more_polls_than_the_budget() -> None:
    """With progress trusted and durations spread, the first rung sits at PROGRESS_LEVEL
    within the polls budget and rises by the excess over it, up to HIT_TARGET."""
    model = PollModel()
    for estimate in (1.0, 2.0, 4.0, 8.0, 3.0, 6.0):
        model.start(estimate)  # tasks' own estimates that spread
    model.progress_seen, model.progress_hits = 20, 1.0
    assert model.progress_trusted
    assert model.spread > 0.1
    model.polls_per_task = POLL_BUDGET - 0.1
    assert model.first_level == PROGRESS_LEVEL
    model.polls_per_task = POLL_BUDGET + 0.1
    assert model.first_level == pytest.approx(PROGRESS_LEVEL + 0.1)
    model.polls_per_task = 3.0
    assert model.first_level == HIT_TARGET


def test_progress_aims_from_halfway_between_asking_and_the_reply() -> None:
    """Asked at 2 s, answered at 2.2 s with 40 %: the API measured it at 2.1 s or so, so
    the next poll is aimed at 5.25 s (from the asking alone it would be 5 s, early)."""
    model, task = warm_with_a_new_task(4.0, finished=SCOUTS + 5)
    model.observe(task, 2.0, finished=False, progress=40, replied=2.2)
    assert model.delay(task, 2.2) == pytest.approx(5.255 - 2.2)


def test_a_few_replies_read_late_do_not_pass_for_spread_durations() -> None:
    """Equal 5 s tasks, one in five of whose progress replies was read late (its
    prediction 40 % too long): the durations still read as narrow, so the rungs keep
    their small steps and the first poll its usual level."""
    model = PollModel(peers=1000)
    for index in range(400):
        task = model.start(5.0)
        model.delay(task, 0.0)
        read = 7.2 if index % 5 == 0 else 4.0  # progress measured at 5.6 s, not 4 s
        model.observe(task, 4.0, finished=False, progress=80, replied=read)
        model.delay(task, 4.0)
        model.observe(task, 5.0 if read == 4.0 else 7.0, finished=True)
    assert model.progress_trusted
    assert model.spread < SPREAD
    assert model.first_level == HIT_TARGET


def test_durations_that_do_spread_still_read_as_spread() -> None:
    """Tasks of 1..3 s, their ends predicted exactly by progress: the spread is seen."""
    model = PollModel(peers=100)
    rng = random.Random(3)
    for _ in range(300):
        duration = rng.uniform(1.0, 3.0)
        task = model.start(2.0)
        model.delay(task, 0.0)
        model.observe(task, 0.5, finished=False, progress=int(50 / duration), replied=0.5)
        model.delay(task, 0.5)
        model.observe(task, duration + 0.05, finished=True)
    assert model.spread > SPREAD


def synchronous_waves(model: PollModel, durations: list[float], *, slots: int) -> list[float]:
    """Waves of ``slots`` tasks started together, wave ``w`` lasting ``durations[w]``
    (estimate 1 s, told by the first poll, as APIMart's replies do); the first rung of
    a task without an estimate (``model.blind``) after each wave."""
    after = []
    for duration in durations:
        tasks = [model.start(None) for _ in range(slots)]
        pending = [(model.delay(task, 0.0), index) for index, task in enumerate(tasks)]
        heapq.heapify(pending)
        while pending:
            at, index = heapq.heappop(pending)
            task = tasks[index]
            done = at >= duration
            progress = None if done else max(1, min(99, int(100 * at / duration)))
            model.observe(task, at, finished=done, estimate=1.0, progress=progress, replied=at)
            if not done:
                heapq.heappush(pending, (at + model.delay(task, at), index))
        after.append(model.blind)
    return after


def test_a_wave_that_misses_lifts_the_first_rung_only_to_where_progress_says() -> None:
    """Equal 1 s tasks in waves of 100 that finish together: a wave of misses raises the
    first rung to the end its progress reports, not a full step past it, so first polls
    stay within 2 % of the durations wave after wave (full steps swung 8 % up, then
    crept back down 2 % a wave: 30 ms late on average)."""
    model = PollModel(default_estimate=1.0, peers=100)
    blind = synchronous_waves(model, [1.0] * 40, slots=100)
    settled = blind[20:]
    assert max(settled) < 1.02
    assert min(settled) > 0.97


def test_the_first_rung_still_follows_an_api_that_slows_down() -> None:
    """After 30 waves of 1 s tasks, the API's tasks take 1.5 s (estimates unchanged):
    the moves grow again while they keep one direction, and within 25 waves the first
    poll comes near 1.5 s."""
    model = PollModel(default_estimate=1.0, peers=100)
    blind = synchronous_waves(model, [1.0] * 30 + [1.5] * 25, slots=100)
    assert blind[29] < 1.05
    assert 1.45 < blind[-1] < 1.6


def test_a_first_poll_that_just_missed_is_followed_soon() -> None:
    """Found at 99 % just before its end: polled again after the shortest gap, not at
    the ladder's next rung; a task stuck at 99 % is not then polled at that gap."""
    model, task = warm_with_a_new_task(1.0, finished=SCOUTS + 20)
    model.observe(task, 0.995, finished=False, progress=99, replied=0.995)
    assert model.delay(task, 0.995) == pytest.approx(MIN_GAP)
    model.observe(task, 0.995 + MIN_GAP, finished=False, progress=99, replied=1.015)
    assert model.delay(task, 1.015) > MIN_GAP


def test_a_task_is_far_past_the_others_only_at_ten_times_their_learned_durations() -> None:
    """No bound while nothing is learned; then about 10x what the run's tasks took (30 s
    tasks: ~300 s, the official client's 10 minutes in reach), never under the floor."""
    model = PollModel()
    assert model.overdue(model.start(30.0)) is None
    rng = random.Random(4)
    for _ in range(200):
        finish_task(model, 30.0, rng.uniform(20.0, 30.0))
    bound = model.overdue(model.start(30.0))
    assert bound is not None
    assert 250.0 <= bound <= 400.0
    for _ in range(200):
        finish_task(model, 0.1, 0.1)
    assert model.overdue(model.start(0.1)) == OVERDUE_FLOOR
