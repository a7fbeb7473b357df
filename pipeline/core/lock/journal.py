"""The lockfile's journal, as text: its line format and how lines fold into a lockfile.

Pure (``pipeline.shell.store.lockstore`` appends the lines and reads them back).
During a run each change to an entry is appended to ``shop.lock.journal`` as one
JSON line and fsynced; the lockfile itself is rewritten atomically only now and
then (a *checkpoint*), because rewriting a large lockfile on every change would
be slow. A line is a full snapshot of one entry (or a deletion), so folding a
journal into a lockfile is idempotent: folding the same lines twice, or folding
lines the lockfile already contains, gives the same result. That is what makes
every crash point harmless, including one between writing the lockfile and
emptying the journal.
Line format (one per line, UTF-8)::

    {"v": 1, "key": "hero@size=1K", "entry": {...LockEntry.to_json()...}}
    {"v": 1, "key": "hero@size=1K", "delete": true}
    {"v": 1, "key": "hero@size=1K", "delete": true, "retired": {...Retired.to_json()...}}
    {"v": 1, "key": "hero@size=1K", "entry": {...}, "submission": {"task_id": "...",
     "request_id": "req_...", "replayed": true}}

    {"v": 1, "key": "<sha256 of an input image>", "upload": {"url": "...",
     "expires_at": 1763174708}}

A deletion may carry the ``retired`` record of the entry's spend (``prune``): removing
the entry and keeping its money in the lockfile's history are one line, so a crash
cannot do one without the other; folding it twice keeps one record.

An ``upload`` line records an uploaded input image (the lockfile's ``uploads``). It
is durable before any submission that sends its URL is recorded as ``submitting``,
so replaying that submission's Idempotency-Key sends the very same body.

``submission`` rides on the line that records a submitted task: the API's request
id and whether its reply was a replay of an earlier one (``Idempotency-Replayed``),
so a replayed submission is on record as not a second charge. Folding ignores it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pipeline.core.lock.lockfile import (
    LockEntry,
    Lockfile,
    Retired,
    Upload,
    entry_from_json,
    merge_retired,
    retired_from_json,
)
from pipeline.core.lock.schema import (
    DefectError,
    JsonProblem,
    describe_where,
    load_json,
    show,
    unrepresentable,
)
from pipeline.errors import LockfileError

JOURNAL_VERSION = 1


def journal_line(key: str, entry: LockEntry | None,
                 submission: Mapping[str, Any] | None = None, *,
                 retired: Retired | None = None) -> str:
    """One journal line (with its newline): ``entry``'s snapshot, or a deletion if ``None``.

    ``submission``: what the API said of the submission ``entry`` records (see above);
    ``retired``: the spend a deletion keeps in the lockfile's history.
    """
    record: dict[str, Any] = {"v": JOURNAL_VERSION, "key": key}
    if entry is None:
        record["delete"] = True
        if retired is not None:
            record["retired"] = retired.to_json()
    else:
        record["entry"] = entry.to_json()
        if submission is not None:
            record["submission"] = dict(submission)
    # No indent: json.dumps escapes newlines inside strings, so a record is exactly one line.
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"


def upload_line(sha256: str, upload: Upload) -> str:
    """One journal line recording an uploaded input image (see the module docstring)."""
    record = {"v": JOURNAL_VERSION, "key": sha256, "upload": upload.to_json()}
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"


class _Unreadable(ValueError):
    """A line that is not a complete JSON text: what a torn append leaves."""


_RECORD_FIELDS = frozenset({"v", "key", "entry", "delete", "submission", "upload",
                            "retired"})


def _parse_upload(data: dict[str, Any]) -> Upload:
    """The ``upload`` of a line that holds nothing else; ``ValueError`` says why not."""
    if "entry" in data or "delete" in data:
        raise ValueError("an 'upload' line holds nothing else")
    raw = data["upload"]
    if type(raw) is not dict or set(raw) != {"url", "expires_at"}:
        raise ValueError("'upload' must be an object of url and expires_at")
    url, expires = raw["url"], raw["expires_at"]
    if type(url) is not str or not url or type(expires) is not int or expires < 0:
        raise ValueError("'upload' needs a url and an expires_at (Unix seconds)")
    return Upload(url=url, expires_at=expires)


def _parse_retired(raw: Any) -> Retired:
    """The ``retired`` record of a deletion line; ``ValueError`` says why it is not one."""
    from pipeline.core.lock.schema import retired_defect

    if type(raw) is not dict:
        raise ValueError("'retired' is not an object")
    defect = unrepresentable(raw) or retired_defect(raw)
    if defect is not None:
        where = describe_where(defect.where)
        raise ValueError(f"'retired': {where + ': ' if where else ''}{defect.what}")
    return retired_from_json(raw)


def _parse_line(line: str) -> tuple[str, LockEntry | Upload | Retired | None]:
    """The key and entry (``None``: a deletion) of one line; ``ValueError`` says why not.

    ``_Unreadable`` (a ``ValueError``) when the line is not even JSON, the only damage
    a crash can do; any other ``ValueError`` means the line was written whole but is
    wrong, which no crash explains.
    """
    try:
        # Text read with surrogateescape carries undecodable bytes as lone surrogates;
        # json.loads would accept them, so refuse them here.
        line.encode("utf-8")
        data, suspicious = load_json(line)
    except (UnicodeEncodeError, JsonProblem) as exc:
        raise _Unreadable("not valid JSON") from exc
    if type(data) is not dict:
        raise ValueError("not a JSON object")
    version = data.get("v")
    if type(version) is not int or version != JOURNAL_VERSION:
        raise ValueError(f"unknown journal version {show(version)}")
    key = data.get("key")
    if type(key) is not str or not key:
        raise ValueError("no entry key")
    if suspicious and (defect := unrepresentable(key)) is not None:
        raise ValueError(f"the key {defect.what}")
    unknown = sorted(set(data) - _RECORD_FIELDS)
    if unknown:
        raise ValueError(f"unexpected field {show(unknown[0])}")
    if "upload" in data:
        return key, _parse_upload(data)
    if data.get("delete") is True and "entry" not in data:
        return key, _parse_retired(data["retired"]) if "retired" in data else None
    if "entry" not in data or "delete" in data:
        raise ValueError("expected exactly one of 'entry' or 'delete': true")
    if "submission" in data and type(data["submission"]) is not dict:
        raise ValueError("'submission' is not an object")
    try:
        return key, entry_from_json(key, data["entry"])
    except DefectError as exc:
        where = describe_where(exc.defect.where)
        raise ValueError(f"entry {show(key, limit=100)}: {where + ': ' if where else ''}"
                         f"{exc.defect.what}") from exc


def fold_journal(lock: Lockfile, text: str, *, source: str) -> Lockfile:
    """``lock`` with the journal ``text`` applied line by line (pure; the last write wins).

    A final line that is unterminated or not JSON is what a crash in the middle of
    an append leaves behind: its ``commit()`` never returned, so it is dropped.
    Anything else wrong (an unreadable line before the last, or a whole JSON line
    with a bad record or entry, wherever it is) means the file was damaged:
    ``LockfileError`` names the line, the entry and the field, and what to do.
    """
    lines = text.split("\n")
    # Every complete record ends with "\n", so the piece after the last "\n" is either
    # empty or a torn append; either way it was never acknowledged.
    lines.pop()
    last = max((n for n, line in enumerate(lines, start=1) if line.strip()), default=0)
    entries = dict(lock.entries)
    uploads = dict(lock.uploads)
    retired: list[Retired] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            key, entry = _parse_line(line)
        except ValueError as exc:
            if number == last and isinstance(exc, _Unreadable):
                break
            raise LockfileError(
                f"{source}:{number}: journal line is damaged ({exc}); the journal holds the "
                "work recorded since the lockfile was last saved. Repair or delete that line "
                "(or move the journal aside) and run again; work recorded only there may be "
                "redone and paid again"
            ) from exc
        if isinstance(entry, Upload):
            uploads[key] = entry
        elif isinstance(entry, Retired):
            entries.pop(key, None)
            retired.append(entry)
        elif entry is None:
            entries.pop(key, None)
        else:
            entries[key] = entry
    if not retired:
        return replace(lock, entries=entries, uploads=uploads)
    return replace(lock, entries=entries, uploads=uploads,
                   retired=merge_retired(lock.retired, tuple(retired)))


@dataclass(frozen=True, slots=True)
class Recovery:
    """What folding a journal left by an interrupted run or prune changed in the lockfile."""

    deleted: tuple[str, ...] = ()  # keys the journal removed (only prune removes)
    updated: tuple[str, ...] = ()  # keys the journal added or changed (runs record these)

    @staticmethod
    def between(before: Lockfile, after: Lockfile) -> Recovery:
        """The keys ``fold_journal`` removed from, and changed in, ``before``."""
        old, new = before.entries, after.entries
        # fold_journal keeps untouched entries as the same objects, so only the keys the
        # journal touched are compared (a line repeating the lockfile changes nothing).
        return Recovery(deleted=tuple(sorted(k for k in old if k not in new)),
                        updated=tuple(sorted(k for k, e in new.items()
                                             if old.get(k) is not e and old.get(k) != e)))
