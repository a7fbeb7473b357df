"""YAML loading keeps positions and turns every bad input into a positioned error."""

from __future__ import annotations

import pytest

from pipeline.document import format_path, parse_csv, parse_yaml
from pipeline.errors import ManifestError


def test_positions_of_values_and_keys() -> None:
    """Each value and key remembers its 1-based line and column."""
    doc = parse_yaml("a:\n  b: [1, 2]\n  c: x\n", "f.yaml")
    assert doc.data == {"a": {"b": [1, 2], "c": "x"}}
    assert doc.position(("a", "b", 1)) == doc.positions[("a", "b", 1)]
    assert (doc.position(("a", "b", 1)).line, doc.position(("a", "b", 1)).column) == (2, 10)
    assert (doc.position(("a", "c"), key=True).line, doc.position(("a", "c"), key=True).column
            ) == (3, 3)


def test_unknown_path_falls_back_to_parent() -> None:
    """A path the file does not have points at its nearest existing parent."""
    doc = parse_yaml("a:\n  b: 1\n", "f.yaml")
    assert doc.position(("a", "missing")).line == 2 - 1 + 1


def test_syntax_error_is_positioned() -> None:
    """Bad YAML is a ManifestError at the line and column of the problem."""
    with pytest.raises(ManifestError) as info:
        parse_yaml("a: [1, 2\nb: 3\n", "f.yaml")
    diag = info.value.diagnostics[0]
    assert diag.file == "f.yaml"
    assert diag.line >= 2
    assert "invalid YAML" in diag.message


def test_duplicate_keys_are_errors() -> None:
    """A key written twice is reported instead of silently keeping the last."""
    with pytest.raises(ManifestError) as info:
        parse_yaml("a: 1\na: 2\n", "f.yaml")
    assert "duplicate key 'a'" in str(info.value)
    assert info.value.diagnostics[0].line == 2


def test_keys_stay_text() -> None:
    """`on:` and `yes:` keys stay strings, not YAML 1.1 booleans."""
    assert parse_yaml("on: 1\nyes: 2\n", "f.yaml").data == {"on": 1, "yes": 2}


def test_alias_bomb_is_refused() -> None:
    """Exponential alias expansion stops with an error, not an out-of-memory."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefghij":
        prev = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}," \
                f" *{prev}, *{prev}, *{prev}, *{prev}]\n"
    with pytest.raises(ManifestError, match="expands to more than"):
        parse_yaml(bomb, "f.yaml")


def test_dates_stay_as_written() -> None:
    """A YAML date is kept as its text, so manifest data stays JSON."""
    assert parse_yaml("d: 2024-01-02\n", "f.yaml").data == {"d": "2024-01-02"}


def test_csv_rows_and_line_numbers() -> None:
    """CSV rows become mappings with the line each starts on."""
    doc = parse_csv("a,b\n1,2\n3,4\n", "f.csv")
    assert doc.data == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    assert doc.positions[(1,)].line == 3


def test_csv_ragged_row_is_an_error() -> None:
    """A CSV row with the wrong number of cells is reported with its line."""
    with pytest.raises(ManifestError, match="number of cells"):
        parse_csv("a,b\n1,2,3\n", "f.csv")


def test_format_path() -> None:
    """Paths print as dotted names with [index] for list items."""
    assert format_path(("jobs", "a", "image_urls", 0, "from")) == "jobs.a.image_urls[0].from"
    assert format_path(()) == "manifest"
