"""The review file: schema-checked with positions, stable text, decisions by image content."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.lock.lockfile import LockEntry, Lockfile, Output
from pipeline.shell.store.review import (
    Decision,
    Review,
    ReviewError,
    current,
    dump_review,
    parse_review,
    read_review,
    reroll_keys,
    review_path,
    write_review,
)

SHA_A = "a" * 64
SHA_B = "b" * 64
TEXT = f"""\
version: 1
decisions:
  - key: "gen@shop=bakery"
    image: 0
    sha256: {SHA_A}
    verdict: reroll
  - key: "gen@shop=bakery"
    image: 1
    sha256: {SHA_B}
    verdict: pick
"""


def lock(*entries: LockEntry) -> Lockfile:
    """A lockfile holding ``entries``."""
    return Lockfile("m.yaml", {e.key: e for e in entries})


def entry(key: str, *shas: str, status: str = "done") -> LockEntry:
    """A lock entry whose outputs have these hashes."""
    return LockEntry(key=key, job="gen", fingerprint="sha256:x", status=status,  # type: ignore[arg-type]
                     outputs=tuple(Output(f"o/{i}.png", s, 1, 1, 1) for i, s in enumerate(shas)))


def test_review_path_is_beside_the_manifest() -> None:
    """storefronts.yaml → storefronts.review.yaml, in the manifest's folder."""
    assert review_path(Path("m/storefronts.yaml")) == Path("m/storefronts.review.yaml")
    assert review_path(Path("shop.yml")) == Path("shop.review.yaml")


def test_parse_and_dump_round_trip() -> None:
    """The issue's format parses, and dumping then parsing gives the same decisions."""
    review = parse_review(TEXT, source="r.yaml")
    assert [d.verdict for d in review.decisions] == ["reroll", "pick"]
    assert parse_review(dump_review(review), source="r.yaml") == review


def test_an_empty_file_has_no_decisions(tmp_path: Path) -> None:
    """An empty or absent review file means no decisions."""
    assert parse_review("", source="r.yaml") == Review()
    assert read_review(tmp_path / "none.review.yaml") == Review()


def test_schema_errors_name_the_line() -> None:
    """A bad verdict is reported at its FILE:LINE:COL with what is allowed."""
    with pytest.raises(ReviewError) as caught:
        parse_review(TEXT.replace("verdict: pick", "verdict: keep"), source="r.yaml")
    message = str(caught.value)
    assert "r.yaml:10:14: error: decisions[1].verdict" in message
    assert "one of: pick, reject, reroll" in message


def test_bad_yaml_is_a_review_error() -> None:
    """Broken YAML is reported with its position, as a ReviewError."""
    with pytest.raises(ReviewError, match=r"r\.yaml:3:1"):
        parse_review("version: 1\ndecisions: [\n", source="r.yaml")


def test_a_later_decision_about_the_same_image_replaces_the_earlier() -> None:
    """decide() keeps one decision per (key, image, sha256); withdraw() removes it."""
    review = parse_review(TEXT, source="r.yaml")
    changed = review.decide(Decision("gen@shop=bakery", 0, SHA_A, "pick"))
    assert [(d.image, d.verdict) for d in changed.decisions] == [(1, "pick"), (0, "pick")]
    assert len(changed.withdraw("gen@shop=bakery", 0, SHA_A).decisions) == 1


def test_decisions_apply_only_to_the_current_image() -> None:
    """A decision about an image the lockfile no longer records is ignored."""
    review = parse_review(TEXT, source="r.yaml")
    now = current(review, lock(entry("gen@shop=bakery", SHA_A, "c" * 64)))
    assert set(now) == {("gen@shop=bakery", 0)}
    assert current(review, lock()) == {}


def test_reroll_keys_need_a_finished_entry() -> None:
    """A re-roll applies to a done entry; while it runs or after it failed, not again."""
    review = parse_review(TEXT, source="r.yaml")
    assert reroll_keys(review, lock(entry("gen@shop=bakery", SHA_A))) == {"gen@shop=bakery"}
    for status in ("running", "failed", "submitting"):
        assert reroll_keys(review, lock(entry("gen@shop=bakery", SHA_A, status=status))) == set()


def test_write_is_atomic_and_readable(tmp_path: Path) -> None:
    """write_review leaves a file read_review gives back, with no temp files beside it."""
    path = tmp_path / "shop.review.yaml"
    review = parse_review(TEXT, source="r.yaml")
    write_review(path, review)
    assert read_review(path) == review
    assert [p.name for p in tmp_path.iterdir()] == ["shop.review.yaml"]
