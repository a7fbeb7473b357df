"""Benchmark: `imgspec plan --json` against the floor script, same manifest, same run.

Run by hand (not a test):  python bench/plan_vs_floor.py [--instances 100000] [--runs 3]

Writes a one-job manifest of N instances (a subject x style x variant matrix, as
``bench/plan_scale.py``), then runs, in turn, ``python -m pipeline plan --json``
and ``python bench/plan_floor.py`` on it, each a whole process with its output
thrown away, and reads each child's own CPU seconds and peak RSS (``os.wait4``).
Prints each pair and min/median/max of wall, CPU, peak RSS and the ratios
imgspec/floor. Targets (issue 11): <= 2x the floor; <= 250 MB at 100k, <= 1 GB at 1M.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from benchkit import compile_bytecode  # noqa: E402

MANIFEST = """\
version: 1
name: scale
max_instances: {cap}
defaults: {{model: wan2.7-image, size: 1K, negative_prompt: blurry}}
vars: {{brand: Floralia}}
jobs:
  shots:
    prompt: >-
      A {{{{ subject }}}} for {{{{ brand }}}} in the style {{{{ style }}}},
      variant {{{{ variant }}}}
    n: 2
    matrix:
      subject: {subjects}
      style: {styles}
      variant: {variants}
"""


def write_manifest(folder: Path, instances: int) -> Path:
    """A manifest of ``instances`` instances (rounded to a 10 x side x side matrix)."""
    variants = 10
    side = max(1, round((instances / variants) ** 0.5))
    styles = max(1, instances // variants // side)
    manifest = folder / "manifests" / "scale.yaml"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(MANIFEST.format(
        cap=instances * 2,
        subjects=[f"subject-{i}" for i in range(side)],
        styles=[f"style-{i}" for i in range(styles)],
        variants=list(range(variants))))
    return manifest


def measure(command: list[str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one whole process, output discarded."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if status != 0:
            errors.seek(0)
            raise SystemExit(f"{command[:4]} failed ({status}): {errors.read()[-2000:]!r}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    """Alternate imgspec and the floor ``--runs`` times; print the figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    compile_bytecode()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_manifest(Path(tmp), args.instances)
        for number in range(args.runs):
            imgspec = measure([sys.executable, "-m", "pipeline", "plan", "--json",
                               str(manifest)])
            floor = measure([sys.executable, str(ROOT / "bench" / "plan_floor.py"),
                             str(manifest)])
            rows.append((imgspec, floor))
            print(f"run {number + 1}: imgspec wall {imgspec[0]:.2f} s cpu {imgspec[1]:.2f} s "
                  f"peak {imgspec[2]:.0f} MB | floor wall {floor[0]:.2f} s cpu {floor[1]:.2f} s "
                  f"peak {floor[2]:.0f} MB | cpu ratio {imgspec[1] / floor[1]:.2f}", flush=True)
    print(f"{args.instances:,} instances, {args.runs} runs (min / median / max):")
    figures = {
        "imgspec wall s": [r[0][0] for r in rows], "imgspec cpu s": [r[0][1] for r in rows],
        "imgspec peak MB": [r[0][2] for r in rows], "floor wall s": [r[1][0] for r in rows],
        "floor cpu s": [r[1][1] for r in rows], "floor peak MB": [r[1][2] for r in rows],
        "wall ratio": [r[0][0] / r[1][0] for r in rows],
        "cpu ratio": [r[0][1] / r[1][1] for r in rows],
        "memory ratio": [r[0][2] / r[1][2] for r in rows],
    }
    for name, values in figures.items():
        print(f"  {name:16} {min(values):9.2f} {statistics.median(values):9.2f} "
              f"{max(values):9.2f}")


if __name__ == "__main__":
    main()
