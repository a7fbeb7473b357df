"""GitHub Actions' own matrix cases, ported: imgspec must expand every one as GitHub does.

Sources (each test cites its own):
- actions/runner src/Sdk/WorkflowParser/Conversion/MatrixBuilder.cs (commit 258d6c85):
  the worked examples in the doc comments of Build, MatrixInclude.Match,
  MatrixInclude.GetUnmatchedVectors, MatrixExclude.Match and MatrixFilter.
- actions/runner src/Sdk/Expressions/EvaluationResult.cs (AbstractEqual, CoerceTypes,
  ConvertToNumber) and src/Sdk/Expressions/Sdk/ExpressionUtility.cs (ParseNumber).
- actions/languageservices expressions/testdata/operators_case_insensitive.json and
  expressions/src/result.test.ts (the cross-language expression test data).
- github/docs data/reusables/actions/jobs/matrix-include.md, matrix-exclude.md,
  matrix-expand-with-include.md, matrix-add-with-include.md, multi-dimension-matrix.md
  ("Running variations of jobs in a workflow").
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from pipeline.core.expansion.matrix import expand_matrix, filter_matches, loose_equal, parse_number


def expand(axes: dict[str, list[Any]], exclude: list[dict[str, Any]] | None = None,
           include: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    combos, problems = expand_matrix(list(axes.items()), exclude or [], include or [])
    assert [p for p in problems if p.severity == "error"] == []
    return [dict(c.values) for c in combos]


# -- MatrixBuilder.cs, Build() doc comment, examples 1-4 --------------------------------


def test_runner_example_1_simple_cross_product() -> None:
    """MatrixBuilder.cs Build() example 1: arch by os, first vector slowest."""
    assert expand({"arch": ["x64", "x86"], "os": ["linux", "windows"]}) == [
        {"arch": "x64", "os": "linux"}, {"arch": "x64", "os": "windows"},
        {"arch": "x86", "os": "linux"}, {"arch": "x86", "os": "windows"}]


def test_runner_example_2_exclude_filter() -> None:
    """MatrixBuilder.cs Build() example 2: exclude {arch: x86, os: linux}."""
    assert expand({"arch": ["x64", "x86"], "os": ["linux", "windows"]},
                  exclude=[{"arch": "x86", "os": "linux"}]) == [
        {"arch": "x64", "os": "linux"}, {"arch": "x64", "os": "windows"},
        {"arch": "x86", "os": "windows"}]


def test_runner_example_3_include_adds_values() -> None:
    """MatrixBuilder.cs Build() example 3: include adds publish to the matching vector."""
    assert expand({"arch": ["x64", "x86"], "os": ["linux", "windows"]},
                  include=[{"arch": "x64", "os": "linux", "publish": True}]) == [
        {"arch": "x64", "os": "linux", "publish": True}, {"arch": "x64", "os": "windows"},
        {"arch": "x86", "os": "linux"}, {"arch": "x86", "os": "windows"}]


def test_runner_example_4_include_additional_vectors() -> None:
    """MatrixBuilder.cs Build() example 4: {arch: x64} matches (adds nothing), {os: macos}
    matches nothing and is appended."""
    assert expand({"arch": ["x64", "x86"], "os": ["linux", "windows"]},
                  include=[{"arch": "x64"}, {"os": "macos"}]) == [
        {"arch": "x64", "os": "linux"}, {"arch": "x64", "os": "windows"},
        {"arch": "x86", "os": "linux"}, {"arch": "x86", "os": "windows"},
        {"os": "macos"}]


def test_runner_include_match_example() -> None:
    """MatrixInclude.Match doc comment: only {arch: x64, config: release} gets publish."""
    assert expand({"arch": ["x64", "x86"], "config": ["release", "debug"]},
                  include=[{"arch": "x64", "config": "release", "publish": True}]) == [
        {"arch": "x64", "config": "release", "publish": True},
        {"arch": "x64", "config": "debug"},
        {"arch": "x86", "config": "release"}, {"arch": "x86", "config": "debug"}]


def test_runner_unmatched_vectors_example() -> None:
    """MatrixInclude.GetUnmatchedVectors doc comment: {arch: arm64, config: debug} is added."""
    combos = expand({"arch": ["x64", "x86"], "config": ["release", "debug"]},
                    include=[{"arch": "arm64", "config": "debug"}])
    assert combos[-1] == {"arch": "arm64", "config": "debug"}
    assert len(combos) == 5


def test_runner_exclude_match_example() -> None:
    """MatrixExclude.Match doc comment: only {arch: x86, config: release} is excluded."""
    assert expand({"arch": ["x64", "x86"], "config": ["release", "debug"]},
                  exclude=[{"arch": "x86", "config": "release"}]) == [
        {"arch": "x64", "config": "release"}, {"arch": "x64", "config": "debug"},
        {"arch": "x86", "config": "debug"}]


def test_runner_nested_filter_matches_leaf_by_leaf() -> None:
    """MatrixFilter doc comment: {versions: {node-version: 12, npm-version: 6}, config:
    release} becomes one == per leaf, so a partial mapping matches."""
    versions = [{"node-version": 12, "npm-version": 6, "extra": "x"},
                {"node-version": 14, "npm-version": 6}]
    combos = expand({"versions": versions, "config": ["release", "debug"]},
                    exclude=[{"versions": {"node-version": 12, "npm-version": 6},
                              "config": "release"}])
    assert combos == [{"versions": versions[0], "config": "debug"},
                      {"versions": versions[1], "config": "release"},
                      {"versions": versions[1], "config": "debug"}]


def test_runner_filter_keys_are_case_insensitive() -> None:
    """MatrixBuilder resolves filter keys through DictionaryExpressionData, whose lookups
    are OrdinalIgnoreCase: `OS:` filters the axis `os`, and nested keys too."""
    combos = expand({"os": ["linux", "windows"], "cfg": [{"Mode": "fast"}]},
                    exclude=[{"OS": "LINUX"}], include=[{"Os": "windows", "CFG": {"mode": "FAST"},
                                                         "extra": 1}])
    assert combos == [{"os": "windows", "cfg": {"Mode": "fast"}, "extra": 1}]


def test_runner_appended_include_key_takes_the_axis_spelling() -> None:
    """An include key naming an axis in another case is a filter (vectors.ContainsKey is
    case-insensitive); when appended, imgspec spells it as the axis so `{{ os }}` works."""
    combos = expand({"os": ["linux"]}, include=[{"OS": "macos", "arch": "arm"}])
    assert combos[-1] == {"os": "macos", "arch": "arm"}


def test_runner_later_extra_keeps_first_spelling() -> None:
    """MatrixInclude.Match merges extras with `extra[key] = value` on a case-insensitive
    dictionary: a later `Color` overwrites `color`'s value and keeps its spelling."""
    assert expand({"a": [1]}, include=[{"color": "green"}, {"Color": "pink"}]) == [
        {"a": 1, "color": "pink"}]


