"""JSON Schema validation with errors anchored at the offending line and column.

The schema comes as a validator built by the shell
(``pipeline.shell.store.schemas.schema_validator``), which reads the published file.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from pipeline.core.manifest.diagnostics import Diagnostic
from pipeline.core.manifest.document import Document


def validate_document(doc: Document,
                      schema: jsonschema.Draft202012Validator) -> list[Diagnostic]:
    """Every violation of ``schema`` by ``doc`` as a positioned diagnostic (empty when
    valid)."""
    out: list[Diagnostic] = []
    errors = list(schema.iter_errors(doc.data))
    root = schema.schema if isinstance(schema.schema, Mapping) else {}
    fields = root.get("$defs", {}).get("job", {}).get("properties", {})
    dedented = _dedented_jobs(doc, errors, fields) if fields else {}
    for error in errors:
        path = tuple(error.absolute_path)
        if len(path) >= 2 and path[0] == "jobs" and path[1] in dedented:
            continue
        out.extend(_diagnose(doc, error))
    for field, above in dedented.items():
        out.append(doc.diagnostic(
            ("jobs", field), f"{field!r} is a job's field, but it is indented as a job of "
            "its own", f"indent it under the job above ({above!r}) to make it part of that "
            "job" if above else "indent it under the job it belongs to", key=True))
    return sorted(out, key=lambda d: d.sort_key())


def _dedented_jobs(doc: Document, errors: list[ValidationError],
                   fields: Mapping[str, Any]) -> dict[str, str | None]:
    """Jobs named like a job's field (``matrix``, ``prompt``...: ``fields``) whose content
    is invalid: a field indented one level too little. Each with the job above it, if
    any."""
    jobs = doc.data.get("jobs") if isinstance(doc.data, dict) else None
    if not isinstance(jobs, dict):
        return {}
    broken = {path[1] for path in (tuple(e.absolute_path) for e in errors)
              if len(path) >= 2 and path[0] == "jobs"}
    found: dict[str, str | None] = {}
    above: str | None = None
    for name in jobs:
        if name in fields and name in broken:
            found[name] = above
        else:
            above = name
    return found


def _diagnose(doc: Document, error: ValidationError) -> list[Diagnostic]:
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {})) if isinstance(error.schema, dict) else []
        patterns = error.schema.get("patternProperties", {}) if isinstance(error.schema,
                                                                            dict) else {}
        extras = [
            k for k in error.instance
            if k not in allowed and not any(_re_search(p, k) for p in patterns)
        ]
        diags = []
        for key in extras:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else (
                f"allowed here: {', '.join(allowed)}" if allowed else "remove it")
            diags.append(doc.diagnostic((*path, key), f"unknown field {key!r}", hint, key=True))
        if diags:
            return diags
    if error.validator == "propertyNames":
        bad = error.instance
        return [doc.diagnostic((*path, bad) if isinstance(bad, str) else path,
                               f"invalid name {bad!r}",
                               "use lowercase letters, digits, '-' and '_'", key=True)]
    if error.validator in ("anyOf", "oneOf") and error.context:
        inner = best_match(error.context)
        message = _message(inner)
    else:
        message = _message(error)
    return [doc.diagnostic(path, message, _hint(error))]


def _re_search(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


def _message(error: ValidationError) -> str:
    validator = error.validator
    value = error.instance
    if validator == "required":
        return error.message.replace("is a required property", "is required")
    if validator == "type":
        return f"{_show(value)} is not of type {error.validator_value}"
    if validator == "enum":
        options = ", ".join(str(v) for v in schema_list(error.validator_value))
        return f"{_show(value)} is not one of: {options}"
    if validator == "const":
        return f"{_show(value)} must be {error.validator_value!r}"
    if validator == "pattern" and isinstance(error.schema, dict) and "description" in error.schema:
        return f"{_show(value)} is not written in the expected form"
    return error.message


def schema_list(value: object) -> list[Any]:
    """A schema keyword's value as a list (jsonschema types it loosely)."""
    return list(value) if isinstance(value, list | tuple) else [value]


def _hint(error: ValidationError) -> str:
    validator = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    if validator == "required":
        return "add the missing field"
    if validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"use a value from {low} to {high}"
    if validator in ("minItems", "maxItems"):
        return "change the number of entries"
    if validator in ("enum", "const"):
        return "check the spelling"
    if validator == "type" and error.validator_value == "string" and isinstance(
        error.instance, int | float | bool
    ):
        return "quote the value to make it text"
    if validator == "type" and error.validator_value == "boolean" and isinstance(
        error.instance, str
    ):
        # Manifests are read as YAML 1.2, where yes/no/on/off are text, not booleans.
        return "write true or false (yes, no, on and off are text in YAML 1.2)"
    description = schema.get("description")
    if isinstance(description, str) and description:
        first = description.split(". ")[0].rstrip(".")
        return f"expected: {first[:160]}"
    return "see schemas/manifest.schema.json"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
