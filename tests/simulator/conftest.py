"""Fixtures: a simulator on a free loopback port with a manual clock, and a client for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from pipeline.simulator import ManualClock, RunningSimulator
from tests.simulator.simkit import AUTH, StartSim, simulators


@pytest.fixture
def clock() -> ManualClock:
    """A clock the test moves by hand, so tasks finish without sleeping."""
    return ManualClock()


@pytest.fixture
def start_sim(clock: ManualClock) -> Iterator[StartSim]:
    """Start simulators (latency 10 s on the manual clock unless overridden); stopped after."""
    with simulators(clock=clock, latency=(10.0, 10.0)) as start:
        yield start


@pytest.fixture
def sim(start_sim: StartSim) -> RunningSimulator:
    """A fault-free simulator."""
    return start_sim()


@pytest.fixture
def client(sim: RunningSimulator) -> Iterator[httpx.Client]:
    """An authorised client for ``sim``."""
    with httpx.Client(base_url=sim.base_url, headers=AUTH, timeout=10) as c:
        yield c


@pytest.fixture
def connect() -> Iterator[Callable[[RunningSimulator], httpx.Client]]:
    """Open authorised clients for other simulators; closed after the test."""
    clients: list[httpx.Client] = []

    def open_client(target: RunningSimulator) -> httpx.Client:
        c = httpx.Client(base_url=target.base_url, headers=AUTH, timeout=10)
        clients.append(c)
        return c

    yield open_client
    for c in clients:
        c.close()
