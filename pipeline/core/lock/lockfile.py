"""The lockfile: what imgspec knows has been requested, paid for and downloaded.

One JSON file beside the manifest (``shop.yaml`` → ``shop.lock.json``), written
only by imgspec, meant for git: a format version, then one entry per instance
key, keys sorted, two-space indent, so a diff shows exactly what changed.
This module holds the values and the codec only (``parse_lockfile`` is strict:
``schema`` checks every entry against the published schema); reading and writing
the file is ``pipeline.shell.store.lockstore``'s, and writing safely ``files``'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import lru_cache
from pathlib import PurePath
from typing import Any, Literal, TypeVar

from pipeline.core.apimart.prices import json_number
from pipeline.core.lock.schema import (
    DefectError,
    JsonProblem,
    describe_defect,
    entry_defect,
    line_col,
    load_json,
    lockfile_defect,
    restore_advice,
    show,
    unrepresentable,
)
from pipeline.errors import LockfileError

FORMAT_VERSION = 1
# A path as the caller holds it (a Path stays a Path): the core only computes names.
AnyPath = TypeVar("AnyPath", bound=PurePath)
EntryStatus = Literal["submitting", "running", "done", "failed"]
ENTRY_STATUSES: tuple[EntryStatus, ...] = ("submitting", "running", "done", "failed")
Failure = Literal["results", "task-failed", "task-gone", "refused"]
"""Why a ``failed`` entry's attempt failed, which decides what the next run does.

``results``: the task completed and was paid, but its results could not be fetched
(result links imgspec will not use, downloads that kept failing): the next run polls
the same task again for fresh links, free. The others pay a new attempt:
``task-failed`` (the API failed or cancelled the task, and refunded it), ``task-gone``
(the API no longer knows the task: 404 on it), ``refused`` (the submission was
refused or never sent: no task exists).
"""


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
    cost: Decimal = Decimal(0)  # charged for the current attempt
    charged: Decimal = Decimal(0)  # charged over all attempts, net of refunds
    created_at: str | None = None
    updated_at: str | None = None
    outputs: tuple[Output, ...] = ()
    # How many times a reviewer had the instance re-rolled: its seed is derived from this
    # (``reroll.rerolled``), so the next plan reproduces the request that made the images.
    reroll: int = 0
    # Why the last attempt failed (``failed`` entries only; None in lockfiles written
    # before it was recorded, which retry as a new, paid attempt).
    failure: Failure | None = None
    # Where the current task was paid when it was not paid here: the API answered the
    # submission as a replay of one made before, or another lockfile records the task.
    # The attempt is then recorded as charged 0, so no figure counts the money twice.
    paid_by: str | None = None
    # The paid result this entry's images were taken from (``pipeline.operations.adopt``), if any.
    reused_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as it is stored (the key is the mapping key around it)."""
        # ``reroll``, ``failure`` and ``paid_by`` only when set, so lockfiles that never
        # needed them do not change.
        return ({"reroll": self.reroll} if self.reroll else {}) | (
            {"failure": self.failure} if self.failure is not None else {}) | (
            {"paid_by": self.paid_by} if self.paid_by is not None else {}) | {
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
            "charged": json_number(self.charged),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "outputs": [
                {k: v for k, v in (
                    ("path", o.path), ("sha256", o.sha256), ("bytes", o.bytes),
                    ("width", o.width), ("height", o.height), ("url", o.url),
                    ("expires_at", o.expires_at)) if v is not None}
                for o in self.outputs
            ],
        } | ({"reused_from": self.reused_from} if self.reused_from is not None else {})


@dataclass(frozen=True, slots=True)
class Upload:
    """A local input image uploaded to the API: the URL to send and when it expires."""

    url: str
    expires_at: int  # Unix seconds

    def to_json(self) -> dict[str, Any]:
        """As stored under ``uploads`` (the sha256 is the mapping key around it)."""
        return {"url": self.url, "expires_at": self.expires_at}


def merge_uploads(*sides: Mapping[str, Upload]) -> dict[str, Upload]:
    """Uploads of several lockfiles in one: per image, the URL that lasts longest.

    Any of them would do (uploads are free and interchangeable); the longest-lived
    one is reused longest.
    """
    merged: dict[str, Upload] = {}
    for side in sides:
        for sha, upload in side.items():
            held = merged.get(sha)
            if held is None or upload.expires_at > held.expires_at:
                merged[sha] = upload
    return merged


@dataclass(frozen=True, slots=True)
class Retired:
    """The money of an entry that is gone (pruned): spend is history, and stays counted.

    The account paid for it whatever happens to the entry, so the manifest's "charged
    so far" keeps it; the task id and key say which payment it was, so the same one
    merged in from two sides is counted once.
    """

    key: str
    job: str
    charged: Decimal
    task_id: str | None = None
    idempotency_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As stored in the lockfile's ``retired`` list."""
        return {"key": self.key, "job": self.job, "charged": json_number(self.charged),
                "task_id": self.task_id, "idempotency_key": self.idempotency_key}

    @classmethod
    def of(cls, entry: LockEntry) -> Retired:
        """The record of ``entry``'s spend."""
        return cls(entry.key, entry.job, entry.charged, entry.task_id, entry.idempotency_key)


