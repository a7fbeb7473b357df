"""Fuzz the lockfile reader and the journal fold with mutated real lockfiles and journals.

Run by hand (not a test):  python bench/fuzz_lockfiles.py [--cases 10000] [--seed 1]

A simulated run of the e2e manifest (some tasks failing) writes a real lockfile;
then ``--cases`` lockfiles and ``--cases`` journals are derived from it by
structure-aware mutations (``tests/hostile/lockfile_mutations.py``) and read. Each
must be refused with a LockfileError or accepted, and then work downstream
(status, plan, dump and re-read). Anything else is an escape: it is printed with
the case that caused it, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    """Build the real lockfile, then fuzz lockfiles and journals; report the escapes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    from pipeline.core.lock.lockfile import parse_lockfile
    from tests.hostile.lockfile_mutations import (
        fold_journal_text,
        journal_of,
        make_real_project,
        mutated_journal,
        mutated_lockfile,
        read_lockfile_text,
    )

    with tempfile.TemporaryDirectory() as tmp:
        real = make_real_project(Path(tmp))
        base = real.lockfile.parent
        lock = parse_lockfile(real.text)
        lines = journal_of(lock)
        rng = random.Random(args.seed)
        escapes: list[tuple[str, str, str]] = []
        outcomes: Counter[str] = Counter()
        started = time.perf_counter()
        for kind in ("lockfile", "journal"):
            for _ in range(args.cases):
                if kind == "lockfile":
                    text = mutated_lockfile(rng, real.text)
                else:
                    text = mutated_journal(rng, lines)
                try:
                    if kind == "lockfile":
                        refused = read_lockfile_text(text, real.expansion, base)
                    else:
                        refused = fold_journal_text(lock, text, real.expansion, base)
                except Exception:
                    escapes.append((kind, text, traceback.format_exc()))
                    outcomes[f"{kind} escaped"] += 1
                    continue
                outcomes[f"{kind} {'refused' if refused else 'accepted'}"] += 1
        elapsed = time.perf_counter() - started
    seen: set[str] = set()
    for kind, text, trace in escapes:
        last = trace.strip().splitlines()[-1]
        if last not in seen:  # one example of each kind of escape
            seen.add(last)
            print(f"--- escape ({kind}):\n{text[:3000]!r}\n{trace}", file=sys.stderr)
    print(f"{args.cases:,} lockfiles and {args.cases:,} journals in {elapsed:.1f} s "
          f"(seed {args.seed}): " + ", ".join(f"{n:,} {k}" for k, n in sorted(outcomes.items())))
    print(f"escapes: {len(escapes)}")
    sys.exit(1 if escapes else 0)


if __name__ == "__main__":
    main()
