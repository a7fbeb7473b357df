"""The journal: folding rules, the LockStore's durability, and recovery after real crashes."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from pathlib import Path

import pytest

import pipeline.shell.store.lockstore as journal_module
from pipeline.core.lock.journal import Recovery, fold_journal, journal_line
from pipeline.core.lock.lockfile import EntryTexts, LockEntry, Lockfile, Output
from pipeline.errors import LockfileError
from pipeline.shell.store.lockstore import (
    LockStore,
    journal_path,
    read_journal,
    read_lockfile,
    write_lockfile,
)

REPO = Path(__file__).resolve().parents[2]


def entry(key: str, status: str = "done", *, attempts: int = 1) -> LockEntry:
    """A small entry whose key, status and attempts the tests vary."""
    return LockEntry(
        key=key, job=key.split("@")[0], fingerprint="sha256:" + "0" * 64,
        status=status,  # type: ignore[arg-type]
        request={"model": "wan2.7-image", "prompt": "a lighthouse - ünïcode"}, seed=7,
        idempotency_key=f"idem-{key}-{attempts}", task_id=f"task-{key}", attempts=attempts,
        cost=Decimal("0.30"), created_at="2026-01-01T00:00:00Z",
        outputs=(Output(f"outputs/{key}/0.png", "a" * 64, 123, 1024, 768),),
    )


def crash_entry(i: int) -> LockEntry:
    """The i-th record of the crash test: new keys, with every third one updating an older key."""
    if i % 3 == 2:
        return entry(f"item{i // 2:03d}", "failed", attempts=i)
    return entry(f"item{i:03d}", "running", attempts=i)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines_of(path: Path) -> list[str]:
    """The journal's lines (without newlines)."""
    return path.read_text(encoding="utf-8").splitlines()


# --- journal_path and fold_journal (pure) -------------------------------------------



def commit(store: LockStore, item: LockEntry) -> None:
    """Record ``item`` the way a run does (``LockStore.commit``), from synchronous code."""
    asyncio.run(store.commit(item))

def test_journal_path_is_beside_the_lockfile() -> None:
    """shop.lock.json → shop.lock.journal in the same folder (simulate lockfile too)."""
    assert journal_path(Path("/x/shop.lock.json")) == Path("/x/shop.lock.journal")
    assert journal_path(Path("/x/shop.simulate.lock.json")) == Path("/x/shop.simulate.lock.journal")


def test_fold_applies_lines_in_order_last_wins_and_deletes() -> None:
    """Lines apply in order: later snapshots replace earlier ones, deletions remove keys."""
    base = Lockfile("m.yaml", {"old": entry("old"), "gone": entry("gone")})
    text = (journal_line("a", entry("a", "submitting"))
            + journal_line("a", entry("a", "running", attempts=2))
            + journal_line("gone", None)
            + journal_line("never-there", None)
            + journal_line("b", entry("b")))
    folded = fold_journal(base, text, source="j")
    assert set(folded.entries) == {"old", "a", "b"}
    assert folded.entries["a"] == entry("a", "running", attempts=2)
    assert folded.manifest == "m.yaml"
    assert base.entries.keys() == {"old", "gone"}  # the input is not mutated


def test_fold_is_idempotent() -> None:
    """Folding the same journal twice equals folding it once (what makes a re-fold harmless)."""
    text = journal_line("a", entry("a")) + journal_line("b", None) + journal_line("c", entry("c"))
    once = fold_journal(Lockfile("m", {"b": entry("b")}), text, source="j")
    assert fold_journal(once, text, source="j") == once


def test_fold_ignores_a_torn_last_line() -> None:
    """A partial last line (crash mid-append), terminated or not, is dropped."""
    good = journal_line("a", entry("a"))
    torn = journal_line("b", entry("b"))[:40]
    assert set(fold_journal(Lockfile("m"), good + torn, source="j").entries) == {"a"}
    assert set(fold_journal(Lockfile("m"), good + torn + "\n", source="j").entries) == {"a"}
    assert set(fold_journal(Lockfile("m"), good + "\x00\x00\x00", source="j").entries) == {"a"}


