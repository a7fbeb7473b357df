"""Hostile requests to `imgspec review`, and the check each answer must pass.

Shared by ``tests/gallery/test_review_fuzz.py`` (driven by hypothesis, a few hundred
cases) and ``bench/fuzz_review.py`` (run by hand, 10,000s). A case is a method, a
path, headers and a body, built from what the page really sends (a decision about
an image the lockfile records) and then damaged: bytes that are not UTF-8, odd
charsets and content types, JSON nested too deep, numbers too long, values of the
wrong type, NUL bytes and long names in paths. The server must answer each with
a 2xx or a 4xx (a 4xx from the API with a JSON ``error``), never a 5xx, and must
print no traceback.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from pipeline.shell.store.review import VERDICTS


@dataclass(frozen=True, slots=True)
class Image:
    """An image a decision may name: the instance key, index and sha256 the lockfile records."""

    key: str
    index: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Case:
    """One request: sent as is (the path is not re-encoded)."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def describe(self) -> str:
        """The case in a line or two, for a report."""
        return (f"{self.method} {self.path[:200]!r} headers={list(self.headers)!r} "
                f"body={self.body[:300]!r}{'...' if len(self.body) > 300 else ''}")


@dataclass(frozen=True, slots=True)
class Answer:
    """What the server answered, as far as the check needs it."""

    status: int
    content_type: str
    body: bytes


PARSER_LINE = 8190 - len("DELETE  HTTP/1.1")  # aiohttp's longest request line
PATHS = ("/", "/index.html", "/api/decide", "/api/undo", "/api/redo", "/api/", "/_thumbs/",
         "/storefront/0.png", "/favicon.ico")
CONTENT_TYPES = (
    "application/json", "application/json; charset=utf-8", "application/json; charset=UTF8",
    "application/json; charset=bogus", "application/json; charset=utf-16",
    "application/json; charset=latin-1", 'application/json; charset="utf-8"',
    "application/json; charset=", "application/json;;;", "application/json; boundary",
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "multipart/form-data", "", "json", "APPLICATION/JSON", "*/*", "application/" + "j" * 5000,
)
PATH_DAMAGE = ("%00", "%2e%2e/%2e%2e/", "../../", "%ff%fe", "\\..\\", "//", "?x=%00", "#x",
               "%", "%zz", "a" * 5000, "é", "%C0%AE%C0%AE/", ";x=1", "/./", "%2F")


def valid_decision(rng: random.Random, images: list[Image], clients: list[str]) -> dict[str, Any]:
    """A decision as the page sends it, about a real image."""
    image = rng.choice(images)
    return {"client": rng.choice(clients), "key": image.key, "image": image.index,
            "sha256": image.sha256, "verdict": rng.choice(VERDICTS)}


def _odd_value(rng: random.Random) -> Any:
    return rng.choice([
        None, True, False, 0, -1, 2 ** 70, 1.5, float("inf"), "", "x" * rng.randint(1, 3000),
        "\x00", "\ud800", "é\u2028", [], {}, [1, [2, [3]]], {"a": {"b": None}},
        "a" * 65, "short", "../../etc/passwd", rng.random(),
    ])


def _damaged_json(rng: random.Random, decision: dict[str, Any]) -> Any:
    kind = rng.randrange(6)
    body: Any = dict(decision)
    if kind == 0:  # a field of the wrong type or value
        body[rng.choice(list(body))] = _odd_value(rng)
    elif kind == 1:  # a field missing
        del body[rng.choice(list(body))]
    elif kind == 2:  # an extra field
        body[rng.choice(["x", "", "__proto__", "client "])] = _odd_value(rng)
    elif kind == 3:  # not an object
        body = _odd_value(rng)
    elif kind == 4:  # the decision nested inside something
        body = [body] if rng.random() < 0.5 else {"decision": body}
    return body


