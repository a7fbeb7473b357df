"""The pure rules of moves and spend history: relocating entries, merging retired spend."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from decimal import Decimal

from pipeline.core.lock.journal import fold_journal, journal_line
from pipeline.core.lock.lifecycle import REPLAYED_ELSEWHERE, made_before, paid_elsewhere
from pipeline.core.lock.lockfile import LockEntry, Lockfile, Output, Retired, retire
from pipeline.core.lock.merge import merge_locks
from pipeline.core.lock.moves import final_key, relocate
from pipeline.core.manifest.moved import Move


def entry(key: str, *, charged: str = "0.2", task: str | None = "t1",
          paid_by: str | None = None) -> LockEntry:
    """A done entry of one image in its instance folder."""
    job, _, values = key.partition("@")
    return LockEntry(key=key, job=job, fingerprint="f", status="done", task_id=task,
                     idempotency_key=f"k-{key}", charged=Decimal(charged),
                     cost=Decimal(charged), paid_by=paid_by,
                     outputs=(Output(f"../outputs/s/{job}/{values}/0.png", "a" * 64, 10, 1, 1),))


def test_a_job_move_takes_every_entry_and_repoints_its_files() -> None:
    """shot → packshot moves shot@... entries, money and all, into packshot's folders."""
    lock = Lockfile("s.yaml", {k: entry(k) for k in ("shot@c=red", "shot@c=blue", "other")})
    moved_lock, moved, refused = relocate(lock, (Move("shot", "packshot"),))
    assert refused == ()
    assert sorted(moved_lock.entries) == ["other", "packshot@c=blue", "packshot@c=red"]
    red = moved_lock.entries["packshot@c=red"]
    assert (red.job, red.charged, red.task_id) == ("packshot", Decimal("0.2"), "t1")
    assert red.outputs[0].path == "../outputs/s/packshot/c=red/0.png"
    assert moved_lock.charged == lock.charged
    assert {m.files for m in moved} == {
        (("../outputs/s/shot/c=red/0.png", "../outputs/s/packshot/c=red/0.png"),),
        (("../outputs/s/shot/c=blue/0.png", "../outputs/s/packshot/c=blue/0.png"),)}


def test_moves_chain_and_never_overwrite_an_entry() -> None:
    """a → b → c ends at c; a move onto a key that has an entry is refused, nothing lost."""
    moves = (Move("a@x=1", "b@x=1"), Move("b@x=1", "c@x=1"))
    assert final_key("a@x=1", moves) == "c@x=1"
    lock = Lockfile("s.yaml", {"a@x=1": entry("a@x=1"), "d@x=1": entry("d@x=1")})
    moved_lock, _, _ = relocate(lock, moves)
    assert sorted(moved_lock.entries) == ["c@x=1", "d@x=1"]
    kept, moved, refused = relocate(lock, (Move("a@x=1", "d@x=1"),))
    assert (kept, moved, refused) == (lock, (), ("a@x=1",))


def test_a_merge_counts_retired_spend_once_and_never_lowers_it() -> None:
    """Retired records are united; one that the merge's kept entry already counts is
    dropped; the same task recorded as paid on one side and as a replay on the other
    counts the payment once."""
    red = entry("s@c=red")
    pruned = Lockfile("s.yaml", {}, retired=retire((), red))
    kept = Lockfile("s.yaml", {red.key: red})
    both = merge_locks([pruned, kept]).lock
    assert both.charged == Decimal("0.2")
    assert merge_locks([pruned, pruned]).lock.charged == Decimal("0.2")
    replayed = entry("s@c=red", charged="0", paid_by=REPLAYED_ELSEWHERE)
    merged = merge_locks([Lockfile("s.yaml", {red.key: replayed}), kept]).lock
    assert merged.entries[red.key].charged == Decimal("0.2")
    assert merged.entries[red.key].paid_by is None


