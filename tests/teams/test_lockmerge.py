"""The lockfile merge rules, on values: which entry wins, and that no paid task is lost."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.lock.lockfile import (
    EntryStatus,
    LockEntry,
    Lockfile,
    Output,
    dump_lockfile,
    parse_lockfile,
)
from pipeline.core.lock.merge import merge_entries, merge_locks, superseded_key
from pipeline.errors import MergeConflict


def entry(key: str = "gen@i=1", *, status: EntryStatus = "done", task: str | None = "task_1",
          idem: str | None = "imgspec-1", fp: str = "sha256:aa", at: str = "2026-01-01T00:00:00Z",
          sha: str = "a" * 64, **more: Any) -> LockEntry:
    """A lock entry with the fields the rules look at."""
    outputs = (Output(path=f"../outputs/shop/gen/{key}/0.png", sha256=sha, bytes=10, width=1,
                      height=1),) if status == "done" else ()
    return dataclasses.replace(
        LockEntry(key=key, job=key.split("@")[0], fingerprint=fp, status=status,
                  idempotency_key=idem, task_id=task, cost=Decimal("0.2"), updated_at=at,
                  outputs=outputs), **more)


def lock(*entries: LockEntry) -> Lockfile:
    """A lockfile holding ``entries``."""
    return Lockfile(manifest="shop.yaml", entries={e.key: e for e in entries})


def test_different_keys_union() -> None:
    """Entries for different keys are all kept, from every side."""
    a, b, c = entry("gen@i=1"), entry("gen@i=2"), entry("logo")
    merged = merge_locks([lock(a), lock(b), lock(c, a)])
    assert merged.lock.entries == {"gen@i=1": a, "gen@i=2": b, "logo": c}
    assert merged.notes == ()


def test_same_task_done_wins_over_in_flight_over_failed() -> None:
    """For the same task, done beats running beats failed, whichever side it is on."""
    done, running, failed = (entry(status=s) for s in ("done", "running", "failed"))
    for x, y, winner in ((done, running, done), (running, done, done),
                         (running, failed, running), (failed, running, running),
                         (failed, done, done)):
        kept, notes = merge_entries(x, y)
        assert kept == [winner]
        assert notes == []


def test_one_side_unchanged_from_base_takes_the_other() -> None:
    """Three-way: a side equal to the base contributes nothing; the other side wins."""
    base = entry(status="failed", task="task_0", idem="imgspec-0")
    rerun = entry(task="task_9", idem="imgspec-9")
    assert merge_entries(base, rerun, base) == ([rerun], [])
    assert merge_entries(rerun, base, base) == ([rerun], [])


def test_task_id_recorded_by_one_side_is_filled_in() -> None:
    """The same submission (idempotency key), one side still without its task id: the
    winner gets the task id the other recorded."""
    submitting = entry(status="submitting", task=None, at="2026-01-02T00:00:00Z")
    running = entry(status="running", task="task_7")
    kept, notes = merge_entries(submitting, running)
    assert kept[0].task_id == "task_7"
    kept, notes = merge_entries(entry(status="done", task=None), running)
    assert (kept[0].status, kept[0].task_id) == ("done", "task_7")
    assert [n.kind for n in notes] == ["filled"]


def test_different_tasks_keep_the_loser_under_a_superseded_key() -> None:
    """Two paid tasks for one key: the done one is kept, the other stays reachable under
    KEY#superseded:TASK without outputs, and the merge says so."""
    done = entry(task="task_new", idem="imgspec-2", at="2026-01-02T00:00:00Z")
    running = entry(status="running", task="task_old", idem="imgspec-1")
    merged = merge_locks([lock(running), lock(done)])
    moved = superseded_key(running)
    assert moved == "gen@i=1#superseded:task_old"
    assert merged.lock.entries["gen@i=1"] == done
    assert merged.lock.entries[moved] == dataclasses.replace(running, key=moved)
    assert [(n.kind, n.key, n.moved_to) for n in merged.notes] == [
        ("superseded", "gen@i=1", moved)]


