"""The published JSON Schemas (``schemas/`` in a checkout, ``pipeline/_schemas`` in a
wheel), read from disk; the core is handed their validators."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_NAMES = ("manifest.schema.json", "lockfile.schema.json")
MANIFEST_SCHEMA = SCHEMA_NAMES[0]


def schema_dir() -> Path:
    """Where the published schemas live: the repo's ``schemas/`` or the wheel's copy."""
    package = Path(__file__).resolve().parents[2]
    for candidate in (package.parent / "schemas", package / "_schemas"):
        if (candidate / SCHEMA_NAMES[0]).is_file():
            return candidate
    raise FileNotFoundError("the imgspec schemas are missing from this installation")


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A published schema by file name."""
    with (schema_dir() / name).open(encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


@cache
def schema_validator(name: str) -> jsonschema.Draft202012Validator:
    """The validator of a published schema, built once per process."""
    return jsonschema.Draft202012Validator(load_schema(name))
