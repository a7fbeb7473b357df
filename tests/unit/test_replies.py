"""Tolerant parsing of APIMart replies: every documented shape, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest

from pipeline.core.apimart.replies import (
    TaskImage,
    TaskState,
    error_for_status,
    error_message,
    parse_poll,
    parse_retry_after,
    parse_submit,
    result_url_problem,
    shorten,
)
from pipeline.errors import (
    ApiError,
    AuthError,
    BalanceExhausted,
    RequestRejected,
    TransientError,
)

TASK = "task_01KA040M0HP1GJWBJYZMKX1XS1"
URL = "https://upload.apimart.ai/f/image/a.png"
URL2 = "https://upload.apimart.ai/f/image/b.png"


def completed(images: list[Any], **extra: Any) -> dict[str, Any]:
    """A completed poll reply (the APIMART.md §2 example) with the given images."""
    data = {
        "id": TASK,
        "status": "completed",
        "progress": 100,
        "result": {"images": images},
        "created": 1763088289,
        "completed": 1763088308,
        "estimated_time": 60,
        "actual_time": 19,
        **extra,
    }
    return {"code": 200, "data": data}


# -- submit ---------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"code": "success", "message": "", "data": [{"task_id": TASK, "status": "processing"}]},
        {"code": 200, "message": "", "data": [{"task_id": TASK, "status": "processing"}]},
        {"code": "200", "data": [{"task_id": TASK, "status": "processing"}]},
        {"data": [{"task_id": TASK, "status": "processing"}]},
        {"code": 200, "data": {"task_id": TASK, "status": "processing"}},
        {"code": 200, "data": {"id": TASK, "status": "processing"}},
        {"code": 200, "data": [{"task_id": TASK, "status": "Processing"}]},
    ],
    ids=["success-list", "200-list", "200-str", "no-code", "object", "id-key", "status-case"],
)
def test_submit_accepts_every_documented_envelope(payload: dict[str, Any]) -> None:
    """Submit replies with code 200/"success"/absent and data list/object all parse."""
    state = parse_submit(payload)
    assert state == TaskState(TASK, "processing", None, None, (), None)
    assert not state.finished


def test_the_asking_time_and_reply_headers_ride_on_the_parsed_state() -> None:
    """``asked_at`` (and a submit's request id and replay mark) reach the TaskState."""
    submitted = parse_submit({"code": 200, "data": [{"task_id": TASK}]}, asked_at=12.5,
                             request_id="req_1", replayed="true")
    assert (submitted.asked_at, submitted.request_id, submitted.replayed) == (12.5, "req_1", True)
    polled = parse_poll(completed([{"url": [URL]}]), TASK, asked_at=13.25)
    assert (polled.asked_at, polled.request_id, polled.replayed) == (13.25, None, False)


def test_submit_without_status_is_pending() -> None:
    """A submit reply that omits status still establishes the task, as pending."""
    assert parse_submit({"code": 200, "data": [{"task_id": TASK}]}).status == "pending"


def test_submit_replay_of_a_completed_task_needs_no_result() -> None:
    """A replayed submit may say completed with no result; the images come from a poll."""
    state = parse_submit({"code": "success", "data": [{"task_id": TASK, "status": "completed"}]})
    assert (state.status, state.images) == ("completed", ())


def test_submit_with_a_result_keeps_its_images() -> None:
    """A submit reply that does carry a result has its images parsed."""
    data = {"task_id": TASK, "status": "completed", "result": {"images": [{"url": URL}]}}
    assert parse_submit({"code": 200, "data": data}).images == (TaskImage(URL, None),)


def test_submit_numeric_task_id_becomes_text() -> None:
    """A numeric task id is accepted and kept as a string."""
    assert parse_submit({"code": 200, "data": {"task_id": 42}}).task_id == "42"


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "ok",
        None,
        {"code": 200},
        {"code": 200, "data": None},
        {"code": 200, "data": []},
        {"code": 200, "data": [{"task_id": TASK}, {"task_id": "task_2"}]},
        {"code": 200, "data": ["task_x"]},
        {"code": 200, "data": [{"status": "pending"}]},
        {"code": 200, "data": [{"task_id": ""}]},
        {"code": 200, "data": [{"task_id": TASK, "status": "queued"}]},
        {"code": "error", "data": [{"task_id": TASK}]},
        {"code": True, "data": [{"task_id": TASK}]},
    ],
    ids=[
        "list",
        "string",
        "null",
        "no-data",
        "null-data",
        "empty-list",
        "two-tasks",
        "bare-string-task",
        "no-id",
        "empty-id",
        "unknown-status",
        "error-code-word",
        "bool-code",
    ],
)
def test_submit_refuses_unexpected_shapes_as_transient(payload: object) -> None:
    """Submit replies of any other shape are TransientError "malformed"."""
    with pytest.raises(TransientError, match="malformed"):
        parse_submit(payload)


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (401, AuthError),
        ("403", AuthError),
        (402, BalanceExhausted),
        (400, RequestRejected),
        (422, RequestRejected),
        (429, TransientError),
        (500, TransientError),
    ],
)
def test_error_code_inside_a_200_reply_is_classified(
    code: object, error_type: type[ApiError]
) -> None:
    """An error code in the envelope of an HTTP 200 reply means what that status means."""
    payload = {"code": code, "message": "nope", "data": None}
    with pytest.raises(error_type, match="nope") as caught:
        parse_submit(payload)
    assert type(caught.value) is error_type


