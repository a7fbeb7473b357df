"""A re-roll is planned as its own status: a new derived seed, priced, stable once recorded."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from pipeline.core.expansion.identity import derive_seed, fingerprint, seed_basis
from pipeline.core.expansion.instances import Expansion
from pipeline.core.expansion.reroll import rerolled
from pipeline.core.lock.lockfile import LockEntry, Lockfile, Output, dump_lockfile, parse_lockfile
from pipeline.core.planning.plan import PlanStatus, make_plan, resolved_request
from pipeline.errors import LockfileError
from pipeline.views.plan import plan_json, plan_text
from tests.unit.conftest import Build

MANIFEST = """
defaults: {model: wan2.7-image, size: 1K}
jobs:
  gen:
    prompt: "{{ shop }}"
    n: 2
    matrix: {shop: [a, b]}
  fixed:
    prompt: fixed
    seed: 42
  loose:
    prompt: loose
    seed: random
  night:
    prompt: night
    image_urls: [{from: gen, where: {shop: a}, image: 0}]
"""
KEY = "gen@shop=a"
SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "lockfile.schema.json"


def recorded(exp: Expansion, key: str, *, reroll: int = 0, tag: str = "0",
             status: str = "done") -> LockEntry:
    """The lock entry a run of re-roll number ``reroll`` leaves (outputs tagged ``tag``)."""
    inst = rerolled(exp.by_key()[key], reroll)
    request = resolved_request(inst, {})
    assert request is not None
    return LockEntry(key=key, job=inst.job, fingerprint=fingerprint(request),
                     status=status, request=request, seed=inst.seed,  # type: ignore[arg-type]
                     outputs=tuple(Output(f"o/{key}/{i}.png", (tag + str(i)) * 32, 10, 1, 1)
                                   for i in range(inst.n)), reroll=reroll)


def first_reroll_seed(exp: Expansion) -> int:
    """The seed of KEY's first re-roll: its seed basis (not its key) and the count."""
    inst = exp.by_key()[KEY]
    return derive_seed(f"{seed_basis(inst.key)}#reroll=1")


def everything_done(exp: Expansion) -> Lockfile:
    """A lockfile in which every upstream-free instance is done."""
    return Lockfile("m.yaml", {k: recorded(exp, k) for k in ("gen@shop=a", "gen@shop=b",
                                                            "fixed", "loose")})


def test_a_reroll_is_its_own_status_with_a_new_seed_and_its_cost(build: Build) -> None:
    """The re-rolled instance is priced for all n images and sends a seed derived from its
    seed basis (matrix values) and the count."""
    exp = build(MANIFEST)
    lock = everything_done(exp)
    plan = make_plan(exp, lock, present=lambda o: True, rerolls={KEY})
    item = next(i for i in plan.items if i.key == KEY)
    assert item.status == PlanStatus.REROLL
    assert item.cost == Decimal("0.40")
    assert item.reroll == 1
    assert item.instance.request["seed"] == first_reroll_seed(exp) == item.instance.seed
    assert item.fingerprint != lock.entries[KEY].fingerprint
    assert item.note == "all 2 images, new derived seed"
    assert plan.total == Decimal("0.40") + Decimal("0.20")  # and night is new


def test_downstream_of_a_reroll_waits(build: Build) -> None:
    """An edit of a re-rolled image waits for the new image."""
    exp = build(MANIFEST)
    lock = everything_done(exp)
    lock = lock.with_entry(recorded_night(exp, lock))
    plan = make_plan(exp, lock, present=lambda o: True, rerolls={KEY})
    assert next(i for i in plan.items if i.job == "night").status == PlanStatus.WAITING


def recorded_night(exp: Expansion, lock: Lockfile) -> LockEntry:
    """The night edit, done against gen@shop=a's current image."""
    inst = next(i for i in exp.instances if i.job == "night")
    request = resolved_request(inst, lock.entries)
    assert request is not None
    return LockEntry(key=inst.key, job="night", fingerprint=fingerprint(request),
                     status="done", outputs=(Output("o/n/0.png", "f" * 64, 10, 1, 1),))


