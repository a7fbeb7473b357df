"""Matrix expansion with GitHub Actions ``strategy.matrix`` semantics, exactly.

1. The cross product of the axes, the first axis varying slowest.
2. ``exclude``: an entry removes every combination matching all of its keys;
   a key that is not an axis is an error.
3. ``include``, in order: an entry merges into every *original* combination whose
   axis values it does not contradict (its other keys are added, and later
   includes overwrite keys added earlier); an entry that merges into none is
   appended as a new combination, and appended ones never take later merges.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class MatrixProblem:
    """A mistake in a matrix: ``entry`` is the exclude/include index it concerns."""

    section: str  # "exclude" | "include" | "axes"
    entry: int | None
    key: str | None
    message: str
    hint: str


@dataclass(frozen=True, slots=True)
class Combination:
    """One expanded combination; ``source`` says where it came from, for error messages."""

    values: Mapping[str, Any]
    source: tuple[str, int]  # ("product", i) or ("include", entry index)


def same(left: Any, right: Any) -> bool:
    """Matrix value equality: YAML ``1`` and ``1.0`` are equal, ``1`` and ``"1"`` are not."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


def expand_matrix(
    axes: Sequence[tuple[str, Sequence[Any]]],
    exclude: Sequence[Mapping[str, Any]] = (),
    include: Sequence[Mapping[str, Any]] = (),
    *,
    limit: int | None = None,
) -> tuple[list[Combination], list[MatrixProblem]]:
    """Expand a matrix; returns the combinations and any problems found.

    ``limit`` stops the cross product early (the caller reports the cap) so a
    matrix of a billion rows is never materialised.
    """
    problems: list[MatrixProblem] = []
    names = [name for name, _ in axes]
    axis_set = set(names)
    for index, entry in enumerate(exclude):
        for key in entry:
            if key not in axis_set:
                problems.append(MatrixProblem(
                    "exclude", index, key, f"exclude key {key!r} is not a matrix axis",
                    f"use one of the axes: {', '.join(names) or '(none)'}"))
    if problems:
        return [], problems

    size = 1
    for _, values in axes:
        size *= len(values)
    # Exclusions may overlap, so size minus their sum is a lower bound on what survives.
    if names and limit is not None and size - _max_excluded(axes, exclude) > limit:
        problems.append(MatrixProblem(
            "axes", None, None,
            f"the axes multiply to {size:,} combinations, more than the cap of {limit:,}",
            "narrow the matrix, or raise max_instances if you really mean it"))
        return [], problems

    originals: list[Row] = []
    if names:
        for combo in itertools.product(*(values for _, values in axes)):
            row = dict(zip(names, combo, strict=True))
            if not any(_matches(row, entry) for entry in exclude):
                originals.append(row)
                if limit is not None and len(originals) > limit:
                    problems.append(MatrixProblem(
                        "axes", None, None,
                        f"the matrix has more than the cap of {limit:,} combinations",
                        "narrow the matrix, or raise max_instances if you really mean it"))
                    return [], problems
    sources: list[tuple[str, int]] = [("product", i) for i in range(len(originals))]

    appended: list[Row] = []
    appended_sources: list[tuple[str, int]] = []
    for index, entry in enumerate(include):
        merged = False
        for row in originals:
            if all(same(row[k], v) for k, v in entry.items() if k in axis_set):
                row.update(entry)
                merged = True
        if not merged:
            appended.append(dict(entry))
            appended_sources.append(("include", index))

    combos = [Combination(r, s) for r, s in zip(originals, sources, strict=True)]
    combos += [Combination(r, s) for r, s in zip(appended, appended_sources, strict=True)]
    return combos, problems


def _matches(row: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    return all(same(row[k], v) for k, v in entry.items())


def _max_excluded(axes: Sequence[tuple[str, Sequence[Any]]],
                  exclude: Sequence[Mapping[str, Any]]) -> int:
    """An upper bound on the combinations ``exclude`` removes, without enumerating them."""
    counts = {name: len(values) for name, values in axes}
    total = 0
    for entry in exclude:
        removed = 1
        for name, count in counts.items():
            if name not in entry:
                removed *= count
        total += removed
    return total


def key_order(combos: Sequence[Combination], axes: Sequence[str]) -> list[str]:
    """Axis names first, then keys added by ``include`` in order of first appearance."""
    order = list(axes)
    seen = set(order)
    for combo in combos:
        for key in combo.values:
            if key not in seen:
                seen.add(key)
                order.append(key)
    return order
