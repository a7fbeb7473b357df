"""`plan --json` streamed: the same JSON value as the whole-plan dict, item by item."""

from __future__ import annotations

import io
import json
from dataclasses import replace

from pipeline.lockfile import Lockfile
from pipeline.plan import make_plan
from pipeline.views.plan import plan_json, write_plan_json
from tests.unit.conftest import Build
from tests.unit.test_plan import MANIFEST


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
