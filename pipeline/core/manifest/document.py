"""Parsed YAML/JSON/CSV text that remembers where every value came from.

The loader keeps a map from each value's path (``("jobs", "storefront", "n")``) to
its line and column, so later passes (schema, templates, API rules) can point
errors at the exact spot in the file.

Plain scalars are resolved by the YAML 1.2 core schema: only ``true``, ``True``,
``TRUE`` and the same three of ``false`` are booleans, ``16:9`` and ``no`` stay
text, ``010`` is ten, ``0o10`` is eight. A plain scalar that YAML 1.1 tools
(PyYAML's default, older editors and linters) would read differently is still
loaded the 1.2 way, with a warning at its position saying to quote it.

Values must be plain JSON data a request can carry: finite numbers, whole numbers
within 64 bits, text of real characters, bounded nesting; anything else is an
error at its position, never an exception later.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from pipeline.core.manifest.diagnostics import Diagnostic
from pipeline.errors import ManifestError

DocPath = tuple[str | int, ...]

# A YAML alias bomb expands exponentially; no sane manifest has this many values.
MAX_NODES = 2_000_000
# A manifest's own structure is under ten levels deep; past this, nesting (written
# out or built from aliases) is an attack on every recursive consumer downstream.
MAX_DEPTH = 64
# Whole numbers are kept to what JSON tools, the API and the lockfile can carry.
MAX_INT = 2**63 - 1
# Warnings about YAML 1.1 readings per file; past this they are summarised.
MAX_YAML11_WARNINGS = 20


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column."""

    line: int
    column: int


@dataclass(frozen=True)
class Document:
    """Plain data (dicts, lists, scalars) plus the source position of each value and key."""

    file: str
    data: Any
    text: str = field(repr=False)
    positions: Mapping[DocPath, Position] = field(repr=False, default_factory=dict)
    key_positions: Mapping[DocPath, Position] = field(repr=False, default_factory=dict)
    # Values that load fine but that a YAML 1.1 tool would read differently.
    warnings: tuple[Diagnostic, ...] = field(repr=False, default=())

    def position(self, path: DocPath, *, key: bool = False) -> Position:
        """Where ``path`` (or, with ``key``, its mapping key) starts; falls back to the parent."""
        if key and path in self.key_positions:
            return self.key_positions[path]
        probe = path
        while probe:
            found = self.positions.get(probe)
            if found is not None:
                return found
            probe = probe[:-1]
        return self.positions.get((), Position(1, 1))

    def diagnostic(
        self,
        path: DocPath,
        message: str,
        hint: str = "",
        *,
        key: bool = False,
        where: str | None = None,
        severity: str = "error",
        instance: str | None = None,
    ) -> Diagnostic:
        """A diagnostic anchored at ``path`` with the source line as its snippet."""
        pos = self.position(path, key=key)
        return Diagnostic(
            file=self.file,
            line=pos.line,
            column=pos.column,
            where=where if where is not None else format_path(path),
            message=message,
            hint=hint,
            severity="warning" if severity == "warning" else "error",
            source_line=self.line_text(pos.line),
            instance=instance,
        )

    def line_text(self, line: int) -> str | None:
        """The source text of a 1-based line, if the document has it."""
        return self._lines[line - 1] if 0 < line <= len(self._lines) else None

    @cached_property
    def _lines(self) -> list[str]:
        return self.text.splitlines()


