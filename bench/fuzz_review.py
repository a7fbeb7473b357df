"""Fuzz `imgspec review` with hostile requests (bodies, headers, paths) over real HTTP.

Run by hand (not a test):  python bench/fuzz_review.py [--cases 10000] [--seed 1] [--workers 4]

A simulated run of the storefronts manifest writes a real lockfile; `imgspec review`
serves it in a subprocess on 127.0.0.1. Then ``--cases`` requests are built by
``tests/hostile/review_requests.py`` (what the page sends, damaged) and sent from
``--workers`` threads at once. Each answer must be a 2xx or a 4xx with a JSON error,
never a 5xx, and the server must print no traceback. Anything else is printed with
the case that caused it (one example of each kind), and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    """Start a review server over a simulated run, send the cases; report the problems."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    import httpx

    from tests.gallery.helpers import Server, imgspec, storefronts
    from tests.hostile.review_requests import Case, Image, problem, review_case, send

    with tempfile.TemporaryDirectory() as tmp:
        manifest = storefronts(Path(tmp))
        imgspec("run", "--simulate", str(manifest), cwd=manifest.parent.parent)
        lock = json.loads(manifest.with_name("storefronts.simulate.lock.json").read_text())
        images = [Image(key, i, o["sha256"]) for key, e in lock["entries"].items()
                  for i, o in enumerate(e.get("outputs", []))]
        rng = random.Random(args.seed)
        clients = [f"fuzz-client-{n}" for n in range(8)]
        cases = [review_case(rng, images, clients) for _ in range(args.cases)]
        server = Server(manifest)
        base = server.url.rstrip("/")
        statuses: Counter[int] = Counter()
        problems: list[tuple[Case, str]] = []
        try:
            with httpx.Client(timeout=60) as client:
                def one(case: Case) -> tuple[Case, int, str | None]:
                    try:
                        answer = send(client, base, case)
                    except httpx.HTTPError as exc:
                        return case, 0, f"no answer ({type(exc).__name__}: {exc})"
                    return case, answer.status, problem(case, answer)

                started = time.perf_counter()
                with ThreadPoolExecutor(max_workers=args.workers) as pool:
                    for case, status, wrong in pool.map(one, cases):
                        statuses[status] += 1
                        if wrong is not None:
                            problems.append((case, wrong))
                elapsed = time.perf_counter() - started
        finally:
            stderr = server.stop()
        body_bytes = sum(len(c.body) for c in cases)
    tracebacks = stderr.count("Traceback (most recent call last)")
    seen: set[str] = set()
    for case, wrong in problems:
        if wrong not in seen:  # one example of each kind of problem
            seen.add(wrong)
            print(f"--- {wrong}:\n{case.describe()}", file=sys.stderr)
    if tracebacks:
        print(f"--- the server's stderr:\n{stderr[-6000:]}", file=sys.stderr)
    print(f"{args.cases:,} requests ({body_bytes / 1e6:.1f} MB of bodies) in {elapsed:.1f} s "
          f"from {args.workers} threads (seed {args.seed}); statuses: "
          + ", ".join(f"{n:,}x {s}" for s, n in sorted(statuses.items())))
    print(f"5xx: {sum(n for s, n in statuses.items() if s >= 500)}, problems: {len(problems)}, "
          f"tracebacks in the server's output: {tracebacks}")
    sys.exit(1 if problems or tracebacks else 0)


if __name__ == "__main__":
    main()
