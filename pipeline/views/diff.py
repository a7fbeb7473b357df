"""How ``imgspec diff`` reads: Terraform-style text, stable JSON, a pull-request comment."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from pipeline.core.apimart.prices import json_number, money
from pipeline.core.planning.diff import CHANGES, CostGroup, FieldChange, ItemDiff, SpecDiff
from pipeline.views.plan import SYMBOLS as SIGN

SYMBOLS = {"added": "+", "changed": "~", "removed": "-"}
MAX_LISTED = 200  # text: instances listed one by one; beyond, counts per job
MAX_COMMENT_ITEMS = 100  # markdown: a pull-request comment must stay well below 65,536 chars
MAX_VALUE = 300  # characters of one old/new value shown in text and markdown


def signed(amount: Decimal, currency: str) -> str:
    """``+¥0.40``, ``-¥0.20``, ``¥0.00``."""
    if amount > 0:
        return "+" + money(amount, currency)
    if amount < 0:
        return "-" + money(-amount, currency)
    return money(amount, currency)


def value_text(value: Any) -> str:
    """A request value as in the manifest's JSON: strings quoted, absent as ``(none)``."""
    if value is None:
        return "(none)"
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _field_line(change: FieldChange) -> str:
    return f"~ {change.field}: {value_text(change.old)} -> {value_text(change.new)}"


def _item_price(item: ItemDiff, currency: str) -> str:
    if item.change == "removed":
        return f"was {money(item.before, currency)}"
    if item.to_apply == 0:
        return "nothing to pay"
    return money(item.to_apply, currency)


def _summary(diff: SpecDiff) -> str:
    parts = [f"{diff.count(c)} {c}" for c in CHANGES if diff.count(c)]
    return ", ".join(parts) if parts else "no instance changes"


def _item_lines(items: Sequence[ItemDiff], currency: str, indent: str) -> list[str]:
    width = max(len(i.key) for i in items)
    model_width = max(len(i.model) for i in items)
    lines = []
    for item in items:
        lines.append(f"{indent}{SYMBOLS[item.change]} {item.key:<{width}}  "
                     f"{item.model:<{model_width}}  {_item_price(item, currency)}")
        lines += [f"{indent}    {_field_line(f)}" for f in item.fields]
    return lines


def _table(groups: Mapping[str, CostGroup], title: str, currency: str,
           total: CostGroup) -> list[list[str]]:
    rows = [[title, "before", "after", "delta", "to apply"]]
    for name, g in groups.items():
        rows.append([name, money(g.before, currency), money(g.after, currency),
                     signed(g.delta, currency), money(g.to_apply, currency)])
    rows.append(["total", money(total.before, currency), money(total.after, currency),
                 signed(total.delta, currency), money(total.to_apply, currency)])
    return rows


def _totals(diff: SpecDiff) -> CostGroup:
    return CostGroup(diff.to_apply, diff.before, diff.after)


def _text_table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]

    def fmt(row: list[str]) -> str:
        return "  " + "  ".join(cell.ljust(widths[c]) if c == 0 else cell.rjust(widths[c])
                                for c, cell in enumerate(row)).rstrip()

    rule = "  " + "  ".join("-" * w for w in widths)
    return [fmt(rows[0]), rule, *(fmt(r) for r in rows[1:-1]), rule, fmt(rows[-1])]


def _unchanged_lines(diff: SpecDiff, indent: str) -> list[str]:
    if not diff.also_run:
        return []
    lines = [f"Also run: {diff.unchanged_to_run:,} instance(s) whose request did not change "
             f"(failed, unfinished or never done at {diff.against}, or editing a changed "
             f"image): {money(diff.unchanged_cost, diff.currency)}."]
    shown = diff.also_run[:MAX_LISTED]
    width = max(len(i.key) for i in shown)
    lines += [f"{indent}{SIGN[i.status]} {i.key:<{width}}  {i.status.value:<8}  "
              f"{money(i.cost, diff.currency)}" for i in shown]
    if len(diff.also_run) > len(shown):
        lines.append(f"{indent}... and {len(diff.also_run) - len(shown):,} more")
    return lines


def _apply_line(diff: SpecDiff) -> str:
    cur = diff.currency
    return (f"Cost to apply: {money(diff.to_apply, cur)} (what `imgspec run` pays, given "
            f"{diff.against}'s lockfile). Spec: {money(diff.before, cur)} -> "
            f"{money(diff.after, cur)} ({signed(diff.delta, cur)}).")


