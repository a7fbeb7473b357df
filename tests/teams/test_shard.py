"""--shard K/N: disjoint, complete, stable shards that keep an edit with the image it edits."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.lock.lockfile import Lockfile
from pipeline.core.planning.plan import Plan, make_plan
from pipeline.core.planning.plan import PlanStatus as Status
from pipeline.core.planning.selection import (
    Selection,
    Shard,
    chain_roots,
    narrow,
    parse_shard,
    shard_lockfile,
    shard_number,
)
from pipeline.errors import UsageError
from tests.unit.conftest import Build

MANIFEST = """
defaults: {model: wan2.7-image, size: 1K}
jobs:
  gen:
    prompt: "{{ shop }} in {{ season }}"
    matrix: {shop: [bakery, florist, cafe, baker2, deli], season: [spring, winter]}
  night:
    prompt: "at night"
    image_urls: [{from: gen, where: {season: winter}}]
  bg:
    prompt: "a {{ tone }} background"
    matrix: {tone: [light]}
  poster:
    prompt: "a poster of both"
    image_urls: [{from: gen, where: {shop: deli, season: winter}}, {from: bg}]
  logo:
    prompt: logo {{ i }}
    matrix: {i: [1, 2, 3, 4, 5, 6, 7, 8]}
    needs: [gen]
"""
JOBS = ("gen", "night", "bg", "poster", "logo")


def plan_of(build: Build, body: str = MANIFEST) -> Plan:
    """The plan of ``body`` against an empty lockfile."""
    return make_plan(build(body), Lockfile("m.yaml"), present=lambda _: True)


def shard_keys(plan: Plan, shard: Shard, selection: Selection | None = None) -> set[str]:
    """The keys a shard covers."""
    chosen = Selection(shard=shard) if selection is None else selection
    narrowed = narrow(plan, chosen, jobs=JOBS)
    return {i.key for i in narrowed.items if i.status != Status.SKIPPED}


def test_parse_shard() -> None:
    """K/N with 1 <= K <= N; anything else is a usage error that shows the form."""
    assert parse_shard("2/4") == Shard(2, 4)
    assert parse_shard(" 1 / 1 ") == Shard(1, 1)
    for bad in ("0/4", "5/4", "1/0", "2", "a/b", "-1/4"):
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)


def test_every_instance_is_in_exactly_one_shard(build: Build) -> None:
    """For several N, the shards are disjoint and together cover every instance."""
    plan = plan_of(build)
    every = {i.key for i in plan.items}
    for count in (1, 2, 3, 4, 7):
        parts = [shard_keys(plan, Shard(k, count)) for k in range(1, count + 1)]
        assert sum(len(p) for p in parts) == len(every)
        assert set().union(*parts) == every


def test_an_edit_runs_in_the_shard_of_the_image_it_edits(build: Build) -> None:
    """Each night edit is in its gen image's shard; an edit of two chains goes with the
    smallest root key."""
    plan = plan_of(build)
    roots = chain_roots(i.instance for i in plan.items)
    assert roots["night@shop=cafe,season=winter"] == "gen@shop=cafe,season=winter"
    assert roots["poster@shop=deli,season=winter,tone=light"] == "bg@tone=light"
    for k in range(1, 5):
        keys = shard_keys(plan, Shard(k, 4))
        for key in keys:
            assert roots[key] in keys


def test_job_needs_do_not_pull_other_shards_work_in(build: Build) -> None:
    """`needs:` only orders work: a shard holding a logo does not also run gen instances
    of other shards (that would pay for them twice)."""
    plan = plan_of(build)
    roots = chain_roots(i.instance for i in plan.items)
    for k in range(1, 5):
        shard = Shard(k, 4)
        assert all(shard.holds(roots[key]) for key in shard_keys(plan, shard))


def test_shards_are_stable_when_other_jobs_and_rows_change(build: Build) -> None:
    """Adding a job and a matrix value moves no existing instance to another shard."""
    before = plan_of(build)
    grown = MANIFEST.replace("deli]", "deli, tea]") + "  extra:\n    prompt: more\n"
    after = plan_of(build, grown)
    for k in range(1, 4):
        old = shard_keys(before, Shard(k, 3))
        new = narrow(after, Selection(shard=Shard(k, 3)), jobs=(*JOBS, "extra"))
        assert old <= {i.key for i in new.items if i.status != Status.SKIPPED}


def test_shard_number_is_a_fixed_hash() -> None:
    """The shard of a key is the same in every process and on every machine."""
    assert [shard_number("gen@shop=bakery,season=spring", n) for n in (1, 2, 4, 16)] == [
        shard_number("gen@shop=bakery,season=spring", n) for n in (1, 2, 4, 16)]
    assert shard_number("logo", 1) == 1
    assert shard_number("gen@shop=bakery,season=spring", 4) == 4  # pinned: never changes
    assert shard_number("logo", 4) == 2


def test_shard_combines_with_job_and_where(build: Build) -> None:
    """--shard narrows further what --job/--where select."""
    plan = plan_of(build)
    shard = Shard(1, 2)
    both = shard_keys(plan, shard, Selection(jobs=("gen",), where=(("season", "winter"),),
                                             shard=shard))
    assert both == {k for k in shard_keys(plan, shard)
                    if k.startswith("gen@") and k.endswith("season=winter")}


def test_shard_cost_is_its_own(build: Build) -> None:
    """The plan of shard K costs exactly its instances; the shards' costs add up to the whole."""
    plan = plan_of(build)
    totals = [narrow(plan, Selection(shard=Shard(k, 3)), jobs=JOBS).total for k in (1, 2, 3)]
    assert sum(totals) == plan.total
    assert all(t < plan.total for t in totals)


def test_default_shard_lockfile_sits_beside_the_manifests() -> None:
    """shop.lock.json → shop.shard-2-of-4.lock.json in the same folder."""
    assert shard_lockfile(Path("m/shop.lock.json"), Shard(2, 4)) == Path(
        "m/shop.shard-2-of-4.lock.json")
    assert shard_lockfile(Path("m/shop.simulate.lock.json"), Shard(1, 2)) == Path(
        "m/shop.simulate.shard-1-of-2.lock.json")
