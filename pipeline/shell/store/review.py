"""Review decisions: ``<manifest stem>.review.yaml`` beside the manifest, meant for git.

A decision names one image by instance key, index and sha256, with a verdict:
``pick``, ``reject`` or ``reroll``. Because it names the image by its content,
a decision only ever applies to the image it was made about: once a re-roll (or
any change) replaces the image, the decision is kept in the file but no longer
applies. ``parse_review``/``dump_review`` and the queries are pure;
``read_review``/``write_review`` (atomic) and ``edit_review`` (a locked
read-change-write) are the I/O around them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypeVar, get_args

import yaml

from pipeline.core.lock.lockfile import Lockfile
from pipeline.core.manifest.document import parse_yaml
from pipeline.core.manifest.schema import validate_document
from pipeline.errors import ImgspecError, ManifestError
from pipeline.shell.store.files import read_regular, write_atomic
from pipeline.shell.store.schemas import schema_validator

FORMAT_VERSION = 1
REVIEW_SCHEMA = "review.schema.json"
Verdict = Literal["pick", "reject", "reroll"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
EDIT_WAIT = 10.0  # seconds another process may hold the review folder before we give up
T = TypeVar("T")


class ReviewError(ManifestError):
    """The review file is not valid YAML or does not follow ``schemas/review.schema.json``."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A reviewer's verdict on one image, named by its content."""

    key: str
    image: int
    sha256: str
    verdict: Verdict
    at: str | None = None  # when it was made (informational)

    @property
    def target(self) -> tuple[str, int, str]:
        """What the decision is about: two decisions with the same target replace each other."""
        return (self.key, self.image, self.sha256)


@dataclass(frozen=True, slots=True)
class Review:
    """Every decision in the review file, in the order they were made."""

    decisions: tuple[Decision, ...] = ()

    def decide(self, decision: Decision) -> Review:
        """A copy in which ``decision`` replaces any earlier one about the same image."""
        kept = tuple(d for d in self.decisions if d.target != decision.target)
        return replace(self, decisions=(*kept, decision))

    def withdraw(self, key: str, image: int, sha256: str) -> Review:
        """A copy without the decision about that image (if there is one)."""
        target = (key, image, sha256)
        return replace(self, decisions=tuple(d for d in self.decisions if d.target != target))

    def about(self, target: tuple[str, int, str]) -> Decision | None:
        """The decision about that image, if there is one."""
        return next((d for d in self.decisions if d.target == target), None)

    def take_back(self, made: Decision, replaced: Decision | None) -> Review | None:
        """A copy without ``made``, ``replaced`` (what it replaced) back in its place.

        ``None`` when the file no longer holds ``made``'s verdict about that image:
        someone else (another reviewer, an edit by hand) has decided about it since,
        and that later decision is not ours to withdraw. The time is not compared, as
        it is informational (an edit by hand may drop it); the same verdict made again
        by someone else is the same decision.
        """
        now = self.about(made.target)
        if now is None or now.verdict != made.verdict:
            return None
        if replaced is None:
            return self.withdraw(*made.target)
        return replace(self, decisions=tuple(replaced if d.target == made.target else d
                                             for d in self.decisions))


