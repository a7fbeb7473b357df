"""`plan --json` streamed: the same JSON value as the whole-plan dict, item by item;
the lazy expansion and the item-by-item planner agree with expand and make_plan."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

import pytest

from pipeline.core.expansion.expand import Expanding
from pipeline.core.expansion.instances import Expansion, Instance
from pipeline.core.lock.lockfile import Lockfile
from pipeline.core.manifest.model import Manifest
from pipeline.core.manifest.workspace import MemoryWorkspace
from pipeline.core.planning.plan import Planner, PlanStatus, Tally, make_plan
from pipeline.errors import ManifestError
from pipeline.views.plan import (
    plan_json,
    write_plan_document,
    write_plan_items,
    write_plan_json,
)
from tests.unit.conftest import Build
from tests.unit.test_plan import MANIFEST, done


def test_streamed_plan_is_the_same_json_value(build: Build) -> None:
    """write_plan_json's text parses to exactly plan_json's value, one line per item."""
    plan = make_plan(build(MANIFEST), Lockfile("m.yaml"), present=lambda p: True)
    out = io.StringIO()
    write_plan_json(plan, out.write)
    assert json.loads(out.getvalue()) == plan_json(plan)
    item_lines = [line for line in out.getvalue().splitlines() if line.startswith('    {"key"')]
    assert len(item_lines) == len(plan.items)


def test_streamed_empty_plan_is_the_same_json_value(build: Build) -> None:
    """A plan without items streams as a plain document with an empty item list."""
    plan = make_plan(build(MANIFEST), Lockfile("m.yaml"), present=lambda p: True)
    empty = replace(plan, items=())
    out = io.StringIO()
    write_plan_json(empty, out.write)
    assert json.loads(out.getvalue()) == plan_json(empty)
    assert json.loads(out.getvalue())["items"] == []


STREAMED = """
budget: {max_cost: 5}
defaults: {model: wan2.7-image}
vars: {brand: b}
jobs:
  gen:
    prompt: "{{ shop }} {{ brand }} {{ tone | default('') }}"
    n: 2
    matrix:
      shop: [a, b, c]
      model: [wan2.7-image, wan2.7-image-pro]
      exclude: [{shop: c, model: wan2.7-image-pro}]
      include: [{shop: a, tone: warm}, {shop: z, model: wan2.7-image}]
  edit:
    prompt: night
    image_urls: [{from: gen, where: {model: wan2.7-image}}]
  after:
    prompt: "then {{ n }}"
    needs: [edit]
    matrix: {n: [1, 2]}
"""


def _lazily(parse: Callable[..., Manifest], body: str) -> tuple[Expanding, list[Instance]]:
    """Expand ``body`` one instance at a time; the Expanding (to finish) and what it gave."""
    manifest = parse(body)
    stream = Expanding(manifest, MemoryWorkspace({}))
    return stream, list(stream)


def _lock(exp: Expansion) -> Lockfile:
    """Some instances done, one changed, one failed, and an orphaned entry."""
    keys = [i.key for i in exp.instances]
    return Lockfile("m.yaml", {
        keys[0]: done(exp, keys[0]),
        keys[1]: done(exp, keys[1], fingerprint="sha256:old"),
        keys[2]: done(exp, keys[2], status="failed", outputs=()),
        "gone@x=1": done(exp, keys[0], key="gone@x=1"),
    })


def test_lazy_expansion_yields_the_same_instances_in_order(
        build: Build, parse: Callable[..., Manifest]) -> None:
    """Expanding yields exactly expand's instances, in its order, and the same warnings."""
    whole = build(STREAMED)
    stream, instances = _lazily(parse, STREAMED)
    assert instances == list(whole.instances)
    assert stream.job_order == whole.job_order
    assert stream.finish() == whole.warnings


def test_lazy_expansion_raises_only_once_every_instance_has_passed(
        parse: Callable[..., Manifest]) -> None:
    """An error in a late instance is raised by finish, after the good ones streamed out."""
    stream, instances = _lazily(parse, "jobs:\n  a:\n    prompt: '{{ 10 // d }}'\n"
                                       "    model: wan2.7-image\n    matrix: {d: [1, 2, 0]}\n")
    assert [i.key for i in instances] == ["a@d=1", "a@d=2"]
    with pytest.raises(ManifestError):
        stream.finish()


def test_planner_makes_make_plans_items_from_a_stream(
        build: Build, parse: Callable[..., Manifest]) -> None:
    """Planning instances as they stream gives make_plan's items, orphans and head."""
    whole = build(STREAMED)
    lock = _lock(whole)
    plan = make_plan(whole, lock, present=lambda p: True, max_cost=Decimal(3),
                     destination="outputs/test/")
    stream, instances = _lazily(parse, STREAMED)
    planner = Planner(stream.manifest, lock, present=lambda p: True)
    tally = Tally()
    items = []
    for inst in instances:
        items.append(planner.item(inst))
        tally.add(items[-1])
    head = planner.head(tally, warnings=stream.finish(), max_cost=Decimal(3),
                        destination="outputs/test/")
    assert tuple(items) == plan.items
    assert head == plan.head()
    assert head.orphaned == ("gone@x=1",)
    assert {i.status for i in items} >= {PlanStatus.NEW, PlanStatus.WAITING, PlanStatus.RETRY}


def test_tally_agrees_with_the_plans_own_figures(build: Build) -> None:
    """Tally's counts, images and costs are Plan.counts, images, total and cost_by."""
    exp = build(STREAMED)
    plan = make_plan(exp, _lock(exp), present=lambda p: True)
    tally = plan.head().tally
    assert {**tally.counts, "orphaned": len(plan.orphaned)} == plan.counts()
    assert (tally.instances, tally.images, tally.total) == (
        len(plan.submitting), plan.images, plan.total)
    assert tally.by_model == plan.cost_by(lambda i: i.instance.model)
    assert tally.by_job == plan.cost_by(lambda i: i.job)


def test_items_written_aside_make_the_same_document(build: Build) -> None:
    """Items written to a spool first, the head after, give write_plan_json's very text."""
    exp = build(STREAMED)
    plan = make_plan(exp, _lock(exp), present=lambda p: True)
    whole = io.StringIO()
    write_plan_json(plan, whole.write)
    spool, out, seen = io.StringIO(), io.StringIO(), Tally()
    count = write_plan_items(iter(plan.items), spool.write, each=seen.add)
    write_plan_document(replace(plan.head(), tally=seen), count > 0,
                        lambda: out.write(spool.getvalue()), out.write)
    assert out.getvalue() == whole.getvalue()
    assert json.loads(out.getvalue()) == plan_json(plan)
