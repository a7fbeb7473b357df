"""The lockfile: what imgspec knows has been requested, paid for and downloaded.

One JSON file beside the manifest (``shop.yaml`` → ``shop.lock.json``), written
only by imgspec, meant for git: a format version, then one entry per instance
key, keys sorted, two-space indent, so a diff shows exactly what changed.
``parse_lockfile``/``dump_lockfile`` are pure; ``read_lockfile`` and
``write_lockfile`` (atomic: temp file, fsync, rename) are the I/O around them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import LockfileError

FORMAT_VERSION = 1
EntryStatus = Literal["submitting", "running", "done", "failed"]
ENTRY_STATUSES: tuple[EntryStatus, ...] = ("submitting", "running", "done", "failed")


@dataclass(frozen=True, slots=True)
class Output:
    """One downloaded image: where it is (relative to the lockfile) and what it is."""

    path: str
    sha256: str
    bytes: int
    width: int
    height: int
    url: str | None = None
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class LockEntry:
    """The recorded state of one instance."""

    key: str
    job: str
    fingerprint: str
    status: EntryStatus
    request: Mapping[str, Any] = field(default_factory=dict)
    matrix: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    idempotency_key: str | None = None
    task_id: str | None = None
    attempts: int = 0
    last_error: str | None = None
    cost: Decimal = Decimal(0)
    created_at: str | None = None
    updated_at: str | None = None
    outputs: tuple[Output, ...] = ()
    # How many times a reviewer had the instance re-rolled: its seed is derived from this
    # (``reroll.rerolled``), so the next plan reproduces the request that made the images.
    reroll: int = 0

    def to_json(self) -> dict[str, Any]:
        """The entry as it is stored (the key is the mapping key around it)."""
        # ``reroll`` only when set, so lockfiles of instances never re-rolled do not change.
        return ({"reroll": self.reroll} if self.reroll else {}) | {
            "job": self.job,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "request": dict(self.request),
            "matrix": dict(self.matrix),
            "seed": self.seed,
            "idempotency_key": self.idempotency_key,
            "task_id": self.task_id,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "cost": json_number(self.cost),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "outputs": [
                {k: v for k, v in (
                    ("path", o.path), ("sha256", o.sha256), ("bytes", o.bytes),
                    ("width", o.width), ("height", o.height), ("url", o.url),
                    ("expires_at", o.expires_at)) if v is not None}
                for o in self.outputs
            ],
        }


@dataclass(frozen=True)
class Lockfile:
    """All entries of one manifest's lockfile."""

    manifest: str
    entries: Mapping[str, LockEntry] = field(default_factory=dict)

    def with_entry(self, entry: LockEntry) -> Lockfile:
        """A copy with ``entry`` added or replaced."""
        return replace(self, entries={**self.entries, entry.key: entry})

    def without(self, keys: set[str]) -> Lockfile:
        """A copy without the given keys."""
        return replace(self, entries={k: v for k, v in self.entries.items() if k not in keys})


def lockfile_path(manifest_path: Path, *, simulate: bool = False) -> Path:
    """``shop.yaml`` → ``shop.lock.json`` (``shop.simulate.lock.json`` for ``--simulate``)."""
    stem = manifest_path.name
    for suffix in (".yaml", ".yml", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return manifest_path.with_name(f"{stem}{'.simulate' if simulate else ''}.lock.json")


def dump_lockfile(lock: Lockfile) -> str:
    """Stable text: sorted keys, two-space indent, trailing newline."""
    data = {
        "version": FORMAT_VERSION,
        "generator": "imgspec",
        "manifest": lock.manifest,
        "entries": {k: lock.entries[k].to_json() for k in sorted(lock.entries)},
    }
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def parse_lockfile(text: str, *, source: str = "lockfile") -> Lockfile:
    """Parse lockfile text; ``LockfileError`` says what is wrong and what to do."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockfileError(
            f"{source}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}); restore it from "
            "git, or delete it to start afresh (recorded work would be redone)"
        ) from exc
    if not isinstance(data, dict):
        raise LockfileError(f"{source}: not an imgspec lockfile (expected a JSON object)")
    version = data.get("version")
    if version != FORMAT_VERSION:
        raise LockfileError(f"{source}: lockfile version {version!r} is not supported "
                            f"(this imgspec reads version {FORMAT_VERSION}); upgrade imgspec")
    raw_entries = data.get("entries")
    if not isinstance(raw_entries, dict):
        raise LockfileError(f"{source}: 'entries' must be an object")
    entries = {}
    for key, raw in raw_entries.items():
        try:
            entries[key] = entry_from_json(key, raw)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise LockfileError(f"{source}: entry {key!r} is malformed ({exc!r}); restore "
                                "the lockfile from git or remove that entry") from exc
    return Lockfile(manifest=str(data.get("manifest", "")), entries=entries)


def entry_from_json(key: str, raw: Mapping[str, Any]) -> LockEntry:
    """A ``LockEntry`` from its stored JSON (``KeyError``/``TypeError``/``ValueError`` if bad)."""
    if not isinstance(raw, dict):
        raise TypeError("entry is not an object")
    status = raw["status"]
    if status not in ENTRY_STATUSES:
        raise ValueError(f"unknown status {status!r}")
    outputs = tuple(
        Output(
            path=str(o["path"]), sha256=str(o["sha256"]), bytes=int(o["bytes"]),
            width=int(o["width"]), height=int(o["height"]), url=o.get("url"),
            expires_at=None if o.get("expires_at") is None else int(o["expires_at"]),
        )
        for o in raw.get("outputs", [])
    )
    seed = raw.get("seed")
    return LockEntry(
        key=key,
        job=str(raw["job"]),
        fingerprint=str(raw["fingerprint"]),
        status=status,
        request=raw.get("request") or {},
        matrix=raw.get("matrix") or {},
        seed=None if seed is None else int(seed),
        idempotency_key=raw.get("idempotency_key"),
        task_id=raw.get("task_id"),
        attempts=int(raw.get("attempts", 0)),
        last_error=raw.get("last_error"),
        cost=Decimal(str(raw.get("cost", 0))),
        created_at=raw.get("created_at"),
        updated_at=raw.get("updated_at"),
        outputs=outputs,
        reroll=_count(raw.get("reroll", 0)),
    )


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"reroll must be a whole number of at least 0, not {value!r}")
    return value


def read_lockfile(path: Path, *, manifest: str = "") -> Lockfile:
    """The lockfile at ``path``, or an empty one if there is none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Lockfile(manifest=manifest)
    except (OSError, UnicodeDecodeError) as exc:
        raise LockfileError(f"{path}: cannot be read ({exc})") from exc
    return parse_lockfile(text, source=str(path))


def write_atomic(path: Path, text: str, *, durable: bool = True) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never half.

    ``durable`` also fsyncs the file and its folder, so the new text survives a power
    cut; files that can be rebuilt from the lockfile skip that cost.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        Path(tmp).replace(path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_lockfile(path: Path, lock: Lockfile) -> None:
    """Atomically write the lockfile; ``LockfileError`` if the disk refuses."""
    try:
        write_atomic(path, dump_lockfile(lock))
    except OSError as exc:
        raise LockfileError(f"{path}: cannot be written ({exc.strerror}); "
                            "check the folder's permissions and free space") from exc


def fsync_dir(folder: Path) -> None:
    """Make a created, renamed or removed directory entry durable (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def json_number(value: Decimal) -> float | int:
    """Money as a JSON number with no binary noise (0.7, not 0.7000000000000001)."""
    number = float(value)
    return int(number) if number == int(number) else number