def test_fold_drops_an_unterminated_last_line_even_if_it_parses() -> None:
    """Only newline-terminated lines count: record() writes the newline in the same write."""
    text = journal_line("a", entry("a")) + journal_line("b", entry("b")).rstrip("\n")
    assert set(fold_journal(Lockfile("m"), text, source="j").entries) == {"a"}


@pytest.mark.parametrize("bad", [
    "{not json",
    "[1, 2]",
    '{"v": 1, "entry": {}}',
    '{"v": 1, "key": "x", "entry": {"status": "done"}}',
    '{"v": 1, "key": "x", "entry": {"job": "x", "fingerprint": "f", "status": "weird"}}',
    '{"v": 1, "key": "x"}',
    '{"v": 1, "key": "x", "delete": true, "entry": {}}',
    '{"v": 2, "key": "x", "delete": true}',
    '{"v": 1, "key": "\udcff", "delete": true}',  # an undecodable byte, surrogate-escaped
])
def test_fold_rejects_a_damaged_middle_line_with_its_number(bad: str) -> None:
    """A damaged line before the last raises LockfileError naming the line and what to do."""
    text = journal_line("a", entry("a")) + bad + "\n" + journal_line("b", entry("b"))
    with pytest.raises(LockfileError, match=r"^shop\.lock\.journal:2: ") as info:
        fold_journal(Lockfile("m"), text, source="shop.lock.journal")
    assert "delete that line" in str(info.value)


def bad_entry_line(key: str, field: str, token: str) -> str:
    """A whole, newline-terminated journal line whose entry has ``field`` set to raw ``token``."""
    record = json.loads(journal_line(key, entry(key)))
    record["entry"][field] = "@@"
    return json.dumps(record).replace('"@@"', token) + "\n"


@pytest.mark.parametrize(("field", "token", "what"), [
    ("attempts", "1e400", "attempts: must be a finite number"),
    ("cost", "Infinity", "cost: must be a finite number"),
    ("cost", "NaN", "cost: must be a finite number (found NaN)"),
    ("cost", "-1", "cost: must be at least 0"),
    ("task_id", "7", "task_id: must be a string or null (found 7)"),
    ("idempotency_key", "7", "idempotency_key: must be a string or null"),
    ("request", '"x"', "request: must be an object"),
    ("matrix", "[1]", "matrix: must be an object"),
    ("outputs", '[{"path": "/etc/passwd", "sha256": "' + "a" * 64 + '", "bytes": 1, '
     '"width": 1, "height": 1}]', "outputs[0].path: \"/etc/passwd\" is absolute"),
])
def test_fold_names_the_entry_and_field_of_a_bad_line(field: str, token: str, what: str) -> None:
    """A whole line with a bad value is damage, middle or last: key and field are named."""
    good = journal_line("a", entry("a"))
    for text, number in ((good + bad_entry_line("b@x=1", field, token) + good, 2),
                         (good + bad_entry_line("b@x=1", field, token), 2)):
        with pytest.raises(LockfileError) as info:
            fold_journal(Lockfile("m"), text, source="shop.lock.journal")
        message = str(info.value)
        assert message.startswith(f'shop.lock.journal:{number}: journal line is damaged '
                                  f'(entry "b@x=1": {what}')
        assert "delete that line" in message


def test_fold_still_drops_a_torn_last_line_only() -> None:
    """Only a last line that is not JSON at all (a torn append) is dropped; a whole one counts."""
    good = journal_line("a", entry("a"))
    torn = journal_line("b", entry("b"))[:-30] + "\n"
    assert set(fold_journal(Lockfile("m"), good + torn, source="j").entries) == {"a"}
    with pytest.raises(LockfileError, match="unexpected field"):
        fold_journal(Lockfile("m"), good + '{"v": 1, "key": "b", "delete": true, "x": 1}\n',
                     source="j")


@pytest.mark.parametrize("line", [
    '{"v": true, "key": "x", "delete": true}',
    '{"v": 1.0, "key": "x", "delete": true}',
    '{"v": 1, "key": "\\ud800", "delete": true}',
    '{"v": 1, "key": 5, "delete": true}',
    '{"v": 1, "key": "x", "delete": 1}',
])
def test_fold_refuses_records_that_only_look_right(line: str) -> None:
    """Booleans for numbers, numeric or surrogate keys and 1 for true are damage, not records."""
    text = journal_line("a", entry("a")) + line + "\n" + journal_line("b", entry("b"))
    with pytest.raises(LockfileError, match=r"^j:2: journal line is damaged"):
        fold_journal(Lockfile("m"), text, source="j")