def format_path(path: DocPath) -> str:
    """``("jobs", "a", "image_urls", 0)`` → ``jobs.a.image_urls[0]``; the root is ``manifest``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "manifest"


def parse_yaml(text: str, file: str) -> Document:
    """Parse one YAML (or JSON) document, keeping positions; raise ``ManifestError`` on bad YAML."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        builder = _Builder(loader, file, text)
        data = None if node is None else builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        doc = Document(file=file, data=None, text=text)
        problem = exc.problem or exc.context or "invalid YAML"
        # PyYAML names a tab only as "character '\t'"; people need to hear what to do.
        hint = ("replace the tab with spaces (YAML allows no tabs here)"
                if "'\\t'" in problem else "fix the syntax at this position")
        raise ManifestError(
            [
                Diagnostic(file, line, col, "yaml", f"invalid YAML: {problem}", hint,
                           source_line=doc.line_text(line))
            ]
        ) from exc
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        raise ManifestError(
            [Diagnostic(file, line, col, "yaml",
                        f"invalid character {exc.character!r} ({exc.reason})",
                        "remove the control character or save the file as UTF-8 text")]
        ) from exc
    except yaml.YAMLError as exc:
        raise ManifestError(
            [Diagnostic(file, 1, 1, "yaml", f"invalid YAML: {exc}", "fix the file's syntax")]
        ) from exc
    except _BuildError as exc:
        doc = Document(file=file, data=None, text=text)
        raise ManifestError(
            [Diagnostic(file, exc.line, exc.column, exc.where, exc.message, exc.hint,
                        source_line=doc.line_text(exc.line))]
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    return Document(file, data, text, builder.positions, builder.key_positions,
                    builder.warnings())


def _line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def parse_csv(text: str, file: str) -> Document:
    """Parse a CSV with a header row into a list of row mappings (all values strings)."""
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows: list[dict[str, str]] = []
        positions: dict[DocPath, Position] = {(): Position(1, 1)}
        for index, row in enumerate(reader):
            if None in row or any(value is None for value in row.values()):
                raise ManifestError(
                    [Diagnostic(file, reader.line_num, 1, f"row {index + 1}",
                                "this row has a different number of cells than the header",
                                "give every row one cell per header column")]
                )
            positions[(index,)] = Position(reader.line_num, 1)
            for cell in (*row, *row.values()):
                problem = text_problem(str(cell))
                if problem is not None:
                    raise ManifestError([Diagnostic(file, reader.line_num, 1, f"row {index + 1}",
                                                    *problem)])
            rows.append({str(k): v for k, v in row.items()})
    except csv.Error as exc:
        raise ManifestError(
            [Diagnostic(file, 1, 1, "csv", f"invalid CSV: {exc}", "fix the file's syntax")]
        ) from exc
    return Document(file, rows, text, positions, {})


class _BuildError(Exception):
    def __init__(self, line: int, column: int, message: str, hint: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message, self.hint = line, column, message, hint
        self.where = "yaml"  # the value's path, once known

    @classmethod
    def at(cls, mark: Any, message: str, hint: str) -> _BuildError:
        """An error at a YAML mark (0-based) as a 1-based position (1:1 without one)."""
        if mark is None:
            return cls(1, 1, message, hint)
        return cls(mark.line + 1, mark.column + 1, message, hint)


# -- text -----------------------------------------------------------------------------

# YAML's printable set (1.2 spec, production c-printable) without the surrogates: the
# reader refuses anything else written raw, so escapes must not smuggle it in either.
_NOT_PRINTABLE = re.compile(
    "[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(value: str) -> tuple[str, str] | None:
    """Why ``value`` cannot be text imgspec sends or stores (message, hint), or None.

    Lone surrogates (``"\\uD800"``) cannot be encoded as UTF-8 and control
    characters are not text; both can only come from escapes.
    """
    bad = _NOT_PRINTABLE.search(value)
    if bad is None:
        return None
    char = bad.group()
    if _SURROGATE.match(char):
        return (f"the text holds a lone surrogate U+{ord(char):04X}, which is not a character",
                "write the character itself, or escape it as \\U0001F600 (eight hex digits)")
    kind = "control character" if ord(char) < 0xA0 else "non-character"
    return (f"the text holds the {kind} U+{ord(char):04X}",
            "remove it: text may hold tabs and line breaks but no other control characters")


def _pair_surrogates(value: str) -> str:
    """``"\\uD83D\\uDE00"`` (JSON's way to escape 😀) as the one character it stands for."""
    if _SURROGATE.search(value) is None:
        return value
    try:
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        return value  # a lone one: text_problem reports it


# -- YAML 1.2 core schema -------------------------------------------------------------

_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"

# The YAML 1.2.2 core schema's tag resolution (spec section 10.3.2), verbatim.
_CORE_NULL = re.compile(r"^(?:null|Null|NULL|~|)$")
_CORE_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_CORE_INT8 = re.compile(r"^0o[0-7]+$")
_CORE_INT16 = re.compile(r"^0x[0-9a-fA-F]+$")
_CORE_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_CORE_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
# Digits past which a whole number is certainly above MAX_INT (and int() may refuse it).
_MAX_INT_DIGITS = 25


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema scalars and a nesting limit.

    The resolver and constructor tables are this class's own copies, so yaml's
    global tables (and every other user of ``yaml.safe_load``) stay as they are.
    Merge keys (``<<: *defaults``) are kept: they are not core 1.2, but manifests
    use them and no plain value can mean anything else.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.merge_depth = 0
        self.plain: set[int] = set()  # ids of untagged plain scalar nodes

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # PyYAML composes recursively; stop before Python's recursion limit does.
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _BuildError.at(self._next_event().start_mark, *_too_deep())
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        event = self._next_event()
        node = super().compose_scalar_node(anchor)
        if isinstance(event, yaml.ScalarEvent) and event.implicit[0] and event.style is None:
            self.plain.add(id(node))
        return node

    def _next_event(self) -> yaml.Event:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        return event

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Merges of merges recurse too; bound them like any nesting.
        self.merge_depth += 1
        try:
            if self.merge_depth > MAX_DEPTH:
                raise _BuildError.at(node.start_mark, *_too_deep())
            super().flatten_mapping(node)
        finally:
            self.merge_depth -= 1

    def construct_timestamp_text(self, node: yaml.ScalarNode) -> str:
        # Dates are not JSON; a manifest value is data, so an explicit !!timestamp
        # stays the text as written (plain dates are text in the core schema anyway).
        text = self.construct_scalar(node)
        if not self.timestamp_regexp.match(text):
            raise ConstructorError(None, None, f"{text!r} is not a date or time",
                                   node.start_mark)
        return text

    def construct_core_bool(self, node: yaml.ScalarNode) -> bool:
        text = self.construct_scalar(node)
        if not _CORE_BOOL.match(text):
            raise ConstructorError(None, None, f"{text!r} is not a boolean (true or false)",
                                   node.start_mark)
        return text.lower() == "true"

    def construct_core_int(self, node: yaml.ScalarNode) -> int:
        text = self.construct_scalar(node)
        if not _CORE_INT.match(text):
            raise ConstructorError(None, None, f"{text!r} is not a whole number",
                                   node.start_mark)
        if _CORE_INT8.match(text):
            digits, base = text[2:], 8
        elif _CORE_INT16.match(text):
            digits, base = text[2:], 16
        else:
            digits, base = text, 10
        if len(digits.lstrip("+-0")) > _MAX_INT_DIGITS:
            raise _BuildError.at(node.start_mark, *_too_large())
        return int(digits, base)

    def construct_core_float(self, node: yaml.ScalarNode) -> float:
        text = self.construct_scalar(node)
        if not _CORE_FLOAT.match(text):
            raise ConstructorError(None, None, f"{text!r} is not a number", node.start_mark)
        lowered = text.lower()
        if lowered.endswith(".inf"):
            return -math.inf if lowered.startswith("-") else math.inf
        if lowered == ".nan":
            return math.nan
        return float(text)


_Loader.yaml_implicit_resolvers = {}  # its own table, not a copy of YAML 1.1's
for _tag, _pattern, _first in (
    (_NULL, _CORE_NULL, ["~", "n", "N", ""]),
    (_BOOL, _CORE_BOOL, list("tTfF")),
    (_INT, _CORE_INT, list("-+0123456789")),
    (_FLOAT, _CORE_FLOAT, list("-+.0123456789")),
    (_MERGE, re.compile(r"^(?:<<)$"), ["<"]),
):
    _Loader.add_implicit_resolver(_tag, _pattern, _first)
_Loader.add_constructor(_TIMESTAMP, _Loader.construct_timestamp_text)
_Loader.add_constructor(_BOOL, _Loader.construct_core_bool)
_Loader.add_constructor(_INT, _Loader.construct_core_int)
_Loader.add_constructor(_FLOAT, _Loader.construct_core_float)


def _too_deep() -> tuple[str, str]:
    return (f"the values nest more than {MAX_DEPTH} levels deep",
            "flatten the structure (or its aliases and merges)")


def _too_large() -> tuple[str, str]:
    return (f"the whole number is outside -{MAX_INT + 1:,} to {MAX_INT:,}",
            "use a smaller number, or quote it to make it text")


# -- what a YAML 1.1 tool would have read ------------------------------------------------

# A private copy of PyYAML's (YAML 1.1) resolution table, read only.
_YAML11_RESOLVERS: dict[str, list[tuple[str, re.Pattern[str]]]] = {
    first: list(entries)
    for first, entries in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
}
# YAML 1.1's boolean type also has y/Y/n/N, which PyYAML leaves out but other tools do not.
_YAML11_LETTERS = {"y": True, "Y": True, "n": False, "N": False}
_YAML11 = SafeConstructor()
_NO_READING = object()


def _yaml11_reading(text: str) -> Any:
    """The value a YAML 1.1 loader gives the plain scalar ``text`` (or ``_NO_READING``)."""
    if text in _YAML11_LETTERS:
        return _YAML11_LETTERS[text]
    tag = next((t for t, regexp in _YAML11_RESOLVERS.get(text[:1], [])
                if regexp.match(text)), _STR)
    node = yaml.ScalarNode(tag, text)
    try:
        if tag == _BOOL:
            return _YAML11.construct_yaml_bool(node)
        if tag == _INT:
            return _YAML11.construct_yaml_int(node)
        if tag == _FLOAT:
            return _YAML11.construct_yaml_float(node)
    except ValueError:  # too many digits for int(): no reading worth showing
        return _NO_READING
    if tag == _NULL:
        return None
    return text if tag == _STR else _NO_READING  # timestamps, merges: same as 1.2 here


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    return f"the text {value!r}"


def _yaml11_warning(text: str, value: Any) -> tuple[str, str] | None:
    """(message, hint) when YAML 1.1 reads plain ``text`` other than as ``value``."""
    old = _yaml11_reading(text)
    if old is _NO_READING or (type(old) is type(value) and old == value):
        return None
    shown = text if len(text) <= 40 else text[:37] + "..."
    message = (f"{shown} is read as {_describe(value)} (YAML 1.2), "
               f"but YAML 1.1 tools read it as {_describe(old)}")
    if isinstance(value, str) and isinstance(old, bool):
        return message, f"quote it ('{shown}') to keep the text, or write {str(old).lower()} " \
                        "for the boolean"
    if isinstance(value, str):
        return message, f"quote it ('{shown}') to keep the text, or write {old!r} for the number"
    return message, f"quote it ('{shown}') if you mean text"


# -- node tree to data ----------------------------------------------------------------


class _Builder:
    """Turns a composed YAML node tree into plain data, recording positions on the way."""

    def __init__(self, loader: _Loader, file: str, text: str) -> None:
        self.loader = loader
        self.file = file
        self.text = text
        self.positions: dict[DocPath, Position] = {}
        self.key_positions: dict[DocPath, Position] = {}
        self.count = 0
        self.yaml11: list[Diagnostic] = []
        self.yaml11_more = 0
        self.lines: list[str] | None = None

    def build(self, node: yaml.Node, path: DocPath) -> Any:
        mark = node.start_mark
        self.count += 1
        if self.count > MAX_NODES:
            raise _BuildError.at(mark, f"the document expands to more than {MAX_NODES:,} values",
                                 "remove the recursive or repeated aliases")
        if len(path) > MAX_DEPTH:  # aliases can nest deeper than the text does
            error = _BuildError.at(mark, *_too_deep())
            error.where = format_path(path[:3]) + "..."
            raise error
        self.positions[path] = Position(mark.line + 1, mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            return self._scalar(node, path)
        except _BuildError as exc:
            exc.where = format_path(path)
            raise

    def _scalar(self, node: yaml.Node, path: DocPath) -> Any:
        mark = node.start_mark
        value = self.loader.construct_object(node, deep=True)
        if isinstance(value, bytes):
            raise _BuildError.at(mark, "binary values are not supported", "write the value as text")
        if isinstance(value, str):
            value = self._text(value, mark, path)
        elif isinstance(value, float) and not math.isfinite(value):
            raise _BuildError.at(
                mark, f"{node.value} is not a finite number",
                "write a number (prices and budgets are finite), or quote it to make it text")
        elif isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
            raise _BuildError.at(mark, *_too_large())
        if isinstance(node, yaml.ScalarNode) and id(node) in self.loader.plain:
            self._check_yaml11(node, value, path)
        return value

    def _text(self, value: str, mark: yaml.Mark, path: DocPath) -> str:
        value = _pair_surrogates(value)
        problem = text_problem(value)
        if problem is not None:
            error = _BuildError.at(mark, *problem)
            error.where = format_path(path)
            raise error
        return value

    def _check_yaml11(self, node: yaml.ScalarNode, value: Any, path: DocPath) -> None:
        found = _yaml11_warning(node.value, value)
        if found is None:
            return
        if len(self.yaml11) >= MAX_YAML11_WARNINGS:
            self.yaml11_more += 1
            return
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        self.yaml11.append(Diagnostic(self.file, line, column, format_path(path), *found,
                                      severity="warning", source_line=self._line(line)))

    def _line(self, line: int) -> str | None:
        if self.lines is None:
            self.lines = self.text.splitlines()
        return self.lines[line - 1] if 0 < line <= len(self.lines) else None

    def warnings(self) -> tuple[Diagnostic, ...]:
        """The YAML 1.1 warnings, the ones past the limit summed up in one more."""
        if not self.yaml11_more:
            return tuple(self.yaml11)
        last = self.yaml11[-1]
        summary = Diagnostic(
            self.file, last.line, last.column, "yaml",
            f"{self.yaml11_more:,} more plain values read differently by YAML 1.1 tools",
            "quote the values you mean as text", severity="warning")
        return (*self.yaml11, summary)

    def _mapping(self, node: yaml.MappingNode, path: DocPath) -> dict[str, Any]:
        own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE)
        self.loader.flatten_mapping(node)
        # flatten_mapping puts merged pairs first, later sources before earlier ones, so
        # plain overwriting gives the YAML merge rule: own keys win, then earlier sources.
        merged = len(node.value) - own
        out: dict[str, Any] = {}
        written: set[str] = set()
        for number, (key_node, value_node) in enumerate(node.value):
            mark = key_node.start_mark
            if not isinstance(key_node, yaml.ScalarNode):
                raise _BuildError.at(mark, "a mapping key must be a plain scalar",
                                     "use a text key")
            # Keys stay as written: YAML 1.1 would turn `on:` or `yes:` into True.
            key = self._text(str(key_node.value), mark, path)
            if number >= merged:
                if key in written:
                    error = _BuildError.at(mark, f"duplicate key {key!r}",
                                           "remove one of the two entries")
                    error.where = format_path((*path, key))
                    raise error
                written.add(key)
            self.key_positions[(*path, key)] = Position(mark.line + 1, mark.column + 1)
            out[key] = self.build(value_node, (*path, key))
        return out
