"""Plan and run a small manifest from Python, against the simulator: no key, no cost.

    python examples/plan_and_run.py [FOLDER]

The manifest is built in code (a mapping) and placed in FOLDER (default: the
current directory): its lockfile, outputs and the simulated account's state are
written there, as they would be beside a manifest file of the same name. Run it
twice: the second run finds everything done and pays nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import imgspec

MANIFEST: dict[str, Any] = {
    "version": 1,
    "name": "postcards",
    "defaults": {"model": "wan2.7-image", "size": "1K"},
    "jobs": {
        "cards": {
            "prompt": "A watercolour postcard of {{ city }} at dusk",
            "matrix": {"city": ["Lisbon", "Kyoto", "Quito"]},
        },
    },
}


def main(argv: list[str]) -> int:
    """Plan, print the cost, run, print the result; exit 0 when every instance is done."""
    root = Path(argv[1]) if len(argv) > 1 else Path.cwd()
    for problem in imgspec.validate(MANIFEST, root=root):
        print(problem.format())
    plan = imgspec.plan(MANIFEST, root=root, simulate=True)
    print(f"plan: {len(plan.items)} instances, {plan.total} {plan.currency} to spend")
    try:
        result = imgspec.run(MANIFEST, root=root, simulate=True, concurrency=4)
    except imgspec.ImgspecError as exc:  # a gate refused the run: nothing was spent
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"run: {len(result.done)} done, {len(result.failed)} failed, "
          f"charged {result.tally.charged} {plan.currency}; images in {result.outputs}")
    error = imgspec.run_error(result)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
