"""The lockfile round-trips, matches its published schema, and fails clearly when damaged."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.lock.lockfile import (
    ENTRY_STATUSES,
    LockEntry,
    Lockfile,
    Output,
    dump_lockfile,
    lockfile_path,
    parse_lockfile,
)
from pipeline.core.lock.published import LOCKFILE_SCHEMA
from pipeline.core.lock.schema import check_stored_path, compile_schema, lockfile_defect
from pipeline.errors import LockfileError
from pipeline.shell.store.lockstore import read_lockfile, write_lockfile
from pipeline.shell.store.schemas import load_schema, schema_dir

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


def test_the_published_lockfile_schema_is_the_cores_written_as_json() -> None:
    """schemas/lockfile.schema.json is, byte for byte, the core's schema written as JSON
    (edit the core's, then write the file as pipeline/core/lock/published.py says)."""
    published = (schema_dir() / "lockfile.schema.json").read_text(encoding="utf-8")
    assert published == json.dumps(LOCKFILE_SCHEMA, indent=2, ensure_ascii=False) + "\n"


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


# --- strict reading: the compiled schema and jsonschema agree -----------------------------

SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(load_schema("lockfile.schema.json"))
FULL: dict[str, Any] = {
    "job": "gen", "fingerprint": "sha256:" + "1" * 64, "status": "done",
    "request": {"model": "wan2.7-image", "prompt": "p", "n": 1}, "matrix": {"shop": "x"},
    "seed": 5, "idempotency_key": "imgspec-" + "a" * 40, "task_id": "task_1", "attempts": 1,
    "last_error": None, "cost": 0.2, "charged": 0.4, "created_at": "2026-01-01T00:00:00Z",
    "updated_at": None, "outputs": [{"path": "../outputs/shop/gen/x/0.png", "sha256": "b" * 64,
                                     "bytes": 10, "width": 1024, "height": 768,
                                     "url": "https://h/f.png", "expires_at": 1}],
}
VALID_DOC: dict[str, Any] = {
    "version": 1, "generator": "imgspec", "manifest": "shop.yaml", "entries": {
    "gen@shop=x": FULL,
    "gen@shop=y": {"job": "gen", "fingerprint": "f", "status": "submitting",
                   "idempotency_key": "k"},
    "gen@shop=z": {"job": "gen", "fingerprint": "f", "status": "running", "task_id": "t"},
}}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**64, 2**64)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
    | st.sampled_from(["../a", "a/../b", "..", "a\n", "done", "running", "0" * 64, "a" * 64,
                       "http://x", "imgspec-1", "x y", "", 2147483648, 1000000000.5, 2.0]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=3),
    max_leaves=6)


def _leaf_paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(value, dict):
        for key, sub in value.items():
            out += _leaf_paths(sub, (*here, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            out += _leaf_paths(sub, (*here, index))
    return out


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_compiled_checks_agree_with_jsonschema(data: st.DataObject) -> None:
    """For any value set, removed or added anywhere, the fast reader and jsonschema agree."""
    doc: Any = copy.deepcopy(VALID_DOC)
    for _ in range(data.draw(st.integers(1, 2))):
        path = data.draw(st.sampled_from(_leaf_paths(doc)))
        value = data.draw(json_values)
        if not path:
            doc = value
            continue
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step]
        action = data.draw(st.sampled_from(["set", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["extra", "charged", "cost", "url", ""]))] = value
        else:
            parent[path[-1]] = value
    assert (lockfile_defect(doc) is None) == SCHEMA_VALIDATOR.is_valid(doc)


def test_the_valid_document_is_valid_for_both() -> None:
    """The base document of the agreement test is valid (so its mutations test something)."""
    assert SCHEMA_VALIDATOR.is_valid(VALID_DOC)
    assert lockfile_defect(VALID_DOC) is None


STORED_PATH_PATTERN = load_schema("lockfile.schema.json")["$defs"]["output"]["properties"][
    "path"]["pattern"]


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(["/", ".", "a", "\\", "\x00", "\n", "\x1f", "é"]),
               max_size=12))
def test_check_stored_path_is_the_schema_pattern(path: str) -> None:
    """check_stored_path refuses exactly the paths the schema's pattern refuses."""
    assert (check_stored_path(path) is None) == bool(re.search(STORED_PATH_PATTERN, path))


@pytest.mark.parametrize("path", ["../outputs/shop/gen/x/0.png", "outputs/a.png", "a",
                                  "../../x/0.png", "..a/b", "a/...", "my renders/é.png"])
def test_check_stored_path_accepts_what_imgspec_writes(path: str) -> None:
    """Relative POSIX paths, with leading '..' segments as the format stores them, are fine."""
    assert check_stored_path(path) is None


