"""Identity of an instance: its readable key, its folder name, its fingerprint and seed.

- key: ``job@axis=value,...`` in axis order; stable when other jobs or rows change.
- folder: a filesystem-safe, bounded form of the key's values.
- fingerprint: sha256 of the canonical JSON of the fully rendered request.
- seed: derived from the instance's matrix values, not from the job's name: renaming a
  job or moving it to another manifest keeps every request, so its paid results stay
  found.
- content key: the fingerprint of the request with every image input named by its
  content alone, the key under which the project's paid results are found
  (``pipeline.core.lock.reuse``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.core.apimart.rules import MAX_SEED

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
    """A deterministic seed in the API's range, from a text (a seed basis, or a re-roll's)."""
    digest = hashlib.sha256(b"imgspec-seed\0" + key.encode()).digest()
    return int.from_bytes(digest[:4], "big") & MAX_SEED


def seed_basis(key: str) -> str:
    """What a derived seed is made from: the instance's matrix values, as its key
    writes them (the part after ``@``, in axis order), without the job's name.

    Not the job's name, nor the manifest's: renaming a job or moving it keeps its
    seeds, so its requests, so its paid results. Not the prompt either: editing a
    prompt changes only the prompt (a diff shows exactly the edit). Keys are unique
    within a job, so its instances' bases are too, whatever values differ, including
    those the request does not show (``variant: [1, 2, 3]`` asks for variations of
    one prompt) and those inherited from an upstream instance.
    """
    return "seed/2\0" + key.partition("@")[2]


def basis_seed(key: str) -> int:
    """The derived seed of the instance ``key``: ``derive_seed`` of its ``seed_basis``."""
    # seed_basis spelt out: once per instance, 100,000s of times.
    digest = hashlib.sha256(b"imgspec-seed\0seed/2\0" + key.partition("@")[2].encode()).digest()
    return int.from_bytes(digest[:4], "big") & MAX_SEED


UPSTREAM_PREFIX = "upstream:"


def content_request(request: Mapping[str, Any]) -> Mapping[str, Any]:
    """The request with each image input named by its content hash alone.

    A local file is ``file:PATH#sha256=H``, an upstream image
    ``upstream:KEY#I@sha256=H``: the path and the key are where the image came from,
    not what it is, so a job moved to another folder or fed by a renamed upstream job
    asks for the same thing. A request without such inputs is returned as it is.
    """
    urls = request.get("image_urls")
    if not urls:
        return request
    named = [_by_content(u) for u in urls]
    if named == list(urls):
        return request
    return {**request, "image_urls": named}


def _by_content(ref: Any) -> Any:
    if isinstance(ref, str) and (ref.startswith(("file:", UPSTREAM_PREFIX, "data:"))):
        _, marker, digest = ref.rpartition("sha256=")
        if marker and len(digest) == 64:
            return "sha256:" + digest
    return ref


def content_key(request: Mapping[str, Any], fp: str | None = None) -> str:
    """The key of a resolved request in the project's index of paid results.

    ``fp``, the request's fingerprint when the caller has it, is the key itself for
    a request without local or upstream images (no second hash of the same text).
    """
    named = content_request(request)
    if named is request and fp is not None:
        return fp
    return fingerprint(named)


def fingerprint(request: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of a rendered request (images by content)."""
    return "sha256:" + hashlib.sha256(canonical_json(request).encode()).hexdigest()
