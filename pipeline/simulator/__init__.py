"""A local stand-in for APIMart's wan2.7 image API, with seeded fault injection.

Python API::

    from pipeline.simulator import SimulatorConfig, run_in_thread

    with run_in_thread(SimulatorConfig(faults={"poll.5xx": 0.1}, seed=7)) as sim:
        ...  # talk HTTP to sim.base_url with key "sim-key"
        print(sim.ledger().cost_charged)

The click command is ``pipeline.simulator.cli.simulator``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.simulator.config import Clock, ManualClock, SimulatorConfig, parse_latency
from pipeline.simulator.faults import FAULT_KINDS, FAULTS_HELP, parse_faults

if TYPE_CHECKING:
    from pipeline.simulator.runner import RunningSimulator, run_in_thread, serve
    from pipeline.simulator.tasks import Ledger

# The server half pulls in aiohttp (~0.15 s); `imgspec validate` and `plan` register the
# simulator command without ever starting one, so it is imported on first use.
_LAZY = {"RunningSimulator": "runner", "run_in_thread": "runner", "serve": "runner",
         "Ledger": "tasks"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"pipeline.simulator.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'pipeline.simulator' has no attribute {name!r}")

__all__ = [
    "FAULTS_HELP",
    "FAULT_KINDS",
    "Clock",
    "Ledger",
    "ManualClock",
    "RunningSimulator",
    "SimulatorConfig",
    "parse_faults",
    "parse_latency",
    "run_in_thread",
    "serve",
]
