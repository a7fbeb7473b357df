"""YAML loading keeps positions and turns every bad input into a positioned error."""

from __future__ import annotations

import pytest
import yaml

from pipeline.core.manifest.diagnostics import Diagnostic
from pipeline.core.manifest.document import format_path, parse_csv, parse_yaml
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


# -- YAML 1.2 core schema (issue 8.7) ------------------------------------------------


@pytest.mark.parametrize("word", ["NO", "no", "yes", "Yes", "on", "OFF", "y", "n", "N"])
def test_yaml11_booleans_load_as_text_with_a_warning(word: str) -> None:
    """`country: [NO]` is the text NO (YAML 1.2), with a warning at it saying to quote it."""
    doc = parse_yaml(f"country: [SE, {word}]\n", "f.yaml")
    assert doc.data == {"country": ["SE", word]}
    (warning,) = doc.warnings
    assert (warning.line, warning.column, warning.where) == (1, 15, "country[1]")
    assert warning.severity == "warning"
    assert "YAML 1.1 tools read it as the boolean" in warning.message
    assert f"quote it ('{word}')" in warning.hint


def test_sexagesimal_stays_text_with_a_warning() -> None:
    """`16:9` is the text 16:9, not 969, and the warning names both readings."""
    doc = parse_yaml("size: 16:9\n", "f.yaml")
    assert doc.data == {"size": "16:9"}
    assert "the number 969" in doc.warnings[0].message
    assert doc.warnings[0].hint.startswith("quote it ('16:9')")


@pytest.mark.parametrize(("text", "value", "old"), [
    ("010", 10, "the number 8"),
    ("0o17", 15, "the text '0o17'"),
    ("1e3", 1000.0, "the text '1e3'"),
    ("1_000", "1_000", "the number 1000"),
    ("0b101", "0b101", "the number 5"),
    ("1:30:00", "1:30:00", "the number 5400"),
])
def test_numbers_follow_yaml12_with_a_warning(text: str, value: object, old: str) -> None:
    """Octal, exponent, underscore, binary and base-60 forms read as YAML 1.2 says, warned."""
    doc = parse_yaml(f"v: {text}\n", "f.yaml")
    assert doc.data == {"v": value}
    assert type(doc.data["v"]) is type(value)
    assert old in doc.warnings[0].message


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("True", True), ("FALSE", False), ("0x1F", 31), ("-12", -12), ("+3", 3),
    ("1.5", 1.5), (".5", 0.5), ("~", None), ("null", None), ("", None), ("hello", "hello"),
    ("2024-01-02", "2024-01-02"), ("'no'", "no"), ('"16:9"', "16:9"), ("!!str yes", "yes"),
    ("!!int 0x10", 16), ("!!float 2", 2.0), ("!!bool TRUE", True), ("=", "="),
])
def test_values_that_mean_the_same_in_both_do_not_warn(text: str, value: object) -> None:
    """Core booleans, numbers, nulls, dates, quoted and tagged values load without warnings."""
    doc = parse_yaml(f"v: {text}\n", "f.yaml")
    assert doc.data == {"v": value}
    assert type(doc.data["v"]) is type(value)
    assert doc.warnings == ()


def test_yaml11_warnings_are_capped_per_file() -> None:
    """A thousand `yes` values give twenty warnings and one summary, not a thousand lines."""
    doc = parse_yaml("v: [" + ", ".join(["yes"] * 1000) + "]\n", "f.yaml")
    assert len(doc.warnings) == 21
    assert "980 more plain values" in doc.warnings[-1].message


def test_yaml_module_resolvers_are_untouched() -> None:
    """Loading a manifest leaves `yaml.safe_load` (used elsewhere) reading YAML 1.1."""
    parse_yaml("a: no\n", "f.yaml")
    assert yaml.safe_load("a: no\nb: 16:9\n") == {"a": False, "b": 969}


def test_merge_keys_still_merge() -> None:
    """`<<: *defaults` merges a mapping; explicit keys win."""
    doc = parse_yaml("d: &d {a: 1, b: 2}\ne: {<<: *d, b: 3}\n", "f.yaml")
    assert doc.data["e"] == {"a": 1, "b": 3}


@pytest.mark.parametrize("text", ["!!int 12x", "!!float abc", "!!bool yes", "!!timestamp x",
                                  "!!binary aGk=", "!custom x"])
def test_explicit_tags_on_bad_text_are_positioned_errors(text: str) -> None:
    """A tag whose text does not fit it is an error at the value, never an exception."""
    with pytest.raises(ManifestError) as info:
        parse_yaml(f"a: 1\nv: {text}\n", "f.yaml")
    assert (info.value.diagnostics[0].line, info.value.diagnostics[0].column) == (2, 4)


# -- hostile values (issue 9.5) --------------------------------------------------------


def only_error(text: str) -> Diagnostic:
    """The single diagnostic parsing ``text`` raises."""
    with pytest.raises(ManifestError) as info:
        parse_yaml(text, "f.yaml")
    (diag,) = info.value.diagnostics
    return diag


