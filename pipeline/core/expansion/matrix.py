"""Matrix expansion with GitHub Actions ``strategy.matrix`` semantics, exactly.

The reference is the runner's ``MatrixBuilder`` (actions/runner,
src/Sdk/WorkflowParser/Conversion/MatrixBuilder.cs) and the expression SDK it
evaluates its filters with (src/Sdk/Expressions/EvaluationResult.cs ``AbstractEqual``,
Sdk/ExpressionUtility.cs ``ParseNumber``, Data/DictionaryExpressionData.cs):

1. The cross product of the axes, the first axis varying slowest.
2. ``exclude``: an entry removes every combination it matches. Every top-level key
   must name an axis.
3. ``include``: an entry's keys naming an axis are its *filter*, the others its
   *extra* values. The extras of every entry whose filter matches an original
   combination are added to it, in order, a later entry overwriting an earlier
   one's value. An entry matching no original combination (or any entry, when there
   are no axes) is appended as a new combination; appended ones never take merges.

Matching (both exclude and include) is GitHub's: the filter is walked down to its
scalar leaves and each leaf compared with ``matrix[key][subkey]... == leaf``, so a
partial mapping matches; ``==`` is the expression language's loose equality
(:func:`loose_equal`); keys are compared case-insensitively, axis names included.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

Row = dict[str, Any]
Severity = Literal["error", "warning"]

# No job may expand to more instances than this, whatever max_instances says: every
# instance is a request body, a key and a plan row in memory (about 3 KB each).
MAX_INSTANCES_CEILING = 1_000_000


@dataclass(frozen=True, slots=True)
class MatrixProblem:
    """A mistake in a matrix: ``entry`` is the exclude/include index it concerns."""

    section: str  # "exclude" | "include" | "axes"
    entry: int | None
    key: str | None
    message: str
    hint: str
    severity: Severity = "error"


@dataclass(frozen=True, slots=True)
class Combination:
    """One expanded combination, with where each of its values came from.

    ``source`` is ``("product", i)`` or ``("include", entry index)``; ``axis_indexes``
    gives, for a product combination, the index of each axis's value; ``setters``
    names the include entry that set each added key.
    """

    values: Mapping[str, Any]
    source: tuple[str, int]
    axis_indexes: tuple[int, ...] = ()
    setters: Mapping[str, int] = field(default_factory=dict)


def same(left: Any, right: Any) -> bool:
    """Strict YAML value equality (``1 == 1.0``; ``1 != "1"``, ``True != 1``).

    Not the matrix's equality (that is :func:`loose_equal`); used where a command-line
    value is compared with a matrix value.
    """
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


# -- GitHub's expression equality -------------------------------------------------------

_Kind = Literal["null", "boolean", "number", "string", "object"]

# .NET's Char.IsWhiteSpace, which String.Trim strips: Unicode separators and these.
_CONTROL_SPACE = frozenset("\t\n\v\f\r\x85")
# Double.TryParse with AllowLeadingSign | AllowDecimalPoint | AllowExponent, invariant
# culture: ASCII digits only, no thousands separators, no underscores.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _is_space(char: str) -> bool:
    return char in _CONTROL_SPACE or unicodedata.category(char) in ("Zs", "Zl", "Zp")


def _trim(text: str) -> str:
    start, end = 0, len(text)
    while start < end and _is_space(text[start]):
        start += 1
    while end > start and _is_space(text[end - 1]):
        end -= 1
    return text[start:end]


def _as_int32(unsigned: int) -> float | None:
    """A 32-bit pattern read as a signed Int32, as .NET's hex and base-8 parsers do."""
    if unsigned > 0xFFFFFFFF:
        return None  # "exceeds range": the runner falls through to NaN
    return float(unsigned - (1 << 32) if unsigned & 0x80000000 else unsigned)


