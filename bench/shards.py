"""Benchmark: one `imgspec run` at concurrency 200 against 4 shards at 50 each, then the merge.

Run by hand (not a test):  python bench/shards.py [--instances 2000] [--latency 1]
                                                  [--shards 4] [--repeat 3]

For each repetition, a fresh simulator (its own process, latency 1 s) serves
one `imgspec run` of N instances at concurrency 200; then another fresh
simulator serves the same N instances as 4 shard processes started at once at
concurrency 50 each (200 in flight in all), followed by `imgspec lock merge
--into` of their lockfiles. Request rates are unbounded
(--max-rate 100000) so that only concurrency and latency pace the runs.

Reports wall time of the single run and of the sharded run (first shard start
to last shard exit), the merge command's wall time and the in-process time of
the merge itself (``merge_locks``), as min/median/max over the repetitions, and
the ratio single / sharded. Each repetition is checked: the simulator charged
exactly N images and, after the merge, `plan` shows all N instances up to date.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import KEY, compile_bytecode, free_port, start_simulator, write_manifest  # noqa: E402
from benchkit import ledger as read_ledger  # noqa: E402


def imgspec(project: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start this checkout's imgspec in ``project``, its output discarded."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "APIMART_API_KEY": KEY}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes], what: str) -> None:
    """Wait for ``proc``; stop the benchmark if it failed."""
    _, err = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}): {err.decode()[-2000:]}")


def project(tmp: Path, name: str, instances: int) -> Path:
    """A project folder holding the benchmark manifest."""
    folder = tmp / name
    write_manifest(folder, instances)
    return folder


def ledger(port: int) -> dict[str, int]:
    """The simulator's billing ledger."""
    return read_ledger(f"http://127.0.0.1:{port}")


def run_args(port: int, concurrency: int) -> list[str]:
    """`imgspec run` arguments against the simulator on ``port``."""
    return ["run", "manifests/throughput.yaml", "--base-url", f"http://127.0.0.1:{port}",
            "--yes", "--concurrency", str(concurrency), "--max-rate", "100000", "--json"]


def single(tmp: Path, instances: int, latency: float, concurrency: int) -> float:
    """Wall time of one process running every instance."""
    port = free_port()
    sim = start_simulator(port, latency)
    try:
        folder = project(tmp, "single", instances)
        started = time.perf_counter()
        finish(imgspec(folder, *run_args(port, concurrency)), "single run")
        wall = time.perf_counter() - started
        charged = ledger(port)["images_charged"]
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    if charged != instances:
        raise SystemExit(f"single run: {charged} images charged, expected {instances}")
    return wall


def sharded(tmp: Path, instances: int, latency: float, shards: int,
            concurrency: int) -> tuple[float, float, float]:
    """(wall time of the shards at once, merge command wall time, in-process merge time)."""
    from pipeline.core.lock.merge import merge_locks
    from pipeline.shell.store.lockstore import read_lockfile

    port = free_port()
    sim = start_simulator(port, latency)
    try:
        folder = project(tmp, "sharded", instances)
        started = time.perf_counter()
        procs = [imgspec(folder, *run_args(port, concurrency), "--shard", f"{k}/{shards}")
                 for k in range(1, shards + 1)]
        for k, proc in enumerate(procs, 1):
            finish(proc, f"shard {k}/{shards}")
        wall = time.perf_counter() - started
        charged = ledger(port)["images_charged"]
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    if charged != instances:
        raise SystemExit(f"shards: {charged} images charged, expected {instances}")
    locks = sorted((folder / "manifests").glob(f"throughput.shard-*-of-{shards}.lock.json"))
    values = [read_lockfile(p) for p in locks]
    started = time.perf_counter()
    merge_locks(values)
    in_process = time.perf_counter() - started
    started = time.perf_counter()
    finish(imgspec(folder, "lock", "merge", "--into", "manifests/throughput.lock.json",
                   *(str(p.relative_to(folder)) for p in locks)), "lock merge")
    merge_wall = time.perf_counter() - started
    plan = subprocess.run([sys.executable, "-m", "pipeline", "plan", "manifests/throughput.yaml",
                           "--json"], cwd=folder, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=600, check=False)
    up_to_date = json.loads(plan.stdout)["counts"]["up-to-date"]
    if up_to_date != instances:
        raise SystemExit(f"after the merge {up_to_date} of {instances} are up to date")
    return wall, merge_wall, in_process


def spread(values: list[float], digits: int = 3) -> dict[str, float]:
    """min / median / max, rounded."""
    return {"min": round(min(values), digits),
            "median": round(statistics.median(values), digits),
            "max": round(max(values), digits)}


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=200,
                        help="of the single run; each shard gets concurrency / shards")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    compile_bytecode()
    per_shard = max(1, args.concurrency // args.shards)
    singles, walls, merges, in_process = [], [], [], []
    for rep in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory() as tmp:
            singles.append(single(Path(tmp), args.instances, args.latency, args.concurrency))
            wall, merge, inner = sharded(Path(tmp), args.instances, args.latency, args.shards,
                                         per_shard)
        walls.append(wall)
        merges.append(merge)
        in_process.append(inner)
        print(f"repetition {rep}: single {singles[-1]:.2f} s, {args.shards} shards "
              f"{wall:.2f} s, merge command {merge:.2f} s (merge itself {inner * 1000:.2f} ms)",
              file=sys.stderr)
    figures = {
        "instances": args.instances, "latency_s": args.latency, "repeat": args.repeat,
        "single": {"concurrency": args.concurrency, "wall_s": spread(singles)},
        "sharded": {"shards": args.shards, "concurrency_each": per_shard,
                    "wall_s": spread(walls)},
        "merge_command_s": spread(merges),
        "merge_in_process_ms": spread([t * 1000 for t in in_process]),
        "ratio_single_over_sharded_median": round(
            statistics.median(singles) / statistics.median(walls), 3),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
