"""Matrix expansion follows GitHub Actions' strategy.matrix semantics exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from pipeline.core.expansion.matrix import MAX_INSTANCES_CEILING, expand_matrix, key_order


def values(combos: Sequence[Any]) -> list[dict[str, Any]]:
    return [dict(c.values) for c in combos]


def test_cross_product_first_axis_slowest() -> None:
    """The first axis varies slowest, like nested loops in declaration order."""
    combos, problems = expand_matrix([("a", (1, 2)), ("b", ("x", "y"))])
    assert problems == []
    assert values(combos) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]


def test_github_fruit_animal_include_example() -> None:
    """GitHub's documented include example gives exactly its six combinations."""
    combos, problems = expand_matrix(
        [("fruit", ("apple", "pear")), ("animal", ("cat", "dog"))],
        include=[
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ],
    )
    assert problems == []
    assert values(combos) == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_github_exclude_example() -> None:
    """An exclude entry removes every combination matching all of its keys (partial match)."""
    combos, _ = expand_matrix(
        [("os", ("macos", "windows")), ("version", (12, 14, 16)),
         ("environment", ("staging", "production"))],
        exclude=[{"os": "macos", "version": 12, "environment": "production"},
                 {"os": "windows", "version": 16}],
    )
    assert len(combos) == 12 - 1 - 2
    assert {"os": "macos", "version": 12, "environment": "production"} not in values(combos)
    assert not [c for c in values(combos) if c["os"] == "windows" and c["version"] == 16]


def test_exclude_key_not_an_axis_is_an_error() -> None:
    """An exclude key that names no axis is reported, not silently ignored."""
    combos, problems = expand_matrix([("a", (1,))], exclude=[{"b": 1}])
    assert combos == []
    assert [(p.section, p.entry, p.key) for p in problems] == [("exclude", 0, "b")]
    assert "not a matrix axis" in problems[0].message


def test_include_only_matrix_appends_each_row() -> None:
    """Without axes every include row becomes its own combination (a catalogue)."""
    combos, _ = expand_matrix([], include=[{"p": "a"}, {"p": "b"}, {"p": "a", "c": 1}])
    assert values(combos) == [{"p": "a"}, {"p": "b"}, {"p": "a", "c": 1}]


def test_later_include_overwrites_added_keys_not_original_values() -> None:
    """Added keys are overwritten by later includes; original axis values never are."""
    combos, _ = expand_matrix([("a", (1, 2))], include=[{"x": "first"}, {"x": "second"},
                                                        {"a": 3, "x": "new"}])
    assert values(combos) == [{"a": 1, "x": "second"}, {"a": 2, "x": "second"},
                              {"a": 3, "x": "new"}]


def test_appended_rows_never_take_later_merges() -> None:
    """A combination appended by include is not merged into by later entries."""
    combos, _ = expand_matrix([("a", (1,))], include=[{"a": 2}, {"b": "added"}])
    assert values(combos) == [{"a": 1, "b": "added"}, {"a": 2}]


def test_cap_fails_loudly_before_materialising() -> None:
    """A matrix over the cap is an error, never silently truncated."""
    axes = [(f"axis{i}", tuple(range(10))) for i in range(9)]  # 10**9 combinations
    combos, problems = expand_matrix(axes, limit=10_000)
    assert combos == []
    assert "more than the cap" in problems[0].message


def test_cap_counts_after_exclude() -> None:
    """The cap applies to what survives exclude."""
    combos, problems = expand_matrix([("a", (1, 2)), ("b", (1, 2))],
                                     exclude=[{"a": 1}], limit=2)
    assert problems == []
    assert len(combos) == 2


@pytest.mark.parametrize(("left", "right", "equal"), [
    (1, 1.0, True), (1, "1", True), (True, 1, True), ("a", "A", True), ([1], [1], True),
    (True, "true", False)])
def test_value_equality(left: Any, right: Any, equal: bool) -> None:
    """Matrix values compare with GitHub's loose `==` (changed on purpose from strict YAML
    equality: issue 8.3); a list filter matches leaf by leaf."""
    combos, _ = expand_matrix([("v", (left,))], exclude=[{"v": right}])
    assert (combos == []) is equal


def test_key_order_axes_then_added_keys() -> None:
    """Key order is the axes, then keys added by include in first-appearance order."""
    combos, _ = expand_matrix([("b", (1,)), ("a", (1,))], include=[{"z": 1}, {"c": 2, "y": 3}])
    assert key_order(combos, ["b", "a"]) == ["b", "a", "z", "c", "y"]


def warnings(problems: list[Any]) -> list[tuple[str, int | None, str]]:
    return [(p.section, p.entry, p.message) for p in problems if p.severity == "warning"]


def test_exclude_matching_nothing_is_a_warning() -> None:
    """An exclude entry that matches no combination (a typo) warns and removes nothing."""
    combos, problems = expand_matrix([("os", ("linux", "windows"))],
                                     exclude=[{"os": "Linux"}, {"os": "macos"}])
    assert values(combos) == [{"os": "windows"}]
    assert warnings(problems) == [("exclude", 1, "this exclude entry matches no combination")]