def test_a_merge_superseding_an_entry_counts_the_shared_history_once() -> None:
    """Both branches carry the base entry's charge in their cumulative ``charged``: the
    superseded side keeps only what it paid since the base, so the merged lockfile
    records what the account paid (base + each branch's new task), never the base twice."""
    base = entry("s@c=red", charged="0.2", task="t0")
    ours = dataclasses.replace(entry("s@c=red", charged="0.4", task="t1"),
                               updated_at="2026-01-01T00:00:02Z")
    theirs = dataclasses.replace(entry("s@c=red", charged="0.4", task="t2"),
                                 updated_at="2026-01-01T00:00:01Z")
    merged = merge_locks([Lockfile("s.yaml", {base.key: ours}),
                          Lockfile("s.yaml", {base.key: theirs})],
                         base=Lockfile("s.yaml", {base.key: base})).lock
    assert merged.entries["s@c=red"].task_id == "t1"
    assert merged.entries["s@c=red#superseded:t2"].charged == Decimal("0.2")
    assert merged.charged == Decimal("0.6")
    # Both sides moved the entry to a new key (a moved: block run on each branch): the
    # base entry is found by when it was made and its matrix values.
    made = "2026-01-01T00:00:00Z"
    old = dataclasses.replace(base, key="t@c=red", job="t", created_at=made)
    moved = merge_locks(
        [Lockfile("s.yaml", {base.key: dataclasses.replace(ours, created_at=made)}),
         Lockfile("s.yaml", {base.key: dataclasses.replace(theirs, created_at=made)})],
        base=Lockfile("s.yaml", {old.key: old})).lock
    assert moved.charged == Decimal("0.6")
    # Without a base (shards), nothing is known to be shared: each side counts in full.
    unrelated = merge_locks([Lockfile("s.yaml", {base.key: ours}),
                             Lockfile("s.yaml", {base.key: theirs})]).lock
    assert unrelated.charged == Decimal("0.8")


def test_a_prune_line_in_the_journal_removes_the_entry_and_keeps_its_spend() -> None:
    """A deletion carrying its retired record: folded once or twice, one record."""
    red = entry("s@c=red")
    line = journal_line(red.key, None, retired=Retired.of(red))
    assert json.loads(line)["retired"]["charged"] == 0.2
    lock = Lockfile("s.yaml", {red.key: red})
    once = fold_journal(lock, line, source="j")
    twice = fold_journal(once, line + line, source="j")
    assert once.entries == {}
    assert twice.retired == once.retired == (Retired.of(red),)
    assert twice.charged == Decimal("0.2")


def test_a_replay_is_charged_here_only_when_this_entry_sent_the_key_before() -> None:
    """Idempotency-Replayed of someone else's sending: paid elsewhere; of our own earlier
    (unrecorded) sending: paid here; a task recorded in another lockfile: there."""
    assert paid_elsewhere(replayed=True, sent_before=False, recorded=None) == REPLAYED_ELSEWHERE
    assert paid_elsewhere(replayed=True, sent_before=True, recorded=None) is None
    assert paid_elsewhere(replayed=False, sent_before=False, recorded=None) is None
    assert paid_elsewhere(replayed=False, sent_before=False, recorded="x.lock.json: k") == \
        "x.lock.json: k"


def test_a_replay_of_a_task_made_before_our_first_sending_is_not_our_charge() -> None:
    """A key this lockfile sent before, answered with a task the API made before that
    first sending (beyond a second of clock difference), was paid by another sending."""
    sent = "2026-01-01T12:00:10Z"
    at = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC).timestamp()
    note = paid_elsewhere(replayed=True, sent_before=True, recorded=None, created=at - 60,
                          first_sent=sent)
    assert note is not None
    assert "made at 2026-01-01T11:59:10Z, before this lockfile first sent its key" in note
    for created in (at - 1, at, at + 5, None):  # ours, or the clocks cannot tell
        assert paid_elsewhere(replayed=True, sent_before=True, recorded=None,
                              created=created, first_sent=sent) is None
    assert not made_before(at - 60, None)
    assert not made_before(at - 60, "not a time")
    assert made_before(at - 2.5, sent)
