"""`imgspec review`'s API: decisions about current images only, undo, and no cross-site use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.shell.store.review import read_review
from tests.gallery.helpers import REROLLED, Server, imgspec, lock_entries, storefronts


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A review server over a simulated storefronts run."""
    manifest = storefronts(tmp_path_factory.mktemp("review"))
    imgspec("run", "--simulate", str(manifest), cwd=manifest.parent.parent)
    server = Server(manifest)
    try:
        yield server, manifest
    finally:
        server.stop()


PAGE = "page-load-of-this-test"  # the id a page load sends with each request


def decide(server: Server, body: dict[str, Any], **headers: str) -> httpx.Response:
    """POST a decision as the page does."""
    return httpx.post(server.url + "api/decide", json={"client": PAGE, **body},
                      headers=headers, timeout=30)


def test_the_page_and_its_images_are_served(served: tuple[Server, Path]) -> None:
    """/ is the gallery with review keys; images and thumbnails come from the output folder."""
    server, _ = served
    page = httpx.get(server.url, timeout=30)
    assert page.status_code == 200
    assert '"review":true' in page.text
    thumb = page.text.split('_thumbs/', 1)[1].split('"', 1)[0]
    image = httpx.get(f"{server.url}_thumbs/{thumb}", timeout=30)
    assert image.status_code == 200
    assert image.content[:2] == b"\xff\xd8"  # a JPEG thumbnail
    outside = httpx.get(server.url + "..%2F..%2Fmanifests%2Fstorefronts.yaml", timeout=30)
    assert outside.status_code == 404


def test_a_decision_is_written_at_once_and_undone(served: tuple[Server, Path]) -> None:
    """pick then undo: the review file has the decision, then no longer."""
    server, manifest = served
    entry = lock_entries(manifest.with_name("storefronts.simulate.lock.json"))[REROLLED]
    body = {"key": REROLLED, "image": 1, "sha256": entry["outputs"][1]["sha256"],
            "verdict": "pick"}
    answer = decide(server, body)
    assert answer.status_code == 200
    assert answer.json()["decisions"] == [[REROLLED, 1, "pick"]]
    review = read_review(manifest.with_name("storefronts.review.yaml"))
    assert [(d.key, d.image, d.verdict) for d in review.decisions] == [(REROLLED, 1, "pick")]
    undone = httpx.post(server.url + "api/undo", json={"client": PAGE}, timeout=30).json()
    assert undone["undone"] == f"pick {REROLLED} #1"
    assert undone["decisions"] == []
    assert read_review(manifest.with_name("storefronts.review.yaml")).decisions == ()


def test_only_the_current_image_can_be_decided(served: tuple[Server, Path]) -> None:
    """A hash not recorded now is refused (409); a verdict the page never sends is a 400."""
    server, _ = served
    refused = decide(server, {"key": REROLLED, "image": 0, "sha256": "0" * 64,
                              "verdict": "reroll"})
    assert refused.status_code == 409
    assert "reload the page" in refused.json()["error"]
    bad = decide(server, {"key": REROLLED, "image": 0, "sha256": "0" * 64, "verdict": "keep"})
    assert bad.status_code == 400


def test_other_sites_cannot_decide(served: tuple[Server, Path]) -> None:
    """A foreign Host (DNS rebinding) is refused, and so is a form post (no CORS preflight)."""
    server, _ = served
    body = {"key": REROLLED, "image": 0, "sha256": "0" * 64, "verdict": "pick"}
    assert decide(server, body, Host="evil.example").status_code == 403
    form = httpx.post(server.url + "api/decide", data={"key": REROLLED}, timeout=30)
    assert form.status_code == 415