@pytest.mark.parametrize(("path", "reason"), [
    ("", "empty"), ("/home/thesis.txt", "absolute"), ("a\\b.png", "backslash"),
    ("a\x00.png", "NUL"), ("a\n.png", "control character"), ("../outputs/../../home/t.txt",
                                                            "'..' segment after its start"),
    ("./a.png", "'.' segment"), ("a/./b", "'.' segment"), ("a//b", "empty segment"),
    ("a/", "empty segment"), ("..", "only '..'"), ("../..", "only '..'"),
])
def test_check_stored_path_refuses_wrong_forms(path: str, reason: str) -> None:
    """Absolute, backslashed, NUL, empty and inner '.'/'..' paths are refused with a reason."""
    assert reason in (check_stored_path(path) or "")


def lockfile_text(**fields: Any) -> str:
    """A one-entry lockfile whose entry has ``fields`` set (raw JSON text where a str starts @)."""
    entry = {**FULL, **{k: v for k, v in fields.items() if not isinstance(v, Raw)}}
    text = json.dumps({"version": 1, "entries": {"gen@shop=x": entry}}, indent=2)
    for name, value in fields.items():
        if isinstance(value, Raw):  # a token json.dumps cannot write, such as 1e400
            text = re.sub(rf'"{name}": [^,\n]+', f'"{name}": {value.token}', text, count=1)
    return text


@dataclass(frozen=True)
class Raw:
    """A JSON token written as it is."""

    token: str


@pytest.mark.parametrize(("fields", "field", "what"), [
    ({"attempts": Raw("1e400")}, "attempts", "must be a finite number (found a number beyond"),
    ({"cost": Raw("Infinity")}, "cost", "must be a finite number"),
    ({"cost": Raw("NaN")}, "cost", "must be a finite number (found NaN)"),
    ({"cost": -0.2}, "cost", "must be at least 0"),
    ({"charged": Raw("1e400")}, "charged", "must be a finite number"),
    ({"attempts": 2.5}, "attempts", "must be an integer (found 2.5)"),
    ({"task_id": 5}, "task_id", "must be a string or null (found 5)"),
    ({"idempotency_key": 5}, "idempotency_key", "must be a string or null"),
    ({"idempotency_key": "two\nlines"}, "idempotency_key", '"two\\nlines" does not have the '
     "expected form"),
    ({"request": "a string"}, "request", "must be an object"),
    ({"matrix": ["a", "list"]}, "matrix", "must be an object"),
    ({"seed": True}, "seed", "must be an integer or null (found true)"),
    ({"status": "running", "task_id": None}, "task_id", "must be a string"),
    ({"oops": 1}, "oops", "is not a field of this format"),
])
def test_issue_values_are_refused_naming_entry_and_field(
        fields: dict[str, Any], field: str, what: str) -> None:
    """Each value from the issue is a LockfileError naming file, line, entry, field and a fix."""
    with pytest.raises(LockfileError) as info:
        parse_lockfile(lockfile_text(**fields), source="manifests/shop.lock.json")
    message = str(info.value)
    assert re.match(r"^manifests/shop\.lock\.json:\d+:\d+: entry \"gen@shop=x\": ", message)
    assert f": {field}: {what}" in message
    assert "restore the lockfile from git (git checkout -- shop.lock.json)" in message


@pytest.mark.parametrize(("output", "field", "what"), [
    ({"width": Raw("1e400")}, "outputs[0].width", "must be a finite number"),
    ({"width": 0}, "outputs[0].width", "must be at least 1"),
    ({"path": "/home/me/thesis.txt"}, "outputs[0].path", "is absolute"),
    ({"path": "../outputs/../../home/thesis.txt"}, "outputs[0].path", "'..' segment"),
    ({"path": "a\\b.png"}, "outputs[0].path", "backslash"),
    ({"sha256": "x"}, "outputs[0].sha256", "does not have the expected form"),
])
def test_bad_outputs_are_refused_naming_the_output_field(
        output: dict[str, Any], field: str, what: str) -> None:
    """An output's bad path or number is refused at read, naming outputs[i].field."""
    entry = copy.deepcopy(FULL)
    entry["outputs"][0].update({k: v for k, v in output.items() if not isinstance(v, Raw)})
    text = json.dumps({"version": 1, "entries": {"gen@shop=x": entry}}, indent=2)
    for name, value in output.items():
        if isinstance(value, Raw):
            text = re.sub(rf'"{name}": [^,\n]+', f'"{name}": {value.token}', text)
    with pytest.raises(LockfileError, match=re.escape(f'entry "gen@shop=x": {field}: ')) as info:
        parse_lockfile(text, source="shop.lock.json")
    assert what in str(info.value)


