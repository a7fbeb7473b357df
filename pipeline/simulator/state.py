"""The simulator's memory on disk: an append-only log of tasks and ledger counters.

A simulator given a state file (``run --simulate`` always gives one) outlives
its process the way the real API does: a second process sees the same tasks
(their lifecycle continuing by wall-clock time), replays the same
Idempotency-Keys without charging, and keeps the ledger cumulative.

The file is JSON Lines:

- ``meta``: the first line; the format version and the seed (result URLs are
  signed with it, so another seed could not honour the URLs handed out).
- ``base``: after a compaction, the totals of the tasks dropped from the log.
- ``task``: one per task created, written *before* the reply that announces it,
  with the request counters at that moment.
- ``counters``: the request counters (polls, downloads, faults, ...), at most
  once a second while they change, and when the simulator stops.

Only the money is exact after a SIGKILL (it follows from the task lines); the
request counters may miss the last second. Loading replays the log; finished
tasks past their retention are left out, and the file is rewritten (compacted)
when most of it is dead weight. One simulator uses a file at a time (``flock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from pipeline.errors import UsageError
from pipeline.shell.store.files import write_all

FORMAT: Final = "imgspec-simulator-state"
VERSION: Final = 1
COUNTER_NAMES: Final[tuple[str, ...]] = (
    "submissions", "rejected", "replays", "polls", "downloads", "downloads_ok", "uploads",
)
# Compact when the log holds this many dead lines and more dead than live ones.
_COMPACT_MIN_DEAD: Final = 1024


@dataclass
class Totals:
    """Ledger totals of tasks no longer in the log, plus the request counters."""

    tasks_created: int = 0
    tasks_failed: int = 0
    images_charged: int = 0
    cost_charged: Decimal = Decimal("0.00")
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_NAMES, 0))
    faults: dict[str, int] = field(default_factory=dict)


@dataclass
class Loaded:
    """What a state file held: dropped-task totals, counters, and the task records."""

    totals: Totals
    tasks: list[dict[str, Any]]
    dead_lines: int  # lines a compaction would drop or merge


class StateLog:
    """An open, locked state file that records are appended to.

    Each record is one ``write`` of a whole line to an ``O_APPEND`` descriptor.
    No fsync: the page cache survives the death of the process (SIGKILL
    included), which is all a simulator has to outlive; a power cut may lose
    the last records, like any cache.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def open(cls, path: Path, *, seed: int) -> tuple[StateLog, Loaded]:
        """Open (creating) and lock ``path``; the records it holds. UsageError if unusable."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as err:
            raise UsageError(f"{path}: cannot open the simulator's state file: "
                             f"{err.strerror}; check the folder's permissions") from err
        try:
            _lock(fd, path)
            text = _read_whole(fd, path)
            if not text:
                write_all(fd, _line({"k": "meta", "format": FORMAT, "version": VERSION,
                                  "seed": seed}))
                return cls(path, fd), Loaded(Totals(), [], 0)
            loaded = _parse(path, text, seed=seed)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd), loaded

    def append(self, record: Mapping[str, object]) -> None:
        """Append one record (one line, one write); OSError if the disk refuses it."""
        write_all(self._fd, _line(record))

    def rewrite(self, *, seed: int, totals: Totals, tasks: list[Mapping[str, object]]) -> None:
        """Replace the file by a compact one: ``meta``, ``base`` and the live tasks."""
        temp = self.path.with_name(self.path.name + ".compact")
        lines = [_line({"k": "meta", "format": FORMAT, "version": VERSION, "seed": seed}),
                 _line(totals_record(totals)), *(_line(t) for t in tasks)]
        with temp.open("wb") as out:
            out.write(b"".join(lines))
            out.flush()
            os.fsync(out.fileno())  # the rename must not publish a file still in flight
        new_fd = os.open(temp, os.O_RDWR | os.O_APPEND)
        try:
            _lock(new_fd, self.path)
            temp.replace(self.path)
        except BaseException:
            os.close(new_fd)
            raise
        os.close(self._fd)
        self._fd = new_fd

    def close(self) -> None:
        """Close the file (releasing its lock). Calling it twice is harmless."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def totals_record(totals: Totals) -> dict[str, object]:
    """The ``base`` record of ``totals``."""
    return {"k": "base", "tasks_created": totals.tasks_created,
            "tasks_failed": totals.tasks_failed, "images_charged": totals.images_charged,
            "cost_charged": str(totals.cost_charged),
            "c": counters_record(totals.counters, totals.faults)}


