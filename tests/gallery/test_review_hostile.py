"""`imgspec review` under load and attack: concurrent decisions, undo per page, framing, bad input.

Every test drives the real server (`imgspec review --simulate` in a subprocess) over
HTTP on 127.0.0.1, as browsers would.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.shell.store.review import read_review
from tests.gallery.helpers import WAIT, Server, imgspec, lock_entries, review_text
from tests.hostile.review_requests import Image, problem, review_case, send

CLIENTS = 5
EACH = 10  # decisions per client: 50 in all, one per image
TILES = ", ".join(str(i) for i in range(CLIENTS * EACH // 2))  # n: 2 images each
CROWD = f"""\
version: 1
name: crowd
defaults: {{model: wan2.7-image, size: 1K}}
jobs:
  tile:
    prompt: "Tile number {{{{ i }}}} in a mosaic"
    n: 2
    matrix:
      i: [{TILES}]
"""


@dataclass(frozen=True)
class Project:
    """A simulated run of 50 images, and the images it recorded."""

    manifest: Path
    images: tuple[Image, ...]

    @property
    def review(self) -> Path:
        """The review file the server writes."""
        return self.manifest.with_name("crowd.review.yaml")

    def decisions(self) -> set[tuple[str, int, str, str]]:
        """What the review file holds now: (key, image, sha256, verdict)."""
        return {(d.key, d.image, d.sha256, d.verdict)
                for d in read_review(self.review).decisions}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The crowd manifest, run once under --simulate."""
    folder = tmp_path_factory.mktemp("crowd")
    manifest = folder / "manifests" / "crowd.yaml"
    manifest.parent.mkdir()
    manifest.write_text(CROWD, encoding="utf-8")
    imgspec("run", "--simulate", str(manifest), cwd=folder)
    entries = lock_entries(manifest.with_name("crowd.simulate.lock.json"))
    images = tuple(Image(key, i, o["sha256"]) for key, e in sorted(entries.items())
                   for i, o in enumerate(e["outputs"]))
    assert len(images) == CLIENTS * EACH
    return Project(manifest, images)


@pytest.fixture
def server(project: Project) -> Iterator[Server]:
    """A review server over the crowd project with an empty review file; no traceback after."""
    project.review.unlink(missing_ok=True)
    running = Server(project.manifest)
    try:
        yield running
    finally:
        err = running.stop()
    assert "Traceback" not in err, err


def post(server: Server, action: str, body: Any) -> httpx.Response:
    """POST JSON to the review API, as the page does."""
    return httpx.post(f"{server.url}api/{action}", json=body, timeout=WAIT)


def decision(client: str, image: Image, verdict: str = "pick") -> dict[str, Any]:
    """The body the page sends for a decision."""
    return {"client": client, "key": image.key, "image": image.index, "sha256": image.sha256,
            "verdict": verdict}


def at_once(calls: list[Any]) -> list[httpx.Response]:
    """Run the calls in threads released together; their answers, in order."""
    start = threading.Barrier(len(calls))
    answers: list[httpx.Response | None] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait(timeout=WAIT)
        answers[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT * 2)
    assert all(a is not None for a in answers), "a request did not return"
    return [a for a in answers if a is not None]


def test_fifty_concurrent_decisions_from_five_clients_are_all_kept(
        project: Project, server: Server) -> None:
    """50 decisions posted at once by 5 pages each answer 200 and are all in the review file."""
    verdicts = ("pick", "reject", "reroll")
    wanted = {(img.key, img.index, img.sha256, verdicts[n % 3])
              for n, img in enumerate(project.images)}
    calls = [lambda n=n, img=img: post(server, "decide", decision(
        f"page-{n % CLIENTS}-of-five", img, verdicts[n % 3]))
        for n, img in enumerate(project.images)]
    answers = at_once(calls)
    assert [a.status_code for a in answers] == [200] * len(calls)
    assert project.decisions() == wanted
    final = post(server, "decide", decision("page-0-of-five", project.images[0], "pick"))
    assert len(final.json()["decisions"]) == len(calls)


def test_two_servers_of_one_manifest_keep_each_others_decisions(project: Project,
                                                                 server: Server) -> None:
    """Two `imgspec review` processes deciding at once: every decision of both is kept."""
    other = Server(project.manifest)
    try:
        calls = [lambda n=n, img=img: post(server if n % 2 else other, "decide",
                                           decision(f"page-of-server-{n % 2}", img))
                 for n, img in enumerate(project.images)]
        assert {a.status_code for a in at_once(calls)} == {200}
    finally:
        err = other.stop()
    assert "Traceback" not in err, err
    assert project.decisions() == {(i.key, i.index, i.sha256, "pick") for i in project.images}


def test_undo_keeps_a_pick_added_by_hand_meanwhile(project: Project, server: Server) -> None:
    """A pick written into the file by hand while the server runs survives an undo."""
    mine, by_hand = project.images[0], project.images[1]
    assert post(server, "decide", decision("page-of-alice", mine, "reject")).status_code == 200
    project.review.write_text(review_text((mine.key, mine.index, mine.sha256, "reject"),
                                          (by_hand.key, by_hand.index, by_hand.sha256, "pick")),
                              encoding="utf-8")
    undone = post(server, "undo", {"client": "page-of-alice"})
    assert undone.status_code == 200
    assert undone.json()["undone"] == f"reject {mine.key} #{mine.index}"
    assert project.decisions() == {(by_hand.key, by_hand.index, by_hand.sha256, "pick")}


