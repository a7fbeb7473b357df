"""What a run tells the world: its events as they happen, its notes, tally and result.

``EventKind`` and ``StopReason`` are the outcomes as types; ``RunEvent`` is the
typed data a reporter (``views.progress``) turns into words; ``RunResult`` is
what ``run.outcome_error`` maps to an exit code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from pipeline.core.planning.pacing import Bound
from pipeline.errors import ApiError

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.core.lock.moves import Moved
    from pipeline.core.planning.plan import Plan
    from pipeline.operations.shards import ShardLock


class EventKind(StrEnum):
    """What happened, in a ``RunEvent``."""

    SUBMITTED = "submitted"  # the API accepted a new task
    RESUMED = "resumed"  # a task an earlier run submitted is polled again
    RETRY = "retry"  # a request failed for now and is retried after a wait
    DONE = "done"  # every image is on disk and recorded
    FAILED = "failed"  # this attempt failed; --only-failed retries it
    BLOCKED = "blocked"  # an upstream did not finish, so this cannot start
    UNFINISHED = "unfinished"  # left for the next run (timeout, unknown outcome)
    STOPPING = "stopping"  # the run stops early (auth, balance, budget, Ctrl-C)
    WARNING = "warning"  # the run goes on, but something in its inputs deserves a look


TERMINAL_EVENTS = frozenset({EventKind.DONE, EventKind.FAILED, EventKind.BLOCKED,
                             EventKind.UNFINISHED})


class StopReason(StrEnum):
    """Why a run stopped before doing all of its plan."""

    AUTH = "auth"  # the API refused the key (401/403)
    BALANCE = "balance"  # the account ran out of money (402)
    BUDGET = "budget"  # the next submission would have passed the budget
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM
    UNREACHABLE = "unreachable"  # no connection to the API could be made


@dataclass(frozen=True, slots=True)
class RunEvent:
    """Something happened to one instance (or to the run, when ``key`` is None)."""

    kind: EventKind
    key: str | None
    message: str
    done: int
    failed: int
    in_flight: int  # tasks at the API not yet seen to finish: never above the concurrency
    total: int
    charged: Decimal  # see ``Tally``
    reserved: Decimal
    # The bound holding the run back as this happened (None: none): --max-rate, the
    # API's rate limit (429s) or --concurrency.
    limited_by: Bound | None = None


@dataclass
class Tally:
    """What the progress display reads: the tasks at the API now, and the money they hold.

    The API pre-charges a task's images when it is submitted and refunds a task
    that fails. ``charged`` is what this run's finished tasks cost; ``reserved``
    is the pre-charge of this run's tasks not yet seen to finish, which becomes
    charged or is refunded. A task an earlier run submitted is in flight but
    holds none of this run's money.
    """

    flying: set[str] = field(default_factory=set)
    holds: dict[str, Decimal] = field(default_factory=dict)
    charged: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)

    @property
    def in_flight(self) -> int:
        """Tasks at the API that the run is watching."""
        return len(self.flying)

    def took_off(self, key: str, cost: Decimal | None = None) -> None:
        """``key``'s task is at the API; ``cost``: what this run's submission pre-charged."""
        self.flying.add(key)
        if cost is not None:
            self.holds[key] = cost
            self.reserved += cost

    def landed(self, key: str) -> None:
        """The run stopped watching ``key``'s task (finished, or left to the next run)."""
        self.flying.discard(key)

    def settle(self, key: str, *, refunded: bool) -> None:
        """``key``'s task finished: its pre-charge is now charged, or was refunded."""
        amount = self.holds.pop(key, Decimal(0))
        self.reserved -= amount
        if not refunded:
            self.charged += amount


@dataclass
class RunResult:
    """What a run achieved; ``stopped`` names why it stopped early, if it did."""

    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    unfinished: list[tuple[str, str]] = field(default_factory=list)
    # Failed because an input was not the file the plan hashed: a new plan prices
    # them (as changed or new), so ``--only-failed`` would not select them.
    replan: list[str] = field(default_factory=list)
    spent: Decimal = Decimal(0)
    stopped: StopReason | None = None
    fatal: ApiError | None = None
    tally: Tally = field(default_factory=Tally)
    # The plan the run carried out (narrowed to its selection), and where its images are.
    plan: Plan | None = None
    outputs: Path | str | None = None  # a folder, or a store's URL

    @property
    def complete(self) -> bool:
        """Every instance of the plan is done."""
        return not (self.failed or self.blocked or self.unfinished or self.stopped)


@dataclass(frozen=True, slots=True)
class ShardNote:
    """A shard run records into its own lockfile, starting from the manifest's."""

    lock: ShardLock


@dataclass(frozen=True, slots=True)
class MovesApplied:
    """The manifest's ``moved:`` were applied to the lockfile and the files."""

    moves: tuple[Moved, ...]


@dataclass(frozen=True, slots=True)
class NothingToDo:
    """The plan has no work: the index was rewritten, nothing was submitted."""


@dataclass(frozen=True, slots=True)
class BalanceNote:
    """The balance was not compared with the plan, and why."""

    text: str


RunNote = ShardNote | MovesApplied | NothingToDo | BalanceNote