def test_runner_empty_filter_mapping_matches_everything() -> None:
    """MatrixFilter adds no expression for an empty mapping, so it matches every vector."""
    assert expand({"a": [{"x": 1}, "s"], "b": [1, 2]}, exclude=[{"a": {}, "b": 2}]) == [
        {"a": {"x": 1}, "b": 1}, {"a": "s", "b": 1}]


def test_runner_sequence_filter_indexes_by_position() -> None:
    """MatrixFilter's SequenceState compares `matrix.k[0]`, `matrix.k[1]`...: a shorter
    list filter matches a longer value with that prefix."""
    combos = expand({"k": [[1, 2], [2, 1]]}, exclude=[{"k": [1]}])
    assert combos == [{"k": [2, 1]}]


# -- EvaluationResult.AbstractEqual / CoerceTypes / ConvertToNumber ----------------------


@pytest.mark.parametrize(("left", "right", "equal"), [
    # result.test.ts coerceTypes cases, read as ==
    (1, True, True), (1, False, False), (False, 1, False), (1, 2, False), ("a", "b", False),
    ("a", 1, False), (1, "a", False), (False, True, False),
    # AbstractEqual: Number/String compare as numbers; Boolean/Null become numbers first
    (4, "4", True), ("4", 4, True), (4, "4.0", True), (4, " 4 ", True), (0, "", True),
    (0, False, True), (None, "", True), (None, 0, True), (None, False, True),
    (None, None, True), (True, "true", False), (True, "1", True), (None, "null", False),
    # String/String is OrdinalIgnoreCase; Number/Number is double equality, NaN never equal
    ("Linux", "linux", True), (16, 16.0, True), (math.nan, math.nan, False),
    ("abc", math.nan, False), (2**53, 2**53 + 1, True),
    # objects and arrays are never coerced and equal only to themselves
    ({"a": 1}, {"a": 1}, False), ([1], "1", False), ({}, None, False), ([], False, False),
])
def test_abstract_equal(left: Any, right: Any, equal: bool) -> None:
    """GitHub's == (EvaluationResult.AbstractEqual), both ways round."""
    assert loose_equal(left, right) is equal
    assert loose_equal(right, left) is equal