def test_lone_surrogate_is_a_positioned_error() -> None:
    """`"\\uD800"` (not a character, not encodable) is refused where it is written."""
    diag = only_error('a: 1\nprompt: "x\\uD800"\n')
    assert (diag.line, diag.column, diag.where) == (2, 9, "prompt")
    assert "lone surrogate U+D800" in diag.message
    assert "\\U0001F600" in diag.hint


def test_lone_surrogate_in_a_key_is_a_positioned_error() -> None:
    """A key can be a double-quoted string with escapes too."""
    diag = only_error('vars:\n  "\\uDC00": 1\n')
    assert (diag.line, diag.column) == (2, 3)
    assert "surrogate" in diag.message


def test_escaped_surrogate_pair_is_one_character() -> None:
    """JSON's `"\\uD83D\\uDE00"` is the emoji it stands for, as in a JSON file."""
    assert parse_yaml('a: "\\uD83D\\uDE00"\n', "f.json").data == {"a": "\U0001F600"}


@pytest.mark.parametrize("escape", ["\\0", "\\x07", "\\e", "\\x7F", "\\x9F", "\\uFFFE"])
def test_escaped_control_character_is_an_error(escape: str) -> None:
    """Escapes cannot bring in what YAML forbids written raw."""
    diag = only_error(f'a: "x{escape}y"\n')
    assert "character U+" in diag.message
    assert diag.where == "a"


def test_tabs_and_line_breaks_in_text_are_fine() -> None:
    """Tab, line feed, carriage return and NEL are text."""
    assert parse_yaml('a: "x\\ty\\nz\\r\\N"\n', "f.yaml").data == {"a": "x\ty\nz\r\x85"}


@pytest.mark.parametrize("text", [".nan", ".NaN", ".inf", "-.inf", "+.INF", "1e400",
                                  "!!float .nan"])
def test_nan_and_infinity_are_errors(text: str) -> None:
    """Non-finite numbers (not JSON, poison in money sums) are refused at their position."""
    diag = only_error(f"budget: {{max_cost: {text}}}\n")
    assert (diag.line, diag.column, diag.where) == (1, 20, "budget.max_cost")
    assert "is not a finite number" in diag.message
    assert "quote it" in diag.hint


@pytest.mark.parametrize("text", [str(2**63), str(-(2**63) - 1), "1" + "0" * 5000,
                                  "0x" + "f" * 17, "0o" + "7" * 30])
def test_out_of_range_integers_are_errors(text: str) -> None:
    """Whole numbers past 64 bits (5,000 digits included) are refused, not a ValueError."""
    diag = only_error(f"n: {text}\n")
    assert (diag.line, diag.column, diag.where) == (1, 4, "n")
    assert "whole number is outside" in diag.message


def test_64_bit_integers_are_fine() -> None:
    """The largest and smallest 64-bit integers load."""
    assert parse_yaml(f"a: [{2**63 - 1}, {-(2**63)}]\n", "f.yaml").data == {
        "a": [2**63 - 1, -(2**63)]}


@pytest.mark.parametrize("text", [
    "vars:\n  x: " + "[" * 5000 + "]" * 5000 + "\n",
    "vars:\n  x: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "vars:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(200)) + "  " * 201 + "v\n",
])
def test_deep_nesting_is_an_error(text: str) -> None:
    """5,000 levels of brackets or 200 of indentation stop at the limit, not in a RecursionError."""
    diag = only_error(text)
    assert "nest more than 64 levels deep" in diag.message
    assert diag.line >= 2


def test_deep_nesting_through_aliases_is_an_error() -> None:
    """Aliases nest deeper than the text does; the limit holds there too."""
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 200)]
    diag = only_error("\n".join(lines) + "\n")
    assert "nest more than" in diag.message


def test_self_referential_alias_is_an_error() -> None:
    """`&r [*r]` is an infinitely deep list: refused at its position."""
    diag = only_error("a: 1\nb: &r [*r]\n")
    assert "nest more than" in diag.message
    assert diag.line == 2


def test_nesting_up_to_the_limit_is_fine() -> None:
    """64 levels load."""
    assert parse_yaml("a: " + "[" * 63 + "]" * 63 + "\n", "f.yaml").data is not None


def test_csv_control_character_is_an_error() -> None:
    """A CSV cell with a control character is refused with its row."""
    with pytest.raises(ManifestError, match=r"control character U\+0007") as info:
        parse_csv("a,b\n1,2\n3,x\x07\n", "f.csv")
    assert info.value.diagnostics[0].line == 3


def test_long_source_lines_are_shown_around_the_caret() -> None:
    """A 10,000-character line is cut to a window around the column, caret still under it."""
    line = "x" * 5000 + "^HERE" + "y" * 5000
    diag = Diagnostic("f.yaml", 1, 5001, "a", "m", source_line=line)
    snippet, caret = diag.format().splitlines()[1:]
    assert len(snippet) < 130
    assert snippet.startswith("    1 | ...")
    assert snippet.endswith("...")
    assert snippet[caret.index("^")] == "^"
