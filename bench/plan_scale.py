"""Benchmark: validate + expand + plan a 100,000-instance manifest against a half-done lockfile.

Run by hand (not a test):  python bench/plan_scale.py [--instances 100000]

It writes a manifest (a 100 x 100 x 10 matrix), a lockfile recording every
other instance as done, and the output files those entries name, into a temp
folder; then, in a fresh subprocess so that memory is measured alone, it times
``prepare()`` (load, schema, expand with templates and API rules, read the
lockfile, check outputs, plan) and reports wall time and peak RSS.
Targets on a 2-core machine: <= 5 s and <= 600 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MANIFEST = """\
version: 1
name: scale
max_instances: {cap}
budget: {{max_cost: 1000000}}
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


def write_fixture(folder: Path, instances: int) -> Path:
    """Manifest, half-done lockfile and its output files; returns the manifest path."""
    from pipeline.core.lock.lockfile import LockEntry, Lockfile, Output, lockfile_path
    from pipeline.core.planning.plan import resolved_request
    from pipeline.operations.context import context
    from pipeline.operations.project import prepare
    from pipeline.shell.store.lockstore import write_lockfile

    variants = 10
    side = max(1, round((instances / variants) ** 0.5))
    subjects = [f"subject-{i}" for i in range(side)]
    styles = [f"style-{i}" for i in range(max(1, instances // variants // side))]
    manifest = folder / "manifests" / "scale.yaml"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(MANIFEST.format(
        cap=instances, subjects=json.dumps(subjects), styles=json.dumps(styles),
        variants=json.dumps(list(range(variants)))))
    prepared = prepare(context(manifest))
    from pipeline.core.expansion.identity import fingerprint

    entries = {}
    out_dir = folder / "outputs" / "scale"  # the output folder: lockfile paths must be inside
    out_dir.mkdir(parents=True)
    for index, item in enumerate(prepared.plan.items):
        if index % 2:
            continue
        request = resolved_request(item.instance, {})
        assert request is not None
        outputs = []
        for image in range(item.instance.n):
            rel = f"../outputs/scale/{index}-{image}.png"
            (manifest.parent / rel).touch()
            outputs.append(Output(rel, "0" * 64, 0, 1024, 1024))
        entries[item.key] = LockEntry(
            key=item.key, job=item.job, fingerprint=fingerprint(request), status="done",
            request=item.instance.request, seed=item.instance.seed, attempts=1,
            outputs=tuple(outputs))
    write_lockfile(lockfile_path(manifest), Lockfile(manifest.name, entries))
    return manifest


def peak_rss_mb() -> float:
    """This process's peak resident memory.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child
    would report the fixture-building parent's peak as its own.
    """
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(manifest: Path) -> None:
    """In a fresh process: time prepare() and report peak memory."""
    start = time.perf_counter()
    from pipeline.operations.context import context
    from pipeline.operations.project import prepare

    imported = time.perf_counter()
    prepared = prepare(context(manifest))
    done = time.perf_counter()
    counts = prepared.plan.counts()
    peak_mb = peak_rss_mb()
    print(json.dumps({
        "instances": len(prepared.plan.items),
        "up_to_date": counts["up-to-date"],
        "new": counts["new"],
        "cost": str(prepared.plan.total),
        "import_s": round(imported - start, 3),
        "prepare_s": round(done - imported, 3),
        "peak_rss_mb": round(peak_mb, 1),
    }))


def main() -> None:
    """Build the fixture, then measure it in a subprocess."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        manifest = write_fixture(Path(tmp), args.instances)
        print(f"fixture written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        result = subprocess.run([sys.executable, __file__, "--measure", str(manifest)],
                                check=True, capture_output=True, text=True)
        figures = json.loads(result.stdout)
        print(json.dumps(figures, indent=2))
        print(f"validate + expand + plan: {figures['prepare_s']:.2f} s (target <= 5 s), "
              f"peak {figures['peak_rss_mb']:.0f} MB (target <= 600 MB)")


if __name__ == "__main__":
    main()
