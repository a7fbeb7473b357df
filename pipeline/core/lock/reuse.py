"""The project's paid results, found by what was asked: the index and the choice.

Pure. Every done result the project has paid for (in any manifest's lockfile,
orphaned and superseded entries included, and in the ``meta.json`` of its output
folders) is indexed by its content key (``identity.content_key``: the fingerprint
of the request with image inputs by content). An instance whose request has a
paid result is not submitted again: the plan says ``reuse`` and the run copies
the files (hash checked) or downloads them from their recorded links, for
nothing. Reading the files that make the index is ``reuse_scan``'s; carrying out
a reuse is ``adopt``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.core.expansion.identity import content_key, fingerprint
from pipeline.core.lock.lockfile import LockEntry, Output

# A result link this close to its expiry is not counted on (as ``plan.LINK_MARGIN``).
LINK_MARGIN = 120.0
Via = Literal["file", "link"]


@dataclass(frozen=True, slots=True)
class PaidImage:
    """One image of a paid result: the output as recorded (what it is, its link) and
    where its file is, resolved (``output.path`` is relative to where it was recorded)."""

    output: Output
    file: str | None  # absolute path inside the project, or None when outside or unknown


@dataclass(frozen=True, slots=True)
class PaidResult:
    """A result the project paid for: the request's content key, where it was paid."""

    content: str
    source: str  # the instance key it was paid under, with its manifest when another's
    task_id: str | None
    images: tuple[PaidImage, ...]


@dataclass(frozen=True, slots=True)
class Reuse:
    """The result an instance reuses and, per image, how it arrives (at plan time)."""

    result: PaidResult
    via: tuple[Via, ...]  # empty: the result's images are asked of its task (``by_task``)

    @property
    def by_task(self) -> bool:
        """The result recorded its task but not its images (an entry a merge superseded):
        they are fetched from the task, which costs nothing to ask."""
        return not self.via

    @property
    def note(self) -> str:
        """What the plan says of it."""
        how = ("from its task" if self.by_task
               else "by its recorded link" if all(v == "link" for v in self.via)
               else "copied" if all(v == "file" for v in self.via)
               else "copied and by its recorded link")
        return f"from {self.result.source} ({how}; free)"


class ResultIndex:
    """Paid results by content key; the first one added for a key is preferred."""

    def __init__(self) -> None:
        self._by_key: dict[str, list[PaidResult]] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, result: PaidResult) -> None:
        """Index one more paid result (a duplicate of one held is dropped)."""
        held = self._by_key.setdefault(result.content, [])
        if result not in held:
            held.append(result)

    def add_entries(self, entries: Iterable[LockEntry], *, label: str,
                    locate: Callable[[str], str | None]) -> None:
        """Index a lockfile's done entries; ``label`` prefixes their keys (another
        manifest's), ``locate`` gives a stored output path's file, None if outside."""
        for entry in entries:
            result = result_of_entry(entry, label=label, locate=locate)
            if result is not None:
                self.add(result)

    def candidates(self, content: str) -> tuple[PaidResult, ...]:
        """The paid results of a content key, the preferred first."""
        return tuple(self._by_key.get(content, ()))

    def results(self) -> Iterator[PaidResult]:
        """Every paid result held."""
        for held in self._by_key.values():
            yield from held


def result_of_entry(entry: LockEntry, *, label: str,
                    locate: Callable[[str], str | None]) -> PaidResult | None:
    """A lock entry's result, if it has one to reuse: done, with its images or its task
    recorded (a merge keeps a superseded entry's task, not its images), and a request
    that is what its fingerprint says (a hand-edited entry is not trusted)."""
    if entry.status != "done" or not entry.request or not (entry.outputs or entry.task_id):
        return None
    if fingerprint(entry.request) != entry.fingerprint:
        return None
    images = tuple(PaidImage(o, locate(o.path)) for o in entry.outputs)
    return PaidResult(content_key(entry.request, entry.fingerprint),
                      f"{label}{entry.key}", entry.task_id, images)


def result_of_meta(meta: Mapping[str, Any], folder: str, *, label: str) -> PaidResult | None:
    """The result a ``meta.json`` describes (its images are files of ``folder``), or
    None when it is not one imgspec wrote whole."""
    try:
        request = meta["request"]
        images_raw = meta["images"]
        if not isinstance(request, dict) or not isinstance(images_raw, list) or not images_raw:
            return None
        if fingerprint(request) != meta["fingerprint"]:
            return None
        images = []
        for raw in images_raw:
            name = raw["file"]
            if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
                return None
            output = Output(name, str(raw["sha256"]), int(raw["bytes"]), int(raw["width"]),
                            int(raw["height"]), _str_or_none(raw.get("url")),
                            _int_or_none(raw.get("expires_at")))
            images.append(PaidImage(output, f"{folder}/{name}"))
        return PaidResult(content_key(request, meta["fingerprint"]),
                          f"{label}{meta['key']}", meta.get("task_id"), tuple(images))
    except (KeyError, TypeError, ValueError):
        return None


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def link_valid(image: PaidImage, now: float | None) -> bool:
    """Whether the image's recorded link can still be counted on at ``now``."""
    url, expires_at = image.output.url, image.output.expires_at
    return (now is not None and url is not None and expires_at is not None
            and expires_at > now + LINK_MARGIN)


def choose(candidates: Iterable[PaidResult], *, intact: Callable[[PaidImage], bool],
           now: float | None) -> Reuse | None:
    """The paid result to reuse: every image's file intact (``intact``: its hash
    matches), else its link valid; whole results only, files preferred over links."""
    best: Reuse | None = None
    by_task: Reuse | None = None
    for result in candidates:
        if not result.images:
            by_task = by_task or Reuse(result, ())
            continue
        via: list[Via] = []
        for image in result.images:
            if image.file is not None and intact(image):
                via.append("file")
            elif link_valid(image, now):
                via.append("link")
            else:
                break
        else:
            found = Reuse(result, tuple(via))
            if all(v == "file" for v in via):
                return found
            best = best or found
    return best or by_task


def gone_note(candidates: tuple[PaidResult, ...]) -> str:
    """The plan's word on a request paid before whose images can no longer be had."""
    return (f"the same request was paid as {candidates[0].source}, but its images are gone "
            "and their links expired: generating it again is paid")
