"""Benchmark: client CPU per API request, imgspec's ApiClient against the ways around it.

Run by hand (not a test):  python bench/client_overhead.py [--requests 3000]
                                                              [--concurrency 100]

Polls one simulator task (a subprocess, as the real API would be elsewhere)
with ``concurrency`` requests in flight and reports this process's CPU time per
request and the request rate, for:

- aiohttp alone (``session.get`` and ``read``): the floor;
- aiohttp with ``trust_env=True``: what aiohttp's own proxy and netrc lookups cost
  (two worker-thread trips per request), which ApiClient does once per host instead;
- httpx over aiohttp (httpx-aiohttp's transport): how ApiClient sent its requests
  before; shown only when httpx-aiohttp is installed (it is no longer a dependency);
- ``ApiClient.poll``: the floor plus imgspec's own work (rate gates, retries'
  first attempt, parsing the reply into a TaskState).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchkit import KEY, compile_bytecode, free_port, start_simulator

from pipeline.shell.http.client import ApiClient

AUTH = {"Authorization": f"Bearer {KEY}"}


def cpu_seconds() -> float:
    """This process's user + system CPU time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(poll: Callable[[], Awaitable[object]], requests: int,
                  concurrency: int) -> tuple[float, float]:
    """(CPU ms per request, requests per second) of ``requests`` calls of ``poll``."""
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            await poll()

    await asyncio.gather(*(one() for _ in range(min(200, requests))))  # warm the pool
    cpu, wall = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(requests)))
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    return 1000 * cpu / requests, requests / wall


def report(name: str, figures: tuple[float, float]) -> None:
    """Print one row."""
    per_request, rate = figures
    print(f"{name:28s} {per_request:6.3f} ms CPU/request  {rate:7.0f} requests/s")


async def compare(base: str, requests: int, concurrency: int) -> None:
    """Print the figures for each way of polling."""
    async with ApiClient(base_url=base, api_key=KEY) as api:
        task_id = (await api.submit({"model": "wan2.7-image", "prompt": "x", "size": "1K"},
                                    idempotency_key="bench-overhead")).task_id
        url = f"{base}/v1/tasks/{task_id}?language=en"
        for trust_env in (False, True):
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector,
                                             trust_env=trust_env) as session:

                async def get(session: aiohttp.ClientSession = session) -> bytes:
                    async with session.get(url, headers=AUTH) as response:
                        response.raise_for_status()
                        return await response.read()

                report(f"aiohttp{', trust_env=True' if trust_env else ''}",
                       await measure(get, requests, concurrency))
        try:
            transport = importlib.import_module("httpx_aiohttp").AiohttpTransport()
            httpx = importlib.import_module("httpx")
        except ImportError:
            print(f"{'httpx over aiohttp':28s} (httpx-aiohttp is not installed)")
        else:
            async with httpx.AsyncClient(transport=transport) as client:

                async def get_httpx() -> object:
                    return (await client.get(url, headers=AUTH)).raise_for_status()

                report("httpx over aiohttp", await measure(get_httpx, requests, concurrency))
        report("ApiClient.poll", await measure(lambda: api.poll(task_id), requests,
                                               concurrency))


def main() -> None:
    """Start the simulator, measure each way, stop the simulator."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    compile_bytecode()
    port = free_port()
    sim = start_simulator(port, 1.0)
    try:
        asyncio.run(compare(f"http://127.0.0.1:{port}", args.requests, args.concurrency))
    finally:
        sim.terminate()
        sim.wait(timeout=10)


if __name__ == "__main__":
    main()