def parse_number(text: str) -> float:
    """A string as a number, exactly as ``ExpressionUtility.ParseNumber`` converts it.

    Like JavaScript's ``Number()``: surrounding whitespace is ignored, an empty string
    is 0, decimals with sign and exponent parse, ``0x`` hex and ``0o`` octal are 32-bit
    integers, ``Infinity`` (any case, with a sign) is infinite; anything else is NaN.
    """
    text = _trim(text)
    if not text:
        return 0.0
    if _DECIMAL.match(text):
        return float(text)  # overflow gives ±inf, as .NET Core's parser does
    lowered = text.lower()
    if lowered in ("infinity", "+infinity"):
        return math.inf
    if lowered == "-infinity":
        return -math.inf
    if len(text) > 2 and text[0] == "0" and text[1] == "x" and set(text[2:]) <= _HEX_DIGITS:
        found = _as_int32(int(text[2:], 16))
        return math.nan if found is None else found
    if len(text) > 2 and text[0] == "0" and text[1] == "o" and set(text[2:]) <= set("01234567"):
        found = _as_int32(int(text[2:], 8))
        return math.nan if found is None else found
    return math.nan


def _kind(value: Any) -> _Kind:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def _to_number(value: Any) -> float:
    kind = _kind(value)
    if kind == "null":
        return 0.0
    if kind == "boolean":
        return 1.0 if value else 0.0
    if kind == "number":
        try:
            return float(value)
        except OverflowError:  # an integer beyond a double's range
            return math.inf if value > 0 else -math.inf
    if kind == "string":
        return parse_number(value)
    return math.nan


_DOTLESS_I = "\u0131"


def fold_case(text: str) -> str:
    """``StringComparison.OrdinalIgnoreCase``: each character's simple upper case.

    A character whose upper case is several characters (``ß``) stays as it is, and so
    does the dotless i, U+0131 (.NET does not equate it with ``I``).
    """
    out = []
    for char in text:
        upper = char.upper()
        out.append(upper if len(upper) == 1 and char != _DOTLESS_I else char)
    return "".join(out)


def loose_equal(left: Any, right: Any) -> bool:
    """GitHub's ``==`` (``EvaluationResult.AbstractEqual``) on YAML values.

    JavaScript's abstract equality, except that strings compare case-insensitively
    and mappings and lists are never coerced (equal only to themselves): a number and
    a string compare as numbers (``4 == "4"``, ``0 == ""``), a boolean or null
    becomes a number first (``true == 1``, ``null == 0``, ``null == ""``, but
    ``true != "true"``), and NaN equals nothing.
    """
    lkind, rkind = _kind(left), _kind(right)
    while lkind != rkind:
        if lkind == "number" and rkind == "string":
            right, rkind = _to_number(right), "number"
        elif (lkind == "string" and rkind == "number") or lkind in ("boolean", "null"):
            left, lkind = _to_number(left), "number"
        elif rkind in ("boolean", "null"):
            right, rkind = _to_number(right), "number"
        else:
            return False
    if lkind == "null":
        return True
    if lkind == "number":
        lnum, rnum = _to_number(left), _to_number(right)
        return not (math.isnan(lnum) or math.isnan(rnum)) and lnum == rnum
    if lkind == "string":
        return bool(fold_case(left) == fold_case(right))
    if lkind == "boolean":
        return bool(left == right)
    return left is right


def _index(container: Any, key: str | int) -> Any:
    """``container[key]`` in the expression language: ``None`` when there is nothing."""
    if isinstance(container, Mapping):
        wanted = fold_case(key if isinstance(key, str) else _number_text(float(key)))
        for name, value in container.items():
            if fold_case(str(name)) == wanted:
                return value
        return None
    if isinstance(container, list | tuple):
        number = float(key) if isinstance(key, int) else parse_number(key)
        if math.isnan(number) or number < 0 or math.floor(number) >= len(container):
            return None
        return container[math.floor(number)]
    return None