def test_a_loser_whose_task_is_already_kept_superseded_keeps_that_charge() -> None:
    """Main fetched task G again (an earlier merge kept G superseded, with its charge);
    the side paid task Z and wins: superseding main's G again under the same key keeps
    G's charge, so the merge records what the account paid, whichever side comes first."""
    base_g = entry(task="task_g", idem=None, at="2026-01-01T00:00:02Z", charged=Decimal("0.4"))
    kept_g = dataclasses.replace(entry(task="task_g", idem="imgspec-g", at="2026-01-01T00:00:01Z",
                                       charged=Decimal("0.4")),
                                 key=superseded_key(base_g), outputs=())
    main = dataclasses.replace(base_g, updated_at="2026-01-01T00:00:05Z")
    side = entry(task="task_z", idem="imgspec-z", fp="sha256:bb", at="2026-01-01T00:00:06Z",
                 charged=Decimal("0.8"))
    base = lock(base_g, kept_g)
    for sides in ([lock(main, kept_g), lock(side, kept_g)],
                  [lock(side, kept_g), lock(main, kept_g)]):
        merged = merge_locks(sides, base=base)
        assert merged.lock.entries["gen@i=1"] == side
        assert merged.lock.charged == base.charged + Decimal("0.4")  # task Z, once


def test_two_done_entries_with_different_fingerprints_keep_the_newer() -> None:
    """Two done results for different requests: the newer is kept, the older's task and
    cost stay in the lockfile, its outputs are not claimed (the files are left alone)."""
    old = entry(task="task_a", idem="imgspec-a", fp="sha256:01", at="2026-01-01T00:00:00Z")
    new = entry(task="task_b", idem="imgspec-b", fp="sha256:02", at="2026-01-03T00:00:00Z",
                sha="b" * 64)
    for sides in ([old, new], [new, old]):
        merged = merge_locks([lock(s) for s in sides])
        assert merged.lock.entries["gen@i=1"] == new
        kept = merged.lock.entries[superseded_key(old)]
        assert (kept.task_id, kept.cost, kept.outputs) == ("task_a", Decimal("0.2"), ())
        assert "different requests" in merged.notes[0].detail


def test_same_task_with_different_files_is_a_conflict() -> None:
    """Both sides downloaded the same task but recorded different bytes: a conflict that
    names the key, and nothing is merged."""
    with pytest.raises(MergeConflict) as raised:
        merge_locks([lock(entry(sha="a" * 64), entry("logo")), lock(entry(sha="b" * 64))])
    assert raised.value.keys == ("gen@i=1",)
    assert raised.value.exit_code == 1
    assert "both sides downloaded task task_1" in str(raised.value)


def test_merge_is_idempotent_and_order_independent() -> None:
    """Merging again changes nothing, and the order of the sides does not matter."""
    a = entry(task="task_a", idem="imgspec-a", at="2026-01-01T00:00:00Z")
    b = entry(task="task_b", idem="imgspec-b", at="2026-01-02T00:00:00Z", sha="b" * 64)
    c = entry("logo", status="failed", task="task_c")
    once = merge_locks([lock(a), lock(b, c)]).lock
    assert merge_locks([once, lock(a), lock(b)]).lock == once
    assert merge_locks([lock(b, c), lock(a)]).lock == once


def test_every_field_of_the_winner_is_carried() -> None:
    """The merged entry is the winner itself, field for field (so fields added to LockEntry
    later, e.g. a cumulative charge, survive a merge untouched)."""
    winner = entry(task="task_w", idem="imgspec-w", at="2026-01-05T00:00:00Z",
                   request={"prompt": "x"}, matrix={"i": 1}, seed=7, attempts=3,
                   last_error="was slow", cost=Decimal("0.6"), charged=Decimal("1.4"),
                   created_at="2026-01-01T00:00:00Z")
    loser = entry(task="task_l", idem="imgspec-l", status="failed", charged=Decimal("0.2"))
    merged = merge_locks([lock(loser), lock(winner)]).lock
    assert merged.entries["gen@i=1"] == winner
    assert merged.entries["gen@i=1"].charged == Decimal("1.4")
    assert merged.entries[superseded_key(loser)].charged == Decimal("0.2")
    text = dump_lockfile(merged)
    assert parse_lockfile(text) == merged


def test_merged_lockfile_round_trips_through_its_text(tmp_path: Path) -> None:
    """A merged lockfile (with a superseded entry) is a valid lockfile."""
    a = entry(task="task_a", idem="imgspec-a")
    b = entry(task="task_b", idem="imgspec-b", at="2026-02-01T00:00:00Z", sha="b" * 64)
    merged = merge_locks([lock(a), lock(b)]).lock
    assert parse_lockfile(dump_lockfile(merged), source=str(tmp_path)) == merged
