"""The Python API of imgspec: what the ``imgspec`` command line is built on.

::

    import imgspec

    plan = imgspec.plan("manifests/shop.yaml", simulate=True)
    print(plan.total, plan.currency)
    result = imgspec.run("manifests/shop.yaml", simulate=True)
    assert result.complete

Every function takes the manifest first (a path, or a mapping built in code, then
placed in ``root=``), and keyword-only options. Inputs are checked before
anything is read; every exception is an ``ImgspecError`` (``pipeline.errors``).
Nothing here prompts or prints. The names are imported on first use, so that
``import imgspec`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "ManifestSource": "pipeline.api.source",
    "Validation": "pipeline.api.validation", "check": "pipeline.api.validation",
    "validate": "pipeline.api.validation",
    "plan": "pipeline.api.planning", "plan_items": "pipeline.api.planning",
    "shard_of": "pipeline.api.planning",
    "run": "pipeline.api.running", "run_async": "pipeline.api.running",
    "run_error": "pipeline.api.running", "balance": "pipeline.api.running",
    "Verification": "pipeline.api.store", "status": "pipeline.api.store",
    "verify": "pipeline.api.store", "prune": "pipeline.api.store",
    "move": "pipeline.api.store",
    "JobGraph": "pipeline.api.inspect", "graph": "pipeline.api.inspect",
    "requests": "pipeline.api.inspect",
    "gallery": "pipeline.api.images", "export": "pipeline.api.images",
    "review": "pipeline.api.images",
    "init": "pipeline.api.project", "schema": "pipeline.api.project",
    "diff": "pipeline.api.project", "check_lockfile": "pipeline.api.project",
    "merge": "pipeline.api.project",
    # The types the functions take and return.
    "Diagnostic": "pipeline.core.manifest.diagnostics",
    "Plan": "pipeline.core.planning.plan", "PlanItem": "pipeline.core.planning.plan",
    "RunEvent": "pipeline.operations.run.events", "RunNote": "pipeline.operations.run.events",
    "RunResult": "pipeline.operations.run.events",
}

if TYPE_CHECKING:
    from pipeline.api.images import export, gallery, review
    from pipeline.api.inspect import JobGraph, graph, requests
    from pipeline.api.planning import plan, plan_items, shard_of
    from pipeline.api.project import check_lockfile, diff, init, merge, schema
    from pipeline.api.running import balance, run, run_async, run_error
    from pipeline.api.source import ManifestSource
    from pipeline.api.store import Verification, move, prune, status, verify
    from pipeline.api.validation import Validation, check, validate
    from pipeline.core.manifest.diagnostics import Diagnostic
    from pipeline.core.planning.plan import Plan, PlanItem
    from pipeline.operations.run.events import RunEvent, RunNote, RunResult


if not TYPE_CHECKING:  # to a type checker, only the names imported above exist

    def __getattr__(name: str) -> Any:
        """The public name ``name``, imported from its module on first use."""
        module = _WHERE.get(name)
        if module is None:
            raise AttributeError(f"module 'pipeline.api' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


__all__ = [
    "Diagnostic",
    "JobGraph",
    "ManifestSource",
    "Plan",
    "PlanItem",
    "RunEvent",
    "RunNote",
    "RunResult",
    "Validation",
    "Verification",
    "balance",
    "check",
    "check_lockfile",
    "diff",
    "export",
    "gallery",
    "graph",
    "init",
    "merge",
    "move",
    "plan",
    "plan_items",
    "prune",
    "requests",
    "review",
    "run",
    "run_async",
    "run_error",
    "schema",
    "shard_of",
    "status",
    "validate",
    "verify",
]
