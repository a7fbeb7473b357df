"""Identity of an instance: its readable key, its folder name, its fingerprint and seed.

- key: ``job@axis=value,...`` in axis order; stable when other jobs or rows change.
- folder: a filesystem-safe, bounded form of the key's values.
- fingerprint: sha256 of the canonical JSON of the fully rendered request.
- seed: derived from the key, so a manifest pins every request.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.rules import MAX_SEED

FOLDER_MAX = 80
_PLAIN_VALUE = re.compile(r"^[^,=@\"\s\[\]{}]([^,=@\"\[\]{}]*[^,=@\"\s\[\]{}])?$")
_UNSAFE_FOLDER_CHARS = re.compile(r"[^A-Za-z0-9._=,+-]+")
# Values ``folder_name`` leaves as they are: safe characters, none upper-case, no ``.``
# or ``_`` at either end, at most FOLDER_MAX long.
_FOLDER_AS_IS = re.compile(
    rf"[a-z0-9=,+-](?:[a-z0-9._=,+-]{{0,{FOLDER_MAX - 2}}}[a-z0-9=,+-])?")


# One encoder, not one per call (``json.dumps`` with options builds a new one each time,
# and a plan calls this once per instance).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: the same data always gives the same text."""
    return _CANONICAL.encode(value)


def short_hash(value: Any, length: int = 8) -> str:
    """A short hex digest of a value's canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def format_value(value: Any) -> str:
    """A matrix value as it appears in a key: scalars plainly, others by a short hash."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value if _PLAIN_VALUE.match(value) else json.dumps(value, ensure_ascii=False)
    return "~" + short_hash(value)


def make_key(job: str, values: Iterable[tuple[str, Any]]) -> str:
    """``job@axis=value,...``; just ``job`` for an instance without matrix values."""
    parts = [f"{name}={format_value(value)}" for name, value in values]
    return f"{job}@{','.join(parts)}" if parts else job


def folder_name(key: str) -> str:
    """A safe, bounded folder name for an instance (the part of its key after ``@``).

    Never empty, never ``.``/``..`` or hidden, no separators; when the safe form
    differs from the key, or is cut, a hash of the full key keeps it unique.
    """
    _, _, values = key.partition("@")
    if not values:
        return "default"
    if _FOLDER_AS_IS.fullmatch(values):
        return values  # the common case, decided in one match: what follows keeps it as is
    safe = _UNSAFE_FOLDER_CHARS.sub("_", values).strip("._") or "x"
    if safe != values or len(safe) > FOLDER_MAX or safe.lower() != safe:
        safe = f"{safe[:FOLDER_MAX].rstrip('._') or 'x'}-{short_hash(key)}"
    return safe


def derive_seed(key: str) -> int:
    """A deterministic seed in the API's range, from the instance key alone."""
    digest = hashlib.sha256(b"imgspec-seed\0" + key.encode()).digest()
    return int.from_bytes(digest[:4], "big") & MAX_SEED


def fingerprint(request: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of a rendered request (images by content)."""
    return "sha256:" + hashlib.sha256(canonical_json(request).encode()).hexdigest()
