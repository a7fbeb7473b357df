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
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from benchkit import compile_bytecode, timed  # noqa: E402

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
            imgspec = timed([sys.executable, "-m", "pipeline", "plan", "--json", str(manifest)])
            floor = timed([sys.executable, str(ROOT / "bench" / "plan_floor.py"),
                           str(manifest)])
            rows.append((imgspec, floor))
            print(f"run {number + 1}: imgspec wall {imgspec.wall:.2f} s cpu {imgspec.cpu:.2f} s "
                  f"peak {imgspec.peak_mb:.0f} MB | floor wall {floor.wall:.2f} s "
                  f"cpu {floor.cpu:.2f} s peak {floor.peak_mb:.0f} MB | "
                  f"cpu ratio {imgspec.cpu / floor.cpu:.2f}", flush=True)
    print(f"{args.instances:,} instances, {args.runs} runs (min / median / max):")
    figures = {
        "imgspec wall s": [i.wall for i, _ in rows], "imgspec cpu s": [i.cpu for i, _ in rows],
        "imgspec peak MB": [i.peak_mb for i, _ in rows], "floor wall s": [f.wall for _, f in rows],
        "floor cpu s": [f.cpu for _, f in rows], "floor peak MB": [f.peak_mb for _, f in rows],
        "wall ratio": [i.wall / f.wall for i, f in rows],
        "cpu ratio": [i.cpu / f.cpu for i, f in rows],
        "memory ratio": [i.peak_mb / f.peak_mb for i, f in rows],
    }
    for name, values in figures.items():
        print(f"  {name:16} {min(values):9.2f} {statistics.median(values):9.2f} "
              f"{max(values):9.2f}")


if __name__ == "__main__":
    main()