# -- poll -----------------------------------------------------------------


def test_poll_documented_example() -> None:
    """The APIMART.md §2 poll example (url as a one-item list) parses completely."""
    state = parse_poll(completed([{"url": [URL], "expires_at": 1763174708}]), TASK)
    assert state == TaskState(TASK, "completed", 100, 60.0, (TaskImage(URL, 1763174708),), None,
                              created=1763088289)
    assert state.finished


def test_poll_url_as_a_string() -> None:
    """An image url given as a plain string is one image."""
    state = parse_poll(completed([{"url": URL, "expires_at": 1763174708}]), TASK)
    assert state.images == (TaskImage(URL, 1763174708),)


def test_poll_url_list_with_several_urls_is_several_images() -> None:
    """A url list with several URLs yields one image per URL, sharing expires_at."""
    state = parse_poll(completed([{"url": [URL, URL2], "expires_at": 5}]), TASK)
    assert state.images == (TaskImage(URL, 5), TaskImage(URL2, 5))


def test_poll_several_image_objects_keep_their_order() -> None:
    """Several image objects yield images in reply order, each with its own expiry."""
    state = parse_poll(completed([{"url": URL, "expires_at": 1}, {"url": [URL2]}]), TASK)
    assert state.images == (TaskImage(URL, 1), TaskImage(URL2, None))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1763174708, 1763174708),
        ("1763174708", 1763174708),
        (1.5e9, 1500000000),
        (None, None),
        ("soon", None),
        (True, None),
        (-1, None),
    ],
)
def test_poll_expires_at_is_lenient(raw: object, expected: int | None) -> None:
    """expires_at is an int when readable, None when absent or garbage."""
    image: dict[str, Any] = {"url": URL}
    if raw is not None:
        image["expires_at"] = raw
    assert parse_poll(completed([image]), TASK).images[0].expires_at == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (60, 60.0),
        (12.5, 12.5),
        ("90", 90.0),
        (" 7.5 ", 7.5),
        ("n/a", None),
        (None, None),
        (False, None),
        (float("nan"), None),
        (-3, None),
    ],
)
def test_poll_estimated_time_is_lenient(raw: object, expected: float | None) -> None:
    """estimated_time accepts int, float and numeric strings; anything else is None."""
    data: dict[str, Any] = {"id": TASK, "status": "processing", "progress": 40}
    if raw is not None:
        data["estimated_time"] = raw
    assert parse_poll({"code": "success", "data": data}, TASK).estimated_time == expected


@pytest.mark.parametrize(("raw", "expected"), [(40, 40), ("55", 55), (120, 100), ("x", None)])
def test_poll_progress_is_clamped_or_dropped(raw: object, expected: int | None) -> None:
    """progress is clamped to 0-100, and dropped when unreadable."""
    data = {"id": TASK, "status": "processing", "progress": raw}
    assert parse_poll({"code": 200, "data": data}, TASK).progress == expected


def test_poll_data_as_one_item_list_and_without_id() -> None:
    """Poll data may be a one-item list, and may omit the id the URL already named."""
    state = parse_poll({"code": "success", "data": [{"status": "pending", "progress": 0}]}, TASK)
    assert state == TaskState(TASK, "pending", 0, None, (), None)


