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
    "expand": "pipeline.core.expansion.expand",
    "Expansion": "pipeline.core.expansion.instances",
    "Instance": "pipeline.core.expansion.instances",
    "read_lockfile": "pipeline.shell.store.lockstore",
    "write_lockfile": "pipeline.shell.store.lockstore",
    "LockEntry": "pipeline.core.lock.lockfile", "Lockfile": "pipeline.core.lock.lockfile",
    "parse_lockfile": "pipeline.core.lock.lockfile",
    "load_manifest": "pipeline.shell.store.manifests",
    "parse_manifest": "pipeline.shell.store.manifests",
    "Plan": "pipeline.core.planning.plan", "PlanItem": "pipeline.core.planning.plan",
    "PlanStatus": "pipeline.core.planning.plan",
    "make_plan": "pipeline.core.planning.plan",
    "Job": "pipeline.core.manifest.model", "Manifest": "pipeline.core.manifest.model",
}

if TYPE_CHECKING:
    from pipeline.core.expansion.expand import expand
    from pipeline.core.expansion.instances import Expansion, Instance
    from pipeline.core.lock.lockfile import LockEntry, Lockfile, parse_lockfile
    from pipeline.core.manifest.model import Job, Manifest
    from pipeline.core.planning.plan import Plan, PlanItem, PlanStatus, make_plan
    from pipeline.errors import ImgspecError, ManifestError
    from pipeline.shell.store.lockstore import read_lockfile, write_lockfile
    from pipeline.shell.store.manifests import load_manifest, parse_manifest


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
