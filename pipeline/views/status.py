"""What ``status``, ``verify`` and ``prune`` found, in words (and ``status --json``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline.pricing import json_number, money

if TYPE_CHECKING:  # types only: a view never imports the operations it renders
    from pipeline.housekeeping import PruneResult, StatusReport
    from pipeline.outputs import VerifyProblem

UNKNOWN_OUTCOME = "outcome unknown; the next run replays it with the same key"


def status_json(report: StatusReport) -> dict[str, Any]:
    """The stable ``status --json`` form."""
    return {
        "lockfile": str(report.lockfile),
        "counts": report.counts,
        "charged": json_number(report.charged),
        "failed": [{"key": k, "error": e} for k, e in report.failed],
        "in_progress": [
            {"key": k, "status": s, "task_id": t,
             "note": UNKNOWN_OUTCOME if s == "submitting" else "the next run polls it"}
            for k, s, t in report.in_progress],
    }


def status_text(report: StatusReport, currency: str = "CNY") -> str:
    """``imgspec status`` for people."""
    lines = [f"{report.lockfile}: " + (", ".join(
        f"{n} {s}" for s, n in report.counts.items() if n) or "no entries"),
        f"charged so far: {money(report.charged, currency)}"]
    lines += [f"  failed   {k}: {e}" for k, e in report.failed]
    for key, state, task in report.in_progress:
        # A submission not answered before the run ended may or may not have created
        # a task: only the replay of its key (which cannot pay twice) will tell.
        lines.append(f"  unknown  {key}: {UNKNOWN_OUTCOME}" if state == "submitting"
                     else f"  running  {key} (task {task}; the next run polls it)")
    return "\n".join(lines) + "\n"


def verify_lines(checked: int, problems: Sequence[VerifyProblem]) -> tuple[list[str], str]:
    """(one line per problem, for stderr; the summary line)."""
    return ([f"{p.problem}: {p.path} ({p.key})" for p in problems],
            f"{checked} file(s) checked, {len(problems)} problem(s)")


def prune_text(result: PruneResult) -> str:
    """One line per removed key, then the count and what happened."""
    lines = [f"pruned {k}" for k in result.removed]
    lines += [f"pruned {k} (removal recorded by an interrupted prune)" for k in result.recovered]
    total = len(result.removed) + len(result.recovered)
    summary = f"{total} orphaned entr{'y' if total == 1 else 'ies'} removed"
    if result.recovered:
        summary += (f" ({len(result.recovered)} by an interrupted prune: its journal was "
                    "folded into the lockfile now)")
    lines.append(summary)
    if result.recovered_updates:
        lines.append(f"also saved {result.recovered_updates} entr"
                     f"{'y' if result.recovered_updates == 1 else 'ies'} an interrupted run "
                     "had recorded only in its journal")
    return "\n".join(lines) + "\n"
