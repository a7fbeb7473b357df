"""Soak: thousands of instances under every fault kind; does anything get paid twice?

Run by hand (not a test):

    python bench/soak.py [--instances 3000] [--stage-rate 0.3] [--concurrency 64]
                         [--limit-rate 0.01] [--latency 0.1..0.4] [--stuck-factor 100]
                         [--seed 7]

Starts the simulator in a subprocess with every fault kind of ``imgspec simulator
--help`` on, each stage's kinds at rates that make a request of that stage meet some
fault with probability ``--stage-rate``: the 429 kinds at ``--limit-rate``, the others
sharing the rest equally. (A run's request rate halves at each 429 and recovers 2 % a
success: at the 8.5 % an equal share would give a 429 kind, submissions and polls sit
at the 0.2/s floor and 3,000 instances take hours.) The manifest has one job of
text-to-image instances and one small job that edits a local image (so uploads meet
their faults too), ``--instances`` in all. Then ``imgspec run`` once, and
``--only-failed`` reruns until one exits 0 (at most ``--max-runs`` runs in all).
Downloads get short limits (``IMGSPEC_DOWNLOAD_*``), so a dripping image host costs
seconds, not a minute.

Prints each run's wall time, exit code and what it left (failed, unfinished, and the
tasks it gave up on as far past the others), then the money: images the simulator
charged against images kept, and each second payment with the failure that caused it
(taken from the lockfile between runs). The images the simulator itself made
unavailable are counted apart: a task the API no longer knows (``task-gone``) is
paid again by design; failed tasks are refunded and never charged.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchkit import ENV, ROOT, free_port, ledger, start_simulator

STAGE_KINDS = {
    "submit": ("submit.429", "submit.5xx", "submit.reset", "submit.lost_reply"),
    "poll": ("poll.429", "poll.5xx", "poll.malformed", "poll.bad_url"),
    "task": ("task.fail", "task.stuck"),
    "download": ("download.truncate", "download.5xx", "download.expired", "download.drip"),
    "upload": ("upload.5xx", "upload.reset", "upload.lost_reply"),
}
# A dripping host fails a download as too slow after a second instead of 30 s.
DOWNLOAD_LIMITS = {"IMGSPEC_DOWNLOAD_DEADLINE": "5", "IMGSPEC_DOWNLOAD_MIN_RATE": "1024",
                   "IMGSPEC_DOWNLOAD_RATE_WINDOW": "1"}
EDITS = 40  # instances of the job with a local input image

MANIFEST = """\
version: 1
name: soak
max_instances: {total}
defaults: {{model: wan2.7-image, size: 1K}}
jobs:
  shots:
    prompt: "Product shot number {{{{ i }}}}"
    matrix:
      i: {shots}
  edits:
    prompt: "The mark, variant {{{{ i }}}}"
    image_urls: [assets/mark.png]
    matrix:
      i: {edits}
"""


def fault_spec(stage_rate: float, limit_rate: float) -> str:
    """Every kind on, each stage's kinds together faulting ``stage_rate`` of its requests:
    the 429 kinds at ``limit_rate``, the others sharing the rest equally."""
    parts = []
    for kinds in STAGE_KINDS.values():
        limits = [k for k in kinds if k.endswith(".429")]
        others = [k for k in kinds if k not in limits]
        clean = (1 - stage_rate) / (1 - limit_rate) ** len(limits)  # P(no other kind fires)
        rate = 1 - clean ** (1 / len(others))
        parts += [f"{kind}={limit_rate:.4f}" for kind in limits]
        parts += [f"{kind}={rate:.4f}" for kind in others]
    return ",".join(parts)


def write_project(folder: Path, instances: int) -> Path:
    """The soak manifest and its input image; returns the manifest's path."""
    manifest = folder / "manifests" / "soak.yaml"
    (manifest.parent / "assets").mkdir(parents=True)
    shots = instances - EDITS
    manifest.write_text(MANIFEST.format(total=instances, shots=json.dumps(list(range(shots))),
                                        edits=json.dumps(list(range(EDITS)))))
    from PIL import Image  # the project's own dependency

    Image.new("RGB", (320, 320), (30, 90, 160)).save(manifest.parent / "assets" / "mark.png")
    return manifest


def entries(manifest: Path) -> dict[str, Any]:
    """The lockfile's entries (none before the first run)."""
    lock = manifest.with_name("soak.lock.json")
    if not lock.exists():
        return {}
    got: dict[str, Any] = json.loads(lock.read_text())["entries"]
    return got


