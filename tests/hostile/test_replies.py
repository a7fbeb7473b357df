"""Replies from a server we do not control: any mutation of a valid reply parses into a sane
TaskState or raises one of imgspec's own errors, never anything else."""

from __future__ import annotations

import copy
import json
import math
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.apimart.replies import (
    MAX_ESTIMATED_TIME,
    MAX_EXPIRES_AT,
    MAX_MESSAGE_CHARS,
    MAX_RESULT_IMAGES,
    MAX_TASK_ID_CHARS,
    TaskState,
    TaskStatus,
    decode_json,
    error_for_status,
    error_message,
    parse_poll,
    parse_retry_after,
    parse_submit,
    result_url_problem,
    unwrap,
)
from pipeline.errors import ApiError, ImgspecError

TASK = "task_01KA040M0HP1GJWBJYZMKX1XS1"
URL = "https://upload.apimart.ai/f/image/a.png"

# The valid shapes of APIMART.md §1-2 (and tests/unit/test_replies.py), to mutate.
SUBMITS: list[Any] = [
    {"code": "success", "message": "", "data": [{"task_id": TASK, "status": "processing"}]},
    {"code": 200, "message": "", "data": {"task_id": TASK, "status": "pending"}},
    {"data": [{"id": TASK}]},
    {"code": "200", "data": [{"task_id": TASK, "status": "completed",
                              "result": {"images": [{"url": URL}]}}]},
]
POLLS: list[Any] = [
    {"code": 200, "data": {"id": TASK, "status": "completed", "progress": 100,
                           "result": {"images": [{"url": [URL], "expires_at": 1763174708}]},
                           "created": 1763088289, "completed": 1763088308,
                           "estimated_time": 60, "actual_time": 19}},
    {"code": "success", "data": {"id": TASK, "status": "completed",
                                 "result": {"images": [{"url": URL, "expires_at": 1}, URL]}}},
    {"code": 200, "data": {"id": TASK, "status": "processing", "progress": 40,
                           "estimated_time": 60}},
    {"code": 200, "data": [{"id": TASK, "status": "pending", "progress": 0}]},
    {"code": 200, "data": {"id": TASK, "status": "failed", "progress": 30,
                           "error": {"message": "generation failed", "code": "generation_failed"}}},
    {"code": 200, "data": {"status": "cancelled", "error": "cancelled by user"}},
]

KEYS = ["code", "message", "data", "id", "task_id", "status", "progress", "result", "images",
        "url", "expires_at", "estimated_time", "error", "created", "completed"]

NASTY = st.sampled_from([
    None, True, False, 0, -1, 2**63, -(2**63), 10**400, -(10**400), 1e308, -1e308,
    float("nan"), float("inf"), float("-inf"), -0.0, 1e-320,
    "", " ", "NaN", "Infinity", "1e999", "-5", "²", "٣", "9" * 5000, "x" * 100_000,
    "\x00", "\ud800", "\u202e", "success", "SUCCESS", "200", " 402 ", "completed", "COMPLETED",
    "file:///etc/passwd", "gopher://localhost/1/a.png", "http://example.com/a.png",
    "http://127.0.0.1:1/a.png", "https://", "https:///x.png", "javascript:alert(1)",
    "https://[::1", "//cdn.example.com/a.png",
]) | st.sampled_from(["[]", "{}", "[[[[[]]]]]", '{"message": null}']).map(
    json.loads)  # containers built afresh: a later mutation must not alter the pool
SCALARS = st.one_of(NASTY, st.none(), st.booleans(), st.integers(),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40))
VALUES = st.recursive(
    SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=4),
                           st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4),
                                           kids, max_size=4)),
    max_leaves=8,
)
# Huge lists without generating each element: one value repeated.
HUGE_LISTS = st.builds(lambda item, count: [item] * count,
                       SCALARS | st.builds(lambda: {"url": URL}),
                       st.sampled_from([13, MAX_RESULT_IMAGES + 1, 10_000, 200_000]))
HOSTILE = st.one_of(VALUES, HUGE_LISTS)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Positions in a JSON value, the root included (of a list, its first three items)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, shapes: list[Any]) -> Any:
    """A valid reply with one to three positions replaced, removed or inflated."""
    reply = copy.deepcopy(draw(st.sampled_from(shapes)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(reply)))
        action = draw(st.sampled_from(["replace", "delete", "wrap", "inflate"]))
        if not path:
            reply = draw(HOSTILE) if action == "replace" else [reply]
            continue
        parent = reply
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if action == "delete" and isinstance(parent, dict):
            del parent[last]
        elif action == "wrap":
            parent[last] = [parent[last]]
        elif action == "inflate":
            parent[last] = [parent[last]] * draw(st.sampled_from([2, 65, 50_000]))
        else:
            parent[last] = draw(HOSTILE)
    return reply