def test_poll_ignores_result_and_error_until_relevant() -> None:
    """A processing task has no images and no error, whatever else the reply holds."""
    data = {"id": TASK, "status": "processing", "result": {"images": []}, "error": "x"}
    state = parse_poll({"code": 200, "data": data}, TASK)
    assert state.images == ()
    assert state.error is None


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            {"message": "blocked by moderation", "code": "content_moderation"},
            "blocked by moderation (content_moderation)",
        ),
        ({"message": "worker crashed"}, "worker crashed"),
        ({"code": 5001}, "5001"),
        ("generation failed", "generation failed"),
        ({"type": "x"}, None),
        (None, None),
    ],
    ids=["message-and-code", "message", "code-only", "string", "no-text", "absent"],
)
def test_poll_failed_error_shapes(error: object, expected: str | None) -> None:
    """A failed task's error may be an object with message/code or a string."""
    data: dict[str, Any] = {"id": TASK, "status": "failed", "progress": 30}
    if error is not None:
        data["error"] = error
    state = parse_poll({"code": 200, "data": data}, TASK)
    assert state.status == "failed"
    assert state.finished
    assert state.error == expected


def test_poll_cancelled_is_finished() -> None:
    """A cancelled task is finished and carries no images."""
    state = parse_poll({"code": 200, "data": {"id": TASK, "status": "cancelled"}}, TASK)
    assert state.finished
    assert state.images == ()


@pytest.mark.parametrize(
    "payload",
    [
        {"code": 200, "data": {"id": "task_other", "status": "pending"}},
        {"code": 200, "data": {"id": TASK, "status": "done"}},
        {"code": 200, "data": {"id": TASK}},
        {"code": 200, "data": {"id": TASK, "status": 3}},
        {"code": 200, "data": {"id": TASK, "status": "completed"}},
        {"code": 200, "data": {"id": TASK, "status": "completed", "result": {"images": []}}},
        completed([{"url": []}]),
        completed([{"url": None}]),
        completed([{"url": 7}]),
        completed([{"url": [URL, None]}]),
        completed([42]),
        {"code": 200, "data": [{"id": TASK, "status": "pending"}, {"id": TASK}]},
    ],
    ids=[
        "other-id",
        "unknown-status",
        "no-status",
        "numeric-status",
        "completed-no-result",
        "completed-no-images",
        "empty-url-list",
        "null-url",
        "numeric-url",
        "null-in-url-list",
        "image-not-object",
        "two-tasks",
    ],
)
def test_poll_refuses_untrustworthy_shapes(payload: object) -> None:
    """Poll replies that would mislead the pipeline are TransientError "malformed"."""
    with pytest.raises(TransientError, match="malformed") as caught:
        parse_poll(payload, TASK)
    assert caught.value.retry_after is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "file: scheme"),
        ("gopher://example.com/1/a.png", "gopher: scheme"),
        ("ftp://host/a.png", "ftp: scheme"),
        ("http://cdn.example.com/a.png", "plain http to a remote host"),
        ("/f/image/a.png", "not an absolute URL"),
        ("https:///no-host.png", "has no host"),
    ],
)
def test_result_url_with_a_forbidden_scheme_fails_the_attempt(url: str, reason: str) -> None:
    """A result URL imgspec must not fetch is a RequestRejected naming the reason, not a
    "malformed" reply retried until the task timeout."""
    with pytest.raises(RequestRejected, match=reason) as caught:
        parse_poll(completed([{"url": url}]), TASK)
    assert url[:40] in str(caught.value)


@pytest.mark.parametrize(
    ("url", "api_host"),
    [
        ("http://127.0.0.1:8787/files/a.png", ""),
        ("http://localhost/files/a.png", ""),
        ("http://[::1]:80/a.png", ""),
        ("http://api.test/files/a.png", "api.test"),
        ("HTTPS://CDN.example.com/a.png", ""),
    ],
)
def test_result_url_over_http_is_fine_from_loopback_or_an_http_api(url: str,
                                                                   api_host: str) -> None:
    """Plain http results are fetched from loopback (the simulator) or the http API's host."""
    state = parse_poll(completed([{"url": url}]), TASK, api_host=api_host)
    assert state.images == (TaskImage(url, None),)


def test_poll_accepts_a_bare_url_string_as_an_image() -> None:
    """An image entry that is just a URL string is taken as that image."""
    assert parse_poll(completed([URL]), TASK).images == (TaskImage(URL, None),)


