"""imgspec: a declarative, reproducible, budgeted batch pipeline for APIMart's wan2.7 image API.

The pure core, in the order data flows through it::

    load_manifest / parse_manifest  →  expand  →  make_plan
       (YAML + schema → Manifest)     (Instances)   (Plan, against a Lockfile)

The names below are imported when first used (PEP 562), so that a command pays
only for the modules it needs: ``imgspec --help`` imports none of the core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_WHERE = {
    "ImgspecError": "pipeline.errors", "ManifestError": "pipeline.errors",
    "expand": "pipeline.expand",
    "Expansion": "pipeline.instances", "Instance": "pipeline.instances",
    "read_lockfile": "pipeline.journal", "write_lockfile": "pipeline.journal",
    "LockEntry": "pipeline.lockfile", "Lockfile": "pipeline.lockfile",
    "parse_lockfile": "pipeline.lockfile",
    "load_manifest": "pipeline.manifest", "parse_manifest": "pipeline.manifest",
    "Plan": "pipeline.plan", "PlanItem": "pipeline.plan", "PlanStatus": "pipeline.plan",
    "make_plan": "pipeline.plan",
    "Job": "pipeline.spec", "Manifest": "pipeline.spec",
}

if TYPE_CHECKING:
    from pipeline.errors import ImgspecError, ManifestError
    from pipeline.expand import expand
    from pipeline.instances import Expansion, Instance
    from pipeline.journal import read_lockfile, write_lockfile
    from pipeline.lockfile import LockEntry, Lockfile, parse_lockfile
    from pipeline.manifest import load_manifest, parse_manifest
    from pipeline.plan import Plan, PlanItem, PlanStatus, make_plan
    from pipeline.spec import Job, Manifest


def __getattr__(name: str) -> Any:
    """The public name ``name``, imported from its module on first use."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Expansion",
    "ImgspecError",
    "Instance",
    "Job",
    "LockEntry",
    "Lockfile",
    "Manifest",
    "ManifestError",
    "Plan",
    "PlanItem",
    "PlanStatus",
    "__version__",
    "expand",
    "load_manifest",
    "make_plan",
    "parse_lockfile",
    "parse_manifest",
    "read_lockfile",
    "write_lockfile",
]
