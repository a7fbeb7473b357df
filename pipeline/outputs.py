"""The output folder: ``<root>/<job>/<instance folder>/<i>.<ext>``, ``meta.json``, ``index.json``.

Every path is built from validated job ids and sanitised instance folders and is
checked to stay inside the root. Images arrive as temp files in their final
folder and are renamed into place, so an existing image is replaced, never
deleted first.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ImgspecError
from pipeline.expand import Expansion, Instance
from pipeline.identity import folder_name
from pipeline.lockfile import LockEntry, Output, json_number, write_atomic

EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp"}
_SAFE_PART = re.compile(r"^[A-Za-z0-9._=,+-]{1,120}$")


def utc_now() -> str:
    """The current time as ISO 8601 UTC, second precision (for lockfile and meta)."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class OutputFolder:
    """The root of one manifest's outputs and the lockfile folder its paths are relative to."""

    root: Path
    base: Path  # the lockfile's folder

    def instance_dir(self, job: str, key: str) -> Path:
        """``<root>/<job>/<folder of key>``, guaranteed inside the root.

        Checked on the names, not by resolving the path (that costs a system call per
        component, per image): job ids are schema-checked slugs and instance folders
        are sanitised, so neither can hold a separator or be ``.``/``..``.
        """
        folder = folder_name(key)
        for part in (job, folder):
            if not _SAFE_PART.match(part) or part in (".", ".."):
                raise ImgspecError(f"refusing to write outside {self.root}: {part!r}")
        return self.root / job / folder

    def temp_path(self, job: str, key: str, index: int) -> Path:
        """A fresh temp file name beside the final image (same filesystem, so rename is atomic).

        Only a name: the download creates the folder along with the file.
        """
        return self.instance_dir(job, key) / f".{index}.{secrets.token_hex(4)}.part"

    def install(self, temp: Path, job: str, key: str, index: int, fmt: str,
                previous: str | None = None) -> Path:
        """Rename a verified temp file to ``<i>.<ext>``; the old image stays until replaced.

        ``previous`` is the lockfile path of the image this slot held before, removed
        only when it had another name (another format).
        """
        final = self.instance_dir(job, key) / f"{index}.{EXTENSIONS.get(fmt.upper(), 'img')}"
        temp.replace(final)
        if previous is not None:
            old = os.path.normpath(self.absolute(previous))
            if old != os.path.normpath(final):  # lockfile paths hold "..": compare normalised
                Path(old).unlink(missing_ok=True)
        return final

    def relative(self, path: Path) -> str:
        """A path as the lockfile stores it: relative to the lockfile's folder, POSIX style."""
        return Path(os.path.relpath(path, self.base)).as_posix()

    def absolute(self, stored: str) -> Path:
        """The file a lockfile output path names."""
        return self.base / stored

    def remove_images(self, stored: Iterable[str]) -> None:
        """Delete images the lockfile no longer lists (left by an earlier, larger ``n``)."""
        for path in stored:
            self.absolute(path).unlink(missing_ok=True)

    def clean_temp_files(self) -> None:
        """Remove ``.part`` files left by an interrupted download."""
        if self.root.is_dir():
            for path in self.root.glob("*/*/.*.part"):  # images and meta.json alike
                path.unlink(missing_ok=True)

    def write_meta(self, inst: Instance, entry: LockEntry, manifest: str) -> None:
        """``meta.json`` beside an instance's images."""
        folder = self.instance_dir(inst.job, inst.key)
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
            "images": [_image_json(o, self.absolute(o.path).name) for o in entry.outputs],
        }
        # Not fsynced, and a fixed temp name (one writer per instance): meta.json is a
        # readable copy of what the lockfile already holds durably.
        temp = folder / ".meta.json.part"
        temp.write_text(json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        temp.replace(folder / "meta.json")

    def write_index(self, expansion: Expansion, entries: Mapping[str, LockEntry],
                    manifest: str) -> Path:
        """``index.json``: every instance of the manifest with its status and images."""
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
                "images": [
                    Path(os.path.relpath(self.absolute(o.path), self.root)).as_posix()
                    for o in (entry.outputs if entry and entry.status == "done" else ())
                ],
                "error": entry.last_error if entry and entry.status == "failed" else None,
            })
        index = {"manifest": manifest, "name": expansion.manifest.name,
                 "generated_at": utc_now(), "instances": instances}
        path = self.root / "index.json"
        write_atomic(path, json.dumps(index, indent=2, ensure_ascii=False) + "\n")
        return path


def _image_json(output: Output, name: str) -> dict[str, Any]:
    return {"file": name, "sha256": output.sha256, "bytes": output.bytes,
            "width": output.width, "height": output.height}


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    """An output that does not match the lockfile."""

    key: str
    path: str
    problem: str  # "missing" | "changed"


def verify_outputs(entries: Iterable[LockEntry], folder: OutputFolder) -> list[VerifyProblem]:
    """Re-hash every recorded output of done entries; list the missing and the changed."""
    problems = []
    for entry in entries:
        if entry.status != "done":
            continue
        for output in entry.outputs:
            path = folder.absolute(output.path)
            try:
                digest = _sha256_file(path)
            except FileNotFoundError:
                problems.append(VerifyProblem(entry.key, output.path, "missing"))
                continue
            if digest != output.sha256:
                problems.append(VerifyProblem(entry.key, output.path, "changed"))
    return problems


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