def _number_text(number: float) -> str:
    """A number as the expression language prints it (.NET's ``G15``)."""
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    text = f"{number:.15G}"
    if "E" in text:
        mantissa, _, exponent = text.partition("E")
        sign = exponent[0]
        digits = exponent[1:].lstrip("0").rjust(2, "0")
        text = f"{mantissa}E{sign}{digits}"
    return "0" if text == "-0" else text


def filter_matches(actual: Any, wanted: Any) -> bool:
    """Whether a matrix value matches an exclude/include filter value, GitHub's way.

    A mapping or list filter is walked to its scalar leaves, each compared with the
    value found at the same place (``matrix.k.sub == leaf``), so a partial mapping
    matches and an empty one matches anything.
    """
    if isinstance(wanted, Mapping):
        return all(filter_matches(_index(actual, str(k)), v) for k, v in wanted.items())
    if isinstance(wanted, list | tuple):
        return all(filter_matches(_index(actual, i), v) for i, v in enumerate(wanted))
    return loose_equal(actual, wanted)


def _near_text(value: Any) -> str:
    """A scalar's text ignoring case and type: ``True``, ``'true'`` and ``'TRUE'`` agree.

    Full Unicode case folding, wider than ``==``'s: ``straße`` and ``STRASSE`` agree.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        number = parse_number(value)
        if _trim(value) and not math.isnan(number):
            return _number_text(number)
        return value.casefold()
    if isinstance(value, int | float):
        return _number_text(_to_number(value))
    return ""


def _nearly_matches(actual: Any, wanted: Any) -> bool:
    """Like :func:`filter_matches` with leaves compared ignoring case and type."""
    if isinstance(wanted, Mapping):
        return all(_nearly_matches(_index(actual, str(k)), v) for k, v in wanted.items())
    if isinstance(wanted, list | tuple):
        return all(_nearly_matches(_index(actual, i), v) for i, v in enumerate(wanted))
    if loose_equal(actual, wanted):
        return True
    if isinstance(actual, Mapping | list | tuple):
        return False
    return _near_text(actual) == _near_text(wanted)


# -- expansion ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    """An exclude/include entry split into axis filters (by axis position) and extras."""

    filters: list[tuple[int, Any]]
    extras: list[tuple[str, Any]]


def expand_matrix(
    axes: Sequence[tuple[str, Sequence[Any]]],
    exclude: Sequence[Mapping[str, Any]] = (),
    include: Sequence[Mapping[str, Any]] = (),
    *,
    limit: int | None = None,
    over_limit_hint: str | None = None,
) -> tuple[Sequence[Combination], list[MatrixProblem]]:
    """Expand a matrix; returns the combinations and the problems found (errors, warnings).

    When any problem is an error the combinations are empty. ``limit`` (never more
    than ``MAX_INSTANCES_CEILING``) is checked by counting before anything is built,
    and the cross product is walked lazily and abandoned as soon as more than
    ``limit`` combinations survive ``exclude``, so an oversized matrix fails without
    being materialised.
    """
    if limit is None or limit > MAX_INSTANCES_CEILING:
        limit = MAX_INSTANCES_CEILING
        hint = over_limit_hint or (
            f"imgspec holds at most {MAX_INSTANCES_CEILING:,} instances of one job: "
            "narrow the matrix, or split the job")
    else:
        hint = over_limit_hint or "narrow the matrix, or raise max_instances if you mean it"
    names = [name for name, _ in axes]
    vectors = [list(values) for _, values in axes]
    problems = _check_axes(names)
    by_fold = {fold_case(name): pos for pos, name in enumerate(names)}
    excludes = [_split(entry, by_fold, names, "exclude", i, problems)
                for i, entry in enumerate(exclude)]
    includes = [_split(entry, by_fold, names, "include", i, problems)
                for i, entry in enumerate(include)]
    if any(p.severity == "error" for p in problems):
        return [], problems

    # Per entry and axis, the indexes of the axis values its filter matches.
    ex_sets = [_match_sets(e, vectors, filter_matches) for e in excludes]
    for index, sets in enumerate(ex_sets):
        if names and any(not s for s in sets.values()):
            problems.append(MatrixProblem(
                "exclude", index, None, "this exclude entry matches no combination",
                "check its values against the axes (a typo?), or remove it",
                severity="warning"))

    originals = _product(names, vectors, ex_sets, limit, hint, problems)
    if originals is None:
        return [], problems

    lookup = {idx: pos for pos, idx in enumerate(originals)} if includes else {}
    extras: dict[int, dict[str, list[Any]]] = {}  # by original position, when any
    appended: list[int] = []
    for index, entry in enumerate(includes):
        sets = _match_sets(entry, vectors, filter_matches)
        matched = list(_matching(originals, lookup, sets, vectors)) if names else []
        for pos in matched:
            added = extras.setdefault(pos, {})
            for key, value in entry.extras:
                slot = added.get(fold_case(key))
                if slot is None:
                    added[fold_case(key)] = [key, value, index]
                else:  # the first spelling stays, as in DictionaryExpressionData
                    slot[1], slot[2] = value, index
        if not matched:
            appended.append(index)
            if entry.filters and originals:
                near = _match_sets(entry, vectors, _nearly_matches)
                hit = next(iter(_matching(originals, lookup, near, vectors)), None)
                if hit is not None:
                    problems.append(_near_miss(index, entry, names, vectors, originals[hit]))

    if len(originals) + len(appended) > limit:
        # A catalogue of a million rows fails here, before a combination is built for each.
        problems.append(MatrixProblem(
            "axes", None, None,
            f"the matrix has {len(originals) + len(appended):,} combinations ("
            f"{len(appended):,} of them include rows), more than the cap of {limit:,}", hint))
        return [], problems
    if not originals and not appended:
        return [], problems
    return Combinations(names, vectors, originals, extras, includes, appended), problems


class Combinations(Sequence[Combination]):
    """A matrix's combinations in order, each made when it is read, not held.

    A million-row matrix is a million small dicts: a job is expanded one instance at
    a time, so its combinations are too. Reading one twice makes two equal values.
    """

    __slots__ = ("_appended", "_extras", "_includes", "_names", "_originals", "_vectors")

    def __init__(self, names: Sequence[str], vectors: Sequence[Sequence[Any]],
                 originals: Sequence[tuple[int, ...]],
                 extras: Mapping[int, Mapping[str, list[Any]]],
                 includes: Sequence[_Entry], appended: Sequence[int]) -> None:
        self._names = tuple(names)
        self._vectors = tuple(vectors)
        self._originals = originals  # value indexes of the product's survivors
        self._extras = extras  # include values merged into an original, by its position
        self._includes = includes
        self._appended = appended  # include entries that became combinations of their own

    def __len__(self) -> int:
        return len(self._originals) + len(self._appended)

    @overload
    def __getitem__(self, index: int) -> Combination: ...

    @overload
    def __getitem__(self, index: slice) -> list[Combination]: ...

    def __getitem__(self, index: int | slice) -> Combination | list[Combination]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("combination index out of range")
        if index < len(self._originals):
            return self._original(index, self._originals[index])
        return self._included(self._appended[index - len(self._originals)])

    def __iter__(self) -> Iterator[Combination]:
        names, extras = self._names, self._extras
        if isinstance(self._originals, _Product) and not extras:
            # The plain cross product, the common large case: values straight from it.
            values_product = itertools.product(*self._vectors)
            for pos, (idx, chosen) in enumerate(zip(self._originals, values_product,
                                                    strict=True)):
                yield Combination(dict(zip(names, chosen, strict=True)), ("product", pos), idx,
                                  _NO_SETTERS)
        else:
            for pos, idx in enumerate(self._originals):
                yield self._original(pos, idx)
        for entry in self._appended:
            yield self._included(entry)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compared by content, like a list

    def merged(self) -> Iterator[Combination]:
        """The combinations include rows added keys to, in order (``key_order``'s)."""
        for pos in sorted(self._extras):
            yield self._original(pos, self._originals[pos])
        for entry in self._appended:
            yield self._included(entry)

    def _original(self, pos: int, idx: tuple[int, ...]) -> Combination:
        values: Row = dict(zip(self._names, [v[i] for v, i in zip(self._vectors, idx,
                                                                   strict=True)], strict=True))
        merged = self._extras.get(pos)
        if merged is None:
            return Combination(values, ("product", pos), idx, _NO_SETTERS)
        setters: dict[str, int] = {}
        for key, value, index in merged.values():
            values[key] = value
            setters[key] = index
        return Combination(values, ("product", pos), idx, setters)

    def _included(self, index: int) -> Combination:
        entry = self._includes[index]
        row: Row = {self._names[a]: value for a, value in entry.filters}
        row.update(entry.extras)
        return Combination(row, ("include", index), (), dict.fromkeys(row, index))


_NO_SETTERS: Mapping[str, int] = {}  # shared: nothing sets it, nothing writes to it


class _Product(Sequence[tuple[int, ...]]):
    """Every value-index tuple of a cross product, in order, computed rather than stored."""

    __slots__ = ("_size", "_sizes")

    def __init__(self, sizes: Sequence[int]) -> None:
        self._sizes = tuple(sizes)
        self._size = math.prod(self._sizes)

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> tuple[int, ...]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[int, ...]]: ...

    def __getitem__(self, index: int | slice) -> tuple[int, ...] | list[tuple[int, ...]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._size))]
        if index < 0:
            index += self._size
        if not 0 <= index < self._size:
            raise IndexError("product index out of range")
        out: list[int] = []
        for size in reversed(self._sizes):  # the first axis varies slowest
            index, rest = divmod(index, size)
            out.append(rest)
        return tuple(reversed(out))

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(size) for size in self._sizes))