def run_once(manifest: Path, base: str, concurrency: int, first: bool) -> dict[str, Any]:
    """One ``imgspec run --json`` (``--only-failed`` after the first); its figures."""
    command = [sys.executable, "-m", "pipeline", "run", str(manifest), "--base-url", base,
               "--yes", "--json", "--ignore-balance", "--concurrency", str(concurrency)]
    if not first:
        command.append("--only-failed")
    started = time.perf_counter()
    proc = subprocess.run(command, env={**ENV, **DOWNLOAD_LIMITS}, cwd=ROOT, text=True,
                          capture_output=True, check=False)
    wall = time.perf_counter() - started
    kinds: Counter[str] = Counter()
    far_past = 0
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        kinds[str(event.get("event"))] += 1
        if event.get("event") == "unfinished" and "far past" in str(event.get("message")):
            far_past += 1
    if proc.returncode not in (0, 4):
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return {"exit": proc.returncode, "wall_s": round(wall, 1), "done": kinds["done"],
            "failed": kinds["failed"], "unfinished": kinds["unfinished"],
            "far_past": far_past, "resumed": kinds["resumed"]}


def main() -> int:
    """Soak, rerun until done, print the figures; exit 1 if a second payment had no cause
    the API made (a task it failed or forgot)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--stage-rate", type=float, default=0.3)
    parser.add_argument("--limit-rate", type=float, default=0.01,
                        help="rate of each 429 kind (part of its stage's rate)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", default="0.1..0.4")
    parser.add_argument("--stuck-factor", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-runs", type=int, default=12)
    args = parser.parse_args()
    spec = fault_spec(args.stage_rate, args.limit_rate)
    print(f"soak: {args.instances:,} instances @{args.concurrency}, latency {args.latency} s, "
          f"stuck x{args.stuck_factor:g}, seed {args.seed}\nfaults: {spec}", flush=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sim = start_simulator(port, args.latency, "--faults", spec, "--seed", str(args.seed),
                          "--stuck-factor", str(args.stuck_factor))
    # Per key, the failures a later run followed with a second payment (an attempt paid
    # while an earlier one stays paid); and the retries of refunded (failed) tasks.
    causes: dict[str, list[str]] = {}
    refunded_retries: Counter[str] = Counter()
    free_repolls = 0  # failed for their results, then collected by a later run, unpaid
    total_wall = 0.0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = write_project(Path(tmp), args.instances)
            for number in range(args.max_runs):
                before = entries(manifest)
                figures = run_once(manifest, base, args.concurrency, first=number == 0)
                total_wall += figures["wall_s"]
                after = entries(manifest)
                for key, old in before.items():
                    if old["status"] != "failed":
                        continue
                    if old.get("failure") == "results" and after[key]["status"] == "done":
                        free_repolls += after[key]["charged"] == old["charged"]
                    if after[key]["charged"] <= old["charged"]:
                        continue
                    failure = old.get("failure", "unrecorded")
                    if old["charged"] > 0:
                        causes.setdefault(key, []).append(f"{failure}: {old['last_error']}")
                    else:
                        refunded_retries[failure] += 1
                print(f"run {number + 1}: {json.dumps(figures)}", flush=True)
                if figures["exit"] == 0:
                    break
            final = entries(manifest)
            kept = sum(len(e["outputs"]) for e in final.values() if e["status"] == "done")
            on_disk = sum(1 for _ in (Path(tmp) / "outputs" / "soak").rglob("*.png"))
            left = sum(1 for e in final.values() if e["status"] != "done")
            recorded = sum(Decimal(str(e["charged"])) for e in final.values())
            counters: dict[str, Any] = dict(ledger(base))
    finally:
        sim.terminate()
        sim.wait(timeout=30)
    paid = int(counters["images_charged"])
    twice = causes
    gone = sum(1 for v in twice.values() for c in v if c.startswith("task-gone"))
    print(f"wall: {total_wall:,.0f} s over the runs; instances not done: {left}")
    print(f"faults injected: {json.dumps(counters['faults'])}")
    print(f"tasks created {counters['tasks_created']:,}, failed (refunded) "
          f"{counters['tasks_failed']:,}, replays {counters['replays']:,}, "
          f"polls {counters['polls']:,}, downloads {counters['downloads']:,}")
    print(f"images paid {paid:,}; kept {kept:,} (on disk {on_disk:,}); made unavailable by "
          f"the API (task gone) {gone:,}; spend recorded {recorded} CNY, ledger "
          f"{counters['cost_charged']} CNY")
    print(f"paid tasks whose results failed in one run, collected free by a later one: "
          f"{free_repolls:,}")
    print(f"new attempts after a refunded (failed) task, not a second payment: "
          f"{sum(refunded_retries.values()):,} {dict(refunded_retries)}")
    print(f"second payments: {sum(len(v) for v in twice.values())}")
    for key, why in sorted(twice.items()):
        for cause in why:
            print(f"  {key}: {cause}")
    honest = paid == kept + gone and Decimal(str(counters["cost_charged"])) == recorded
    print("paid = kept + made unavailable" if honest else "MISMATCH: paid != kept + unavailable")
    return 0 if honest and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