def review_path(manifest_path: Path) -> Path:
    """``storefronts.yaml`` → ``storefronts.review.yaml`` (one file for real and simulated runs)."""
    stem = manifest_path.name
    for suffix in (".yaml", ".yml", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return manifest_path.with_name(f"{stem}.review.yaml")


def parse_review(text: str, *, source: str) -> Review:
    """Parse and schema-check review text; ``ReviewError`` lists every problem with its line."""
    try:
        doc = parse_yaml(text, source)
    except ManifestError as exc:
        raise ReviewError(exc.diagnostics) from exc
    if doc.data is None:
        return Review()
    errors = validate_document(doc, schema_validator(REVIEW_SCHEMA))
    if errors:
        raise ReviewError(errors)
    review = Review()
    for raw in doc.data["decisions"]:
        review = review.decide(Decision(key=raw["key"], image=raw["image"],
                                        sha256=raw["sha256"], verdict=raw["verdict"],
                                        at=raw.get("at")))
    return review


def dump_review(review: Review) -> str:
    """Stable YAML: the format version, then one short mapping per decision."""
    decisions = [
        {"key": d.key, "image": d.image, "sha256": d.sha256, "verdict": d.verdict,
         **({"at": d.at} if d.at else {})}
        for d in review.decisions
    ]
    header = ("# imgspec review decisions (schemas/review.schema.json), written by "
              "`imgspec review`.\n# A decision applies only to the image with this sha256.\n"
              "# Each decision rewrites this file: comments are not kept.\n")
    body = yaml.safe_dump({"version": FORMAT_VERSION, "decisions": decisions},
                          sort_keys=False, allow_unicode=True, width=1000)
    return header + body


def read_review(path: Path) -> Review:
    """The review file at ``path``, or no decisions when there is none."""
    try:
        text = read_regular(path).decode("utf-8")
    except FileNotFoundError:
        return Review()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImgspecError(f"{path}: cannot be read ({exc}); fix or remove it") from exc
    return parse_review(text, source=str(path))


def write_review(path: Path, review: Review) -> None:
    """Atomically replace the review file (a reader sees the old or the new decisions)."""
    try:
        write_atomic(path, dump_review(review))
    except OSError as exc:
        raise ImgspecError(f"{path}: cannot be written ({exc.strerror}); check the folder's "
                           "permissions") from exc


# Threads of one process take this first (a flock is per open file, so two threads
# would also exclude each other through it, but by spinning); the folder's flock
# then keeps out other processes: two `imgspec review` servers of one manifest.
_EDITING = threading.Lock()


@contextlib.contextmanager
def _editing(path: Path) -> Iterator[None]:
    """Hold the review file's folder exclusively (in this process and between processes).

    The folder, not the file, is locked: ``write_review`` replaces the file by a
    rename, so a lock on the file would be a lock on an inode that is gone after
    the first write. No lock file is left behind in the (git-tracked) folder.
    """
    with _EDITING:
        try:
            fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise ImgspecError(f"{path.parent}: cannot be opened ({exc.strerror}); check the "
                               "folder's permissions") from exc
        try:
            deadline = time.monotonic() + EDIT_WAIT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ImgspecError(
                            f"{path}: another process has held its folder for {EDIT_WAIT:.0f} s; "
                            "stop the other `imgspec review` of this manifest and try "
                            "again") from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # releases the flock


def edit_review(path: Path, change: Callable[[Review], tuple[Review, T]]) -> tuple[Review, T]:
    """Read the review file, apply ``change`` and write the result, as one step.

    Every edit of a review file goes through here, so concurrent decisions (threads
    of one server, or two servers) each see the others' and none is lost; the file
    is read afresh each time, so an edit by hand is kept. ``change`` returns the new
    review and a result passed back; the file is rewritten only when it changes.
    """
    with _editing(path):
        before = read_review(path)
        after, result = change(before)
        if after != before:
            write_review(path, after)
    return after, result


def current(review: Review, lock: Lockfile) -> dict[tuple[str, int], Decision]:
    """The decisions that apply now, by (key, image index): those about the current images.

    An image is current when the lock entry records it at that index with that sha256;
    a decision about any other image (replaced, re-rolled) is ignored.
    """
    out: dict[tuple[str, int], Decision] = {}
    for decision in review.decisions:
        entry = lock.entries.get(decision.key)
        if entry is None or decision.image >= len(entry.outputs):
            continue
        if entry.outputs[decision.image].sha256 == decision.sha256:
            out[(decision.key, decision.image)] = decision
    return out


def reroll_keys(review: Review, lock: Lockfile) -> frozenset[str]:
    """Instances with a re-roll decision about a current image of a finished entry.

    While a re-roll is submitted, running or failed, the entry still holds the old
    images (they are kept until the new ones are in place), so the decision still
    matches them; it must not ask for yet another re-roll then. The plan resumes or
    retries the entry instead, with the seed its recorded re-roll count gives.
    """
    return frozenset(
        key for (key, _), d in current(review, lock).items()
        if d.verdict == "reroll" and lock.entries[key].status == "done")


def verdicts(decisions: Mapping[tuple[str, int], Decision],
             verdict: Verdict) -> Iterable[Decision]:
    """The decisions with that verdict, in (key, image) order."""
    return (decisions[k] for k in sorted(decisions) if decisions[k].verdict == verdict)
