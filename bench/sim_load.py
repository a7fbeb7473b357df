"""Load benchmark for the simulator (run by hand, not a test).

Starts ``python -m pipeline.simulator`` in a subprocess on a free loopback port,
creates 500 tasks, then polls them as fast as a bounded pool of concurrent
aiohttp requests allows for about 10 s, and prints requests/s and latency
percentiles. Also times 4K PNG generation, in-process and over HTTP.

    python bench/sim_load.py [--tasks 500] [--seconds 10] [--concurrency 64] [--latency 1..3]

The client and the server share this machine's cores, so the figure is a floor
for the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.simulator.images import render_png  # noqa: E402 - needs ROOT on sys.path

AUTH = {"Authorization": "Bearer sim-key"}


def start_server(latency: str) -> tuple[subprocess.Popen[str], str]:
    """Start the simulator subprocess; returns it and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.simulator", "--port", "0", "--latency", latency],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(http://\S+)", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc, match[1]


async def create_tasks(session: aiohttp.ClientSession, base: str, count: int) -> list[str]:
    """Create ``count`` tasks, 50 at a time."""
    gate = asyncio.Semaphore(50)

    async def one(i: int) -> str:
        body = {"model": "wan2.7-image", "prompt": f"bench {i}", "size": "1K", "seed": i}
        async with gate, session.post(f"{base}/v1/images/generations", json=body) as response:
            reply = await response.json()
            return str(reply["data"][0]["task_id"])

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def hammer(
    session: aiohttp.ClientSession, base: str, tids: list[str], seconds: float, workers: int
) -> tuple[list[float], int]:
    """Poll round-robin from ``workers`` loops for ``seconds``; latencies and error count."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal errors
        i = offset
        while time.perf_counter() < deadline:
            tid = tids[i % len(tids)]
            i += workers
            started = time.perf_counter()
            async with session.get(f"{base}/v1/tasks/{tid}") as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker(k) for k in range(workers)))
    return latencies, errors


async def download_4k(session: aiohttp.ClientSession, base: str) -> tuple[float, float, int]:
    """Time a 4K task's first (rendering) and second (cached) download."""
    body = {"model": "wan2.7-image-pro", "prompt": "bench 4K", "size": "4K", "seed": 1}
    async with session.post(f"{base}/v1/images/generations", json=body) as response:
        tid = (await response.json())["data"][0]["task_id"]
    while True:
        async with session.get(f"{base}/v1/tasks/{tid}") as response:
            data = (await response.json())["data"]
        if data["status"] == "completed":
            break
        await asyncio.sleep(0.2)
    url = data["result"]["images"][0]["url"]
    url = url[0] if isinstance(url, list) else url
    timings = []
    size = 0
    for _ in range(2):
        started = time.perf_counter()
        async with session.get(url) as response:
            size = len(await response.read())
        timings.append(time.perf_counter() - started)
    return timings[0], timings[1], size


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(args: argparse.Namespace, base: str) -> None:
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(headers=AUTH, connector=connector) as session:
        started = time.perf_counter()
        tids = await create_tasks(session, base, args.tasks)
        print(f"created {len(tids)} tasks in {time.perf_counter() - started:.2f} s")
        latencies, errors = await hammer(session, base, tids, args.seconds, args.concurrency)
        rate = len(latencies) / args.seconds
        print(
            f"polls: {len(latencies)} in {args.seconds:.0f} s = {rate:.0f} req/s "
            f"(concurrency {args.concurrency}, {errors} non-200)"
        )
        print(
            f"poll latency: p50 {percentile(latencies, 0.5) * 1000:.2f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.2f} ms"
        )
        async with session.get(f"{base}/_sim/ledger") as response:
            ledger = await response.json()
        print(f"ledger: {ledger['tasks_created']} tasks, {ledger['polls']} polls")
        if float(args.latency.split("..")[-1]) > 10:
            print("4K download over HTTP: skipped (task latency over 10 s)")
            return
        first, second, size = await download_4k(session, base)
        print(
            f"4K download over HTTP: first {first * 1000:.0f} ms (renders), "
            f"cached {second * 1000:.0f} ms, {size} bytes"
        )


def time_4k_render() -> None:
    """Median of 5 in-process 4096x4096 renders."""
    timings = []
    for i in range(5):
        key = hashlib.sha256(str(i).encode()).digest()
        started = time.perf_counter()
        data = render_png(4096, 4096, key)
        timings.append(time.perf_counter() - started)
    print(
        f"4K PNG render (in-process): median {statistics.median(timings) * 1000:.0f} ms, "
        f"max {max(timings) * 1000:.0f} ms, {len(data)} bytes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--latency",
        default="1..3",
        help="simulator task latency; e.g. 60 keeps every task processing (uncached replies)",
    )
    args = parser.parse_args()
    time_4k_render()
    proc, base = start_server(args.latency)
    print(f"simulator at {base}")
    try:
        asyncio.run(run(args, base))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