def test_include_differing_only_by_type_warns_and_appends() -> None:
    """An include row GitHub appends though it differs from a combination only in type
    (`"true"` is not `== true`) is appended, as GitHub does, with a warning naming it."""
    combos, problems = expand_matrix([("flag", (True, False))],
                                     include=[{"flag": "true", "x": 1}])
    assert values(combos)[-1] == {"flag": "true", "x": 1}
    ((section, entry, message),) = warnings(problems)
    assert (section, entry) == ("include", 0)
    assert "only in case or type (flag: 'true' vs True)" in message


def test_include_differing_only_by_case_folding_warns() -> None:
    """Case differences `==` keeps apart (ß and SS) warn like type differences."""
    combos, problems = expand_matrix([("street", ("straße",))],
                                     include=[{"street": "STRASSE", "x": 1}])
    assert len(combos) == 2
    assert "only in case or type" in warnings(problems)[0][2]


def test_genuinely_new_include_row_does_not_warn() -> None:
    """A row meant as a new combination (GitHub's banana) gives no warning."""
    _, problems = expand_matrix([("fruit", ("apple",))], include=[{"fruit": "banana"}])
    assert problems == []


def test_loose_match_merges_instead_of_appending() -> None:
    """`"16"` and `16` are GitHub-equal, so the row merges and no instance is added."""
    combos, problems = expand_matrix([("node", (12, 16))], include=[{"node": "16", "npm": 6}])
    assert problems == []
    assert values(combos) == [{"node": 12}, {"node": 16, "npm": 6}]


def test_axes_differing_only_in_case_are_an_error() -> None:
    """`os` and `OS` would be one key to GitHub's case-insensitive matrix: refused."""
    combos, problems = expand_matrix([("os", (1,)), ("OS", (2,))])
    assert combos == []
    assert [(p.section, p.key) for p in problems] == [("axes", "OS")]


def test_entry_keys_differing_only_in_case_are_an_error() -> None:
    """An include entry with `color` and `Color` is refused (GitHub fails on it too)."""
    _, problems = expand_matrix([("a", (1,))], include=[{"color": 1, "Color": 2}])
    assert [(p.section, p.entry, p.key) for p in problems] == [("include", 0, "Color")]


def test_limit_is_never_above_the_ceiling() -> None:
    """max_instances of 10**20 cannot make a 400**3 matrix be built: the ceiling fails it
    by counting, before any combination exists."""
    axes = [(name, tuple(range(400))) for name in ("x", "y", "z")]
    combos, problems = expand_matrix(axes, limit=10**20)
    assert combos == []
    assert problems[0].message == ("the axes multiply to 64,000,000 combinations, more than "
                                   f"the cap of {MAX_INSTANCES_CEILING:,}")
    assert "at most" in problems[0].hint


def test_include_catalogue_merges_by_index() -> None:
    """A catalogue of one row per combination merges every row into its own combination."""
    axes = [("a", tuple(range(50))), ("b", tuple(range(50)))]
    rows = [{"a": str(i), "b": str(j), "v": i * 50 + j} for i in range(50) for j in range(50)]
    combos, problems = expand_matrix(axes, include=rows)
    assert problems == []
    assert [c.values["v"] for c in combos] == list(range(2500))
    assert all(c.setters == {"v": c.source[1]} for c in combos)


def test_include_rows_count_toward_the_cap() -> None:
    """Appended include rows past the cap fail before their combinations are built."""
    combos, problems = expand_matrix([("a", (1,))], include=[{"a": i + 2} for i in range(5)],
                                     limit=4)
    assert combos == []
    assert problems[0].message == ("the matrix has 6 combinations (5 of them include rows), "
                                   "more than the cap of 4")


@pytest.mark.parametrize(("exclude", "include"), [
    ([], []),
    ([{"a": 2, "b": "y"}], []),
    ([], [{"a": 1, "extra": "e"}, {"a": 9}]),
    ([{"b": "x"}], [{"a": 3, "b": "y", "extra": 1}, {"new": True}]),
])
def test_lazy_combinations_read_like_the_list_they_stand_for(
        exclude: list[dict[str, Any]], include: list[dict[str, Any]]) -> None:
    """Combinations made as read: index, negative index, slice, len, == and key_order agree."""
    combos, problems = expand_matrix([("a", (1, 2, 3)), ("b", ("x", "y"))],
                                     exclude=exclude, include=include)
    assert not [p for p in problems if p.severity == "error"]
    listed = list(combos)
    assert len(combos) == len(listed)
    assert [combos[i] for i in range(len(combos))] == listed
    assert [combos[-i] for i in range(1, len(combos) + 1)] == listed[::-1]
    assert combos[1:3] == listed[1:3]
    assert combos == listed
    assert key_order(combos, ["a", "b"]) == key_order(listed, ["a", "b"])
    with pytest.raises(IndexError):
        combos[len(combos)]
