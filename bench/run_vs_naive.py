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
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import (
    KEY,
    ROOT,
    SETTLE_S,
    compile_bytecode,
    free_port,
    ledger,
    print_spread,
    repeat,
    start_simulator,
    timed,
    write_manifest,
)


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


def simulator(s: Scenario) -> tuple[subprocess.Popen[bytes], str]:
    """A fresh simulator subprocess for the scenario, and its base URL."""
    low, high = s.latency
    port = free_port()
    proc = start_simulator(port, f"{low}..{high}", "--latency-shape", s.shape,
                           "--estimate-factor", str(s.estimate_factor))
    return proc, f"http://127.0.0.1:{port}"


def one_run(s: Scenario, tmp: Path) -> dict[str, float]:
    """imgspec, then the naive script, each on a fresh simulator; their figures."""
    manifest = write_manifest(tmp, s.instances)
    sim, base = simulator(s)
    try:
        run = timed([sys.executable, "-m", "pipeline", "run", str(manifest), "--base-url", base,
                     "--yes", "--concurrency", str(s.concurrency), "--json"],
                    log=tmp / "imgspec.log")
        counts = ledger(base)
    finally:
        sim.terminate()
        sim.wait(timeout=20)
    wall, cpu = run.wall, run.cpu
    held: dict[str, int] = {}
    for line in (tmp / "imgspec.log").read_text().splitlines():
        if line.startswith("{"):
            bound = json.loads(line).get("limited_by")
            held[str(bound)] = held.get(str(bound), 0) + 1
    sim, base = simulator(s)
    try:
        naive_wall = timed([sys.executable, str(ROOT / "bench" / "naive_client.py"),
                            "--base-url", base, "--api-key", KEY,
                            "--instances", str(s.instances),
                            "--concurrency", str(s.concurrency)]).wall
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
    parser.add_argument("--settle", type=float, default=SETTLE_S, metavar="SECONDS",
                        help="wait before each run on a journal-less ext4 (0: never; "
                             "see benchkit.SETTLE_S)")
    args = parser.parse_args()
    compile_bytecode()
    s = SCENARIOS[args.scenario]
    runs = repeat(args.runs, lambda tmp: one_run(s, tmp), settle_s=args.settle)
    print(f"scenario {args.scenario}: {s}")
    print_spread(runs, ("imgspec_of_ideal", "naive_of_ideal", "speedup_vs_naive",
                        "polls_per_task", "cpu_ms_per_task", "imgspec_s", "naive_s", "ideal_s"))


if __name__ == "__main__":
    main()
