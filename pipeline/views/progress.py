"""How a run reports as it goes: a live rich display, plain lines, or JSON events.

All three show the same facts: done and failed counts, the tasks in flight at
the API (never more than ``--concurrency``), the money ``charged`` for finished
tasks and the money ``reserved`` by tasks still running (pre-charged by the API,
refunded if they fail), and the bound holding the run back if one does
(``--max-rate``, the API's rate limit, ``--concurrency``). See ``events.Tally``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from pipeline.core.apimart.prices import json_number, money
from pipeline.core.planning.pacing import Bound
from pipeline.operations.run.events import (
    TERMINAL_EVENTS,
    EventKind,
    MovesApplied,
    NothingToDo,
    RunEvent,
    RunNote,
    RunResult,
    ShardNote,
)
from pipeline.views.plan import moves_done
from pipeline.views.teams import shard_note

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

# Events that end an instance; the rest are progress within one.


class Reporter:
    """Receives run events; a context manager so a live display can tidy the terminal."""

    def __init__(self, currency: str) -> None:
        self.currency = currency

    def __call__(self, event: RunEvent) -> None:
        """Handle one event."""

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


class JsonReporter(Reporter):
    """One JSON object per line per event, for machines (``--json``).

    Lines are flushed at most every ``FLUSH_EVERY`` seconds (and at the end): a
    flush per event was a system call per event, one of the larger costs per task
    at a thousand tasks in flight. A reader still sees every line within that delay.
    """

    FLUSH_EVERY = 0.1  # seconds

    def __init__(self, currency: str, stream: IO[str], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(currency)
        self.stream = stream
        self._clock = clock
        self._flushed_at = -math.inf
        self._pending: asyncio.TimerHandle | None = None

    def __call__(self, event: RunEvent) -> None:
        record: dict[str, Any] = {
            "event": event.kind, "key": event.key, "message": event.message,
            "done": event.done, "failed": event.failed, "in_flight": event.in_flight,
            "total": event.total, "charged": json_number(event.charged),
            "reserved": json_number(event.reserved),
            "limited_by": event.limited_by,
        }
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        if self._pending is not None:
            return  # a flush is already due
        if self._clock() - self._flushed_at >= self.FLUSH_EVERY:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in a run's loop: nothing would flush later
            self.flush()
            return
        self._pending = loop.call_later(self.FLUSH_EVERY, self.flush)

    def flush(self) -> None:
        """Write out every line so far."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._flushed_at = self._clock()
        self.stream.flush()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.flush()


class PlainReporter(Reporter):
    """A line per finished instance, for logs and pipes."""

    def __init__(self, currency: str, stream: IO[str]) -> None:
        super().__init__(currency)
        self.stream = stream

    def __call__(self, event: RunEvent) -> None:
        if event.kind not in TERMINAL_EVENTS | {EventKind.STOPPING, EventKind.WARNING}:
            return
        where = f" {event.key}" if event.key else ""
        detail = f": {event.message}" if event.message else ""
        self.stream.write(
            f"[{event.done + event.failed}/{event.total}] {event.kind}{where}{detail} "
            f"({event.in_flight} in flight; {_money(event, self.currency)}"
            f"{_held(event)})\n")
        self.stream.flush()


class LiveReporter(Reporter):
    """A live bar with done/failed/in-flight counts, charged and reserved money, and ETA."""

    def __init__(self, currency: str, console: Console, total: int) -> None:
        # rich only where there is a terminal to draw on: logs, pipes and --json runs
        # start without importing it.
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        super().__init__(currency)
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed[/] · {task.fields[in_flight]} in "
                       "flight · {task.fields[money]}{task.fields[held]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: TaskID = self.progress.add_task(
            "running", total=total, failed=0, in_flight=0, held="",
            money=f"charged {money(Decimal(0), currency)}, reserved {money(Decimal(0), currency)}")

    def __call__(self, event: RunEvent) -> None:
        if event.kind in TERMINAL_EVENTS - {EventKind.DONE} | {EventKind.STOPPING,
                                                                 EventKind.WARNING}:
            where = f" {event.key}" if event.key else ""
            self.progress.console.print(f"[yellow]{event.kind}[/]{where}: {event.message}")
        self.progress.update(
            self.task, completed=event.done + event.failed, failed=event.failed,
            in_flight=event.in_flight, money=_money(event, self.currency),
            held=_held(event))

    def __enter__(self) -> Reporter:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.stop()


_HELD_BY = {
    Bound.MAX_RATE: "held back by --max-rate",
    Bound.API_RATE: "held back by the API's rate limit (429)",
    Bound.CONCURRENCY: "held back by --concurrency",
}


def _held(event: RunEvent) -> str:
    """Which bound holds the run back, said in words (empty when none does)."""
    return "" if event.limited_by is None else f" · {_HELD_BY[event.limited_by]}"


def _money(event: RunEvent, currency: str) -> str:
    return f"charged {money(event.charged, currency)}, reserved {money(event.reserved, currency)}"


def run_summary(result: RunResult, currency: str, outputs: Path | str) -> str:
    """The closing lines of a run: counts, spend, each failure with the API's message."""
    lines = [""]
    for key, message in result.failed:
        lines.append(f"  failed      {key}: {message}")
    for key in result.blocked:
        lines.append(f"  blocked     {key}: an upstream instance did not finish")
    for key, message in result.unfinished:
        lines.append(f"  unfinished  {key}: {message}")
    tally = result.tally
    lines.append(
        f"Run: {len(result.done):,} done, {len(result.failed):,} failed, "
        f"{len(result.blocked):,} blocked, {len(result.unfinished):,} unfinished; "
        f"charged {money(tally.charged, currency)}.")
    if tally.holds:
        lines.append(
            f"Reserved: {money(tally.reserved, currency)} pre-charged for {len(tally.holds):,} "
            "task(s) still running; the next run polls them (the API refunds any that fail).")
    if result.done:
        lines.append(f"Images are in {outputs}")
    return "\n".join(lines) + "\n"


def run_note(note: RunNote) -> str:
    """A run's note as the lines that tell it."""
    if isinstance(note, ShardNote):
        return shard_note(note.lock.shard, note.lock.path, note.lock.main) + "\n"
    if isinstance(note, MovesApplied):
        return moves_done(note.moves)
    if isinstance(note, NothingToDo):
        return "Nothing to do.\n"
    return note.text + "\n"