def test_once_recorded_the_reroll_is_up_to_date(build: Build) -> None:
    """After the run records reroll=1 and new images, the next plan has nothing to do for it."""
    exp = build(MANIFEST)
    lock = everything_done(exp).with_entry(recorded(exp, KEY, reroll=1, tag="9"))
    # The review file still holds the decision, about the old image: it no longer applies,
    # which the caller (review.reroll_keys) works out; passing the key again would re-roll.
    plan = make_plan(exp, lock, present=lambda o: True)
    item = next(i for i in plan.items if i.key == KEY)
    assert item.status == PlanStatus.UP_TO_DATE
    assert item.reroll == 1
    assert item.instance.seed == first_reroll_seed(exp)


def test_a_failed_reroll_retries_with_the_same_seed(build: Build) -> None:
    """A re-roll that failed keeps its count: retried, not re-rolled once more."""
    exp = build(MANIFEST)
    lock = everything_done(exp).with_entry(
        recorded(exp, KEY, reroll=1, status="failed"))
    item = next(i for i in make_plan(exp, lock, present=lambda o: True).items if i.key == KEY)
    assert item.status == PlanStatus.RETRY
    assert item.fingerprint == lock.entries[KEY].fingerprint


def test_a_fixed_seed_is_replaced_and_the_plan_says_so(build: Build) -> None:
    """seed: 42 re-rolled sends another seed, and the note names the one it replaces."""
    exp = build(MANIFEST)
    plan = make_plan(exp, everything_done(exp), present=lambda o: True,
                     rerolls={"fixed", "loose"})
    fixed = next(i for i in plan.items if i.key == "fixed")
    loose = next(i for i in plan.items if i.key == "loose")
    assert fixed.status == loose.status == PlanStatus.REROLL
    assert fixed.instance.seed != 42
    assert fixed.note == "its image, new seed replacing the manifest's seed 42"
    assert "seed" not in exp.by_key()["loose"].request
    assert loose.instance.request["seed"] == loose.instance.seed
    assert "seed: random" in (loose.note or "")


def test_only_a_done_instance_is_rerolled(build: Build) -> None:
    """An instance that changes anyway, or never ran, is not re-rolled on top."""
    exp = build(MANIFEST)
    lock = everything_done(exp)
    lock = lock.with_entry(replace(lock.entries[KEY], fingerprint="sha256:old"))
    night = next(i.key for i in exp.instances if i.job == "night")
    plan = make_plan(exp, lock, present=lambda o: True, rerolls={KEY, night})
    statuses = {i.key: i.status for i in plan.items}
    assert statuses[KEY] == PlanStatus.CHANGED
    assert statuses[night] == PlanStatus.WAITING


def test_the_plan_text_and_json_show_the_reroll(build: Build) -> None:
    """The plan lists ↺ reroll with its price and note; --json carries reroll and note."""
    exp = build(MANIFEST)
    plan = make_plan(exp, everything_done(exp), present=lambda o: True, rerolls={KEY})
    line = next(x for x in plan_text(plan).splitlines() if KEY in x)
    assert line.split()[:3] == ["↺", "reroll", KEY]
    assert "2 \u00d7 wan2.7-image" in line
    assert "¥0.40" in line
    assert "all 2 images" in line
    item = next(i for i in plan_json(plan)["items"] if i["key"] == KEY)
    assert (item["status"], item["reroll"], item["cost"]) == ("reroll", 1, 0.4)


def test_the_lockfile_records_the_reroll_count(build: Build) -> None:
    """reroll round-trips, is left out at 0, and the lockfile schema accepts it."""
    exp = build(MANIFEST)
    lock = everything_done(exp).with_entry(recorded(exp, KEY, reroll=2))
    text = dump_lockfile(lock)
    data = json.loads(text)
    assert data["entries"][KEY]["reroll"] == 2
    assert "reroll" not in data["entries"]["gen@shop=b"]
    assert parse_lockfile(text) == lock
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))


@pytest.mark.parametrize("bad", [-1, "2", True, 1.5])
def test_a_bad_reroll_count_is_a_lockfile_error(build: Build, bad: object) -> None:
    """A reroll that is not a whole number of at least 0 is refused with advice."""
    exp = build(MANIFEST)
    data = json.loads(dump_lockfile(everything_done(exp)))
    data["entries"][KEY]["reroll"] = bad
    with pytest.raises(LockfileError, match="reroll"):
        parse_lockfile(json.dumps(data))
