"""Fuzz: many hostile manifests through the CLI's own entry; anything but ImgspecError is a bug.

Run by hand (not a test):

    python bench/fuzz_manifests.py [--count 50000] [--seed 1] [--jobs 1] [--out DIR]

Each manifest is an example from manifests/ with one to three values, keys or
entries swapped for hostile ones (tests/hostile/mutations.py: lone surrogates,
NaN and infinities, huge integers, 5,000-deep nesting, YAML 1.1 scalars, control
characters, huge strings, wrong types, bad paths and references; the known open
escapes included, which the CI fuzz test leaves out). It is written
into a copy of manifests/ (so assets and products.csv resolve) and run through
``prepare()`` — what ``imgspec plan`` calls: load, schema, expand, lockfile, plan —
then through everything ``plan``, ``plan --json``, ``render`` and ``graph`` print.

An exception other than ``ImgspecError`` is an escape (exit 70 for a user). The
report counts them and shows each distinct one (by type and the line that raised
it) once, with a reproducer written under --out:

    PYTHONPATH=. python -m pipeline plan DIR/manifests/escape-1.yaml

Exit status: 0 with no escapes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.errors import ImgspecError  # noqa: E402
from pipeline.operations.context import context  # noqa: E402
from pipeline.operations.project import prepare  # noqa: E402
from tests.hostile.mutations import (  # noqa: E402
    MANIFEST_DIR,
    examples,
    hostile_manifest,
    report,
)


@dataclass
class Escape:
    """One distinct escape: where it was raised, how often, and its first reproducer."""

    kind: str
    where: str
    message: str
    text: str
    count: int = 1


@dataclass
class Tally:
    """What a batch of manifests did."""

    total: int = 0
    valid: int = 0
    refused: int = 0
    escapes: dict[tuple[str, str], Escape] = field(default_factory=dict)
    slowest: list[tuple[float, int]] = field(default_factory=list)  # (seconds, index)

    def merge(self, other: Tally) -> None:
        """Add another batch's counts."""
        self.total += other.total
        self.valid += other.valid
        self.refused += other.refused
        for ident, escape in other.escapes.items():
            if ident in self.escapes:
                self.escapes[ident].count += escape.count
            else:
                self.escapes[ident] = escape
        self.slowest = sorted(self.slowest + other.slowest, reverse=True)[:5]


def _raised_at(exc: BaseException) -> str:
    """The innermost frame in imgspec's own code (else the innermost of all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/pipeline/" in f.filename] or frames
    frame = ours[-1] if ours else None
    if frame is None:
        return "?"
    name = Path(frame.filename)
    shown = name.relative_to(ROOT) if ROOT in name.parents else name
    return f"{shown}:{frame.lineno} ({frame.name})"


def _project(root: Path) -> Path:
    """A copy of manifests/ (assets, CSV) to write hostile manifests into."""
    target = root / "manifests"
    shutil.copytree(MANIFEST_DIR, target, ignore=shutil.ignore_patterns("*.yaml"))
    return target


def run_batch(seed: int, start: int, count: int, max_steps: int) -> Tally:
    """Fuzz manifests ``start .. start+count`` of the run seeded ``seed``."""
    bases = examples()
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="imgspec-fuzz-") as tmp:
        folder = _project(Path(tmp))
        for index in range(start, start + count):
            rng = random.Random(f"{seed}:{index}")
            text = hostile_manifest(rng.randrange, bases=bases, max_steps=max_steps,
                                    with_open=True)
            path = folder / "fuzz.yaml"
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            began = time.perf_counter()
            try:
                prepared = prepare(context(path))
                report(prepared.manifest, prepared.expansion, prepared.plan)
                tally.valid += 1
            except ImgspecError:
                tally.refused += 1
            except Exception as exc:  # an escape: what this bench looks for
                ident = (type(exc).__name__, _raised_at(exc))
                if ident in tally.escapes:
                    tally.escapes[ident].count += 1
                else:
                    tally.escapes[ident] = Escape(*ident, str(exc)[:300], text)
            tally.total += 1
            tally.slowest = sorted([*tally.slowest, (time.perf_counter() - began, index)],
                                   reverse=True)[:5]
    return tally


def _batches(count: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, count, size):
        yield start, min(size, count - start)


def _star(args: tuple[int, int, int, int]) -> Tally:
    return run_batch(*args)


def main() -> int:
    """Run the fuzzer and print its report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=50_000, help="manifests to try")
    parser.add_argument("--seed", type=int, default=1, help="run seed (same seed, same inputs)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--max-steps", type=int, default=3, help="hostile changes per manifest")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "imgspec-fuzz",
                        help="where reproducers are written")
    args = parser.parse_args()

    began = time.perf_counter()
    tally = Tally()
    work = [(args.seed, start, size, args.max_steps)
            for start, size in _batches(args.count, 1_000)]
    if args.jobs > 1:
        with multiprocessing.Pool(args.jobs) as pool:
            for part in pool.imap_unordered(_star, work):
                tally.merge(part)
                print(f"  {tally.total:,} done", file=sys.stderr, flush=True)
    else:
        for item in work:
            tally.merge(_star(item))
            print(f"  {tally.total:,} done", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - began

    escaped = sum(e.count for e in tally.escapes.values())
    print(f"{tally.total:,} manifests in {elapsed:.0f} s (seed {args.seed}): "
          f"{tally.valid:,} valid, {tally.refused:,} refused with ImgspecError, "
          f"{escaped:,} escapes ({len(tally.escapes)} distinct)")
    print("slowest: " + ", ".join(f"#{i} {s:.2f} s" for s, i in tally.slowest))
    if tally.escapes:
        folder = args.out / "manifests"
        shutil.rmtree(args.out, ignore_errors=True)
        args.out.mkdir(parents=True)
        _project(args.out)
        for number, escape in enumerate(sorted(tally.escapes.values(),
                                               key=lambda e: -e.count), start=1):
            path = folder / f"escape-{number}.yaml"
            path.write_text(escape.text, encoding="utf-8", errors="surrogatepass")
            print(f"\n{number}. {escape.kind} at {escape.where} ({escape.count:,} times): "
                  f"{escape.message}\n   reproduce: PYTHONPATH={ROOT} python -m pipeline plan "
                  f"{path}")
    return 1 if tally.escapes else 0


if __name__ == "__main__":
    sys.exit(main())
