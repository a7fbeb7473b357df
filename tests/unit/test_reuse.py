"""The pure side of reuse: seeds from what is asked, the index of paid results, the plan."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.expansion.identity import content_key, fingerprint
from pipeline.core.lock.lockfile import LockEntry, Lockfile, Output
from pipeline.core.lock.reuse import ResultIndex, choose, result_of_entry
from pipeline.core.planning.plan import PaidResults, PlanStatus, make_plan
from tests.unit.conftest import Build

SHA = "a" * 64
NOW = 1_800_000_000.0


def done_entry(key: str, request: Mapping[str, Any], *, url: str | None = None,
               expires_at: int | None = None, outputs: bool = True) -> LockEntry:
    """A done lock entry for ``request`` with one image."""
    return LockEntry(key=key, job=key.partition("@")[0], fingerprint=fingerprint(request),
                     status="done", request=request, task_id=f"task-{key}",
                     charged=Decimal("0.2"),
                     outputs=(Output(f"../outputs/m/{key}/0.png", SHA, 10, 1, 1, url,
                                     expires_at),) if outputs else ())


def index_of(*entries: LockEntry) -> ResultIndex:
    """An index of entries, their files where their paths say."""
    index = ResultIndex()
    index.add_entries(entries, label="", locate=lambda path: "/p/" + path)
    return index


def test_content_key_names_images_by_content_only() -> None:
    """A file input's path and an upstream's key are no part of the content key."""
    one = {"model": "m", "image_urls": [f"file:a/x.png#sha256={SHA}",
                                        f"upstream:shot@c=red#0@sha256={SHA}"]}
    two = {"model": "m", "image_urls": [f"file:b/y.png#sha256={SHA}",
                                        f"upstream:packshot@c=red#0@sha256={SHA}"]}
    assert content_key(one) == content_key(two)
    plain = {"model": "m", "prompt": "x"}
    assert content_key(plain, fingerprint(plain)) == fingerprint(plain)


def test_choose_prefers_intact_files_then_links_and_never_a_changed_file() -> None:
    """A result whose file hashes right is copied; a changed file falls back to a valid link;
    with neither, nothing is chosen."""
    request = {"model": "m", "prompt": "x", "seed": 1}
    entry = done_entry("shot@c=red", request, url="https://x/0.png", expires_at=int(NOW) + 3600)
    candidates = index_of(entry).candidates(content_key(request))
    by_file = choose(candidates, intact=lambda i: True, now=NOW)
    by_link = choose(candidates, intact=lambda i: False, now=NOW)
    assert by_file is not None
    assert by_file.via == ("file",)
    assert by_link is not None
    assert by_link.via == ("link",)
    assert choose(candidates, intact=lambda i: False, now=NOW + 7200) is None


def test_an_entry_whose_request_is_not_its_fingerprint_is_not_indexed() -> None:
    """A hand-edited request (fingerprint no longer its hash) is never reused."""
    entry = done_entry("shot", {"model": "m", "prompt": "x"})
    forged = LockEntry(**{**{f: getattr(entry, f) for f in entry.__slots__},
                          "request": {"model": "m", "prompt": "y"}})
    assert result_of_entry(forged, label="", locate=lambda p: p) is None


def test_a_superseded_entry_is_reused_by_its_task() -> None:
    """An entry without images but with its task (a merge's loser) is a candidate by task."""
    request = {"model": "m", "prompt": "x"}
    entry = done_entry("shot#superseded:t1", request, outputs=False)
    found = choose(index_of(entry).candidates(content_key(request)), intact=lambda i: True,
                   now=NOW)
    assert found is not None
    assert found.by_task
    assert "from its task" in found.note


def test_plan_reuses_a_renamed_job_and_feeds_its_downstream(build: Build) -> None:
    """Renamed: the plan says reuse (free) for the job and for the edit of its images."""
    before = build("""
        defaults: {model: wan2.7-image}
        jobs:
          shot: {prompt: "A {{ c }} vase", matrix: {c: [red, blue]}}
          night: {prompt: "At night", image_urls: [{from: shot}]}
    """)
    entries = {}
    for inst in before.instances:
        request = dict(inst.request)
        if inst.upstream:
            request["image_urls"] = [f"{request['image_urls'][0]}@sha256={SHA}"]
        entries[inst.key] = done_entry(inst.key, request)
    index = index_of(*entries.values())
    after = build("""
        defaults: {model: wan2.7-image}
        jobs:
          packshot: {prompt: "A {{ c }} vase", matrix: {c: [red, blue]}}
          night: {prompt: "At night", image_urls: [{from: packshot}]}
    """)
    plan = make_plan(after, Lockfile("m.yaml", entries), present=lambda o: True, now=NOW,
                     paid=PaidResults(index.candidates, lambda image: True))
    statuses = {i.key: i.status for i in plan.items}
    assert statuses == {"packshot@c=red": PlanStatus.REUSE, "packshot@c=blue": PlanStatus.REUSE,
                        "night@c=red": PlanStatus.REUSE, "night@c=blue": PlanStatus.REUSE}
    assert plan.total == 0
    assert plan.counts()["reuse"] == 4
    red = next(i for i in plan.items if i.key == "packshot@c=red")
    assert red.note == "from shot@c=red (copied; free)"


def test_a_fixed_seed_changed_is_a_change_not_the_recorded_seed(build: Build) -> None:
    """The recorded seed is kept only for seeds imgspec chose: a manifest's own seed wins."""
    old = build("jobs:\n  a: {model: wan2.7-image, prompt: x, seed: 1}\n").instances[0]
    lock = Lockfile("m.yaml", {"a": done_entry("a", dict(old.request))})
    lock = Lockfile("m.yaml", {"a": LockEntry(**{**{f: getattr(lock.entries["a"], f)
                                                    for f in LockEntry.__slots__},
                                                 "seed": 1})})
    new = build("jobs:\n  a: {model: wan2.7-image, prompt: x, seed: 2}\n")
    assert make_plan(new, lock, present=lambda o: True).items[0].status == PlanStatus.CHANGED


VALUES = st.one_of(st.integers(-5, 5), st.text(min_size=1, max_size=6,
                                               alphabet="abcdefghij0123456789"))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(VALUES, min_size=2, max_size=5, unique_by=str),
       old=st.sampled_from(["shot", "a", "job-1"]), new=st.sampled_from(["packshot", "b", "z9"]))