def diff_text(diff: SpecDiff) -> str:
    """The diff for a terminal: instances, fields old -> new, cost tables, totals."""
    cur = diff.currency
    lines = [f"imgspec diff: {diff.name} ({diff.manifest}) against {diff.against}", ""]
    if not diff.items:
        lines.append("No instance is added, changed or removed.")
    elif len(diff.items) <= MAX_LISTED:
        lines += _item_lines(diff.items, cur, "  ")
    else:
        for change in CHANGES:
            jobs: dict[str, int] = {}
            for item in diff.items:
                if item.change == change:
                    jobs[item.job] = jobs.get(item.job, 0) + 1
            lines += [f"  {SYMBOLS[change]} {n:,} {change} in {job}" for job, n in jobs.items()]
        lines.append("  (--format json lists every instance)")
    unchanged = _unchanged_lines(diff, "  ")
    if unchanged:
        lines += ["", *unchanged]
    total = _totals(diff)
    lines += ["", *_text_table(_table(diff.by_job, "job", cur, total)), "",
              *_text_table(_table(diff.by_model, "model", cur, total)), "",
              f"Diff: {_summary(diff)}.", _apply_line(diff)]
    return "\n".join(lines) + "\n"


def _amount(value: Decimal) -> float | int:
    return json_number(value)


def _group_json(group: CostGroup) -> dict[str, float | int]:
    return {"to_apply": _amount(group.to_apply), "before": _amount(group.before),
            "after": _amount(group.after), "delta": _amount(group.delta)}


def diff_json(diff: SpecDiff) -> dict[str, Any]:
    """The stable machine-readable diff (``imgspec diff --format json``)."""
    return {
        "against": diff.against,
        "manifest": diff.manifest,
        "name": diff.name,
        "counts": {**{c: diff.count(c) for c in CHANGES},
                   "unchanged_to_run": diff.unchanged_to_run},
        "items": [
            {"key": i.key, "job": i.job, "model": i.model, "change": i.change,
             "fields": [{"field": f.field, "old": f.old, "new": f.new} for f in i.fields],
             "cost": _amount(i.to_apply), "before": _amount(i.before),
             "after": _amount(i.after)}
            for i in diff.items
        ],
        "cost": {
            "currency": diff.currency,
            "to_apply": _amount(diff.to_apply),
            "before": _amount(diff.before),
            "after": _amount(diff.after),
            "delta": _amount(diff.delta),
            "unchanged_to_run": _amount(diff.unchanged_cost),
            "by_job": {k: _group_json(v) for k, v in diff.by_job.items()},
            "by_model": {k: _group_json(v) for k, v in diff.by_model.items()},
        },
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def diff_markdown(diff: SpecDiff) -> str:
    """The diff as a pull-request comment: a summary line, a cost table, details folded."""
    cur = diff.currency
    lines = [
        f"### imgspec diff: `{diff.name}` against `{diff.against}`",
        "",
        f"**Cost to apply: {money(diff.to_apply, cur)}** · spec {money(diff.before, cur)} → "
        f"{money(diff.after, cur)} ({signed(diff.delta, cur)}) · {_summary(diff)}",
        "",
    ]
    rows = _table(diff.by_job, "job", cur, _totals(diff))
    lines.append("| " + " | ".join(rows[0]) + " |")
    lines.append("|---|" + "---:|" * (len(rows[0]) - 1))
    for row in rows[1:-1]:
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    lines.append("| " + " | ".join(f"**{_cell(c)}**" for c in rows[-1]) + " |")
    unchanged = _unchanged_lines(diff, "")
    if unchanged:
        lines += ["", unchanged[0], "", "````", *unchanged[1:], "````"]
    if diff.items:
        shown = diff.items[:MAX_COMMENT_ITEMS]
        lines += ["", f"<details><summary>{len(diff.items):,} instance change(s)</summary>",
                  "", "````diff"]
        lines += _item_lines(shown, cur, "")
        lines.append("````")
        if len(diff.items) > len(shown):
            lines.append(f"… and {len(diff.items) - len(shown):,} more "
                         "(`imgspec diff --format json` lists every one)")
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"



def fail_above_text(diff: SpecDiff, limit: Decimal) -> str:
    """Why ``diff --fail-above`` fails: the change costs more than the limit to apply."""
    return (f"the change costs {money(diff.to_apply, diff.currency)} to apply, above "
            f"--fail-above {money(limit, diff.currency)}")