def test_recovery_between_names_deleted_and_updated_keys() -> None:
    """Recovery.between lists the keys a fold removed and those it added or changed."""
    before = Lockfile("m", {"a": entry("a"), "b": entry("b"), "c": entry("c")})
    text = (journal_line("b", None) + journal_line("c", entry("c", "failed"))
            + journal_line("d", entry("d")))
    after = fold_journal(before, text, source="j")
    assert Recovery.between(before, after) == Recovery(deleted=("b",), updated=("c", "d"))
    assert Recovery.between(before, before) == Recovery()
    repeated = fold_journal(before, journal_line("a", entry("a")), source="j")
    assert Recovery.between(before, repeated) == Recovery()  # the same entry, written again


def test_open_reports_what_it_recovered(tmp_path: Path) -> None:
    """LockStore.open says which removals and updates it folded in from a left-over journal."""
    lock_path = tmp_path / "shop.lock.json"
    write_lockfile(lock_path, Lockfile("shop.yaml", {"old": entry("old"), "a": entry("a")}))
    journal_path(lock_path).write_text(journal_line("old", None)
                                       + journal_line("a", entry("a", "failed")))
    with LockStore.open(lock_path, manifest="shop.yaml") as store:
        assert store.recovered == Recovery(deleted=("old",), updated=("a",))
    with LockStore.open(lock_path, manifest="shop.yaml") as store:
        assert store.recovered == Recovery()


def test_fold_skips_blank_lines() -> None:
    """Blank lines carry nothing and are not treated as damage."""
    text = "\n" + journal_line("a", entry("a")) + "\n\n" + journal_line("b", entry("b"))
    assert set(fold_journal(Lockfile("m"), text, source="j").entries) == {"a", "b"}


# --- LockStore ---------------------------------------------------------------------------


def test_commit_appends_one_durable_line_and_updates_state(tmp_path: Path) -> None:
    """commit() writes one JSON line to the journal and the entry to the in-memory lock."""
    lock_path = tmp_path / "shop.lock.json"
    with LockStore.open(lock_path, manifest="shop.yaml") as store:
        commit(store, entry("a", "submitting"))
        lines = lines_of(journal_path(lock_path))
        assert len(lines) == 1
        assert json.loads(lines[0]) == {"v": 1, "key": "a",
                                        "entry": entry("a", "submitting").to_json()}
        assert store.get("a") == entry("a", "submitting")
        assert store.get("missing") is None
        assert store.lock.entries == {"a": entry("a", "submitting")}
        assert dict(store.entries) == {"a": entry("a", "submitting")}
        assert store.lock.manifest == "shop.yaml"
        assert not lock_path.exists()  # nothing checkpointed yet


def test_lock_snapshot_does_not_change_under_the_caller(tmp_path: Path) -> None:
    """store.lock is a snapshot: later records do not alter it; store.entries is a live view."""
    with LockStore.open(tmp_path / "s.lock.json", manifest="s.yaml") as store:
        commit(store, entry("a"))
        before, view = store.lock, store.entries
        commit(store, entry("b"))
        assert set(before.entries) == {"a"}
        assert set(store.lock.entries) == {"a", "b"}
        assert set(view) == {"a", "b"}
        with pytest.raises(TypeError):
            view["c"] = entry("c")  # type: ignore[index]


def test_reopen_after_crash_recovers_journal(tmp_path: Path) -> None:
    """A journal left by a crash is folded into an older lockfile at open, then removed."""
    lock_path = tmp_path / "shop.lock.json"
    write_lockfile(lock_path, Lockfile("shop.yaml", {"old": entry("old"), "a": entry("a")}))
    journal_path(lock_path).write_text(
        journal_line("a", entry("a", "failed", attempts=3)) + journal_line("old", None)
        + journal_line("new", entry("new")) + '{"v": 1, "key": "tor', encoding="utf-8")
    with LockStore.open(lock_path, manifest="shop.yaml") as store:
        expected = {"a": entry("a", "failed", attempts=3), "new": entry("new")}
        assert store.lock.entries == expected
        # Recovery is already on disk before the run records anything new.
        assert read_lockfile(lock_path).entries == expected
        assert journal_path(lock_path).read_bytes() == b""


