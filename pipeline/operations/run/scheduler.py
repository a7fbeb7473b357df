"""Scheduling: run work over a graph of items, each once its prerequisites are done.

``workers`` coroutines take items whose prerequisites (within this run) have
succeeded; an item whose prerequisite failed is blocked without being run, and
everything else goes on. What "work" is (submit, poll, download) is the caller's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class Node(Protocol):
    """An item of the graph: its key and the keys it needs first."""

    @property
    def key(self) -> str:
        """The item's key."""

    @property
    def needs(self) -> tuple[str, ...]:
        """Keys of items that must succeed first (those outside the graph are ignored)."""


N = TypeVar("N", bound=Node)


@dataclass
class Schedule(Generic[N]):
    """The graph's bookkeeping while it runs: who waits for whom, who has finished."""

    items: Sequence[N]
    dependants: dict[str, list[N]] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    finished: dict[str, bool] = field(default_factory=dict)  # key -> succeeded

    def __post_init__(self) -> None:
        keys = {i.key for i in self.items}
        for item in self.items:
            needs = [n for n in item.needs if n in keys]
            self.waiting[item.key] = len(needs)
            for need in needs:
                self.dependants.setdefault(need, []).append(item)

    def ready(self) -> list[N]:
        """The items that need nothing from this run."""
        return [i for i in self.items if self.waiting[i.key] == 0]

    def finish(self, item: N, ok: bool, *, on_blocked: Callable[[N, N], None]) -> list[N]:
        """Record ``item``'s outcome; the dependants that became ready.

        A failure blocks every dependant, transitively; ``on_blocked(child, parent)``
        hears of each.
        """
        ready: list[N] = []
        stack = [(item, ok)]
        while stack:
            current, succeeded = stack.pop()
            self.finished[current.key] = succeeded
            for child in self.dependants.get(current.key, ()):
                self.waiting[child.key] -= 1
                if child.key in self.finished:
                    continue
                if not succeeded:
                    on_blocked(child, current)
                    stack.append((child, False))
                elif self.waiting[child.key] == 0:
                    ready.append(child)
        return ready


async def run_graph(items: Sequence[N], work: Callable[[N], Awaitable[bool]], *,
                    workers: int, on_blocked: Callable[[N, N], None]) -> dict[str, bool]:
    """Run ``work(item)`` for every item in dependency order; each item's success.

    Cancelling this cancels every worker (and so the work in progress).
    """
    schedule: Schedule[N] = Schedule(items)
    remaining = len(items)
    if remaining == 0:
        return schedule.finished
    queue: asyncio.Queue[N | None] = asyncio.Queue()
    for item in schedule.ready():
        queue.put_nowait(item)
    count = max(1, min(workers, remaining))

    def settle(item: N, ok: bool) -> None:
        nonlocal remaining
        before = len(schedule.finished)
        for child in schedule.finish(item, ok, on_blocked=on_blocked):
            queue.put_nowait(child)
        remaining -= len(schedule.finished) - before
        if remaining == 0:
            for _ in range(count):
                queue.put_nowait(None)

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            if item.key in schedule.finished:
                continue
            settle(item, await work(item))

    tasks = [asyncio.create_task(worker()) for _ in range(count)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return schedule.finished
