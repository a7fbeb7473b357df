"""Instance keys, folder names, fingerprints and derived seeds are stable and safe."""

from __future__ import annotations

import pytest

from pipeline.core.apimart.rules import MAX_SEED
from pipeline.core.expansion.identity import (
    derive_seed,
    fingerprint,
    folder_name,
    format_value,
    make_key,
)


def test_key_reads_job_at_axis_values_in_order() -> None:
    """A key is job@axis=value,... in axis order."""
    assert make_key("shop", [("kind", "bakery"), ("n", 2)]) == "shop@kind=bakery,n=2"


def test_key_without_matrix_is_the_job() -> None:
    """A job without matrix values is keyed by its id alone."""
    assert make_key("living-room", []) == "living-room"


@pytest.mark.parametrize(("value", "shown"), [
    ("flower shop", "flower shop"), ("a,b", '"a,b"'), ("x=y", '"x=y"'), ("", '""'),
    (True, "true"), (None, "null"), (1.5, "1.5")])
def test_values_are_shown_plainly_or_quoted(value: object, shown: str) -> None:
    """Scalars appear plainly unless they would make the key ambiguous."""
    assert format_value(value) == shown


def test_non_scalar_values_are_shown_by_short_hash() -> None:
    """Lists and mappings appear as a short hash, stable across runs."""
    shown = format_value([{"hex": "#FFFFFF", "ratio": "100%"}])
    assert shown.startswith("~")
    assert len(shown) == 9
    assert shown == format_value([{"ratio": "100%", "hex": "#FFFFFF"}])


@pytest.mark.parametrize("key", [
    "job@a=../../etc", "job@a=/abs", "job@a=..", "job@a=.hidden", "job@a=" + "x" * 500,
    "job@a=C:\\windows", "job@a=\x00nul"])
def test_folder_names_are_confined(key: str) -> None:
    """Folder names never contain separators, never escape, never hide, and stay bounded."""
    name = folder_name(key)
    assert "/" not in name
    assert "\\" not in name
    assert "\x00" not in name
    assert name not in (".", "..")
    assert not name.startswith(".")
    assert len(name) <= 90


def test_folder_names_of_distinct_keys_differ() -> None:
    """Keys that sanitise alike still get distinct folders."""
    assert folder_name("j@a=x y") != folder_name("j@a=x_y")
    assert folder_name("j@a=A") != folder_name("j@a=a")


def test_fingerprint_ignores_key_order_but_not_values() -> None:
    """The fingerprint is over canonical JSON: order-free, value-sensitive."""
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_derived_seed_is_deterministic_and_in_range() -> None:
    """Derived seeds depend only on the key and lie in the API's range."""
    seeds = {derive_seed(f"job@i={i}") for i in range(1000)}
    assert derive_seed("job@i=1") == derive_seed("job@i=1")
    assert len(seeds) > 990
    assert all(0 <= s <= MAX_SEED for s in seeds)


@pytest.mark.parametrize(("values", "as_is"), [
    ("a", True), ("a.b_c=1,d+e-f", True), ("x" * 80, True), ("-", True),
    (".a", False), ("a_", False), ("_", False), ("A", False), ("x" * 81, False),
    ("a b", False), ("é", False), ("a\n", False),
])
def test_folder_is_the_values_exactly_when_they_are_safe(values: str, as_is: bool) -> None:
    """Safe, lower-case, at most 80 long, no . or _ at an end: the folder is the values."""
    name = folder_name(f"j@{values}")
    assert (name == values) is as_is
    if not as_is:
        assert len(name.rsplit("-", 1)[1]) == 8  # the key's hash keeps it unique
