"""The plan diffs instances against the lockfile and prices exactly what will be submitted."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from pipeline.core.expansion.identity import fingerprint
from pipeline.core.expansion.instances import Expansion
from pipeline.core.lock.lockfile import LockEntry, Lockfile, Output
from pipeline.core.planning.plan import PlanStatus, make_plan, matches_where, resolved_request
from pipeline.views.plan import plan_json
from tests.unit.conftest import Build

MANIFEST = """
budget: {max_cost: 5}
jobs:
  gen:
    prompt: "{{ shop }}"
    n: 2
    matrix: {shop: [a, b], model: [wan2.7-image, wan2.7-image-pro]}
  edit:
    prompt: night
    image_urls: [{from: gen, where: {model: wan2.7-image}}]
"""


def done(exp: Expansion, instance_key: str, **changes: Any) -> LockEntry:
    """A lock entry recording the instance as done, with ``changes`` applied."""
    inst = exp.by_key()[instance_key]
    request = resolved_request(inst, {})
    entry = LockEntry(
        key=instance_key, job=inst.job, fingerprint=fingerprint(request) if request else "x",
        status="done", request=inst.request,
        outputs=tuple(Output(f"out/{instance_key}/{i}.png", f"{i}" * 64, 10, 1, 1)
                      for i in range(inst.n)))
    return replace(entry, **changes)


def test_everything_new_without_lockfile(build: Build) -> None:
    """Without a lockfile every generation is new and every edit waits for it."""
    exp = build(MANIFEST)
    plan = make_plan(exp, Lockfile("m.yaml"), present=lambda p: True)
    assert [i.status for i in plan.items] == [PlanStatus.NEW] * 4 + [PlanStatus.WAITING] * 2
    assert plan.images == 8 + 2
    assert plan.total == Decimal("0.20") * 2 * 2 + Decimal("0.50") * 2 * 2 + Decimal("0.20") * 2
    assert plan.cost_by(lambda i: i.job) == {"gen": Decimal("2.80"), "edit": Decimal("0.40")}
    assert plan.within_budget


def test_statuses_against_the_lockfile(build: Build) -> None:
    """up-to-date, changed, retry, resume and missing follow from the recorded entries."""
    exp = build(MANIFEST)
    keys = [i.key for i in exp.instances]
    lock = Lockfile("m.yaml", {
        keys[0]: done(exp, keys[0]),
        keys[1]: done(exp, keys[1], fingerprint="sha256:old"),
        keys[2]: done(exp, keys[2], status="failed", outputs=()),
        keys[3]: done(exp, keys[3], status="running", task_id="t1", outputs=()),
        "gone@x=1": done(exp, keys[0], key="gone@x=1"),
    })
    plan = make_plan(exp, lock, present=lambda p: True)
    status = {i.key: i.status for i in plan.items}
    assert [status[k] for k in keys[:4]] == [
        PlanStatus.UP_TO_DATE, PlanStatus.CHANGED, PlanStatus.RETRY, PlanStatus.RESUME]
    assert plan.orphaned == ("gone@x=1",)
    assert plan.items[3].cost == 0  # resume pays nothing new
    missing = make_plan(exp, lock, present=lambda p: False)
    assert missing.items[0].status == PlanStatus.MISSING


def test_downstream_fingerprint_uses_upstream_content(build: Build) -> None:
    """An edit of a done upstream is fingerprinted by the upstream image's hash."""
    exp = build(MANIFEST)
    up = exp.instances[0].key
    lock = Lockfile("m.yaml", {up: done(exp, up)})
    edit = next(i for i in make_plan(exp, lock, present=lambda p: True).items
                if i.job == "edit" and up in i.needs)
    assert edit.status == PlanStatus.NEW
    assert edit.fingerprint is not None
    other = Lockfile("m.yaml", {up: done(exp, up, outputs=(Output("o", "f" * 64, 1, 1, 1),) * 2)})
    edit2 = next(i for i in make_plan(exp, other, present=lambda p: True).items
                 if i.key == edit.key)
    assert edit2.fingerprint != edit.fingerprint


def test_budget_override_and_over_budget(build: Build) -> None:
    """--max-cost overrides the manifest budget; a larger total is not within budget."""
    plan = make_plan(build(MANIFEST), Lockfile("m.yaml"), present=lambda p: True,
                     max_cost=Decimal("1"))
    assert plan.budget == Decimal("1")
    assert not plan.within_budget


def test_json_form_has_the_documented_fields(build: Build) -> None:
    """--json carries manifest, counts, to_submit, cost, budget and items with matrix and needs."""
    data = plan_json(make_plan(build(MANIFEST), Lockfile("m.yaml"), present=lambda p: True))
    assert {"manifest", "counts", "to_submit", "cost", "budget", "items"} <= set(data)
    assert data["to_submit"] == {"instances": 6, "images": 10}
    assert data["cost"]["total"] == 3.2
    assert data["cost"]["currency"] == "CNY"
    assert data["cost"]["by_model"] == {"wan2.7-image": 1.2, "wan2.7-image-pro": 2}
    assert data["budget"] == {"max_cost": 5, "max_total": None, "spent": 0, "total": 3.2,
                              "within": True}
    item = data["items"][4]
    assert set(item) >= {"key", "job", "status", "model", "n", "cost", "matrix", "needs"}
    assert item["needs"] == ["gen@shop=a,model=wan2.7-image"]


def test_select_keeps_upstream_work(build: Build) -> None:
    """Selecting a downstream item keeps the upstream items it waits for; others are skipped."""
    exp = build(MANIFEST)
    plan = make_plan(exp, Lockfile("m.yaml"), present=lambda p: True)
    chosen = plan.select(lambda i: i.job == "edit" and matches_where(i, [("shop", "a")]))
    kept = [i.key for i in chosen.items if i.status != PlanStatus.SKIPPED]
    assert kept == ["gen@shop=a,model=wan2.7-image", "edit@shop=a,model=wan2.7-image"]
    assert chosen.total == Decimal("0.40") + Decimal("0.20")