# -- error bodies, Retry-After, statuses ------------------------------------


@pytest.mark.parametrize(
    ("payload", "text", "expected"),
    [
        ({"message": "top", "error": {"message": "inner"}}, "", "top"),
        ({"message": "", "error": {"message": "inner"}}, "", "inner"),
        ({"error": "flat string"}, "", "flat string"),
        ({"error": {"type": "x"}}, '{"error": {"type": "x"}}', '{"error": {"type": "x"}}'),
        (None, "<html>\n  Bad   Gateway\n</html>", "<html> Bad Gateway </html>"),
        (None, "", "(empty reply body)"),
    ],
    ids=["message", "error-message", "error-string", "fallback-json", "fallback-html", "empty"],
)
def test_error_message_sources(payload: object, text: str, expected: str) -> None:
    """The error text comes from message, error.message, an error string, else the body."""
    assert error_message(payload, text) == expected


def test_error_message_fallback_is_shortened() -> None:
    """A long non-JSON error body is cut to one short line."""
    message = error_message(None, "x" * 5000)
    assert len(message) == 300
    assert message.endswith("…")


def test_shorten_leaves_short_text_alone() -> None:
    """Short single-line text passes through shorten unchanged."""
    assert shorten("fine") == "fine"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-4", 0.0),
        (None, None),
        ("soon", None),
        ("inf", None),
        ("Wed, 21 Oct 2015 07:28:00", None),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    """Retry-After in seconds is read as such; unreadable or naive dates are ignored."""
    assert parse_retry_after(value, now=0.0) == expected


def test_retry_after_http_date() -> None:
    """Retry-After as an HTTP date is the seconds from now until then (never negative)."""
    when = datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC)
    header = format_datetime(when, usegmt=True)
    assert parse_retry_after(header, now=when.timestamp() - 30) == pytest.approx(30.0)
    assert parse_retry_after(header, now=when.timestamp() + 99) == 0.0


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, RequestRejected),
        (404, RequestRejected),
        (409, RequestRejected),
        (413, RequestRejected),
        (422, RequestRejected),
        (301, RequestRejected),
        (401, AuthError),
        (403, AuthError),
        (402, BalanceExhausted),
        (408, TransientError),
        (429, TransientError),
        (500, TransientError),
        (502, TransientError),
        (503, TransientError),
        (504, TransientError),
    ],
)
def test_api_status_classes(status: int, error_type: type[ApiError]) -> None:
    """Each API status maps to its APIMART.md §3 class, keeping the API's message."""
    error = error_for_status(status, "the api said so", retry_after=3.0)
    assert type(error) is error_type
    assert error.status == status
    assert "the api said so" in str(error)
    if isinstance(error, TransientError):
        assert error.retry_after == 3.0


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, RequestRejected),
        (403, RequestRejected),
        (404, RequestRejected),
        (410, RequestRejected),
        (429, TransientError),
        (500, TransientError),
    ],
)
def test_download_status_classes(status: int, error_type: type[ApiError]) -> None:
    """On an image URL, 4xx means "re-poll for a fresh URL", never a run-stopping AuthError."""
    error = error_for_status(status, "gone", download=True)
    assert type(error) is error_type


def test_messages_from_the_server_become_storable_text() -> None:
    """Lone surrogates and control characters in an API message become U+FFFD, not a crash."""
    state = parse_poll({"code": 200, "data": {"id": "task_1", "status": "failed",
                                              "error": {"message": "bad \ud800 x\x00y"}}},
                       "task_1")
    assert state.error == "bad \ufffd x\ufffdy"
    assert state.error.encode("utf-8")


def test_task_id_with_characters_no_id_has_is_malformed() -> None:
    """A task id holding a lone surrogate or a control character is a malformed reply."""
    for bad in ("task_\ud800", "task_\x00"):
        with pytest.raises(TransientError, match="holds characters no id has"):
            parse_submit({"code": 200, "data": {"task_id": bad, "status": "pending"}})


def test_result_url_that_is_not_plain_ascii_is_refused() -> None:
    """A result URL with spaces, control or non-ASCII characters is not fetched or stored."""
    for bad in ("https://x.test/a b.png", "https://x.test/\ud800.png", "https://x.test/é.png"):
        assert result_url_problem(bad) is not None