def _json(value: Any) -> bytes:
    # NaN and Infinity are not JSON, and an unpaired surrogate (surrogatepass) is not
    # UTF-8: both are sent as they come.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _body(rng: random.Random, images: list[Image], clients: list[str]) -> bytes:
    decision = valid_decision(rng, images, clients)
    kind = rng.randrange(12)
    if kind <= 2:
        return _json(decision)
    if kind <= 5:
        return _json(_damaged_json(rng, decision))
    if kind == 6:  # not UTF-8: a stray byte in a string, or UTF-16, or Latin-1
        text = json.dumps(decision)
        cut = rng.randrange(len(text))
        return rng.choice([text[:cut].encode() + b"\xff\xfe" + text[cut:].encode(),
                           text.encode("utf-16"), text.replace("a", "é").encode("latin-1"),
                           b"\xc0\xae" * rng.randint(1, 50)])
    if kind == 7:  # nested past any recursion limit
        depth = rng.choice([1_000, 10_000, 100_000])
        return rng.choice([b"[" * depth, b"[" * depth + b"]" * depth,
                           b'{"a":' * depth + b"1" + b"}" * depth])
    if kind == 8:  # numbers and strings too long for their type
        return rng.choice([b"1" * 5000, b"1e999999", b"-" + b"9" * 100_000,
                           b'{"client":"' + b"c" * 60_000 + b'"}'])
    if kind == 9:  # damaged JSON text
        damaged = bytearray(_json(decision))
        for _ in range(rng.randint(1, 5)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        return bytes(damaged)
    if kind == 10:  # random bytes, sometimes larger than the server takes
        return rng.randbytes(rng.choice([0, 1, 17, 1000, 70_000]))
    return rng.choice([b"", b"null", b"{}", b"[]", b"NaN", b'"\\u0000"', b"\x00",
                       b'{"client":"abcdefgh"}', b"{" * 3 + b"}" * 3])


def _path(rng: random.Random) -> str:
    path = rng.choice(PATHS)
    for _ in range(rng.choice([0, 0, 1, 2])):
        damage = rng.choice(PATH_DAMAGE)
        cut = rng.randint(1, len(path))
        path = path[:cut] + damage + path[cut:]
    # What a client can put on the request line: percent-encoded beyond printable ASCII.
    return quote(path, safe="/%?=;:@&+$,!~*'()\\")


def review_case(rng: random.Random, images: list[Image], clients: list[str]) -> Case:
    """A request to the review server: mostly what the page sends, then damaged."""
    path = rng.choice(["/api/decide", "/api/decide", "/api/undo"]) if rng.random() < 0.6 \
        else _path(rng)
    method = "POST" if rng.random() < 0.7 else rng.choice(["GET", "GET", "PUT", "DELETE",
                                                           "HEAD", "OPTIONS", "PATCH"])
    headers: list[tuple[str, str]] = []
    if rng.random() < 0.9:
        headers.append(("Content-Type", rng.choice(CONTENT_TYPES[:3]) if rng.random() < 0.5
                        else rng.choice(CONTENT_TYPES)))
    if rng.random() < 0.05:
        headers.append(("Content-Encoding", rng.choice(["gzip", "deflate", "br", "bogus"])))
    if rng.random() < 0.05:
        headers.append(("Accept-Charset", "bogus"))
    if rng.random() < 0.03:
        headers.append(("Origin", rng.choice(["null", "https://evil.example", "x" * 3000])))
    body = _body(rng, images, clients) if method != "GET" or rng.random() < 0.1 else b""
    return Case(method, path, tuple(headers), body)


def send(client: httpx.Client, base: str, case: Case) -> Answer:
    """Send a case to the server at ``base`` (``http://127.0.0.1:PORT``) as it is."""
    request = client.build_request(case.method, base, headers=list(case.headers),
                                   content=case.body)
    # Set the raw target after building, so httpx neither re-encodes nor normalises it.
    request.url = request.url.copy_with(raw_path=case.path.encode("utf-8"))
    response = client.send(request)
    return Answer(response.status_code, response.headers.get("content-type", ""),
                  response.content)


def problem(case: Case, answer: Answer) -> str | None:
    """What is wrong with the answer to a case (``None`` when it is acceptable)."""
    if answer.status >= 500:
        return f"answered {answer.status}"
    if answer.status >= 400 and case.method != "HEAD":
        if answer.status == 400 and len(case.path) > PARSER_LINE:
            return None  # refused by aiohttp's HTTP parser, before the app: its own 400
        if not answer.content_type.startswith("application/json"):
            return f"answered {answer.status} with {answer.content_type or 'no type'}, not JSON"
        try:
            error = json.loads(answer.body).get("error")
        except (ValueError, AttributeError):
            return f"answered {answer.status} with a body that is not a JSON object"
        if not isinstance(error, str) or not error:
            return f"answered {answer.status} without an error message"
    return None
