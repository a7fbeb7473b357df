"""Matrix expansion follows GitHub Actions' strategy.matrix semantics exactly."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.matrix import expand_matrix, key_order


def values(combos: list[Any]) -> list[dict[str, Any]]:
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
