"""imgspec: declarative, reproducible, budgeted batches for APIMart's wan2.7 image API.

The Python API the ``imgspec`` command is built on::

    import imgspec

    plan = imgspec.plan("manifests/shop.yaml", simulate=True)
    print(f"{plan.total} {plan.currency} for {len(plan.items)} instances")
    result = imgspec.run("manifests/shop.yaml", simulate=True)
    print(result.complete, result.spent)

A manifest is a path or a mapping built in code (placed in ``root=``, default the
current directory). Options are keyword-only. Every exception is an
``ImgspecError``; ``exit_code`` on it is what the command line exits with. The
functions live in ``pipeline.api``, the types in the ``pipeline`` package.
"""

from __future__ import annotations

from pipeline import __version__
from pipeline.api import (
    JobGraph,
    ManifestSource,
    Validation,
    Verification,
    balance,
    check,
    check_lockfile,
    diff,
    export,
    gallery,
    graph,
    init,
    merge,
    move,
    plan,
    plan_items,
    prune,
    requests,
    review,
    run,
    run_async,
    run_error,
    schema,
    shard_of,
    status,
    validate,
    verify,
)
from pipeline.core.manifest.diagnostics import (
    Diagnostic,
)
from pipeline.core.planning.plan import (
    Plan,
    PlanHead,
    PlanItem,
    PlanStatus,
)
from pipeline.errors import (
    ApiError,
    ApiUnreachable,
    AuthError,
    BadResultLink,
    BalanceExhausted,
    BalanceTooLow,
    BudgetExceeded,
    DiffSideInvalid,
    ImgspecError,
    InputChanged,
    InputFileError,
    Interrupted,
    ItemsFailed,
    LinkLeadsOutside,
    LockfileError,
    ManifestError,
    MergeConflict,
    NotTls,
    OutputOutsideRoot,
    RequestRejected,
    RunGuardHeld,
    TransientError,
    UsageError,
)
from pipeline.operations.housekeeping import (
    PruneResult,
    StatusReport,
)
from pipeline.operations.project import (
    PlanStream,
)
from pipeline.operations.run.events import (
    BalanceNote,
    EventKind,
    MovesApplied,
    NothingToDo,
    RunEvent,
    RunNote,
    RunResult,
    ShardNote,
    StopReason,
)
from pipeline.shell.http.client import (
    Balance,
)

__all__ = [
    "ApiError",
    "ApiUnreachable",
    "AuthError",
    "BadResultLink",
    "Balance",
    "BalanceExhausted",
    "BalanceNote",
    "BalanceTooLow",
    "BudgetExceeded",
    "Diagnostic",
    "DiffSideInvalid",
    "EventKind",
    "ImgspecError",
    "InputChanged",
    "InputFileError",
    "Interrupted",
    "ItemsFailed",
    "JobGraph",
    "LinkLeadsOutside",
    "LockfileError",
    "ManifestError",
    "ManifestSource",
    "MergeConflict",
    "MovesApplied",
    "NotTls",
    "NothingToDo",
    "OutputOutsideRoot",
    "Plan",
    "PlanHead",
    "PlanItem",
    "PlanStatus",
    "PlanStream",
    "PruneResult",
    "RequestRejected",
    "RunEvent",
    "RunGuardHeld",
    "RunNote",
    "RunResult",
    "ShardNote",
    "StatusReport",
    "StopReason",
    "TransientError",
    "UsageError",
    "Validation",
    "Verification",
    "__version__",
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
