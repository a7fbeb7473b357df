"""Diagnostics: the problems a manifest check reports, merged for reading.

``Diagnostic`` (one problem, anchored to a file position) is defined in
``pipeline.errors``, beside the ``ManifestError`` that carries it, so the errors import
nothing of the layers above them; it is named here too for the modules that report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from pipeline.errors import Diagnostic, Severity

__all__ = ["Diagnostic", "Severity", "collapse"]


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