def retire(records: tuple[Retired, ...], *entries: LockEntry) -> tuple[Retired, ...]:
    """``records`` with the spend of ``entries`` added (those that cost something),
    each payment once, sorted."""
    return merge_retired(records, tuple(Retired.of(e) for e in entries if e.charged > 0))


def merge_retired(*sides: tuple[Retired, ...]) -> tuple[Retired, ...]:
    """The retired records of several lockfiles: their union (a record in two is one)."""
    return tuple(sorted({r for side in sides for r in side},
                        key=lambda r: (r.key, r.task_id or "", r.idempotency_key or "",
                                       r.charged)))


@dataclass(frozen=True)
class Lockfile:
    """All entries of one manifest's lockfile, its uploaded input images, and the spend of
    entries since removed."""

    manifest: str
    entries: Mapping[str, LockEntry] = field(default_factory=dict)
    uploads: Mapping[str, Upload] = field(default_factory=dict)  # by the image's sha256
    retired: tuple[Retired, ...] = ()

    @property
    def charged(self) -> Decimal:
        """What the account paid for this lockfile's work so far: every entry's charges and
        those of entries removed since (never lowered by ``prune``, ``lock mv`` or a merge)."""
        return (sum((e.charged for e in self.entries.values()), Decimal(0))
                + sum((r.charged for r in self.retired), Decimal(0)))

    def with_entry(self, entry: LockEntry) -> Lockfile:
        """A copy with ``entry`` added or replaced."""
        return replace(self, entries={**self.entries, entry.key: entry})

    def without(self, keys: set[str]) -> Lockfile:
        """A copy without the given keys."""
        return replace(self, entries={k: v for k, v in self.entries.items() if k not in keys})


