"""Benchmark: `imgspec run` against the ideal and against a naive script, same simulator, same run.

Run by hand (not a test):

    python bench/run_vs_naive.py SCENARIO [--runs 3]

Scenarios (all with imgspec's DEFAULT flags but --concurrency; simulator seed 0):

    default       1,000 tasks @100 in flight, latency 1 s, honest estimates
    overestimate  the same, estimated_time 3x the real latency (APIMart's own example)
    varied        the same, latency 1..3 s (uniform), honest whole-second estimates
    wide          the same, latency 0.5..8 s log-uniform, estimates 3x (a wide distribution)
    large         10,000 tasks @1,000 in flight, latency 5 s

Each run starts a fresh simulator (a subprocess, as the real API would be
elsewhere) for imgspec, then another for ``bench/naive_client.py`` (submit,
poll every 2 s, download), so both meet the same sequence of task latencies.
Both are timed as a user runs them: a whole process, start-up included.

The ideal is what a client with perfect knowledge and zero overhead would take
on those very latencies: each task submitted the moment a slot frees, seen done
the moment it is (greedy list scheduling of the simulator's latency sequence,
reproduced from its seed). Printed per run and as min/median/max over runs:
imgspec's share of the ideal (ideal / wall), the naive script's, imgspec's
speed-up over the naive script (naive wall / imgspec wall), polls per task (the
simulator's ledger) and imgspec's CPU per task (user + system of its process).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
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


@dataclass(frozen=True)
class Scenario:
    """One benchmark setting."""

    instances: int
    concurrency: int
    latency: tuple[float, float]
    shape: str = "uniform"
    estimate_factor: float = 1.0


SCENARIOS = {
    "default": Scenario(1000, 100, (1.0, 1.0)),
    "overestimate": Scenario(1000, 100, (1.0, 1.0), estimate_factor=3.0),
    "varied": Scenario(1000, 100, (1.0, 3.0)),
    "wide": Scenario(1000, 100, (0.5, 8.0), shape="log-uniform", estimate_factor=3.0),
    "large": Scenario(10000, 1000, (5.0, 5.0)),
}


def latencies(s: Scenario) -> list[float]:
    """The simulator's latency of each task in creation order (seed 0, a fresh process)."""
    low, high = s.latency
    if low == high:
        return [low] * s.instances
    rng = random.Random("0:latency")
    if s.shape == "log-uniform":
        return [math.exp(rng.uniform(math.log(low), math.log(high)))
                for _ in range(s.instances)]
    return [rng.uniform(low, high) for _ in range(s.instances)]


def ideal(s: Scenario) -> float:
    """Makespan of submitting each task the moment one of the slots frees."""
    slots = [0.0] * s.concurrency
    for latency in latencies(s):
        free = heapq.heappop(slots)
        heapq.heappush(slots, free + latency)
    return max(slots)


def start_simulator(s: Scenario) -> tuple[subprocess.Popen[str], str]:
    """A fresh simulator subprocess and its base URL."""
    low, high = s.latency
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.simulator", "--port", "0", "--api-key", KEY,
         "--latency", f"{low}..{high}", "--latency-shape", s.shape,
         "--estimate-factor", str(s.estimate_factor)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(http://\S+)", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return proc, match[1]


def children_cpu() -> float:
    """User + system seconds of the reaped child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Run ``command`` to its end; (wall seconds, CPU seconds). Exits if it fails."""
    cpu = children_cpu()
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"{command[:4]} failed ({code}): {log.read_text()[-2000:]}")
    return wall, children_cpu() - cpu


def ledger(base: str) -> dict[str, int]:
    """The simulator's counters."""
    got: dict[str, int] = httpx.get(f"{base}/_sim/ledger", timeout=10).json()
    return got


def one_run(s: Scenario, tmp: Path) -> dict[str, float]:
    """imgspec, then the naive script, each on a fresh simulator; their figures."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "APIMART_API_KEY": KEY}
    manifest = tmp / "manifests" / "throughput.yaml"
    manifest.parent.mkdir(exist_ok=True)
    manifest.write_text(MANIFEST.format(n=s.instances,
                                        values=json.dumps(list(range(s.instances)))))
    for leftover in manifest.parent.glob("throughput.lock*"):
        leftover.unlink()
    sim, base = start_simulator(s)
    try:
        wall, cpu = timed([sys.executable, "-m", "pipeline", "run", str(manifest),
                           "--base-url", base, "--yes", "--concurrency", str(s.concurrency),
                           "--json"], env, tmp / "imgspec.log")
        counts = ledger(base)
    finally:
        sim.terminate()
        sim.wait(timeout=20)
    held: dict[str, int] = {}
    for line in (tmp / "imgspec.log").read_text().splitlines():
        if line.startswith("{"):
            bound = json.loads(line).get("limited_by")
            held[str(bound)] = held.get(str(bound), 0) + 1
    sim, base = start_simulator(s)
    try:
        naive_wall, _ = timed([sys.executable, str(ROOT / "bench" / "naive_client.py"),
                               "--base-url", base, "--api-key", KEY,
                               "--instances", str(s.instances),
                               "--concurrency", str(s.concurrency)], env, tmp / "naive.log")
        naive_counts = ledger(base)
    finally:
        sim.terminate()
        sim.wait(timeout=20)
    best = ideal(s)
    return {
        "ideal_s": round(best, 2),
        "imgspec_s": round(wall, 2),
        "naive_s": round(naive_wall, 2),
        "imgspec_of_ideal": round(best / wall, 3),
        "naive_of_ideal": round(best / naive_wall, 3),
        "speedup_vs_naive": round(naive_wall / wall, 3),
        "polls_per_task": round(counts["polls"] / counts["tasks_created"], 3),
        "naive_polls_per_task": round(naive_counts["polls"] / naive_counts["tasks_created"], 3),
        "cpu_ms_per_task": round(1000 * cpu / s.instances, 3),
        "events_by_bound": held,  # type: ignore[dict-item]
    }


def main() -> None:
    """Run the scenario ``--runs`` times and print each run and the min/median/max."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    s = SCENARIOS[args.scenario]
    runs = []
    for number in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            figures = one_run(s, Path(tmp))
        runs.append(figures)
        print(f"run {number + 1}: {json.dumps(figures)}", flush=True)
    print(f"scenario {args.scenario}: {s}")
    for name in ("imgspec_of_ideal", "naive_of_ideal", "speedup_vs_naive", "polls_per_task",
                 "cpu_ms_per_task", "imgspec_s", "naive_s", "ideal_s"):
        values = [float(r[name]) for r in runs]
        print(f"  {name:18} min {min(values):8.3f}  median {statistics.median(values):8.3f}"
              f"  max {max(values):8.3f}")


if __name__ == "__main__":
    main()
