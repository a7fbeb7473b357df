"""The simulator's configuration and its injectable clock."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Literal, get_args

from pipeline.core.apimart.prices import DEFAULT_PRICE_TABLE, PriceTable
from pipeline.errors import UsageError
from pipeline.simulator.faults import validate_faults

Envelope = Literal["requested", "legacy", "versioned"]
"""Which reply envelope the simulator answers in (see ``SimulatorConfig.envelope``)."""

Clock = Callable[[], float]
"""Returns the current time as Unix seconds (``time.time`` in real use)."""

LatencyShape = Literal["uniform", "log-uniform"]
LATENCY_SHAPES: tuple[LatencyShape, ...] = ("uniform", "log-uniform")


class ManualClock:
    """A clock that moves only when told to: lets tests skip a task's latency instantly.

    Safe to advance from a test thread while the simulator's thread reads it.
    """

    def __init__(self, start: float = 1_763_088_289.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new time."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        with self._lock:
            self._now += seconds
            return self._now


def parse_latency(text: str) -> tuple[float, float]:
    """``"S"`` (fixed seconds) or ``"A..B"`` (sampled uniformly) as ``(min, max)``."""
    low_text, dots, high_text = text.strip().partition("..")
    try:
        low = float(low_text)
        high = float(high_text) if dots else low
    except ValueError:
        raise UsageError(
            f"latency {text!r} is not S or A..B seconds: write e.g. 5 or 2..8"
        ) from None
    return _check_latency((low, high))


def _check_latency(latency: tuple[float, float]) -> tuple[float, float]:
    low, high = latency
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high < low:
        raise UsageError(
            f"latency {low}..{high} is not a range of seconds: give 0 <= A <= B, e.g. 2..8"
        )
    return (float(low), float(high))


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that shapes a simulator run. Invalid values raise UsageError."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port; read the real one from the running simulator
    api_key: str = "sim-key"
    latency: tuple[float, float] = (1.0, 3.0)  # seconds, sampled per task
    # How latencies spread over the range: "uniform", or "log-uniform" (many short
    # tasks and a long tail, as a wide real distribution looks).
    latency_shape: LatencyShape = "uniform"
    # Each task's estimated_time is ceil(latency x this): 1 an honest API, 3 one that
    # over-estimates threefold (APIMart's own example: estimate 60 s, actual 19 s).
    estimate_factor: float = 1.0
    url_ttl: float = 86_400.0  # seconds a result URL lives after it is handed out
    faults: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    stuck_factor: float = 20.0
    clock: Clock = time.time
    retry_after: int = 1  # seconds, sent in Retry-After with every 429
    balance: Decimal | None = None  # pre-charges beyond this answer 402; None: unlimited
    prices: PriceTable = DEFAULT_PRICE_TABLE
    # The simulated API's memory (tasks, Idempotency-Keys, ledger) across processes;
    # None: it lives and dies with this simulator.
    state: Path | None = None
    # A finished task is forgotten this long after its first result URLs expired.
    task_retention: float = 7 * 86_400.0
    # Which reply envelope: "requested" (the versioned one when the request sends
    # X-APIMart-Response-Version, as the API does), "legacy" or "versioned" always.
    envelope: Envelope = "requested"
    # False: generation requests with base64 data URIs are refused (400), as the upload
    # page says; True: accepted, as the wan2.7 page says. Both readings can be tested.
    accept_data_uris: bool = True
    upload_ttl: float = 72 * 3600.0  # seconds an uploaded image's URL lives

    def __post_init__(self) -> None:
        object.__setattr__(self, "latency", _check_latency(self.latency))
        object.__setattr__(self, "faults", MappingProxyType(validate_faults(self.faults)))
        if self.latency_shape not in LATENCY_SHAPES:
            raise UsageError(f"latency shape {self.latency_shape!r} is not one of "
                             f"{', '.join(LATENCY_SHAPES)}")
        if not (math.isfinite(self.estimate_factor) and self.estimate_factor > 0):
            raise UsageError(f"estimate_factor {self.estimate_factor} must be a positive number")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"port {self.port} is outside 0-65535 (0 picks a free port)")
        if not self.api_key:
            raise UsageError("the API key is empty: give one with --api-key")
        if not (math.isfinite(self.url_ttl) and self.url_ttl > 0):
            raise UsageError(f"url_ttl {self.url_ttl} must be a positive number of seconds")
        if not (math.isfinite(self.stuck_factor) and self.stuck_factor >= 1):
            raise UsageError(f"stuck_factor {self.stuck_factor} must be 1 or more")
        if self.retry_after < 0:
            raise UsageError(f"retry_after {self.retry_after} must be 0 or more seconds")
        if self.balance is not None and not (self.balance.is_finite() and self.balance >= 0):
            raise UsageError(f"balance {self.balance} must be 0 or more")
        if not (math.isfinite(self.upload_ttl) and self.upload_ttl > 0):
            raise UsageError(f"upload_ttl {self.upload_ttl} must be a positive number of seconds")
        if self.envelope not in get_args(Envelope):
            raise UsageError(f"envelope {self.envelope!r} is not one of "
                             f"{', '.join(get_args(Envelope))}")
        if not (math.isfinite(self.task_retention) and self.task_retention >= 0):
            raise UsageError(f"task_retention {self.task_retention} must be 0 or more seconds")


SIMULATE_LATENCY_ENV = "IMGSPEC_SIMULATE_LATENCY"
"""Task latency (``S`` or ``A..B`` seconds) of the simulator ``run --simulate`` starts."""


def simulate_state_path(lock_path: Path) -> Path:
    """``shop.simulate.lock.json`` → ``shop.simulate.api.jsonl``: the simulated API's memory."""
    name = lock_path.name
    stem = name[: -len(".lock.json")] if name.endswith(".lock.json") else name
    return lock_path.with_name(f"{stem}.api.jsonl")


def for_simulate_run(lock_path: Path,
                     environ: Mapping[str, str] = os.environ) -> SimulatorConfig:
    """The simulator of ``imgspec run --simulate``: state beside the run's lockfile.

    So an interrupted demo resumes as it would against the real API.
    ``IMGSPEC_SIMULATE_LATENCY`` sets the task latency (default 1..3 s).
    """
    latency = environ.get(SIMULATE_LATENCY_ENV, "").strip()
    try:
        chosen = parse_latency(latency) if latency else SimulatorConfig.latency
    except UsageError as err:
        raise UsageError(f"{SIMULATE_LATENCY_ENV}: {err}") from err
    return SimulatorConfig(state=simulate_state_path(lock_path), latency=chosen)