def _check_axes(names: Sequence[str]) -> list[MatrixProblem]:
    problems: list[MatrixProblem] = []
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(fold_case(name), name)
        if other != name:
            problems.append(MatrixProblem(
                "axes", None, name,
                f"axes {other!r} and {name!r} differ only in case, and matrix keys are "
                "case-insensitive", "rename or merge one of them"))
    return problems


def _split(entry: Mapping[str, Any], by_fold: Mapping[str, int], names: Sequence[str],
           section: str, index: int, problems: list[MatrixProblem]) -> _Entry:
    """An entry's axis filters and extras; unknown or clashing keys become problems."""
    filters: list[tuple[int, Any]] = []
    extras: list[tuple[str, Any]] = []
    seen: dict[str, str] = {}
    for key, value in entry.items():
        other = seen.setdefault(fold_case(key), key)
        if other != key:
            problems.append(MatrixProblem(
                section, index, key, f"keys {other!r} and {key!r} differ only in case, "
                "and matrix keys are case-insensitive", "keep one of them"))
            continue
        axis = by_fold.get(fold_case(key))
        if axis is not None:
            filters.append((axis, value))
        elif section == "exclude":
            problems.append(MatrixProblem(
                section, index, key, f"exclude key {key!r} is not a matrix axis",
                f"use one of the axes: {', '.join(names) or '(none)'}"))
        else:
            extras.append((key, value))
    return _Entry(filters, extras)


