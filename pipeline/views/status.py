"""What ``status``, ``verify`` and ``prune`` found, in words (and ``status --json``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline.core.apimart.prices import json_number, money

if TYPE_CHECKING:  # types only: a view never imports the operations it renders
    from pipeline.operations.housekeeping import PruneResult, StatusReport
    from pipeline.shell.store.outputs import VerifyProblem

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


def prune_text(result: PruneResult, currency: str = "CNY") -> str:
    """One line per removed key and per image removed or left on disk, then the count,
    the spend kept as history, and what to do about images left."""
    would = "would prune" if result.dry_run else "pruned"
    lines = [f"{would} {k}" for k in result.removed]
    lines += [f"pruned {k} (removal recorded by an interrupted prune)" for k in result.recovered]
    gone = "would remove" if result.dry_run else "removed"
    lines += [f"  {gone} {path}" for path in result.deleted_files]
    lines += [f"  left on disk {path}" for path in result.kept_files]
    total = len(result.removed) + len(result.recovered)
    noun = f"{total} orphaned entr{'y' if total == 1 else 'ies'}"
    summary = f"{noun} {'would be ' if result.dry_run else ''}removed"
    if result.recovered:
        summary += (f" ({len(result.recovered)} by an interrupted prune: its journal was "
                    "folded into the lockfile now)")
    lines.append(summary)
    if result.retired:
        lines.append(f"their spend {money(result.retired, currency)} stays in the lockfile's "
                     f"history: charged so far {money(result.charged, currency)}")
    if result.kept_files:
        n = len(result.kept_files)
        lines.append(f"{n} image{'' if n == 1 else 's'} of pruned entries left on disk; "
                     "`imgspec prune --outputs` removes them")
    if result.recovered_updates:
        lines.append(f"also saved {result.recovered_updates} entr"
                     f"{'y' if result.recovered_updates == 1 else 'ies'} an interrupted run "
                     "had recorded only in its journal")
    if result.dry_run:
        lines.append("dry run: nothing was changed")
    return "\n".join(lines) + "\n"
