"""By-hand long run of the user journeys (tests/journeys): fresh random journeys until a
number of steps is reached, every failure kept (not just the first), then the figures.

    python bench/journeys.py --steps 2000              # ~2,000 steps, journeys of 20
    python bench/journeys.py --steps 300 --length 10 --out /tmp/journeys.log
    python bench/journeys.py --steps 1000 --seed 7        # reproducible: call i uses seed 7+i

Each failure is printed with hypothesis's step list and the journey log; failures are
grouped by their first line (numbers masked) in the closing figures. The pytest form,
``IMGSPEC_JOURNEY_EXAMPLES=100 IMGSPEC_JOURNEY_STEPS=20 python3 -m pytest tests/journeys``,
stops at the first failure and shrinks it to a minimal journey with
``IMGSPEC_JOURNEY_SHRINK=1``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.journeys import world
from tests.journeys.test_journeys import Journey

# Typed once here: older hypothesis releases leave it unannotated, newer ones do not.
run_machine: Callable[..., None] = run_state_machine_as_test


def cause(err: BaseException) -> BaseException:
    """The failure itself: hypothesis wraps one that did not recur (FlakyFailure) in a
    group; its first member is what failed."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    return err


def kind(err: BaseException) -> str:
    """A failure's first line with numbers and paths masked, to group alike ones."""
    err = cause(err)
    first = (str(err).splitlines() or [type(err).__name__])[0]
    first = re.sub(r"/tmp/\S+", "<tmp>", first)
    return f"{type(err).__name__}: " + re.sub(r"\d+", "N", first)[:200]


def main() -> int:
    """Run journeys until ``--steps`` steps; print the figures; exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="total steps to reach")
    parser.add_argument("--length", type=int, default=20, help="steps per journey at most")
    parser.add_argument("--batch", type=int, default=10,
                        help="journeys per hypothesis call (a call stops at its first failure)")
    parser.add_argument("--out", type=Path, help="also write every failure here")
    parser.add_argument("--seed", type=int,
                        help="seed of the first hypothesis call (the next ones count up); "
                             "default: random journeys")
    args = parser.parse_args()
    journey_settings = settings(
        max_examples=args.batch, stateful_step_count=args.length, deadline=None, database=None,
        derandomize=False, print_blob=True, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck))
    failures: Counter[str] = Counter()
    journeys = 0
    started = time.monotonic()
    log = args.out.open("w") if args.out else None
    with world.shared_sim() as sim:
        Journey.sim = sim
        while world.STEPS_TAKEN[0] < args.steps:
            journeys += 1  # batches: hypothesis's first journey of a call is the simplest one
            machine: type[Journey] = Journey
            if args.seed is not None:
                machine = seed(args.seed + journeys - 1)(type("Journey", (Journey,), {}))
            try:
                run_machine(machine, settings=journey_settings)
            except Exception as err:
                failures[kind(err)] += 1
                inner = cause(err)
                text = "".join(traceback.format_exception_only(err))
                if inner is not err:
                    text += "".join(traceback.format_exception_only(inner))
                notes = "\n".join([*getattr(err, "__notes__", []),
                                   *(getattr(inner, "__notes__", []) if inner is not err else [])])
                report = f"=== call {journeys}: {kind(err)}\n{text}\n{notes}\n"
                print(report, flush=True)
                if log is not None:
                    log.write(report)
                    log.flush()
            elapsed = time.monotonic() - started
            print(f"calls {journeys}, steps {world.STEPS_TAKEN[0]}, failed "
                  f"{sum(failures.values())}, {elapsed:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started
    steps = world.STEPS_TAKEN[0]
    summary = [f"{journeys} hypothesis calls, {steps} steps in {elapsed:.0f} s "
               f"({elapsed / max(steps, 1):.2f} s a step); {sum(failures.values())} failed"]
    summary += [f"  {count:4d} x {what}" for what, count in failures.most_common()]
    print("\n".join(summary))
    if log is not None:
        log.write("\n".join(summary) + "\n")
        log.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
