"""How a run paces itself: its options, and when to poll a task next. Pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a run paces itself."""

    concurrency: int = 8
    task_timeout: float = 1800.0  # stop polling a task after this; the next run resumes it
    first_poll: float = 1.0  # before the first poll when no estimate is known yet
    max_poll_interval: float = 15.0
    url_margin: float = 600.0  # an upstream URL expiring sooner is replaced by the local file
    download_attempts: int = 3  # re-polls for fresh URLs after failed downloads
    download_give_way: float = 0.5  # longest a download waits for submissions to go first


def next_poll_delay(*, elapsed: float, estimate: float, polls: int,
                    options: RunOptions) -> float:
    """Seconds until the next poll of a task whose clock started ``elapsed`` seconds ago.

    Until the estimate has passed, wait for it plus a small margin (1 %, at least
    5 ms), so the first poll usually finds the task done. A task still running
    after that is polled again soon, a fiftieth of the estimate later (at least
    20 ms), then half as long again each time, up to ``max_poll_interval``: a
    task found just short of done costs one cheap extra poll, and a stuck task
    is not polled in a tight loop.
    """
    if elapsed < estimate:
        return estimate - elapsed + max(0.005, estimate * 0.01)
    overdue = max(polls - 1, 0)  # polls made after the estimate had passed
    return min(options.max_poll_interval, max(0.02, estimate / 50) * 1.5 ** overdue)
