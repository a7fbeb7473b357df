"""Reference tables of the user manual, generated from the facts they describe.

The manual's manifest reference is built from the published JSON Schema and its
exit-code table from :data:`pipeline.errors.EXIT_CODES`, so neither can drift
from what imgspec checks and does. ``docs/hooks/reference.py`` puts them into the
pages when MkDocs builds the manual.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pipeline.errors import EXIT_CODES
from pipeline.shell.store.schemas import SCHEMA_NAMES, load_schema


def manifest_fields() -> str:
    """Markdown tables of every manifest field: the top level, a job, the request fields
    (``defaults`` and jobs), ``budget`` and a palette entry, each with its description."""
    schema = load_schema(SCHEMA_NAMES[0])
    defs: Mapping[str, Any] = schema["$defs"]
    sections = [
        ("Top level", schema),
        ("A job (under `jobs:`), besides the request fields", _job_own(defs)),
        ("Request fields (in `defaults:` and in each job)", defs["request_fields"]),
        ("`budget:`", schema["properties"]["budget"]),
        ("A `color_palette` entry", defs["palette_entry"]),
    ]
    return "\n\n".join(f"### {title}\n\n{_table(node, schema)}" for title, node in sections)


def exit_codes() -> str:
    """The exit statuses of every command as a Markdown table."""
    rows = "\n".join(f"| {code} | {meaning} |" for code, meaning in EXIT_CODES)
    return "| code | meaning |\n|---|---|\n" + rows


def _job_own(defs: Mapping[str, Any]) -> dict[str, Any]:
    """The job's properties that are not request fields."""
    request = set(defs["request_fields"]["properties"])
    own = {k: v for k, v in defs["job"]["properties"].items() if k not in request}
    return {"properties": own, "required": defs["job"].get("required", [])}


def _table(node: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    required = set(node.get("required", ()))
    lines = ["| field | type | description |", "|---|---|---|"]
    for name, prop in node.get("properties", {}).items():
        kind = _kind(prop, schema)
        mark = " (required)" if name in required else ""
        text = _cell(prop.get("description") or _resolve(prop, schema).get("description", ""))
        lines.append(f"| `{name}`{mark} | {kind} | {text} |")
    return "\n".join(lines)


def _kind(prop: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """A short type: the JSON type(s), or the alternatives it may take."""
    target = _resolve(prop, schema)
    kinds = list(_types(target, schema))
    return " or ".join(dict.fromkeys(kinds)) or "any"


def _types(node: Mapping[str, Any], schema: Mapping[str, Any]) -> Iterator[str]:
    node = _resolve(node, schema)
    kind = node.get("type")
    if isinstance(kind, list):
        yield from kind
    elif isinstance(kind, str):
        yield kind
    elif "const" in node:
        yield repr(node["const"])
    elif "enum" in node:
        yield " / ".join(str(v) for v in node["enum"])
    for key in ("anyOf", "oneOf"):
        for option in node.get(key, ()):
            yield from _types(option, schema)


def _resolve(node: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: Mapping[str, Any] = schema["$defs"][ref.removeprefix("#/$defs/")]
        return resolved
    return node


def _cell(text: str) -> str:
    """Text that stays in one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")