def test_open_refuses_a_journal_damaged_in_the_middle(tmp_path: Path) -> None:
    """A damaged middle line stops open() with LockfileError and leaves the journal in place."""
    lock_path = tmp_path / "shop.lock.json"
    text = journal_line("a", entry("a")) + "garbage\n" + journal_line("b", entry("b"))
    journal_path(lock_path).write_text(text, encoding="utf-8")
    with pytest.raises(LockfileError, match=r"shop\.lock\.journal:2: "):
        LockStore.open(lock_path, manifest="shop.yaml")
    assert journal_path(lock_path).read_text(encoding="utf-8") == text
    assert not lock_path.exists()


def test_read_journal_absent_and_undecodable(tmp_path: Path) -> None:
    """read_journal gives None for no journal, and keeps undecodable bytes as surrogates."""
    assert read_journal(tmp_path / "none.lock.journal") is None
    (tmp_path / "j").write_bytes(b"ok\n\xc3")
    assert read_journal(tmp_path / "j") == "ok\n\udcc3"


def test_open_tolerates_invalid_utf8_in_a_torn_last_line(tmp_path: Path) -> None:
    """A crash cutting a multi-byte character in the last line does not block recovery."""
    lock_path = tmp_path / "shop.lock.json"
    torn = journal_line("b", entry("b")).encode("utf-8")
    cut = torn.index("ü".encode()) + 1
    journal_path(lock_path).write_bytes(journal_line("a", entry("a")).encode() + torn[:cut])
    with LockStore.open(lock_path, manifest="shop.yaml") as store:
        assert set(store.lock.entries) == {"a"}


def test_checkpoint_writes_lockfile_and_empties_journal(tmp_path: Path) -> None:
    """checkpoint() writes the current state atomically and truncates the journal."""
    lock_path = tmp_path / "shop.lock.json"
    with LockStore.open(lock_path, manifest="shop.yaml") as store:
        commit(store, entry("a"))
        commit(store, entry("b"))
        store.checkpoint()
        assert read_lockfile(lock_path).entries == {"a": entry("a"), "b": entry("b")}
        assert journal_path(lock_path).read_bytes() == b""
        commit(store, entry("c"))  # appending continues after the truncation
        assert len(lines_of(journal_path(lock_path))) == 1


def test_crash_between_checkpoint_write_and_truncate_is_harmless(tmp_path: Path) -> None:
    """A lockfile already holding the journal's lines folds to the same state on reopen."""
    lock_path = tmp_path / "shop.lock.json"
    state = Lockfile("shop.yaml", {"a": entry("a"), "b": entry("b")})
    write_lockfile(lock_path, state)
    journal_path(lock_path).write_text(
        journal_line("a", entry("a")) + journal_line("b", entry("b")), encoding="utf-8")
    with LockStore.open(lock_path, manifest="shop.yaml") as store:
        assert store.lock.entries == state.entries


def test_periodic_checkpoint_follows_the_clock(tmp_path: Path) -> None:
    """commit() checkpoints once checkpoint_every seconds have passed since the last one."""
    lock_path = tmp_path / "shop.lock.json"
    clock = FakeClock()
    with LockStore.open(lock_path, manifest="m", checkpoint_every=5.0, clock=clock) as store:
        commit(store, entry("a"))
        clock.now = 4.9
        commit(store, entry("b"))
        assert not lock_path.exists()
        clock.now = 5.0
        commit(store, entry("c"))
        assert set(read_lockfile(lock_path).entries) == {"a", "b", "c"}
        assert journal_path(lock_path).read_bytes() == b""
        clock.now = 9.0
        commit(store, entry("d"))  # 4 s after the last checkpoint: journal only
        assert set(read_lockfile(lock_path).entries) == {"a", "b", "c"}
        assert len(lines_of(journal_path(lock_path))) == 1