def test_error_position_points_at_the_value() -> None:
    """The line:column of a defect is where the offending value starts in the file."""
    text = lockfile_text(attempts=-3)
    with pytest.raises(LockfileError) as info:
        parse_lockfile(text, source="s.lock.json")
    line, col = map(int, str(info.value).split(":")[1:3])
    assert text.splitlines()[line - 1][col - 1:].startswith("-3")


@pytest.mark.parametrize(("text", "what"), [
    ('{"version": 1, "entries": {"a": "\\ud800"}}', "lone UTF-16 surrogate"),
    ('{"version": 1, "entries": {"\\udcff": {}}}', 'entry "\\udcff": is a key with a lone'),
    ('{"version": 1, "entries": {}, "x": ' + "9" * 5000 + "}", "x: must be a finite number"),
    ('{"version": 1, "entries": {"a": {"job": "a", "fingerprint": "f", "status": "done", '
     '"request": {"n": ' + "9" * 5000 + "}}}}", "request.n: must be a finite number"),
    ('{"version": 1, "entries": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ('{"version": 1, "entries": {"a": {"job": "a", "fingerprint": "f", "status": "done", '
     '"request": {"x": [NaN]}}}}', "request.x[0]: must be a finite number (found NaN)"),
    ('{"version": true, "entries": {}}', "version true is not supported"),
    ('{"version": 1, "entries": {"": {}}}', "is not a valid key: it must not be empty"),
], ids=["surrogate-value", "surrogate-key", "huge-int", "huge-int-in-request", "deep",
        "nan-in-request", "version-true", "empty-key"])
def test_json_python_accepts_but_json_does_not_is_refused(text: str, what: str) -> None:
    """NaN, overflowing numbers, lone surrogates and absurd nesting are clean LockfileErrors."""
    with pytest.raises(LockfileError, match=re.escape(what)):
        parse_lockfile(text, source="s.lock.json")


def test_lockfile_without_charged_takes_cost_as_charged() -> None:
    """Older lockfiles lack 'charged': it reads as the entry's cost, and is written from then on."""
    entry = {k: v for k, v in FULL.items() if k != "charged"}
    lock = parse_lockfile(json.dumps({"version": 1, "entries": {"a": entry}}))
    assert lock.entries["a"].charged == lock.entries["a"].cost == Decimal("0.2")
    assert json.loads(dump_lockfile(lock))["entries"]["a"]["charged"] == 0.2


def test_charged_round_trips_apart_from_cost() -> None:
    """'charged' (all attempts) and 'cost' (the current one) are stored and read separately."""
    entry = LockEntry("a", "a", "f", "done", cost=Decimal("0.2"), charged=Decimal("1.4"))
    again = parse_lockfile(dump_lockfile(Lockfile("m", {"a": entry}))).entries["a"]
    assert (again.cost, again.charged) == (Decimal("0.2"), Decimal("1.4"))


def test_entry_statuses_are_the_schemas() -> None:
    """The statuses the code knows are exactly the schema's enum."""
    schema = load_schema("lockfile.schema.json")
    assert tuple(schema["$defs"]["entry"]["properties"]["status"]["enum"]) == ENTRY_STATUSES


def test_compile_schema_refuses_keywords_it_does_not_implement() -> None:
    """A schema keyword the reader does not implement fails loudly instead of being skipped."""
    with pytest.raises(ValueError, match="does not support"):
        compile_schema({"type": "string", "format": "date-time"})
    check = compile_schema({"type": "object", "properties": {"a": {"type": "integer",
                                                                   "maximum": 3}}})
    assert check({"a": 2}) is None
    defect = check({"a": 4})
    assert defect is not None
    assert defect.where == ("a",)


@pytest.mark.parametrize("separator", ["\x1c", "\x1d", "\x1e", "\x1f", " ", "\xa0"])
def test_an_upload_url_with_a_space_is_refused_as_jsonschema_does(separator: str) -> None:
    """A space in an upload URL, Python's or Unicode's idea of one, is refused by both."""
    doc = copy.deepcopy(VALID_DOC)
    doc["uploads"] = {"a" * 64: {"url": f"https://u/a{separator}b", "expires_at": 5}}
    assert not SCHEMA_VALIDATOR.is_valid(doc)
    defect = lockfile_defect(doc)
    assert defect is not None
    assert defect.where == ("uploads", "a" * 64, "url")


def test_a_refusal_is_reported_even_where_the_walk_finds_nothing() -> None:
    """When the validator refuses what the explaining walk accepts, its own error is kept."""
    # Python's $ matches before a final newline; the validator's (ECMA's) does not.
    defect = compile_schema({"type": "object", "properties": {"a": {"pattern": "^a$"}}})(
        {"a": "a\n"})
    assert defect is not None
    assert defect.where == ("a",)
