"""How a plan reads: Terraform-style text for people, stable JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from pipeline.core.apimart.prices import json_number, money
from pipeline.core.lock.moves import Moved
from pipeline.core.planning.plan import STATUS_ORDER, Plan, PlanHead, PlanItem, PlanStatus

# Up to this many changed items are listed one per line; beyond it, counts per job.
MAX_LISTED = 200
SYMBOLS = {
    PlanStatus.NEW: "+", PlanStatus.CHANGED: "~", PlanStatus.REROLL: "↺",
    PlanStatus.RETRY: "↻", PlanStatus.RESUME: "…", PlanStatus.MISSING: "!",
    PlanStatus.DOWNLOAD: "↓", PlanStatus.WAITING: "⧗", PlanStatus.UP_TO_DATE: "=",
    PlanStatus.SKIPPED: "-", PlanStatus.REUSE: "=",
}


def plan_json(plan: Plan) -> dict[str, Any]:
    """The stable machine-readable plan (``imgspec plan --json``), as one value."""
    return {**_plan_head(plan.head(), plan.moves), "items": [_item_json(i) for i in plan.items]}


def write_plan_json(plan: Plan, write: Callable[[str], object]) -> None:
    """``plan_json`` as text, streamed: the head indented, then one compact line per item.

    The same JSON value as ``json.dumps(plan_json(plan))``; but no list of 100,000
    item dicts and no single string of all of them is held, and each item is
    encoded by the C encoder (``indent`` would force the pure-Python one).
    """
    write_plan_document(plan.head(), bool(plan.items),
                        lambda: write_plan_items(plan.items, write), write, moves=plan.moves)


def write_plan_document(head: PlanHead, has_items: bool, write_items: Callable[[], object],
                        write: Callable[[str], object], *,
                        moves: tuple[Moved, ...] = ()) -> None:
    """The plan's JSON text around its items, which ``write_items`` writes where they go
    (the text ``write_plan_items`` made: the items may have been written aside first,
    as the head's figures are known only once every item has passed)."""
    text = json.dumps({**_plan_head(head, moves), "items": []}, indent=2, ensure_ascii=False)
    if not has_items:
        write(text + "\n")
        return
    opening, _empty, closing = text.rpartition("[]")
    write(opening + "[\n")
    write_items()
    write("\n  ]" + closing + "\n")


def write_plan_items(items: Iterable[PlanItem], write: Callable[[str], object],
                     *, each: Callable[[PlanItem], object] | None = None) -> int:
    """The items as ``write_plan_document`` lists them: one compact JSON line each,
    joined by commas, written in batches; ``each`` sees every item as it passes.
    Returns how many there were."""
    encode = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
    batch: list[str] = []
    count = 0
    for item in items:
        if each is not None:
            each(item)
        batch.append(encode(_item_json(item)))
        if len(batch) >= 1024:
            write((",\n    " if count else "    ") + ",\n    ".join(batch))
            count += len(batch)
            batch.clear()
    if batch:
        write((",\n    " if count else "    ") + ",\n    ".join(batch))
        count += len(batch)
    return count


def _plan_head(head: PlanHead, moves: tuple[Moved, ...] = ()) -> dict[str, Any]:
    """Everything of ``plan_json`` but its items."""
    tally = head.tally
    return {
        "manifest": head.manifest,
        "name": head.name,
        "counts": {**tally.counts, "orphaned": len(head.orphaned), "moved": head.moved},
        "to_submit": {"instances": tally.instances, "images": tally.images},
        "cost": {
            "currency": head.currency,
            "total": json_number(tally.total),
            "by_model": {k: json_number(v) for k, v in sorted(tally.by_model.items())},
            "by_job": {k: json_number(v) for k, v in tally.by_job.items()},
        },
        "budget": {
            "max_cost": None if head.budget is None else json_number(head.budget),
            "max_total": None if head.max_total is None else json_number(head.max_total),
            "spent": json_number(head.spent),
            "total": json_number(head.spent + tally.total),
            "within": head.within_budget,
        },
        "orphaned": list(head.orphaned),
        "moved": [{"from": m.source, "to": m.target, "files": len(m.files)} for m in moves],
        "outputs": head.destination,
        "warnings": [d.format(snippet=False) for d in head.warnings],
    }


def _item_json(item: PlanItem) -> dict[str, Any]:
    inst = item.instance
    out = {
        "key": inst.key,
        "job": inst.job,
        "status": item.status.value,
        "model": inst.model,
        "n": inst.n,
        "cost": json_number(item.cost) if item.cost else 0,
        "matrix": dict(inst.matrix),
        "needs": list(item.needs),
        "fingerprint": item.fingerprint,
    }
    if item.reroll:
        out["reroll"] = item.reroll
    if item.repoll:
        out["repoll"] = True
    if item.note:
        out["note"] = item.note
    if item.reuse is not None:
        out["reuse"] = {"from": item.reuse.result.source, "task_id": item.reuse.result.task_id,
                        "via": list(item.reuse.via)}
    return out


def _model(item: PlanItem) -> str:
    return item.instance.model


def _job(item: PlanItem) -> str:
    return item.job


def plan_text(plan: Plan) -> str:
    """The human plan: changes, a cost table by job and model, totals and the budget."""
    cur = plan.currency
    lines = [f"imgspec plan: {plan.name} ({plan.manifest})", ""]
    lines += [d.format(snippet=False) for d in plan.warnings]
    if plan.warnings:
        lines.append("")
    changes = [i for i in plan.items if i.status not in (PlanStatus.UP_TO_DATE, PlanStatus.SKIPPED)]
    if not changes and not plan.moves:
        lines.append("No changes. Every instance is up to date.")
    elif not changes:
        pass  # only moves: listed below
    elif len(changes) <= MAX_LISTED:
        width = max(len(i.key) for i in changes)
        model_width = max(len(i.instance.model) for i in changes)
        for item in changes:
            price = (f"{item.instance.n:>2} × {item.instance.model:<{model_width}}  "
                     f"{money(item.cost, cur):>8}" if item.pays
                     else "already paid, polled again" if item.repoll
                     else "already paid, downloaded again" if item.status == PlanStatus.DOWNLOAD
                     else item.note or "" if item.status == PlanStatus.REUSE
                     else "already paid, will be polled")
            note = (f"  ({item.note})" if item.note and item.status != PlanStatus.REUSE
                    else "")
            lines.append(f"  {SYMBOLS[item.status]} {item.status.value:<8} "
                         f"{item.key:<{width}}  {price}{note}".rstrip())
    else:
        lines.append(f"  {len(changes):,} instances change (listed per job below; "
                     "--json lists each)")
    for move in plan.moves[:MAX_LISTED]:
        files = len(move.files)
        lines.append(f"  → moved {move.source} to {move.target}"
                     + (f"  ({files} file{'' if files == 1 else 's'} with it)" if files else ""))
    if len(plan.moves) > MAX_LISTED:
        lines.append(f"  → ... and {len(plan.moves) - MAX_LISTED:,} more moved")
    for key in plan.orphaned[:MAX_LISTED]:
        lines.append(f"  ? orphaned {key}  (kept in the lockfile until `imgspec prune`)")
    if len(plan.orphaned) > MAX_LISTED:
        lines.append(f"  ? ... and {len(plan.orphaned) - MAX_LISTED:,} more orphaned")
    lines += ["", *cost_table(plan), ""]
    counts = plan.counts()
    parts = [f"{counts[s.value]:,} {s.value}" for s in STATUS_ORDER if counts[s.value]]
    if counts["orphaned"]:
        parts.append(f"{counts['orphaned']:,} orphaned")
    if plan.moves:
        parts.append(f"{len(plan.moves):,} moved")
    submitting = plan.submitting
    lines.append(
        f"Plan: {len(submitting):,} to submit ({plan.images:,} images, "
        f"{money(plan.total, cur)}); " + ", ".join(parts) + "."
    )
    lines.append(budget_line(plan))
    if plan.max_total is not None:
        lines.append(total_budget_line(plan))
    if plan.destination is not None:
        lines.append(f"Outputs: {plan.destination}")
    return "\n".join(lines) + "\n"


def cost_table(plan: Plan) -> list[str]:
    """Rows of instances, images and cost per (job, model) for what will be submitted."""
    rows: dict[tuple[str, str], list[Any]] = {}
    for item in plan.submitting:
        row = rows.setdefault((item.job, item.instance.model), [0, 0, Decimal(0)])
        row[0] += 1
        row[1] += item.instance.n
        row[2] += item.cost
    if not rows:
        return ["Nothing to submit: this run costs nothing."]
    cur = plan.currency
    header = ("job", "model", "instances", "images", "cost")
    body = [(job, model, f"{r[0]:,}", f"{r[1]:,}", money(r[2], cur))
            for (job, model), r in rows.items()]
    total = ("total", "", f"{len(plan.submitting):,}", f"{plan.images:,}",
             money(plan.total, cur))
    widths = [max(len(r[c]) for r in (header, *body, total)) for c in range(5)]

    def fmt(row: tuple[str, ...]) -> str:
        return "  " + "  ".join(
            cell.ljust(widths[c]) if c < 2 else cell.rjust(widths[c])
            for c, cell in enumerate(row)).rstrip()

    rule = "  " + "  ".join("-" * w for w in widths)
    return [fmt(header), rule, *(fmt(r) for r in body), rule, fmt(total)]


def budget_line(plan: Plan) -> str:
    """``Budget: ¥7.40 of ¥30.00: within budget`` (or over, or no budget set)."""
    cur = plan.currency
    if plan.budget is None:
        if plan.max_total is not None:
            return "Budget: no cap per run (budget.max_cost or --max-cost sets one)."
        return "Budget: none set (add budget: {max_cost: N} or pass --max-cost)."
    if plan.total <= plan.budget:
        return f"Budget: {money(plan.total, cur)} of {money(plan.budget, cur)}: within budget."
    return (f"Budget: {money(plan.total, cur)} is over the budget of "
            f"{money(plan.budget, cur)}: narrow the plan (--job, --where) or raise "
            "budget.max_cost / --max-cost.")



def total_budget_line(plan: Plan) -> str:
    """``Total budget: spent so far ¥X; this plan ¥Y; total ¥X+Y of ¥N: within it``."""
    cur = plan.currency
    assert plan.max_total is not None
    total = plan.spent + plan.total
    text = (f"Total budget: spent so far {money(plan.spent, cur)}; this plan "
            f"{money(plan.total, cur)}; total {money(total, cur)} of "
            f"{money(plan.max_total, cur)}")
    if total <= plan.max_total:
        return text + ": within budget.max_total."
    return text + ": over budget.max_total: narrow the plan (--job, --where) or raise it."


def moves_done(moves: tuple[Moved, ...], *, dry_run: bool = False) -> str:
    """What a run (or ``lock mv``) moved: one line per entry, then the count."""
    verb = "would move" if dry_run else "moved"
    lines = []
    for move in moves:
        files = len(move.files)
        lines.append(f"→ {verb} {move.source} to {move.target}"
                     + (f" ({files} file{'' if files == 1 else 's'})" if files else ""))
    count = len(moves)
    lines.append(f"{count} lock entr{'y' if count == 1 else 'ies'} "
                 f"{'would be ' if dry_run else ''}moved"
                 + ("; dry run: nothing was changed" if dry_run else ""))
    return "\n".join(lines) + "\n"


def spend_question(plan: Plan) -> str:
    """What ``run`` asks before it spends."""
    return f"Spend up to {money(plan.total, plan.currency)}?"