def test_undo_withdraws_only_this_pages_decision(project: Project, server: Server) -> None:
    """Undo in one browser withdraws its own latest decision, not another browser's later one."""
    a, b, c = project.images[:3]
    for client, image, verdict in (("page-of-alice", a, "pick"), ("page-of-alice", c, "pick"),
                                   ("page-of-alice", c, "reject"), ("page-of-bob", b, "reroll")):
        assert post(server, "decide", decision(client, image, verdict)).status_code == 200
    undone = post(server, "undo", {"client": "page-of-alice"}).json()
    assert undone["undone"] == f"reject {c.key} #{c.index}"
    assert project.decisions() == {(a.key, a.index, a.sha256, "pick"),
                                   (c.key, c.index, c.sha256, "pick"),  # what reject replaced
                                   (b.key, b.index, b.sha256, "reroll")}
    nothing = post(server, "undo", {"client": "page-of-carol"}).json()
    assert nothing["undone"] is None
    assert len(project.decisions()) == 3


def test_undo_leaves_a_decision_another_page_made_since(project: Project, server: Server) -> None:
    """Alice picks, Bob rejects the same image, Alice's undo is refused and Bob's reject stays."""
    image = project.images[0]
    assert post(server, "decide", decision("page-of-alice", image, "pick")).status_code == 200
    assert post(server, "decide", decision("page-of-bob", image, "reject")).status_code == 200
    refused = post(server, "undo", {"client": "page-of-alice"})
    assert refused.status_code == 409
    assert "changed since" in refused.json()["error"]
    assert project.decisions() == {(image.key, image.index, image.sha256, "reject")}


MALFORMED = {
    "invalid UTF-8": ("POST", "/api/decide", "application/json", b'{"client": "\xff\xfe"}'),
    "charset=bogus": ("POST", "/api/decide", "application/json; charset=bogus", b"{}"),
    "100,000 [": ("POST", "/api/decide", "application/json", b"[" * 100_000),
    "a number too long": ("POST", "/api/undo", "application/json", b"1" * 5000),
    "a compressed body": ("POST", "/api/decide", "application/json", b"\x1f\x8b\x08\x00"),
    "a body too large": ("POST", "/api/decide", "application/json", b" " * 100_000 + b"{}"),
    "not an object": ("POST", "/api/decide", "application/json", b"[1, 2]"),
    "no client": ("POST", "/api/undo", "application/json", b"{}"),
    "a path with %00": ("GET", "/_thumbs/%00.jpg", "", b""),
    "a name too long": ("GET", "/" + "a" * 4000 + ".png", "", b""),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_review_requests_are_4xx_json_errors(server: Server, name: str) -> None:
    """Each malformed request is answered 4xx with a JSON error, and no traceback is printed."""
    method, path, content_type, body = MALFORMED[name]
    headers = {"Content-Type": content_type} if content_type else {}
    if name == "a compressed body":
        headers["Content-Encoding"] = "gzip"
    with httpx.Client(timeout=WAIT) as client:
        request = client.build_request(method, server.url, headers=headers, content=body)
        request.url = request.url.copy_with(raw_path=path.encode())
        answer = client.send(request)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"]
    assert "Traceback" not in server.stderr()


def test_review_answers_may_not_be_framed(project: Project, server: Server) -> None:
    """The page, the API, images and errors all forbid framing (X-Frame-Options and CSP)."""
    page = httpx.get(server.url, timeout=WAIT)
    thumb = page.text.split("_thumbs/", 1)[1].split('"', 1)[0]
    answers = [page, httpx.get(f"{server.url}_thumbs/{thumb}", timeout=WAIT),
               post(server, "decide", decision("page-of-alice", project.images[0])),
               post(server, "decide", {}), httpx.get(f"{server.url}nothing.png", timeout=WAIT)]
    assert [a.status_code for a in answers] == [200, 200, 200, 400, 404]
    for answer in answers:
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    policy = page.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'; script-src 'sha256-")
    assert "connect-src 'self'" in policy


EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))  # bench/fuzz_review.py runs 10,000s
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def fuzzed(project: Project) -> Iterator[Server]:
    """One review server for all the fuzzed requests."""
    running = Server(project.manifest)
    try:
        yield running
    finally:
        running.stop()


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_hostile_review_requests_are_answered_4xx_without_a_traceback(
        project: Project, fuzzed: Server, rng: Random) -> None:
    """Damaged bodies, headers and paths get a 2xx or a 4xx JSON error; the server stays quiet."""
    case = review_case(rng, list(project.images), ["fuzz-page-one", "fuzz-page-two"])
    with httpx.Client(timeout=WAIT) as client:
        answer = send(client, fuzzed.url.rstrip("/"), case)
    assert problem(case, answer) is None, case.describe()
    assert "Traceback" not in fuzzed.stderr(), case.describe()