@pytest.mark.parametrize(("text", "number"), [
    ("", 0.0), ("   ", 0.0), ("\t\n", 0.0), ("\u00a0 12 \u2003", 12.0), ("+1", 1.0),
    ("-1.5", -1.5), (".5", 0.5), ("1.", 1.0), ("1e3", 1000.0), ("1.2E-2", 0.012),
    ("1e400", math.inf), ("Infinity", math.inf), ("-Infinity", -math.inf),
    ("infinity", math.inf), ("0x1F", 31.0), ("0xff", 255.0), ("0xFFFFFFFF", -1.0),
    ("0o17", 15.0), ("0o37777777777", -1.0),
])
def test_parse_number(text: str, number: float) -> None:
    """ExpressionUtility.ParseNumber: JavaScript's Number() as the runner implements it."""
    assert parse_number(text) == number


@pytest.mark.parametrize("text", [
    "abc", "1_000", "1,5", "0X1F", "0x", "0x1G", "0x100000000", "0o8", "0o40000000000",
    "0b1", "1e", ".", "--1", "\x1c1", "\u0661",
])
def test_parse_number_nan(text: str) -> None:
    """What ParseNumber does not accept is NaN (equal to nothing): underscores, upper-case
    0X, 0b, hex beyond 32 bits, non-ASCII digits, characters .NET's Trim keeps."""
    assert math.isnan(parse_number(text))


@pytest.mark.parametrize(("left", "right", "equal"), [
    ("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", True),
    ("\u03c2", "\u03a3", True), ("\u03c2", "\u03c3", True), ("\u03a3", "\u03c3", True),
    ("ü", "Ü", True), ("ç", "Ç", True),
    ("i", "İ", False), ("\u0131", "I", False),
    ("АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЬЭЮЯ", "абвгдежзийклмнопрстуфхцчшщьэюя", True),
])
def test_string_equality_is_ordinal_ignore_case(left: str, right: str, equal: bool) -> None:
    """actions/languageservices expressions/testdata/operators_case_insensitive.json (==)."""
    assert loose_equal(left, right) is equal
    assert loose_equal(right, left) is equal


def test_filter_missing_nested_key_is_null() -> None:
    """`matrix.k.missing` is null, and null == '' / 0 / false, as the runner evaluates it."""
    assert filter_matches({"a": 1}, {"b": None})
    assert filter_matches({"a": 1}, {"b": ""})
    assert filter_matches("scalar", {"b": False})
    assert not filter_matches({"a": 1}, {"b": "x"})


# -- github/docs, "Running variations of jobs in a workflow" -----------------------------


