"""Benchmark: client CPU per API request, imgspec's ApiClient against the ways around it.

Run by hand (not a test):  python bench/client_overhead.py [--requests 3000]
                                  [--concurrency 100] [--client-only] [--rounds 1]

Polls one simulator task (a subprocess, as the real API would be elsewhere)
with ``concurrency`` requests in flight and reports this process's CPU time per
request and the request rate, for:

- aiohttp alone (``session.get`` and ``read``): the floor;
- aiohttp with ``trust_env=True``: what aiohttp's own proxy and netrc lookups cost
  (two worker-thread trips per request), which ApiClient does once per host instead;
- httpx over aiohttp (httpx-aiohttp's transport): how ApiClient sent its requests
  before; shown only when httpx-aiohttp is installed (it is no longer a dependency);
- ``ApiClient.poll``: the floor plus imgspec's own work (rate gates, retries'
  first attempt, parsing the reply into a TaskState);
- ``ApiClient.upload_image``: a small PNG uploaded as a multipart form;
- ``ApiClient.download``: one result image streamed, fsynced and checked (redirect
  handling, rate watch and worker-thread writes included), into /dev/shm when it
  exists, so that the disk's fsync time does not swamp the client's CPU.

``--client-only`` measures the three ApiClient rows alone, for comparing the
client of two checkouts in alternating runs (``--rounds`` repeats them).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import itertools
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from PIL import Image

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


async def floors(url: str, requests: int, concurrency: int) -> None:
    """Print the rows of the ways around ApiClient: aiohttp alone, with trust_env, httpx."""
    for trust_env in (False, True):
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, trust_env=trust_env) as session:

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


def small_png() -> bytes:
    """The image the upload rows send (a few hundred bytes)."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 120, 200)).save(out, format="PNG")
    return out.getvalue()


async def compare(base: str, requests: int, concurrency: int, *, client_only: bool,
                  rounds: int) -> None:
    """Print the figures for each way of polling, then ApiClient's upload and download."""
    async with ApiClient(base_url=base, api_key=KEY) as api:
        task_id = (await api.submit({"model": "wan2.7-image", "prompt": "x", "size": "1K"},
                                    idempotency_key="bench-overhead")).task_id
        state = await api.poll(task_id)
        while not state.finished:
            await asyncio.sleep(0.2)
            state = await api.poll(task_id)
        image_url = state.images[0].url
        if not client_only:
            await floors(f"{base}/v1/tasks/{task_id}?language=en", requests, concurrency)
        png = small_png()
        names = itertools.count()
        # In memory where there is a tmpfs: an fsync to a disk shared with other work
        # adds system time that varies more than the client's own CPU.
        shm = Path("/dev/shm")
        with tempfile.TemporaryDirectory(prefix="imgspec-overhead-",
                                         dir=shm if shm.is_dir() else None) as folder:

            async def download() -> object:
                return await api.download(image_url, Path(folder) / f"{next(names)}.png")

            for _ in range(rounds):
                report("ApiClient.poll", await measure(lambda: api.poll(task_id), requests,
                                                       concurrency))
                report("ApiClient.upload_image", await measure(
                    lambda: api.upload_image(png, filename="in.png", content_type="image/png"),
                    requests, concurrency))
                report("ApiClient.download", await measure(download, requests, concurrency))


def main() -> None:
    """Start the simulator, measure each way, stop the simulator."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--client-only", action="store_true",
                        help="only the ApiClient rows (poll, upload, download)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the ApiClient rows")
    args = parser.parse_args()
    compile_bytecode()
    port = free_port()
    sim = start_simulator(port, 1.0)
    try:
        asyncio.run(compare(f"http://127.0.0.1:{port}", args.requests, args.concurrency,
                            client_only=args.client_only, rounds=args.rounds))
    finally:
        sim.terminate()
        sim.wait(timeout=10)


if __name__ == "__main__":
    main()