def test_delete_is_journaled_and_recovered(tmp_path: Path) -> None:
    """delete() journals removals, ignores absent keys, and survives a crash."""
    lock_path = tmp_path / "shop.lock.json"
    write_lockfile(lock_path, Lockfile("m", {"a": entry("a"), "b": entry("b"), "c": entry("c")}))
    store = LockStore.open(lock_path, manifest="m")
    store.delete(["a", "c", "absent"])
    assert set(store.lock.entries) == {"b"}
    assert [json.loads(line)["key"] for line in lines_of(journal_path(lock_path))] == ["a", "c"]
    # Simulate a crash: drop the store without closing it.
    with LockStore.open(lock_path, manifest="m") as again:
        assert set(again.lock.entries) == {"b"}
    store.close()


def test_close_checkpoints_and_removes_journal_idempotently(tmp_path: Path) -> None:
    """close() writes the final state, removes the journal, and may be called twice."""
    lock_path = tmp_path / "shop.lock.json"
    store = LockStore.open(lock_path, manifest="m")
    commit(store, entry("a"))
    store.close()
    store.close()
    assert not journal_path(lock_path).exists()
    assert set(read_lockfile(lock_path).entries) == {"a"}
    with pytest.raises(ValueError, match="closed"):
        commit(store, entry("b"))


