"""Diagnostics: one reported problem, anchored to a file position, formatted for humans."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A problem at ``file:line:column`` (1-based), with the manifest path it concerns."""

    file: str
    line: int
    column: int
    where: str
    message: str
    hint: str = ""
    severity: Severity = "error"
    source_line: str | None = None
    instance: str | None = None
    repeats: int = 1

    def format(self, *, snippet: bool = True) -> str:
        """``FILE:LINE:COL: error: where: what; hint`` (or ``warning:``) plus, when known,
        the source line and a caret: the form compilers and linters print, which editors
        and CI annotations parse."""
        text = (f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.where}: "
                f"{self.message}")
        if self.instance is not None:
            text += (
                f" (instance {self.instance})"
                if self.repeats == 1
                else f" (in {self.repeats} instances, e.g. {self.instance})"
            )
        if self.hint:
            text += f"; {self.hint}"
        if snippet and self.source_line is not None:
            shown, caret = _window(self.source_line, max(self.column - 1, 0))
            gutter = f"{self.line:>5} | "
            text += f"\n{gutter}{shown}\n{' ' * (len(gutter) - 2)}| "
            text += " " * caret + "^"
        return text

    def sort_key(self) -> tuple[str, int, int, str]:
        """Order diagnostics as an editor would list them."""
        return (self.file, self.line, self.column, self.message)


SNIPPET_WIDTH = 100


def _window(line: str, offset: int) -> tuple[str, int]:
    """At most ``SNIPPET_WIDTH`` characters of ``line`` around ``offset``, and the caret's place.

    A minified manifest or a 10,000-deep bracket run is one enormous line; the
    caret's neighbourhood is what helps.
    """
    if len(line) <= SNIPPET_WIDTH:
        return line, offset
    start = max(0, min(offset - SNIPPET_WIDTH // 2, len(line) - SNIPPET_WIDTH))
    end = start + SNIPPET_WIDTH
    before = "..." if start > 0 else ""
    after = "..." if end < len(line) else ""
    return before + line[start:end] + after, len(before) + offset - start


def collapse(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Merge identical diagnostics (same place and text) into one with a repeat count, sorted.

    A rule broken by every instance of a 10,000-row matrix is one mistake in one line
    of the manifest, so it is reported once.
    """
    merged: dict[tuple[str, int, int, str, str, str, str], Diagnostic] = {}
    for diag in diagnostics:
        ident = (diag.file, diag.line, diag.column, diag.where, diag.message, diag.hint,
                 diag.severity)
        seen = merged.get(ident)
        merged[ident] = diag if seen is None else replace(seen, repeats=seen.repeats + 1)
    return sorted(merged.values(), key=Diagnostic.sort_key)
