"""The naive client the running benchmarks compare imgspec against (run by hand, not a test).

What anyone would write in an afternoon: an asyncio script that, for each of N
prompts, with at most C in flight, submits a task, polls it every 2 s until it
completes, then downloads its images to files. No journal, no lockfile, no
retries, no image checks: the yardstick imgspec must never fall behind.

    python bench/naive_client.py --base-url URL --api-key KEY [--instances 1000]
                                 [--concurrency 100] [--out DIR]

Prints one JSON line: instances done, wall seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

POLL_EVERY = 2.0  # seconds: the interval a naive script picks


async def one(session: aiohttp.ClientSession, base: str, index: int, out: Path,
              slots: asyncio.Semaphore) -> None:
    """Submit, poll every 2 s, download: one instance."""
    body = {"model": "wan2.7-image", "prompt": f"Product shot number {index}", "size": "1K"}
    async with slots:
        async with session.post(f"{base}/v1/images/generations", json=body) as response:
            response.raise_for_status()
            task_id = (await response.json())["data"][0]["task_id"]
        while True:
            await asyncio.sleep(POLL_EVERY)
            async with session.get(f"{base}/v1/tasks/{task_id}?language=en") as response:
                response.raise_for_status()
                data = (await response.json())["data"]
            if data["status"] == "completed":
                break
            if data["status"] in ("failed", "cancelled"):
                raise RuntimeError(f"task {task_id} {data['status']}")
    for number, image in enumerate(data["result"]["images"]):
        url = image["url"][0] if isinstance(image["url"], list) else image["url"]
        async with session.get(url) as response:
            response.raise_for_status()
            (out / f"{index}-{number}.png").write_bytes(await response.read())


async def main_async(args: argparse.Namespace, out: Path) -> int:
    """Run every instance; the number done."""
    slots = asyncio.Semaphore(args.concurrency)
    headers = {"Authorization": f"Bearer {args.api_key}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        await asyncio.gather(*(one(session, args.base_url, i, out, slots)
                               for i in range(args.instances)))
    done: int = args.instances
    return done


def main() -> None:
    """Parse the options, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        done = asyncio.run(main_async(args, out))
    json.dump({"done": done, "wall_s": round(time.perf_counter() - started, 3)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
