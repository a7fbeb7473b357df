"""Helpers for talking to the simulator over real HTTP in tests."""

from __future__ import annotations

import base64
import contextlib
import io
import math
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from pipeline.simulator import RunningSimulator, SimulatorConfig, run_in_thread

KEY = "sim-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SUBMIT = "/v1/images/generations"

PRO = "wan2.7-image-pro"
STD = "wan2.7-image"

StartSim = Callable[..., RunningSimulator]


@contextlib.contextmanager
def simulators(**defaults: Any) -> Iterator[StartSim]:
    """A starter of simulators (``defaults`` overridable per call), all stopped on exit."""
    started: list[RunningSimulator] = []

    def start(**overrides: Any) -> RunningSimulator:
        sim = run_in_thread(SimulatorConfig(**{**defaults, **overrides}))
        started.append(sim)
        return sim

    try:
        yield start
    finally:
        for sim in started:
            sim.stop()


def loopback_fixtures(*, seed: int, api_key: str) -> tuple[Any, Any]:
    """The ``start_sim`` and ``sim`` fixtures of a test folder: simulators on free loopback
    ports with fast tasks (``start_sim(**overrides)``), and one fault-free simulator."""

    @pytest.fixture(name="start_sim")
    def start_sim_fixture() -> Iterator[StartSim]:
        """Start simulators on free loopback ports (fast tasks unless overridden)."""
        with simulators(latency=(0.05, 0.2), seed=seed, api_key=api_key) as start:
            yield start

    @pytest.fixture(name="sim")
    def sim_fixture(start_sim: StartSim) -> RunningSimulator:
        """A fault-free simulator."""
        return start_sim()

    return start_sim_fixture, sim_fixture


def images_charged(sim: RunningSimulator) -> int:
    """Images the simulator has charged for so far, from its ledger over HTTP."""
    ledger: dict[str, Any] = httpx.get(f"{sim.base_url}/_sim/ledger").json()
    return int(ledger["images_charged"])


def body(**fields: object) -> dict[str, object]:
    """A valid pro text-to-image body with ``fields`` merged in."""
    return {"model": PRO, "prompt": "a flower shop", **fields}


def submit(client: httpx.Client, payload: object, key: str | None = None) -> httpx.Response:
    """POST a body (optionally under an Idempotency-Key)."""
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(SUBMIT, json=payload, headers=headers)


def task_id(response: httpx.Response) -> str:
    """The task id of an accepted submission, checking the reply's documented shape."""
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["code"] in (200, "success")
    (entry,) = reply["data"]
    assert entry["status"] in ("pending", "processing")
    return str(entry["task_id"])


def create(client: httpx.Client, **fields: object) -> str:
    """Submit a valid body and return its task id."""
    return task_id(submit(client, body(**fields)))


def poll(client: httpx.Client, tid: str) -> dict[str, Any]:
    """The ``data`` object of a successful poll."""
    response = client.get(f"/v1/tasks/{tid}")
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["code"] in (200, "success")
    data: dict[str, Any] = reply["data"]
    return data


def image_url(image: dict[str, Any]) -> str:
    """An image entry's URL, whether the reply gave a string or a list."""
    url = image["url"]
    if isinstance(url, list):
        assert len(url) == 1
        url = url[0]
    assert isinstance(url, str)
    return url


def result_urls(client: httpx.Client, tid: str) -> list[str]:
    """The URLs of a completed task."""
    data = poll(client, tid)
    assert data["status"] == "completed", data
    return [image_url(image) for image in data["result"]["images"]]


def png_size(data: bytes) -> tuple[int, int]:
    """Decode a PNG fully and return its size."""
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def data_uri(width: int, height: int, fmt: str = "PNG") -> str:
    """A data URI of a real image of the given size."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 160)).save(out, format=fmt)
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64," + base64.b64encode(out.getvalue()).decode()


def within_binomial(hits: int, trials: int, rate: float, sigmas: float = 5.0) -> bool:
    """Whether ``hits`` is within ``sigmas`` standard deviations of ``trials * rate``."""
    spread = sigmas * math.sqrt(trials * rate * (1 - rate))
    return abs(hits - trials * rate) <= spread