def test_docs_fruit_animal_include_example() -> None:
    """docs matrix-include.md: the fruit/animal include gives exactly its six combinations."""
    assert expand({"fruit": ["apple", "pear"], "animal": ["cat", "dog"]}, include=[
        {"color": "green"}, {"color": "pink", "animal": "cat"},
        {"fruit": "apple", "shape": "circle"}, {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"}]) == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"}, {"fruit": "banana", "animal": "cat"}]


def test_docs_perl_example_seven_jobs() -> None:
    """docs matrix-include.md: five perl versions on ubuntu plus two appended for macos."""
    combos = expand({"os": ["ubuntu-latest"],
                     "perl": ["5.16", "5.20", "5.26", "5.30", "latest"]},
                    include=[{"os": "macos-latest", "perl": "5.26"},
                             {"os": "macos-latest", "perl": "latest"}])
    assert len(combos) == 7
    assert combos[-2:] == [{"os": "macos-latest", "perl": "5.26"},
                           {"os": "macos-latest", "perl": "latest"}]


def test_docs_exclude_partial_match_nine_jobs() -> None:
    """docs matrix-exclude.md: 12 combinations minus 1 minus 2 partial matches = 9 jobs."""
    combos = expand({"os": ["macos-latest", "windows-latest"], "version": [12, 14, 16],
                     "environment": ["staging", "production"]},
                    exclude=[{"os": "macos-latest", "version": 12, "environment": "production"},
                             {"os": "windows-latest", "version": 16}])
    assert len(combos) == 9


def test_docs_expand_with_include_adds_npm() -> None:
    """docs matrix-expand-with-include.md: six jobs, npm: 6 only on windows-latest/16."""
    combos = expand({"os": ["windows-latest", "ubuntu-latest"], "node": [12, 14, 16]},
                    include=[{"os": "windows-latest", "node": 16, "npm": 6}])
    assert len(combos) == 6
    assert [c for c in combos if "npm" in c] == [{"os": "windows-latest", "node": 16, "npm": 6}]


def test_docs_add_with_include_ten_jobs() -> None:
    """docs matrix-add-with-include.md: 9 combinations plus windows-latest/17 = 10 jobs."""
    combos = expand({"os": ["macos-latest", "windows-latest", "ubuntu-latest"],
                     "version": [12, 14, 16]}, include=[{"os": "windows-latest", "version": 17}])
    assert len(combos) == 10
    assert combos[-1] == {"os": "windows-latest", "version": 17}


def test_docs_include_only_matrix() -> None:
    """docs matrix-add-with-include.md: with no variables, every include entry runs."""
    assert expand({}, include=[{"site": "production", "datacenter": "site-a"},
                               {"site": "staging", "datacenter": "site-b"}]) == [
        {"site": "production", "datacenter": "site-a"},
        {"site": "staging", "datacenter": "site-b"}]


def test_docs_array_of_objects_axis() -> None:
    """docs multi-dimension-matrix.md: an axis of objects gives four jobs with their values."""
    node = [{"version": 14}, {"version": 20, "env": "NODE_OPTIONS=--openssl-legacy-provider"}]
    combos = expand({"os": ["ubuntu-latest", "macos-latest"], "node": node})
    assert combos == [{"os": o, "node": n} for o in ("ubuntu-latest", "macos-latest")
                      for n in node]


def test_docs_include_adds_back_an_excluded_combination() -> None:
    """docs matrix-exclude.md note: include runs after exclude, so it can add one back."""
    combos = expand({"os": ["a", "b"]}, exclude=[{"os": "b"}], include=[{"os": "b", "x": 1}])
    assert combos == [{"os": "a"}, {"os": "b", "x": 1}]


def test_issue_csv_row_merges_into_numeric_axis() -> None:
    """The tracker's case (issue 8.3): CSV cells are strings, yet `16,6` merges into
    `node: [12, 16]` as GitHub's `"16" == 16` says, adding npm instead of a new row."""
    assert expand({"node": [12, 16]}, include=[{"node": "16", "npm": "6"}]) == [
        {"node": 12}, {"node": 16, "npm": "6"}]
