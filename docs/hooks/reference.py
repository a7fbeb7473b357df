"""MkDocs hook: fills the generated reference tables into the manual's pages.

A page asks for a table with a marker line (``<!-- imgspec:manifest-fields -->`` or
``<!-- imgspec:exit-codes -->``); the tables come from ``pipeline.views.reference``.
"""

from __future__ import annotations

from typing import Any

from pipeline.views.reference import exit_codes, manifest_fields

MARKERS = {
    "<!-- imgspec:manifest-fields -->": manifest_fields,
    "<!-- imgspec:exit-codes -->": exit_codes,
}


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each marker with its table."""
    for marker, table in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, table())
    return markdown