def counters_record(counters: Mapping[str, int], faults: Mapping[str, int]) -> dict[str, object]:
    """The request counters as stored in ``c`` (faults only where non-zero)."""
    return {**counters, "faults": {k: v for k, v in faults.items() if v}}


def _line(record: Mapping[str, object]) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


def _lock(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UsageError(f"{path}: another simulator is using this state file; stop it "
                         "first, or give this one another file") from None


def _read_whole(fd: int, path: Path) -> str:
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0) if size else b""
    end = data.rfind(b"\n") + 1
    if end < len(data):
        # A record cut short (the disk filled up, the machine lost power): it was never
        # acknowledged to a client, so it is dropped, and the next append starts clean.
        os.truncate(fd, end)
        data = data[:end]
    try:
        return data.decode()
    except UnicodeDecodeError as err:
        raise _corrupt(path, 0, "it is not UTF-8 text") from err


def _corrupt(path: Path, line: int, what: str) -> UsageError:
    where = f"{path}:{line}" if line else str(path)
    return UsageError(f"{where}: the simulator's state file is damaged ({what}); delete it "
                      "to start the simulated account afresh")


def _records(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as err:
            raise _corrupt(path, number, "a line is not JSON") from err
        if not isinstance(record, dict) or not isinstance(record.get("k"), str):
            raise _corrupt(path, number, "a line is not a record")
        yield number, record


def _parse(path: Path, text: str, *, seed: int) -> Loaded:
    totals = Totals()
    tasks: list[dict[str, Any]] = []
    dead = 0
    seen_meta = False
    for number, record in _records(path, text):
        kind = record["k"]
        try:
            if kind == "meta":
                if record.get("format") != FORMAT or record.get("version") != VERSION:
                    raise _corrupt(path, number, "not an imgspec simulator state file "
                                   f"of version {VERSION}")
                if record.get("seed") != seed:
                    raise UsageError(
                        f"{path}: this state was made by a simulator with seed "
                        f"{record.get('seed')!r}, whose result URLs another seed cannot "
                        f"honour: use --seed {record.get('seed')!r}, or delete the file")
                seen_meta = True
                continue
            if not seen_meta:
                raise _corrupt(path, number, "it does not start with its meta record")
            if kind == "base":
                totals.tasks_created = int(record["tasks_created"])
                totals.tasks_failed = int(record["tasks_failed"])
                totals.images_charged = int(record["images_charged"])
                totals.cost_charged = Decimal(str(record["cost_charged"]))
            elif kind == "task":
                tasks.append(record)
            elif kind == "counters":
                dead += 1
            else:
                raise _corrupt(path, number, f"unknown record kind {kind!r}")
            if "c" in record:
                _counters_from(record["c"], totals)
        except (KeyError, TypeError, ValueError, InvalidOperation) as err:
            raise _corrupt(path, number, f"a {kind} record is incomplete") from err
    return Loaded(totals, tasks, dead)


def _counters_from(data: object, totals: Totals) -> None:
    if not isinstance(data, dict):
        raise TypeError("counters are not an object")
    totals.counters = {name: int(data.get(name, 0)) for name in COUNTER_NAMES}
    faults = data.get("faults", {})
    if not isinstance(faults, dict):
        raise TypeError("fault counts are not an object")
    totals.faults = {str(k): int(v) for k, v in faults.items()}


def compact_due(loaded: Loaded, dropped: int) -> bool:
    """Whether rewriting pays: many dead lines (dropped tasks, old counters), most of the file."""
    dead = loaded.dead_lines + dropped
    return dead >= _COMPACT_MIN_DEAD and dead > len(loaded.tasks) - dropped


@contextlib.contextmanager
def suppressed_disk_errors() -> Iterator[None]:
    """For best-effort records (counters): a full disk must not fail a poll."""
    with contextlib.suppress(OSError):
        yield
