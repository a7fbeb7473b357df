"""Benchmark: client CPU per API request, httpx's own pool against httpx over aiohttp.

Run by hand (not a test):  python bench/client_overhead.py [--requests 3000]
                                                              [--concurrency 100]

Polls one simulator task (a subprocess, as the real API would be elsewhere)
with ``concurrency`` requests in flight and reports this process's CPU time per
request and the request rate, for each transport under the same httpx client
API. This is the measurement behind imgspec's choice of httpx-aiohttp: with 100
requests in flight, httpcore's pool scans (and probes) every connection on each
request.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

import httpx
from httpx_aiohttp import AiohttpTransport

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import KEY, free_port, start_simulator


def cpu_seconds() -> float:
    """This process's user + system CPU time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(client: httpx.AsyncClient, base: str, requests: int,
                  concurrency: int) -> tuple[float, float]:
    """(CPU ms per request, requests per second) polling one task."""
    auth = {"Authorization": f"Bearer {KEY}"}
    reply = await client.post(f"{base}/v1/images/generations", headers=auth,
                              json={"model": "wan2.7-image", "prompt": "x", "size": "1K"})
    url = f"{base}/v1/tasks/{reply.json()['data'][0]['task_id']}?language=en"
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            (await client.get(url, headers=auth)).raise_for_status()

    await asyncio.gather(*(one() for _ in range(min(200, requests))))  # warm the pool
    cpu, wall = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(requests)))
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    return 1000 * cpu / requests, requests / wall


async def compare(base: str, requests: int, concurrency: int) -> None:
    """Print the figures for each transport."""
    limits = httpx.Limits(max_connections=2 * concurrency,
                          max_keepalive_connections=2 * concurrency)
    transports: dict[str, httpx.AsyncBaseTransport] = {
        "httpx (httpcore pool)": httpx.AsyncHTTPTransport(limits=limits),
        "httpx over aiohttp": AiohttpTransport(limits=limits),
    }
    for name, transport in transports.items():
        async with httpx.AsyncClient(transport=transport) as client:
            per_request, rate = await measure(client, base, requests, concurrency)
        print(f"{name:24s} {per_request:6.3f} ms CPU/request  {rate:7.0f} requests/s")


def main() -> None:
    """Start the simulator, measure both transports, stop the simulator."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    port = free_port()
    sim = start_simulator(port, 1.0)
    try:
        asyncio.run(compare(f"http://127.0.0.1:{port}", args.requests, args.concurrency))
    finally:
        sim.terminate()
        sim.wait(timeout=10)


if __name__ == "__main__":
    main()