def assert_sane(state: TaskState) -> None:
    """What the executor may rely on in any TaskState the parser hands out."""
    assert state.status in get_args(TaskStatus)
    assert isinstance(state.task_id, str)
    assert state.task_id.strip()
    assert len(state.task_id) <= MAX_TASK_ID_CHARS
    assert state.progress is None or (isinstance(state.progress, int)
                                      and 0 <= state.progress <= 100)
    assert state.estimated_time is None or (math.isfinite(state.estimated_time)
                                            and 0 <= state.estimated_time <= MAX_ESTIMATED_TIME)
    assert len(state.images) <= MAX_RESULT_IMAGES
    for image in state.images:
        assert isinstance(image.url, str)
        assert result_url_problem(image.url) is None
        assert image.expires_at is None or 0 <= image.expires_at <= MAX_EXPIRES_AT
    assert state.images == () or state.status == "completed"
    assert state.error is None or (isinstance(state.error, str)
                                   and 0 < len(state.error) <= MAX_MESSAGE_CHARS)


HOSTILE_SETTINGS = settings(max_examples=400, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.data_too_large])


@HOSTILE_SETTINGS
@given(mutated(POLLS))
def test_mutated_poll_replies_parse_sanely_or_raise_our_error(reply: Any) -> None:
    """Any mutation of a valid poll reply gives a sane TaskState or an ApiError."""
    try:
        state = parse_poll(reply, TASK)
    except ApiError:
        return
    assert_sane(state)
    assert state.task_id == TASK


@HOSTILE_SETTINGS
@given(mutated(SUBMITS))
def test_mutated_submit_replies_parse_sanely_or_raise_our_error(reply: Any) -> None:
    """Any mutation of a valid submit reply gives a sane TaskState or an ApiError."""
    try:
        state = parse_submit(reply)
    except ApiError:
        return
    assert_sane(state)


@HOSTILE_SETTINGS
@given(HOSTILE, st.text(max_size=200))
def test_any_error_body_gives_a_short_message(payload: Any, text: str) -> None:
    """Whatever an error body holds, its message is one short line of text."""
    message = error_message(payload, text)
    assert isinstance(message, str)
    assert 0 < len(message) <= MAX_MESSAGE_CHARS
    assert "\n" not in message


@HOSTILE_SETTINGS
@given(HOSTILE)
def test_any_envelope_unwraps_or_raises_our_error(payload: Any) -> None:
    """unwrap returns the data of anything it accepts, and raises only ApiError otherwise."""
    try:
        data = unwrap(payload)
    except ApiError:
        return
    assert data is not None


@HOSTILE_SETTINGS
@given(st.one_of(st.binary(max_size=300),
                 st.sampled_from([b"1" * 5000, b"[" * 100_000, b"{\"a\": NaN}", b"1e999999",
                                  b"\xff\xfe", b'{"code": 200, "data": ' * 5000])))
def test_any_body_decodes_or_is_malformed(body: bytes) -> None:
    """Bytes that are not usable JSON (even a 5000-digit number, or deep nesting) are a
    malformed-reply error, not a crash."""
    try:
        decode_json(body)
    except ImgspecError as exc:
        error = str(exc)
    else:
        return
    assert "malformed" in error


@HOSTILE_SETTINGS
@given(st.one_of(st.none(), st.text(max_size=60), st.sampled_from([
    "9" * 5000, "1e999", "-5", "nan", "Fri, 31 Dec 99999 23:59:59 GMT",
    "Mon, 01 Jan 0001 00:00:00 GMT", "Sun, 06 Nov 1994 08:49:37 GMT"])))
def test_any_retry_after_is_none_or_a_finite_wait(value: str | None) -> None:
    """A Retry-After header never raises; it is None or a finite, non-negative wait."""
    seconds = parse_retry_after(value, now=1_763_088_289.0)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@given(st.integers(), st.text(max_size=50), st.booleans())
def test_any_status_maps_to_an_api_error(status: int, message: str, download: bool) -> None:
    """Every status, however absurd, maps to one of imgspec's API errors."""
    assert isinstance(error_for_status(status, message, download=download), ApiError)


@pytest.mark.parametrize("url", ["x" * 100_000, "https://" + "a" * 100_000, "\ud800",
                                 "http://[::1", "https://h:99999999/a.png"])
def test_hostile_result_urls_are_judged_without_crashing(url: str) -> None:
    """result_url_problem answers for any string, with a short reason when it refuses."""
    problem = result_url_problem(url)
    assert problem is None or len(problem) < 200