def test_distinct_axis_values_give_distinct_seeds_and_a_rename_keeps_them(
        build: Build, values: list[object], old: str, new: str) -> None:
    """Property: instances differing only in an axis value the prompt never shows get
    distinct seeds, and renaming the job keeps every instance's seed."""
    body = "jobs:\n  {job}:\n    model: wan2.7-image\n    prompt: one prompt\n" \
           "    matrix:\n      variant: {values}\n"
    text = json.dumps(values)
    first = build(body.format(job=old, values=text)).instances
    second = build(body.format(job=new, values=text)).instances
    seeds = [i.seed for i in first]
    assert len(set(seeds)) == len(values)
    assert [i.seed for i in second] == seeds
    assert [i.request for i in second] == [i.request for i in first]


def test_the_derived_seed_is_the_seed_of_its_basis_and_ignores_the_job_name() -> None:
    """basis_seed (spelt out for speed) is derive_seed of seed_basis; the job name is no
    part of it, the values are."""
    from pipeline.core.expansion.identity import basis_seed, derive_seed, seed_basis
    for key in ("logo", "shot@c=red,variant=2", 'x@v="a b"'):
        assert basis_seed(key) == derive_seed(seed_basis(key))
    assert basis_seed("shot@c=red") == basis_seed("packshot@c=red")
    assert basis_seed("shot@c=red") != basis_seed("shot@c=blue")
