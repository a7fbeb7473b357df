"""Benchmark: read a 100,000-entry lockfile strictly (decode, schema, entries), by checkout.

Run by hand (not a test):
    python bench/lockfile_read.py [--entries 100000] [--runs 5] [--tree PATH ...]

Writes one lockfile of N entries as imgspec records them (most done with two
outputs, some failed, running or submitting, so that every rule of the schema is
exercised), then, round after round, reads it in a fresh child process per
checkout given with ``--tree`` (default: this one), alternating the checkouts so
that the load of a shared machine falls on all of them alike. Each child times,
in CPU seconds of its own, ``parse_lockfile`` on the text (cold: the schema's
validator is built on first use, as in a plan) and then the schema check alone on
the decoded document (warm). Prints each run and min / median / max per checkout.

``--libraries`` instead times the verdict alone (valid or not, warm, CPU seconds)
of the (first) checkout's ``lockfile_defect`` and of each maintained validator
installed (jsonschema-rs, fastjsonschema, jsonschema) on the same decoded
document, alternating, in one process: the figures behind the choice of
validator in docs/design.md.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
from pipeline.core.lock.lockfile import parse_lockfile
from pipeline.core.lock.schema import load_json, lockfile_defect
text = open(sys.argv[1], encoding="utf-8").read()
cpu, wall = time.process_time(), time.perf_counter()
lock = parse_lockfile(text)
parse_cpu, parse_wall = time.process_time() - cpu, time.perf_counter() - wall
assert len(lock.entries) == int(sys.argv[2])
data, _ = load_json(text)
cpu = time.process_time()
assert lockfile_defect(data) is None
print(json.dumps({"parse_cpu": parse_cpu, "parse_wall": parse_wall,
                  "check_cpu": time.process_time() - cpu}))
"""


def entry(index: int) -> dict[str, object]:
    """One recorded instance, as imgspec writes it (status by position in the file)."""
    status = ("submitting" if index % 50 == 0 else "running" if index % 33 == 0
              else "failed" if index % 20 == 0 else "done")
    record: dict[str, object] = {
        "job": "shots", "fingerprint": f"sha256:{index:064x}", "status": status,
        "request": {"model": "wan2.7-image", "prompt": f"A subject {index} for Floralia",
                    "size": "1K", "n": 2, "seed": index},
        "matrix": {"subject": f"subject-{index % 100}", "style": f"style-{index // 100 % 100}",
                   "variant": index % 10},
        "seed": index, "idempotency_key": f"imgspec-{index:012d}-1", "task_id": f"task_{index}",
        "attempts": 1, "cost": 0.4, "charged": 0.4,
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:01:00Z",
    }
    if status == "failed":
        record.update(failure="task-failed", last_error="the task failed", cost=0, charged=0)
    if status == "done":
        record["outputs"] = [
            {"path": f"../outputs/scale/shots/{index}-{image}.png", "sha256": "0" * 64,
             "bytes": 1_234_567, "width": 1024, "height": 1024,
             "url": f"https://upload.apimart.ai/f/{index}-{image}.png",
             "expires_at": 1_800_000_000}
            for image in range(2)]
    return record


def write_lockfile(path: Path, entries: int) -> None:
    """A lockfile of ``entries`` entries, sorted and indented as imgspec writes it."""
    document = {"version": 1, "generator": "imgspec", "manifest": "scale.yaml",
                "entries": {f"shots@subject={i % 100},style={i // 100 % 100},"
                            f"variant={i % 10}#{i:06d}": entry(i) for i in range(entries)}}
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def validators() -> dict[str, Callable[[Any], object]]:
    """The verdict of each installed validator, built once from the lockfile schema."""
    from pipeline.core.lock.schema import lockfile_defect
    from pipeline.shell.store.schemas import load_schema

    schema = load_schema("lockfile.schema.json")
    found: dict[str, Callable[[Any], object]] = {"imgspec lockfile_defect": lockfile_defect}
    try:
        import jsonschema_rs

        found["jsonschema-rs"] = jsonschema_rs.validator_for(schema).is_valid
    except ImportError:
        pass
    try:  # not a dependency of imgspec: measured when installed
        fastjsonschema = importlib.import_module("fastjsonschema")
        # A copy: fastjsonschema rewrites the $refs of the schema it is given.
        found["fastjsonschema"] = fastjsonschema.compile(copy.deepcopy(schema))
    except ImportError:
        pass
    import jsonschema

    found["jsonschema"] = jsonschema.Draft202012Validator(schema).is_valid
    return found


def compare_libraries(entries: int, runs: int) -> None:
    """Time each validator's verdict on one decoded lockfile, alternating, ``runs`` times."""
    with tempfile.TemporaryDirectory() as tmp:
        lockfile = Path(tmp) / "scale.lock.json"
        write_lockfile(lockfile, entries)
        document = json.loads(lockfile.read_text(encoding="utf-8"))
    times: dict[str, list[float]] = {}
    for number in range(runs):
        for name, verdict in validators().items():
            cpu = time.process_time()
            verdict(document)
            times.setdefault(name, []).append(time.process_time() - cpu)
            print(f"run {number + 1} {name}: {times[name][-1]:.2f} s cpu", flush=True)
    print(f"{entries:,} entries, verdict only, min / median / max:")
    for name, values in times.items():
        print(f"  {name:15} {min(values):6.2f} {statistics.median(values):6.2f} "
              f"{max(values):6.2f}")


def main() -> None:
    """Alternate the checkouts ``--runs`` times; print each run and the spread per checkout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tree", action="append", type=Path,
                        help="a checkout to measure (repeat to alternate several)")
    parser.add_argument("--libraries", action="store_true",
                        help="time the maintained validators' verdicts instead")
    args = parser.parse_args()
    if args.libraries:  # in this process, with the (first) checkout's imgspec
        sys.path.insert(0, str((args.tree or [ROOT])[0].resolve()))
        compare_libraries(args.entries, args.runs)
        return
    trees: list[Path] = [tree.resolve() for tree in args.tree or [ROOT]]
    figures: dict[Path, list[dict[str, float]]] = {tree: [] for tree in trees}
    with tempfile.TemporaryDirectory() as tmp:
        lockfile = Path(tmp) / "scale.lock.json"
        write_lockfile(lockfile, args.entries)
        size = lockfile.stat().st_size / 1e6
        print(f"{args.entries:,} entries, {size:.0f} MB of JSON", flush=True)
        for number in range(args.runs):
            for tree in trees:
                env = {**os.environ, "PYTHONPATH": str(tree)}
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(lockfile), str(args.entries)],
                    env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
                run = json.loads(out)
                figures[tree].append(run)
                print(f"run {number + 1} {tree}: parse cpu {run['parse_cpu']:.2f} s "
                      f"wall {run['parse_wall']:.2f} s | schema check cpu "
                      f"{run['check_cpu']:.2f} s", flush=True)
    print("min / median / max:")
    for tree, runs in figures.items():
        for name in ("parse_cpu", "parse_wall", "check_cpu"):
            values = [run[name] for run in runs]
            print(f"  {tree!s:32} {name:11} {min(values):6.2f} "
                  f"{statistics.median(values):6.2f} {max(values):6.2f}")


if __name__ == "__main__":
    main()