def test_store_with_nothing_recorded_creates_no_lockfile(tmp_path: Path) -> None:
    """A run that records nothing leaves no lockfile and no journal behind."""
    lock_path = tmp_path / "shop.lock.json"
    with LockStore.open(lock_path, manifest="m"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_context_manager_closes_on_keyboard_interrupt(tmp_path: Path) -> None:
    """Leaving the block by KeyboardInterrupt still checkpoints and removes the journal."""
    lock_path = tmp_path / "shop.lock.json"

    def interrupted_run() -> None:
        with LockStore.open(lock_path, manifest="m") as store:
            commit(store, entry("a"))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_run()
    assert set(read_lockfile(lock_path).entries) == {"a"}
    assert not journal_path(lock_path).exists()


def test_disk_full_mid_commit_raises_and_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An OSError while appending is the caller's LockfileError and leaves no torn line.

    (As with every commit, the state changed at once: ``close`` saves the entry. The
    synchronous twin that left the state unchanged is gone; runs never used it.)
    """
    lock_path = tmp_path / "shop.lock.json"
    with LockStore.open(lock_path, manifest="m") as store:
        commit(store, entry("a"))
        before = journal_path(lock_path).read_bytes()
        real_write = os.write
        calls = 0

        def half_then_enospc(fd: int, data: bytes | memoryview) -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                return real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", half_then_enospc)
        with pytest.raises(LockfileError, match=r"No space left on device.*free space"):
            commit(store, entry("b"))
        monkeypatch.undo()
        assert journal_path(lock_path).read_bytes() == before
        assert store.get("b") == entry("b")
        commit(store, entry("c"))
    assert set(read_lockfile(lock_path).entries) == {"a", "b", "c"}


def test_failed_periodic_checkpoint_keeps_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failed periodic checkpoint does not fail commit(); close() raises, keeps the journal."""
    lock_path = tmp_path / "shop.lock.json"
    clock = FakeClock()

    def refuse(path: Path, lock: Lockfile, **_kw: object) -> None:
        raise LockfileError(f"{path}: cannot be written (Read-only file system)")

    monkeypatch.setattr(journal_module, "write_lockfile", refuse)
    store = LockStore.open(lock_path, manifest="m", checkpoint_every=1.0, clock=clock)
    clock.now = 2.0
    commit(store, entry("a"))  # the periodic checkpoint fails; the record still stands
    assert store.get("a") == entry("a")
    with pytest.raises(LockfileError, match="Read-only"):
        store.close()
    assert len(lines_of(journal_path(lock_path))) == 1
    monkeypatch.undo()
    with LockStore.open(lock_path, manifest="m") as again:
        assert set(again.lock.entries) == {"a"}


# --- real crashes ------------------------------------------------------------------------

CRASH_RECORDS = 40
CRASH_SCRIPT = textwrap.dedent("""
    import asyncio, itertools, os, signal, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from pipeline.shell.store.lockstore import LockStore
    from tests.unit.test_journal import crash_entry

    lock_path, kill_after, total = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    # A tick per clock read, so checkpoints also happen (and get interrupted) mid-stream.
    store = LockStore.open(lock_path, manifest="shop.yaml", checkpoint_every=7,
                           clock=itertools.count().__next__)
    for i in range(total):
        if i == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        asyncio.run(store.commit(crash_entry(i)))  # the path a run takes
    os.kill(os.getpid(), signal.SIGKILL)
""")
KILL_POINTS = sorted({0, CRASH_RECORDS,
                      *random.Random(20260107).sample(range(1, CRASH_RECORDS), 10)})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kill_after", KILL_POINTS)
def test_sigkill_mid_run_loses_nothing_recorded(tmp_path: Path, kill_after: int) -> None:
    """After SIGKILL following k records, reopening yields exactly the first k records."""
    lock_path = tmp_path / "shop.lock.json"
    done = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(REPO), str(lock_path), str(kill_after),
         str(CRASH_RECORDS)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    expected = fold_journal(
        Lockfile("shop.yaml"),
        "".join(journal_line(e.key, e) for e in map(crash_entry, range(kill_after))),
        source="expected",
    )
    with LockStore.open(lock_path, manifest="shop.yaml") as store:
        assert store.lock.entries == expected.entries
        if kill_after:
            assert read_lockfile(lock_path).entries == expected.entries
    assert not journal_path(lock_path).exists()


TIMED_KILL_SCRIPT = textwrap.dedent("""
    import asyncio, itertools, os, signal, sys, threading
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from pipeline.shell.store.lockstore import LockStore
    from tests.unit.test_journal import crash_entry

    lock_path, delay = Path(sys.argv[2]), float(sys.argv[3])
    store = LockStore.open(lock_path, manifest="shop.yaml", checkpoint_every=7,
                           clock=itertools.count().__next__)
    threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
    print("ready", flush=True)
    for i in itertools.count():
        commit(store, crash_entry(i % 500))
        print(i + 1, flush=True)  # acknowledged: record() has returned
""")


def run_until_killed(script: str, lock_path: Path, delay: float) -> int:
    """Run a kill script (SIGKILLed after ``delay`` s); the number of records it acknowledged."""
    done = subprocess.run(
        [sys.executable, "-c", script, str(REPO), str(lock_path), str(delay)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    printed = done.stdout.split()
    assert printed[0] == "ready", done.stdout
    return int(printed[-1]) if len(printed) > 1 else 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(10))
def test_sigkill_at_any_moment_keeps_every_acknowledged_record(tmp_path: Path, seed: int) -> None:
    """A kill at an arbitrary instant (mid-write, mid-checkpoint) keeps all acknowledged records."""
    lock_path = tmp_path / "shop.lock.json"
    acknowledged = run_until_killed(TIMED_KILL_SCRIPT, lock_path,
                                    random.Random(seed).uniform(0.005, 0.08))

    def prefix(n: int) -> dict[str, LockEntry]:
        text = "".join(journal_line(e.key, e) for e in (crash_entry(i % 500) for i in range(n)))
        return dict(fold_journal(Lockfile("shop.yaml"), text, source="expected").entries)

    with LockStore.open(lock_path, manifest="shop.yaml") as store:
        # The kill may land after record() returned but before its "acknowledged" print.
        assert store.lock.entries in (prefix(acknowledged), prefix(acknowledged + 1))


# --- commit(): group commit from the event loop ------------------------------------


def test_commit_writes_a_burst_in_few_fsyncs_and_is_durable_on_return(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Concurrent commits share writes and fsyncs; when they return, every line is on disk."""
    lock_path = tmp_path / "shop.lock.json"
    fsyncs = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal fsyncs
        fsyncs += 1
        real_fsync(fd)

    async def burst(store: LockStore) -> None:
        monkeypatch.setattr(os, "fsync", counting_fsync)
        await asyncio.gather(*(store.commit(entry(f"k{i:02d}")) for i in range(50)))
        monkeypatch.undo()
        lines = lines_of(journal_path(lock_path))
        assert sorted(json.loads(line)["key"] for line in lines) == [
            f"k{i:02d}" for i in range(50)]

    with LockStore.open(lock_path, manifest="m") as store:
        asyncio.run(burst(store))
        assert set(store.entries) == {f"k{i:02d}" for i in range(50)}
    assert 1 <= fsyncs < 10
    assert set(read_lockfile(lock_path).entries) == {f"k{i:02d}" for i in range(50)}


def test_commit_of_a_cancelled_caller_is_still_written(tmp_path: Path) -> None:
    """A caller cancelled while its batch is written does not cancel the write."""
    lock_path = tmp_path / "shop.lock.json"

    async def scenario(store: LockStore) -> None:
        waiting = asyncio.create_task(store.commit(entry("a")))
        neighbour = asyncio.create_task(store.commit(entry("b")))
        await asyncio.sleep(0)  # both have queued their lines
        waiting.cancel()
        await neighbour  # the shared batch is not cancelled with the first caller
        await store.settle()
        assert store.get("a") == entry("a")

    with LockStore.open(lock_path, manifest="m") as store:
        asyncio.run(scenario(store))
        assert {json.loads(line)["key"] for line in lines_of(journal_path(lock_path))} == {
            "a", "b"}


def test_commit_failure_reaches_every_caller_of_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A disk error while writing a batch raises LockfileError in each of its callers."""

    def enospc(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    async def scenario(store: LockStore) -> list[BaseException | None]:
        monkeypatch.setattr(os, "write", enospc)
        results = await asyncio.gather(store.commit(entry("a")), store.commit(entry("b")),
                                       return_exceptions=True)
        monkeypatch.undo()
        return list(results)

    with LockStore.open(tmp_path / "s.lock.json", manifest="m") as store:
        results = asyncio.run(scenario(store))
    assert all(isinstance(r, LockfileError) and "free space" in str(r) for r in results)


def test_commit_during_a_checkpoint_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An entry committed while the writer checkpoints still reaches the final lockfile."""
    lock_path = tmp_path / "shop.lock.json"
    clock = FakeClock()
    in_checkpoint = threading.Event()
    release = threading.Event()
    real_write_lockfile = write_lockfile

    def slow_write_lockfile(path: Path, lock: Lockfile, **kw: EntryTexts | None) -> None:
        in_checkpoint.set()
        assert release.wait(10)
        real_write_lockfile(path, lock, **kw)

    async def scenario(store: LockStore) -> None:
        clock.now = 5.0  # the first batch is due for a checkpoint
        first = asyncio.create_task(store.commit(entry("a")))
        await asyncio.to_thread(in_checkpoint.wait, 10)
        second = asyncio.create_task(store.commit(entry("b")))  # not in the snapshot
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, second)
        await store.settle()

    monkeypatch.setattr(journal_module, "write_lockfile", slow_write_lockfile)
    with LockStore.open(lock_path, manifest="m", checkpoint_every=5.0, clock=clock) as store:
        asyncio.run(scenario(store))
        assert set(read_lockfile(lock_path).entries) == {"a"}  # the checkpoint's snapshot
    assert set(read_lockfile(lock_path).entries) == {"a", "b"}  # close() saved the rest
    assert not journal_path(lock_path).exists()


COMMIT_KILL_SCRIPT = textwrap.dedent("""
    import asyncio, itertools, os, signal, sys, threading
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from pipeline.shell.store.lockstore import LockStore
    from tests.unit.test_journal import entry

    lock_path, delay = Path(sys.argv[2]), float(sys.argv[3])
    store = LockStore.open(lock_path, manifest="shop.yaml", checkpoint_every=7,
                           clock=itertools.count().__next__)

    async def main():
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
        print("ready", flush=True)
        for group in itertools.count():
            keys = [f"k{group * 10 + i:05d}" for i in range(10)]
            await asyncio.gather(*(store.commit(entry(k)) for k in keys))
            print((group + 1) * 10, flush=True)  # acknowledged: every commit returned

    asyncio.run(main())
""")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(5))
def test_sigkill_keeps_every_acknowledged_commit(tmp_path: Path, seed: int) -> None:
    """A kill at an arbitrary instant keeps every commit that had returned, intact."""
    lock_path = tmp_path / "shop.lock.json"
    acknowledged = run_until_killed(COMMIT_KILL_SCRIPT, lock_path,
                                    random.Random(seed).uniform(0.05, 0.3))
    with LockStore.open(lock_path, manifest="shop.yaml") as store:
        recovered = dict(store.entries)
    assert {f"k{i:05d}" for i in range(acknowledged)} <= set(recovered)
    assert all(value == entry(key) for key, value in recovered.items())
