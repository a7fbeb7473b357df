"""--job/--where/--only-failed narrow a plan, and name what exists when they name nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.core.lock.lockfile import Lockfile
from pipeline.core.planning.plan import Plan, PlanStatus, make_plan
from pipeline.core.planning.selection import Selection, matches_value, narrow, parse_where
from pipeline.errors import UsageError
from pipeline.operations.run.events import Tally
from tests.unit.conftest import Build

MANIFEST = """
jobs:
  gen:
    prompt: "{{ shop }} {{ n_people }} {{ lit }}"
    matrix: {shop: [Bakery, florist], n_people: [2, 10], lit: [true]}
  logo:
    prompt: logo
defaults: {model: wan2.7-image}
"""


def plan_of(build: Build) -> Plan:
    return make_plan(build(MANIFEST), Lockfile("m.yaml"), present=lambda p: True)


def kept(plan: Plan, selection: Selection) -> list[str]:
    narrowed = narrow(plan, selection, jobs=["gen", "logo"])
    return [i.key for i in narrowed.items if i.status != PlanStatus.SKIPPED]


def test_parse_where_splits_at_the_first_equals_and_strips() -> None:
    """`AXIS=VALUE` pairs keep '=' inside values; a pair without '=' or axis is a usage error."""
    assert parse_where([" shop = flower shop", "expr=a=b"]) == (
        ("shop", "flower shop"), ("expr", "a=b"))
    for bad in ("shop", "=bakery", " =x"):
        with pytest.raises(UsageError, match="write AXIS=VALUE"):
            parse_where([bad])


def test_values_match_as_the_matrix_compares_or_as_spelled() -> None:
    """A command-line word matches its value by matrix.same or by its YAML/Python spelling."""
    assert matches_value("bakery", "bakery")
    assert matches_value(10, "10")
    assert matches_value(True, "true")
    assert matches_value(True, "True")
    assert not matches_value(10, "1")
    assert not matches_value("bakery", "bakrey")


def test_where_axes_and_values_combine(build: Build) -> None:
    """Different axes AND, values of one axis OR; numbers and booleans match their spelling."""
    plan = plan_of(build)
    both = Selection(where=(("shop", "Bakery"), ("n_people", "10")))
    assert kept(plan, both) == ["gen@shop=Bakery,n_people=10,lit=true"]
    either = Selection(where=(("n_people", "2"), ("n_people", "10"), ("lit", "true")))
    assert len(kept(plan, either)) == 4


def test_unknown_axis_and_unmatched_value_are_usage_errors(build: Build) -> None:
    """An axis no instance has, or a value none takes, names what exists instead."""
    plan = plan_of(build)
    with pytest.raises(UsageError, match=r"axis 'colour'; axes: lit, n_people, shop$"):
        narrow(plan, Selection(where=(("colour", "red"),)), jobs=["gen", "logo"])
    with pytest.raises(UsageError, match=r"n_people is one of: 2, 10$"):
        narrow(plan, Selection(where=(("n_people", "3"),)), jobs=["gen", "logo"])
    with pytest.raises(UsageError, match=r"--job nope: no such job; jobs: gen, logo"):
        narrow(plan, Selection(jobs=("nope",)), jobs=["gen", "logo"])


def test_only_failed_may_select_nothing(build: Build) -> None:
    """--only-failed with nothing failed is an empty plan, not an error."""
    assert kept(plan_of(build), Selection(only_failed=True)) == []


def test_tally_separates_charged_from_reserved() -> None:
    """A pre-charge is reserved until its task finishes: then charged, or dropped if refunded."""
    tally = Tally()
    tally.took_off("a", Decimal("0.40"))
    tally.took_off("b", Decimal("0.20"))
    tally.took_off("resumed")  # paid by an earlier run: in flight, holds nothing
    assert (tally.in_flight, tally.charged, tally.reserved) == (3, Decimal(0), Decimal("0.60"))
    tally.landed("a")
    tally.settle("a", refunded=False)
    tally.landed("b")
    tally.settle("b", refunded=True)
    tally.settle("resumed", refunded=True)
    assert (tally.in_flight, tally.charged, tally.reserved) == (1, Decimal("0.40"), Decimal(0))
