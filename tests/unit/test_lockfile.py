"""The lockfile round-trips, matches its published schema, and fails clearly when damaged."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from pipeline.errors import LockfileError
from pipeline.lockfile import (
    LockEntry,
    Lockfile,
    Output,
    dump_lockfile,
    lockfile_path,
    parse_lockfile,
    read_lockfile,
    write_lockfile,
)
from pipeline.schema import load_schema

ENTRY = LockEntry(
    key="a@x=1", job="a", fingerprint="sha256:" + "0" * 64, status="done",
    request={"model": "wan2.7-image", "prompt": "p"}, matrix={"x": 1}, seed=7,
    idempotency_key="k1", task_id="task_1", attempts=1, cost=Decimal("0.40"),
    created_at="2026-01-01T00:00:00Z", updated_at="2026-01-01T00:01:00Z",
    outputs=(Output("outputs/t/a/x/0.png", "a" * 64, 123, 1024, 768,
                    "http://h/f.png", 1_800_000_000),))


def test_round_trip() -> None:
    """dump then parse gives the same entries."""
    lock = Lockfile("m.yaml", {ENTRY.key: ENTRY, "b": LockEntry("b", "b", "f", "failed")})
    again = parse_lockfile(dump_lockfile(lock))
    assert again.entries == lock.entries
    assert again.manifest == "m.yaml"


def test_stable_sorted_text() -> None:
    """The text is sorted and identical however the entries were inserted."""
    a, b = LockEntry("a", "a", "f", "done"), LockEntry("b", "b", "f", "done")
    one = Lockfile("m", {"b": b, "a": a})
    two = Lockfile("m", {"a": a, "b": b})
    assert dump_lockfile(one) == dump_lockfile(two)
    assert list(json.loads(dump_lockfile(one))["entries"]) == ["a", "b"]
    assert '"cost": 0.4' in dump_lockfile(Lockfile("m", {ENTRY.key: ENTRY}))


def test_dump_matches_published_schema() -> None:
    """What imgspec writes validates against schemas/lockfile.schema.json."""
    schema = load_schema("lockfile.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(dump_lockfile(Lockfile("m", {ENTRY.key: ENTRY}))), schema)


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON"),
    ("[]", "not an imgspec lockfile"),
    ('{"version": 9, "entries": {}}', "version 9 is not supported"),
    ('{"version": 1, "entries": {"a": {"job": "a"}}}',
     '^lockfile:1:33: entry "a": fingerprint: is missing'),
    ('{"version": 1, "entries": {"a": {"job": "a", "fingerprint": "f", "status": "odd"}}}',
     'entry "a": status: must be one of "submitting", .* \\(found "odd"\\); restore'),
])
def test_damaged_lockfiles_fail_clearly(text: str, message: str) -> None:
    """A damaged lockfile is a LockfileError saying what to do, never a traceback."""
    with pytest.raises(LockfileError, match=message):
        parse_lockfile(text)


def test_atomic_write_and_read(tmp_path: Path) -> None:
    """write_lockfile replaces the file whole and leaves no temp files behind."""
    path = tmp_path / "m.lock.json"
    assert read_lockfile(path).entries == {}
    write_lockfile(path, Lockfile("m.yaml", {ENTRY.key: ENTRY}))
    write_lockfile(path, Lockfile("m.yaml", {}))
    assert read_lockfile(path).entries == {}
    assert [p.name for p in tmp_path.iterdir()] == ["m.lock.json"]


def test_lockfile_path_beside_manifest() -> None:
    """shop.yaml → shop.lock.json; --simulate keeps a separate lockfile."""
    assert lockfile_path(Path("m/shop.yaml")) == Path("m/shop.lock.json")
    assert lockfile_path(Path("m/shop.yml"), simulate=True) == Path("m/shop.simulate.lock.json")