def lockfile_path(manifest_path: AnyPath, *, simulate: bool = False) -> AnyPath:
    """``shop.yaml`` → ``shop.lock.json`` (``shop.simulate.lock.json`` for ``--simulate``)."""
    stem = manifest_path.name
    for suffix in (".yaml", ".yml", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return manifest_path.with_name(f"{stem}{'.simulate' if simulate else ''}.lock.json")


class EntryTexts:
    """Each entry's text in the lockfile, kept while the entry is unchanged.

    A run rewrites its lockfile every few seconds (the journal's checkpoint); at
    30,000 entries, encoding every entry again each time (the pure-Python encoder:
    ``indent`` rules out the C one) held the interpreter for most of a second. Entries
    are frozen values, so an entry that is the very same object has the same text.
    """

    def __init__(self) -> None:
        self._texts: dict[str, tuple[LockEntry, str]] = {}

    def chunks(self, entries: Mapping[str, LockEntry]) -> Iterator[str]:
        """``entries`` as the lockfile's ``"entries"`` value, at its depth (sorted keys),
        in pieces."""
        if not entries:
            yield "{}"
            return
        texts: dict[str, tuple[LockEntry, str]] = {}
        separator = "{\n"
        for key in sorted(entries):
            entry = entries[key]
            known = self._texts.get(key)
            if known is None or known[0] is not entry:
                # Two levels deep: every line of the entry's own text moves 4 spaces in
                # (JSON strings hold no raw newline, so each "\n" is a line break).
                text = json.dumps(entry.to_json(), indent=2, sort_keys=True,
                                  ensure_ascii=False).replace("\n", "\n    ")
                known = (entry, f"    {json.dumps(key, ensure_ascii=False)}: {text}")
            texts[key] = known
            yield separator
            yield known[1]
            separator = ",\n"
        self._texts = texts  # only what is still there: pruned entries are let go
        yield "\n  }"


def lockfile_chunks(lock: Lockfile, *, texts: EntryTexts | None = None) -> Iterator[str]:
    """The lockfile's text in pieces: a 30,000-entry lockfile is written, never held whole.

    Joined, exactly ``json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)``
    and a newline; ``texts`` keeps the entries' texts for the next write of the same store.
    """
    yield '{\n  "entries": '
    yield from (texts or EntryTexts()).chunks(lock.entries)
    yield ',\n  "generator": "imgspec",\n  "manifest": '
    yield json.dumps(lock.manifest, ensure_ascii=False)
    # Only when there are any, so lockfiles of manifests without local inputs do not change.
    if lock.uploads:
        uploads = {k: lock.uploads[k].to_json() for k in sorted(lock.uploads)}
        yield ',\n  "uploads": '
        yield json.dumps(uploads, indent=2, sort_keys=True, ensure_ascii=False).replace(
            "\n", "\n  ")
    # Only when there are any, so lockfiles that never lost a paid entry do not change.
    if lock.retired:
        yield ',\n  "retired": '
        yield json.dumps([r.to_json() for r in lock.retired], indent=2, sort_keys=True,
                         ensure_ascii=False).replace("\n", "\n  ")
    yield f',\n  "version": {FORMAT_VERSION}\n}}\n'


def dump_lockfile(lock: Lockfile, *, texts: EntryTexts | None = None) -> str:
    """Stable text: sorted keys, two-space indent, trailing newline (see lockfile_chunks)."""
    return "".join(lockfile_chunks(lock, texts=texts))


def parse_lockfile(text: str, *, source: str = "lockfile") -> Lockfile:
    """Parse lockfile text, strictly against its schema; ``LockfileError`` says what to do.

    A lockfile arrives through git (merges, pull requests), so every defect is
    refused with the file, the line, the entry and the field, never repaired or
    ignored: a silently accepted error here could pay for work twice.
    """
    try:
        data, suspicious = load_json(text)
    except JsonProblem as exc:
        where = source if exc.pos is None else f"{source}:{line_col(text, exc.pos)}"
        raise LockfileError(f"{where}: {exc.what}; {restore_advice(source)}") from exc
    if not isinstance(data, dict):
        raise LockfileError(f"{source}: not an imgspec lockfile (expected a JSON object); "
                            f"{restore_advice(source)}")
    version = data.get("version")
    if version != FORMAT_VERSION or type(version) is not int:
        raise LockfileError(f"{source}: lockfile version {show(version)} is not supported "
                            f"(this imgspec reads version {FORMAT_VERSION}); upgrade imgspec")
    # Values JSON cannot hold first: a message quoting them would be about the wrong thing.
    defect = unrepresentable(data) if suspicious else None
    if defect is None:
        defect = lockfile_defect(data)
    if defect is not None:
        raise LockfileError(describe_defect(defect, source=source, text=text))
    raw_entries: dict[str, Any] = data["entries"]
    raw_uploads: dict[str, Any] = data.get("uploads", {})
    return Lockfile(manifest=data.get("manifest", ""),
                    entries={key: _to_entry(key, raw) for key, raw in raw_entries.items()},
                    uploads={sha: Upload(url=raw["url"], expires_at=int(raw["expires_at"]))
                             for sha, raw in raw_uploads.items()},
                    retired=merge_retired(tuple(retired_from_json(raw)
                                                for raw in data.get("retired", ()))))


def retired_from_json(raw: Mapping[str, Any]) -> Retired:
    """A ``Retired`` record from its stored JSON (already checked against the schema)."""
    return Retired(key=raw["key"], job=raw["job"], charged=_decimal(raw["charged"]),
                   task_id=raw.get("task_id"), idempotency_key=raw.get("idempotency_key"))


def entry_from_json(key: str, raw: Any) -> LockEntry:
    """A ``LockEntry`` from its stored JSON, checked against the schema's entry.

    Raises ``DefectError`` (a ``ValueError``) naming the field when ``raw`` breaks
    the schema or holds a value JSON cannot carry (NaN, Infinity, a lone surrogate).
    """
    defect = unrepresentable(raw)
    if defect is None:
        defect = entry_defect(raw)
    if defect is not None:
        raise DefectError(defect)
    return _to_entry(key, raw)


def _to_entry(key: str, raw: Mapping[str, Any]) -> LockEntry:
    """Convert an entry already checked against the schema (no checks here)."""
    get = raw.get
    cost = _decimal(get("cost", 0))
    seed = get("seed")
    return LockEntry(
        key=key,
        job=raw["job"],
        fingerprint=raw["fingerprint"],
        status=raw["status"],
        request=get("request") or {},
        matrix=get("matrix") or {},
        seed=None if seed is None else int(seed),
        idempotency_key=get("idempotency_key"),
        task_id=get("task_id"),
        attempts=int(get("attempts", 0)),
        last_error=get("last_error"),
        cost=cost,
        # Lockfiles written before ``charged`` existed knew only the current attempt's cost.
        charged=_decimal(raw["charged"]) if "charged" in raw else cost,
        created_at=get("created_at"),
        updated_at=get("updated_at"),
        outputs=tuple(
            Output(path=o["path"], sha256=o["sha256"], bytes=int(o["bytes"]),
                   width=int(o["width"]), height=int(o["height"]), url=o.get("url"),
                   expires_at=None if o.get("expires_at") is None else int(o["expires_at"]))
            for o in get("outputs", ())
        ),
        reroll=int(get("reroll", 0)),
        failure=get("failure"),
        paid_by=get("paid_by"),
        reused_from=get("reused_from"),
    )


@lru_cache(maxsize=256)  # a lockfile holds a handful of distinct prices, 100,000s of times
def _decimal(value: float) -> Decimal:
    # repr of a float is the shortest text that reads back as it: 0.4, not 0.40000000000000002.
    return Decimal(value) if type(value) is int else Decimal(repr(value))


