"""Fault injection: which faults exist, how a spec string names them, and the seeded dice.

Every fault kind has its own ``random.Random`` seeded from the simulator seed
and the kind's name, and every configured kind of a stage is drawn once per
eligible request. So the decisions of one kind depend only on the seed and on
how many requests of its stage came before, never on the other kinds' rates:
a run is reproducible for a given seed and sequence of requests.
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from pipeline.errors import UsageError

# Fixed order: within a stage, the first kind that fires wins.
FAULT_KINDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "submit.429": "POST answered 429 with Retry-After; no task created",
        "submit.5xx": "POST answered 502/503/504; no task created",
        "submit.reset": "connection reset (TCP RST) after the body is read; no task created",
        "submit.lost_reply": "task created and charged, then the connection is closed "
        "with no reply (retry with the same Idempotency-Key to get it)",
        "poll.429": "task poll answered 429 with Retry-After",
        "poll.5xx": "task poll answered 502/503/504",
        "poll.malformed": "task poll answered 200 with truncated, unparseable JSON",
        "poll.bad_url": "a completed task's poll reply gives file:// and gopher:// image "
        "URLs (alternately) instead of its http ones",
        "task.fail": "task ends failed after its latency; its charge is refunded",
        "task.stuck": "task stays processing for stuck_factor x its latency, then completes",
        "download.truncate": "image sent with its full Content-Length, then the connection "
        "is closed halfway through the body",
        "download.5xx": "image download answered 502/503/504",
        "download.expired": "image download answered 410 as if its URL had expired",
        "download.drip": "image sent with its full Content-Length at 1 byte per second, "
        "for up to a minute, then the connection is closed",
        "upload.5xx": "image upload answered 502/503/504; nothing stored",
        "upload.reset": "connection reset (TCP RST) after the upload is read; nothing stored",
        "upload.lost_reply": "image stored (and counted), then the connection is closed "
        "with no reply",
    }
)

STAGES: Final[tuple[str, ...]] = ("submit", "poll", "task", "download", "upload")

_HELP_WIDTH: Final = 78


def _help() -> str:
    intro = textwrap.fill(
        "Faults are injected by rate with --faults, a comma-separated list of NAME=RATE "
        "(RATE from 0 to 1), e.g. 'submit.429=0.1,poll.5xx=0.05,task.fail=0.05'. "
        "Each kind draws from its own generator seeded by --seed, so the same seed and "
        "the same sequence of requests give the same faults. Kinds:",
        _HELP_WIDTH,
    )
    kinds = [
        textwrap.fill(
            text,
            _HELP_WIDTH,
            initial_indent=f"  {name:<18} ",
            subsequent_indent=" " * 21,
        )
        for name, text in FAULT_KINDS.items()
    ]
    return "\n".join([intro, *kinds])


FAULTS_HELP: Final[str] = _help()
"""What --faults accepts: one text for the CLI help and the docs."""

# The 5xx the API's clients retry; a 500 (not retried) is not a "temporary" fault.
SERVER_ERROR_STATUSES: Final[tuple[int, ...]] = (502, 503, 504)


def _fault_names() -> str:
    return ", ".join(FAULT_KINDS)


def validate_faults(faults: Mapping[str, float]) -> dict[str, float]:
    """Check fault names and rates; returns a plain dict of the non-zero rates."""
    checked: dict[str, float] = {}
    for name, rate in faults.items():
        if name not in FAULT_KINDS:
            raise UsageError(f"unknown fault {name!r}: valid faults are {_fault_names()}")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise UsageError(f"fault {name} has rate {rate!r}: give a number from 0 to 1")
        if rate > 0:
            checked[name] = float(rate)
    return checked


def parse_faults(spec: str) -> dict[str, float]:
    """Parse ``NAME=RATE,...`` into a mapping; UsageError (listing valid names) if malformed.

    An empty spec, or ``none``, means no faults.
    """
    text = spec.strip()
    if not text or text.lower() == "none":
        return {}
    rates: dict[str, float] = {}
    for item in text.split(","):
        part = item.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq:
            raise UsageError(
                f"fault {part!r} has no rate: write NAME=RATE, e.g. submit.429=0.1; "
                f"valid faults are {_fault_names()}"
            )
        if name not in FAULT_KINDS:
            raise UsageError(f"unknown fault {name!r}: valid faults are {_fault_names()}")
        if name in rates:
            raise UsageError(f"fault {name} is given twice: keep one rate")
        try:
            rate = float(value.strip())
        except ValueError:
            raise UsageError(
                f"fault {name} has rate {value.strip()!r}: give a number from 0 to 1"
            ) from None
        rates[name] = rate
    return validate_faults(rates)


class FaultInjector:
    """Seeded, per-kind fault decisions, and a count of the faults injected.

    Not thread-safe: the simulator calls it only from its event loop.
    """

    def __init__(self, rates: Mapping[str, float], seed: int) -> None:
        self._rates = validate_faults(rates)
        self._rngs = {name: random.Random(f"{seed}:fault:{name}") for name in self._rates}
        self._status_rng = random.Random(f"{seed}:fault-status")
        self.injected: dict[str, int] = dict.fromkeys(FAULT_KINDS, 0)
        self._by_stage = {
            stage: [name for name in FAULT_KINDS if name.startswith(stage + ".")]
            for stage in STAGES
        }

    def draw(self, stage: str) -> str | None:
        """The fault drawn for this request of ``stage``, or None; see :meth:`record`."""
        fired: str | None = None
        for name in self._by_stage[stage]:
            rate = self._rates.get(name)
            if rate is None:
                continue
            # Always draw, so each kind's sequence is independent of the others' outcomes.
            hit = self._rngs[name].random() < rate
            if hit and fired is None:
                fired = name
        return fired

    def record(self, name: str) -> None:
        """Count a drawn fault as injected (a drawn fault may not apply, e.g. to a 400)."""
        self.injected[name] += 1

    def server_error_status(self) -> int:
        """Which 5xx to send: varied, but reproducibly."""
        return self._status_rng.choice(SERVER_ERROR_STATUSES)
