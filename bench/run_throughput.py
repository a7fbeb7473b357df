"""Benchmark: `imgspec run` of 1,000 instances at concurrency 100, simulator latency 1 s.

Run by hand (not a test):  python bench/run_throughput.py [--instances 1000]
                                                             [--concurrency 100] [--latency 1]

The simulator runs in its own process (as the real API would be elsewhere), so
this process's CPU time is the client's alone. Default flags (no rate cap unless
the API limits). Reports wall time against the
ideal ceil(N / concurrency) x latency, polls per task from the simulator's
ledger, and client CPU seconds per task. Targets: >= 90 % of ideal (wall <=
ideal / 0.9), <= 1.5 polls per task.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "bench-key"
MANIFEST = """\
version: 1
name: throughput
max_instances: {n}
defaults: {{model: wan2.7-image, size: 1K}}
jobs:
  shots:
    prompt: "Product shot number {{{{ i }}}}"
    matrix:
      i: {values}
"""


def free_port() -> int:
    """A free loopback port for the simulator."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_simulator(port: int, latency: float) -> subprocess.Popen[bytes]:
    """The simulator in a subprocess, waited for until it answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "simulator", "--port", str(port),
         "--latency", str(latency), "--api-key", KEY],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_sim/ledger", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the simulator did not start")


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--latency", type=float, default=1.0)
    args = parser.parse_args()

    from click.testing import CliRunner

    from pipeline.cli import cli

    port = free_port()
    sim = start_simulator(port, args.latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = Path(tmp) / "manifests" / "throughput.yaml"
            manifest.parent.mkdir()
            manifest.write_text(MANIFEST.format(
                n=args.instances, values=json.dumps(list(range(args.instances)))))
            os.environ["APIMART_API_KEY"] = KEY
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu_before = usage.ru_utime + usage.ru_stime
            started = time.perf_counter()
            result = CliRunner().invoke(cli, [
                "run", str(manifest), "--base-url", f"http://127.0.0.1:{port}", "--yes",
                "--concurrency", str(args.concurrency), "--json"])
            wall = time.perf_counter() - started
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = usage.ru_utime + usage.ru_stime - cpu_before
            if result.exit_code != 0:
                raise SystemExit(f"run failed ({result.exit_code}): {result.output[-2000:]}")
        ledger = httpx.get(f"http://127.0.0.1:{port}/_sim/ledger", timeout=5).json()
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    ideal = math.ceil(args.instances / args.concurrency) * args.latency
    figures = {
        "instances": args.instances,
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "wall_s": round(wall, 2),
        "ideal_s": ideal,
        "efficiency": round(ideal / wall, 3),
        "polls_per_task": round(ledger["polls"] / ledger["tasks_created"], 3),
        "client_cpu_s_per_task": round(cpu / args.instances, 5),
        "tasks_created": ledger["tasks_created"],
        "images_charged": ledger["images_charged"],
    }
    print(json.dumps(figures, indent=2))
    print(f"wall {wall:.2f} s vs ideal {ideal:.0f} s = {ideal / wall:.0%} of ideal "
          f"(target >= 90 %); {figures['polls_per_task']} polls/task (target <= 1.5); "
          f"{figures['client_cpu_s_per_task'] * 1000:.2f} ms client CPU/task")


if __name__ == "__main__":
    main()
