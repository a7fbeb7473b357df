"""Review decisions: ``<manifest stem>.review.yaml`` beside the manifest, meant for git.

A decision names one image by instance key, index and sha256, with a verdict:
``pick``, ``reject`` or ``reroll``. Because it names the image by its content,
a decision only ever applies to the image it was made about: once a re-roll (or
any change) replaces the image, the decision is kept in the file but no longer
applies. ``parse_review``/``dump_review`` and the queries are pure;
``read_review``/``write_review`` (atomic) are the I/O around them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

import yaml

from pipeline.document import parse_yaml
from pipeline.errors import ImgspecError, ManifestError
from pipeline.files import write_atomic
from pipeline.lockfile import Lockfile
from pipeline.schema import validate_document

FORMAT_VERSION = 1
REVIEW_SCHEMA = "review.schema.json"
Verdict = Literal["pick", "reject", "reroll"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)


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
    errors = validate_document(doc, REVIEW_SCHEMA)
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
              "`imgspec review`.\n# A decision applies only to the image with this sha256.\n")
    body = yaml.safe_dump({"version": FORMAT_VERSION, "decisions": decisions},
                          sort_keys=False, allow_unicode=True, width=1000)
    return header + body


def read_review(path: Path) -> Review:
    """The review file at ``path``, or no decisions when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
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