def _match_sets(entry: _Entry, vectors: Sequence[Sequence[Any]],
                test: Any) -> dict[int, frozenset[int]]:
    """For each axis the entry filters on, the indexes of the values it matches.

    Several filters on one axis (only possible through nested keys) all must match.
    """
    sets: dict[int, frozenset[int]] = {}
    for axis, wanted in entry.filters:
        found = frozenset(i for i, v in enumerate(vectors[axis]) if test(v, wanted))
        sets[axis] = sets[axis] & found if axis in sets else found
    return sets


def _product(
    names: Sequence[str],
    vectors: Sequence[Sequence[Any]],
    ex_sets: Sequence[Mapping[int, frozenset[int]]],
    limit: int,
    hint: str,
    problems: list[MatrixProblem],
) -> Sequence[tuple[int, ...]] | None:
    """The surviving cross product as value-index tuples, or ``None`` past ``limit``."""
    if not names:
        return []
    size = math.prod(len(v) for v in vectors)
    # Exclusions may overlap, so size minus what each removes is a lower bound.
    removed = sum(
        math.prod(len(sets[a]) if a in sets else len(v) for a, v in enumerate(vectors))
        for sets in ex_sets
    )
    if size - removed > limit:
        problems.append(MatrixProblem(
            "axes", None, None,
            f"the axes multiply to {size:,} combinations, more than the cap of {limit:,}",
            hint))
        return None
    live = [sets for sets in ex_sets if all(sets.values())]
    if not live:
        return _Product([len(v) for v in vectors])  # every combination: none is stored
    survivors: list[tuple[int, ...]] = []
    for idx in itertools.product(*(range(len(v)) for v in vectors)):
        if live and any(all(idx[a] in s for a, s in sets.items()) for sets in live):
            continue
        survivors.append(idx)
        if len(survivors) > limit:
            problems.append(MatrixProblem(
                "axes", None, None,
                f"the matrix has more than the cap of {limit:,} combinations", hint))
            return None
    return survivors


