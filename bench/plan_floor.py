"""The floor `imgspec plan --json` is judged against (run by hand, not a test).

The least any planner must do for a one-job matrix manifest: load the YAML,
take the product of the matrix, render the prompt with a compiled Jinja
template, build each request, hash its canonical JSON (sha256) and print a
JSON item per instance. No validation, no lockfile, no pricing, no rules:
whatever imgspec does beyond this is its overhead.

    python bench/plan_floor.py MANIFEST > /dev/null
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from pathlib import Path

import jinja2
import yaml


def main() -> None:
    """Plan the manifest's first job the minimal way; items to stdout, one JSON per line."""
    document = yaml.safe_load(Path(sys.argv[1]).read_text())
    defaults = document.get("defaults", {})
    variables = document.get("vars", {})
    name, job = next(iter(document["jobs"].items()))
    template = jinja2.Environment(autoescape=False).from_string(job["prompt"])
    axes = list(job["matrix"])
    out = sys.stdout
    dumps = json.dumps
    sha256 = hashlib.sha256
    for values in itertools.product(*(job["matrix"][axis] for axis in axes)):
        row = dict(zip(axes, values, strict=True))
        request = {**defaults, "n": job.get("n", 1),
                   "prompt": template.render(**variables, **row)}
        canonical = dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        key = f"{name}@" + ",".join(f"{axis}={row[axis]}" for axis in axes)
        fingerprint = sha256(canonical.encode()).hexdigest()
        out.write(dumps({"key": key, "fingerprint": f"sha256:{fingerprint}",
                         "request": request}) + "\n")


if __name__ == "__main__":
    main()
