"""Benchmark: `imgspec run` at scale, its CPU per task and where that CPU goes.

Run by hand (not a test):

    python bench/run_throughput.py [--instances 30000] [--concurrency 1000]
                                   [--latency 1] [--runs 3] [--profile]

Each run starts a fresh simulator subprocess (latency in seconds, or LOW..HIGH)
and runs the real command, ``python -m pipeline run M --yes --json`` with the
default flags but ``--concurrency``, as a whole process. Prints, per run and as
min/median/max: its share of the ideal ``ceil(N / C) x latency`` (for a fixed
latency), client CPU per task (user + system of the imgspec process, all its
threads, start-up included), peak RSS, and polls per task from the simulator's
ledger. Targets (issue 11, 30,000 @1,000, 1 s): CPU <= 2 ms a task, RSS <= 300 MB.

``--profile`` adds one more run under py-spy (``pip install py-spy``; sampling
the thread that holds the GIL: the Python work that competes with the event
loop, not a thread waiting in fsync) and splits the median CPU per task by
where those samples were: HTTP, the journal, image write/fsync/check, install,
meta.json, the lockfile checkpoint and index, events, scheduling and polling,
start-up (imports, plan), the asyncio loop itself. Each sample is charged to the
innermost frame that names one of those; the loop only when nothing else does.
The profiled run is slower and is not among the timed ones.
"""

from __future__ import annotations

import argparse
import collections
import math
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchkit import (
    SETTLE_S,
    compile_bytecode,
    free_port,
    ledger,
    print_spread,
    repeat,
    settle,
    start_simulator,
    timed,
    write_manifest,
)

# (category, pattern on "function (file:line)") in py-spy's raw frames; first match wins
# for each frame, frames are read innermost first.
CATEGORIES = (
    ("image write/fsync/check", r"ImageSink|inspect_image|shell/http/downloads\.py|PIL/"),
    ("install (rename)", r"OutputFolder\.install|OutputFolder\.relative|Executor\._install "),
    ("meta.json", r"write_meta|store/layout\.py"),
    ("checkpoint + index", r"_write_snapshot|write_index|LockStore\.checkpoint|"
                           r"LockStore\.close|encode_lockfile|core/lock/lockfile\.py"),
    ("journal", r"shell/store/lockstore\.py|core/lock/journal\.py"),
    ("HTTP", r"aiohttp/|httpx|yarl/|multidict/|pipeline/shell/http/|core/apimart/replies\.py"),
    ("events + --json", r"pipeline/views/progress\.py|operations/run/events\.py|"
                        r"^emit \(.*executor\.py"),
    ("scheduling + polling", r"operations/run/(executor|scheduler)\.py|"
                             r"core/planning/(polling|pacing)\.py|core/lock/lifecycle\.py"),
    ("start-up (imports, plan)", r"importlib|pipeline/core/(manifest|templates|expansion|"
                                 r"planning|apimart)/|pipeline/(api|cli)/|"
                                 r"operations/(project|context)\.py"),
)
LOOP = "asyncio loop + threads"


def categorise(stack: str) -> str:
    """The category of one sampled stack (frames root first, ';'-separated)."""
    for frame in reversed(stack.split(";")):
        for name, pattern in CATEGORIES:
            if re.search(pattern, frame):
                return name
    return LOOP


def breakdown(raw: Path) -> dict[str, float]:
    """Share of busy samples per category, from py-spy's ``--format raw`` output."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if stack and number.isdigit():
            counts[categorise(stack)] += int(number)
    total = sum(counts.values()) or 1
    return {name: counts[name] / total for name, _ in (*CATEGORIES, (LOOP, ""))}


def one_run(args: argparse.Namespace, tmp: Path, *, profile: Path | None = None
            ) -> dict[str, float]:
    """One fresh simulator and one ``imgspec run``; its figures."""
    manifest = write_manifest(tmp, args.instances)
    shutil.rmtree(tmp / "outputs", ignore_errors=True)
    port = free_port()
    sim = start_simulator(port, args.latency)
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "pipeline", "run", str(manifest), "--base-url", base,
               "--yes", "--concurrency", str(args.concurrency), "--json"]
    if profile is not None:
        command = ["py-spy", "record", "--format", "raw", "--rate", "200", "--nonblocking",
                   "--gil", "-o", str(profile), "--", *command]
    try:
        child = timed(command, cwd=tmp, log=tmp / "run.log")
        counts = ledger(base)
    finally:
        sim.terminate()
        sim.wait(timeout=20)
    figures = {
        "wall_s": round(child.wall, 2),
        "cpu_ms_per_task": round(1000 * child.cpu / args.instances, 3),
        "peak_mb": round(child.peak_mb),
        "polls_per_task": round(counts["polls"] / counts["tasks_created"], 3),
    }
    if ".." not in args.latency:
        ideal = math.ceil(args.instances / args.concurrency) * float(args.latency)
        figures["of_ideal"] = round(ideal / child.wall, 3)
    return figures


def main() -> None:
    """Time ``--runs`` runs, print them and their min/median/max; then the profile if asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--latency", default="1")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=SETTLE_S, metavar="SECONDS",
                        help="wait before each run on a journal-less ext4 (0: never; "
                             "see benchkit.SETTLE_S)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    compile_bytecode()
    if args.profile and shutil.which("py-spy") is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    runs = repeat(args.runs, lambda tmp: one_run(args, tmp), settle_s=args.settle)
    print(f"{args.instances:,} instances @{args.concurrency}, latency {args.latency} s, "
          f"{args.runs} runs:")
    print_spread(runs, runs[0])
    if args.profile:
        cpu = statistics.median(r["cpu_ms_per_task"] for r in runs)
        settle(args.settle)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "profile.txt"
            one_run(args, Path(tmp), profile=raw)
            shares = breakdown(raw)
        print(f"where the CPU goes (median {cpu:.2f} ms a task, split by py-spy's GIL "
              "samples of one more run):")
        for name, share in sorted(shares.items(), key=lambda kv: -kv[1]):
            print(f"  {name:26} {share:6.1%}  {cpu * share:6.3f} ms/task")


if __name__ == "__main__":
    main()
