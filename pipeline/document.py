"""Parsed YAML/JSON/CSV text that remembers where every value came from.

The loader keeps a map from each value's path (``("jobs", "storefront", "n")``) to
its line and column, so later passes (schema, templates, API rules) can point
errors at the exact spot in the file.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import yaml

from pipeline.diagnostics import Diagnostic
from pipeline.errors import ManifestError

DocPath = tuple[str | int, ...]

# A YAML alias bomb expands exponentially; no sane manifest has this many values.
MAX_NODES = 2_000_000


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
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        builder = _Builder(loader)
        data = None if node is None else builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        doc = Document(file=file, data=None, text=text)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ManifestError(
            [
                Diagnostic(file, line, col, "yaml", f"invalid YAML: {problem}",
                           "fix the syntax at this position", source_line=doc.line_text(line))
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
            [Diagnostic(file, exc.line, exc.column, "yaml", exc.message, exc.hint,
                        source_line=doc.line_text(exc.line))]
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    return Document(file, data, text, builder.positions, builder.key_positions)


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


class _Builder:
    """Turns a composed YAML node tree into plain data, recording positions on the way."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.positions: dict[DocPath, Position] = {}
        self.key_positions: dict[DocPath, Position] = {}
        self.count = 0

    def build(self, node: yaml.Node, path: DocPath) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _BuildError(node.start_mark.line + 1, node.start_mark.column + 1,
                              f"the document expands to more than {MAX_NODES:,} values",
                              "remove the recursive or repeated aliases")
        self.positions[path] = Position(node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        value = self.loader.construct_object(node, deep=True)
        # Dates are not JSON; a manifest value is data, so keep the text as written.
        if isinstance(value, _dt.date | _dt.datetime):
            return str(node.value)
        if isinstance(value, bytes):
            raise _BuildError(node.start_mark.line + 1, node.start_mark.column + 1,
                              "binary values are not supported", "write the value as text")
        return value

    def _mapping(self, node: yaml.MappingNode, path: DocPath) -> dict[str, Any]:
        self.loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            mark = key_node.start_mark
            if not isinstance(key_node, yaml.ScalarNode):
                raise _BuildError(mark.line + 1, mark.column + 1,
                                  "a mapping key must be a plain scalar", "use a text key")
            # Keys stay as written: YAML 1.1 would turn `on:` or `yes:` into True.
            key = str(key_node.value)
            if key in out:
                raise _BuildError(mark.line + 1, mark.column + 1, f"duplicate key {key!r}",
                                  "remove one of the two entries")
            self.key_positions[(*path, key)] = Position(mark.line + 1, mark.column + 1)
            out[key] = self.build(value_node, (*path, key))
        return out