def _matching(
    originals: Sequence[tuple[int, ...]],
    lookup: Mapping[tuple[int, ...], int],
    sets: Mapping[int, frozenset[int]],
    vectors: Sequence[Sequence[Any]],
) -> Iterable[int]:
    """Positions of the original combinations whose values are all in ``sets``, in order.

    Enumerates the candidate index tuples when there are fewer of them than
    originals (a typical include row pins every axis), else scans the originals.
    """
    candidates = math.prod(len(sets[a]) if a in sets else len(v) for a, v in enumerate(vectors))
    if candidates <= len(originals):
        choices = [sorted(sets[a]) if a in sets else range(len(v))
                   for a, v in enumerate(vectors)]
        found = (lookup.get(idx) for idx in itertools.product(*choices))
        return sorted(pos for pos in found if pos is not None)
    return (pos for pos, idx in enumerate(originals)
            if all(idx[a] in s for a, s in sets.items()))


def _near_miss(index: int, entry: _Entry, names: Sequence[str],
               vectors: Sequence[Sequence[Any]], idx: tuple[int, ...]) -> MatrixProblem:
    """The warning for an include row that GitHub would append, though a combination
    differs from it only in the case or type of its values."""
    diffs = [
        f"{names[a]}: {wanted!r} vs {vectors[a][idx[a]]!r}"
        for a, wanted in entry.filters
        if not filter_matches(vectors[a][idx[a]], wanted)
    ]
    return MatrixProblem(
        "include", index, None,
        "this include row matches no combination, so it is added as a new one, though "
        f"it differs from an existing combination only in case or type ({'; '.join(diffs)})",
        "write the values as the axes do to merge it into that combination, or keep it "
        "if a new combination is meant", severity="warning")


def key_order(combos: Sequence[Combination], axes: Sequence[str]) -> list[str]:
    """Axis names first, then keys added by ``include`` in order of first appearance."""
    order = list(axes)
    seen = set(order)
    if isinstance(combos, Combinations) and seen.issuperset(combos._names):
        combos = list(combos.merged())  # the others have just the axes
    for combo in combos:
        for key in combo.values:
            if key not in seen:
                seen.add(key)
                order.append(key)
    return order
