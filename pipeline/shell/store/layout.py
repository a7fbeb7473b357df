"""The layout of an output root, the same in a folder and in an object store.

``<job>/<instance folder>/<i>.<ext>``, ``meta.json`` beside an instance's images,
``index.json`` at the top: the names, and the text of the two JSON files, are made
here once, so a folder and a bucket written by the same run hold the same bytes.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.core.apimart.prices import json_number
from pipeline.core.expansion.identity import folder_name
from pipeline.core.expansion.instances import Expansion, Instance
from pipeline.core.lock.lockfile import LockEntry, Output
from pipeline.errors import ImgspecError

EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp"}
_SAFE_PART = re.compile(r"^[A-Za-z0-9._=,+-]{1,120}$")
# One encoder for every meta.json value: ``json.dumps`` with options builds a new one
# for each call.
_META_VALUE = json.JSONEncoder(sort_keys=True, ensure_ascii=False)

# The images of a lock entry as ``index.json`` lists them (relative to the root).
ImageNames = Callable[[LockEntry | None], list[str]]


def utc_now() -> str:
    """The current time as ISO 8601 UTC, second precision (for lockfile and meta)."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    """An output that does not match the lockfile."""

    key: str
    path: str
    problem: Literal["missing", "changed"]


def instance_folder(job: str, key: str, *, root: str) -> str:
    """``<job>/<folder of key>``, refused unless both are plain names.

    Checked on the names, not by resolving a path (that costs a system call per
    component, per image): job ids are schema-checked slugs and instance folders
    are sanitised, so neither can hold a separator or be ``.``/``..``.
    """
    folder = folder_name(key)
    for part in (job, folder):
        if not _SAFE_PART.match(part) or part in (".", ".."):
            raise ImgspecError(f"refusing to write outside {root}: {part!r}")
    return f"{job}/{folder}"


def image_name(index: int, fmt: str) -> str:
    """``<i>.<ext>`` for an image of format ``fmt`` (Pillow's name)."""
    return f"{index}.{EXTENSIONS.get(fmt.upper(), 'img')}"


def meta_text(inst: Instance, entry: LockEntry, manifest: str, files: Sequence[str]) -> str:
    """The text of ``meta.json``: ``files`` are the file names of the entry's outputs."""
    meta = {
        "key": inst.key,
        "job": inst.job,
        "matrix": dict(inst.matrix),
        "manifest": manifest,
        "model": inst.model,
        "request": dict(entry.request),
        "seed": entry.seed,
        "task_id": entry.task_id,
        "cost": json_number(entry.cost),
        "fingerprint": entry.fingerprint,
        "created_at": entry.created_at,
        "finished_at": entry.updated_at,
        "images": [_image_json(o, name) for o, name in zip(entry.outputs, files, strict=True)],
    }
    # A field a line, each value compact: readable, and written by the C encoder
    # (``indent`` would force the pure-Python one, once per image at thousands a minute).
    text = ",\n".join(f"  {json.dumps(name)}: {_META_VALUE.encode(meta[name])}"
                      for name in sorted(meta))
    return "{\n" + text + "\n}\n"


def _image_json(output: Output, name: str) -> dict[str, Any]:
    # The link and its expiry make a kept folder's result fetchable for nothing once its
    # file is gone or replaced (``reuse.result_of_meta``); ``null`` when none is known.
    return {"file": name, "sha256": output.sha256, "bytes": output.bytes,
            "width": output.width, "height": output.height, "url": output.url,
            "expires_at": output.expires_at}


def index_head(expansion: Expansion, manifest: str) -> dict[str, Any]:
    """The fields of ``index.json`` before its instances."""
    return {"manifest": manifest, "name": expansion.manifest.name, "generated_at": utc_now()}


def index_instances(expansion: Expansion, entries: Mapping[str, LockEntry],
                    images: ImageNames) -> list[dict[str, Any]]:
    """The ``instances`` of ``index.json`` for these lock entries."""
    instances = []
    for inst in expansion.instances:
        entry = entries.get(inst.key)
        instances.append({
            "key": inst.key,
            "job": inst.job,
            "matrix": dict(inst.matrix),
            "model": inst.model,
            "status": entry.status if entry else "pending",
            "folder": f"{inst.job}/{folder_name(inst.key)}",
            "images": images(entry),
            "error": entry.last_error if entry and entry.status == "failed" else None,
        })
    # Entries of instances the manifest no longer has keep their files until
    # ``imgspec prune``: the index lists them too, so every file in the folder is
    # accounted for.
    known = {inst.key for inst in expansion.instances}
    for key, entry in sorted(entries.items()):
        if key not in known and entry.status == "done":
            instances.append({"key": key, "job": entry.job, "matrix": dict(entry.matrix),
                              "model": entry.request.get("model"), "status": "orphaned",
                              "folder": f"{entry.job}/{folder_name(key)}",
                              "images": images(entry), "error": None})
    return instances


def index_problem(text: str | None, entries: Mapping[str, LockEntry], images: ImageNames,
                  name: str) -> VerifyProblem | None:
    """Whether the text of ``index.json`` (None: there is none) says what the lockfile
    says of each done entry."""
    if text is None:
        return VerifyProblem("index.json", name, "missing")
    try:
        index = json.loads(text)
    except json.JSONDecodeError:
        return VerifyProblem("index.json", name, "changed")
    listed = index.get("instances") if isinstance(index, dict) else None
    if not isinstance(listed, list):
        return VerifyProblem("index.json", name, "changed")
    by_key = {i.get("key"): i for i in listed if isinstance(i, dict)}
    for key, entry in entries.items():
        if entry.status != "done":
            continue
        got = by_key.get(key)
        if got is None or got.get("status") not in ("done", "orphaned") or got.get(
                "images") != images(entry):
            return VerifyProblem("index.json", name, "changed")
    return None


def index_chunks(head: Mapping[str, Any], instances: list[dict[str, Any]]) -> Iterator[str]:
    """``index.json`` in pieces: the head's fields a line each, then an instance a line.

    An instance a line (compact, by the C encoder: at 30,000 instances ``indent``
    took seconds at the end of every run), easy to grep and to diff.
    """
    yield "{\n"
    for name, value in head.items():
        yield f"  {json.dumps(name)}: {json.dumps(value, ensure_ascii=False)},\n"
    if not instances:
        yield '  "instances": []\n}\n'
        return
    separator = '  "instances": [\n    '
    for item in instances:
        yield separator
        yield json.dumps(item, ensure_ascii=False)
        separator = ",\n    "
    yield "\n  ]\n}\n"
