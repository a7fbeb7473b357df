"""What the APIMart API's replies mean: pure, tolerant parsing with no I/O.

The published documentation disagrees with itself in places (``code`` 200 or
``"success"``; ``data`` a list or an object; an image ``url`` a string or a
list of strings), and error bodies are not published at all. Everything here
accepts each documented variant and turns anything else into the right
exception from :mod:`pipeline.errors`:

- a reply whose shape we cannot trust is a :class:`TransientError`
  ("malformed"), since a re-poll or a replayed submit may well get a good one;
- an HTTP status (or an error ``code`` inside a 200 reply) is classified per
  ``APIMART.md`` §3 by :func:`error_for_status`.

Two envelopes are understood. Today's: ``{"code", "message", "data"}`` with the
task (or a one-task list) in ``data``. The versioned one, answered to a request
sent with ``X-APIMart-Response-Version: 2026-07-27`` (:data:`RESPONSE_VERSION`):
``{"version", "request_id", "data": {"id", "generation": {"task": {...},
"result": {...}}}}`` or ``{"request_id", "error": {"code", "message"}}``; its
task is flattened into today's shape before the same strict checks apply.

Fields the pipeline must rely on (task id, status, image URLs) are strict;
hints (``progress``, ``estimated_time``, ``expires_at``) are lenient: garbage
there becomes ``None`` rather than a failed call. A result URL imgspec must not
fetch (``file://``, ``gopher://``, plain http to a remote host) is a
:class:`BadResultLink` at once, not a malformed reply retried on the spot: the
task is paid for, so the executor polls it again for good links, with backoff,
this run and the next, while the API keeps it.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Final, Literal, TypeAlias, get_args
from urllib.parse import urlsplit

from pipeline.errors import (
    ApiError,
    AuthError,
    BadResultLink,
    BalanceExhausted,
    RequestRejected,
    TransientError,
)

TaskStatus: TypeAlias = Literal["pending", "processing", "completed", "failed", "cancelled"]
_STATUS_BY_NAME: Final[Mapping[str, TaskStatus]] = {name: name for name in get_args(TaskStatus)}
FINISHED: Final[frozenset[str]] = frozenset({"completed", "failed", "cancelled"})

RESPONSE_VERSION: Final = "2026-07-27"
"""The response version imgspec asks for (header ``X-APIMart-Response-Version``)."""
MAX_MESSAGE_CHARS: Final = 300
MAX_REQUEST_ID_CHARS: Final = 128
# A task makes at most 12 images (sequential mode); far more URLs is not a real reply.
MAX_RESULT_IMAGES: Final = 64
# Hints beyond these bounds are garbage, not information: an estimate over a day
# would park the task's poller past any timeout, an expiry past 9999 is no date.
MAX_ESTIMATED_TIME: Final = 86_400.0
MAX_EXPIRES_AT: Final = 253_402_300_799
MAX_TASK_ID_CHARS: Final = 256
_SUCCESS_CODES: Final[frozenset[object]] = frozenset({200, "200", "success"})
RETRIED_STATUSES: Final[frozenset[int]] = frozenset({408, 429, 502, 503, 504})
"""The statuses retried at once (honouring Retry-After), as APIMart's official client."""
_WHITESPACE_RE: Final = re.compile(r"\s+")
# Lone surrogates and control characters other than whitespace: not storable text.
_NOT_TEXT_RE: Final = re.compile("[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class TaskImage:
    """One result image: where to fetch it and until when (Unix seconds) that URL works."""

    url: str
    expires_at: int | None


@dataclass(frozen=True, slots=True)
class TaskState:
    """A task as the API last described it."""

    task_id: str
    status: TaskStatus
    progress: int | None
    estimated_time: float | None  # seconds, from the reply
    images: tuple[TaskImage, ...]  # only when completed
    error: str | None  # the API's message when failed
    # time.monotonic() when the request this reply answers was sent; set by the client
    asked_at: float | None = None
    # The API's id of the request this reply answers (body ``request_id`` or header
    # ``X-Request-Id``), and whether the API replayed an earlier reply to the same
    # Idempotency-Key (header ``Idempotency-Replayed: true``): not a second charge.
    request_id: str | None = None
    replayed: bool = False
    # The submission was sent more than once by this call (a reply lost, a retry): a
    # replay may then be of its own first sending, which the account did pay for.
    resent: bool = False
    # When the API made the task (the poll reply's ``created``, Unix seconds; None when
    # not given): tells a replay of this client's own sending from another's.
    created: float | None = None

    @property
    def finished(self) -> bool:
        """True once the task can change no more: completed, failed or cancelled."""
        return self.status in FINISHED


@dataclass(frozen=True, slots=True)
class Balance:
    """What ``GET /v1/balance`` says of the key's account, in the account's own unit.

    The unit is not in the reply (USD, CNY or tokens, by account configuration).
    ``remain`` is None when the quota is unlimited (the API sends -1 then).
    """

    remain: Decimal | None
    used: Decimal | None
    unlimited: bool


UPLOAD_TTL: Final = 72 * 3600
"""How long an uploaded image's URL lasts (the upload page: 72 hours)."""


@dataclass(frozen=True, slots=True)
class Uploaded:
    """The reply to ``POST /v1/uploads/images``: the URL to send, and when it expires."""

    url: str
    expires_at: int  # created_at (or the caller's now) + UPLOAD_TTL


def decode_json(body: bytes | str, *, what: str = "") -> object:
    """The JSON value of a reply body; a "malformed" TransientError if it is not JSON.

    Beyond syntax errors, Python's decoder refuses integers of over 4,300 digits
    (ValueError) and very deep nesting (RecursionError): neither is a real reply.
    """
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        prefix = f"{what}: " if what else ""
        raise malformed(f"{prefix}the body is not JSON ({type(exc).__name__})") from exc


def malformed(what: str) -> TransientError:
    """The error for a reply we cannot trust: worth retrying, never worth trusting."""
    return TransientError(f"malformed reply from the API: {what}")


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis.

    What a server says ends up in the journal, the lockfile and the terminal, so
    anything that is not text there (lone surrogates, control characters) becomes
    U+FFFD.
    """
    line = _NOT_TEXT_RE.sub("\ufffd", _WHITESPACE_RE.sub(" ", text)).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def error_message(payload: object, text: str) -> str:
    """The human message of an error reply.

    ``payload`` is the decoded JSON body (anything, if the body was not JSON)
    and ``text`` the raw body. Tries ``message``, then ``error.message``, then an
    ``error`` string, and falls back to the body text, shortened.
    """
    if isinstance(payload, Mapping):
        candidates: list[object] = [payload.get("message")]
        error = payload.get("error")
        if isinstance(error, Mapping):
            candidates.append(error.get("message"))
        else:
            candidates.append(error)
        for candidate in candidates:
            if isinstance(candidate, str) and candidate.strip():
                return shorten(candidate)
    return shorten(text) or "(empty reply body)"


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    ``now`` is the current Unix time (for the date form). Returns None when the
    header is absent or unreadable; never a negative number.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one would mean local time
            return None
        try:
            seconds = when.timestamp() - now
        except (OverflowError, ValueError, OSError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def error_for_status(
    status: int, message: str, *, retry_after: float | None = None, download: bool = False
) -> ApiError:
    """The exception an HTTP error status means (``APIMART.md`` §3).

    408, 429, 502, 503 and 504 are a retryable TransientError; 500 and any other
    5xx (and 425) a TransientError that is not retried (``retryable=False``): the
    outcome is unknown, so nothing fails for it and the next run resumes the item.
    With ``download=True`` the status came from an image URL, not the API: any
    4xx other than a rate limit (404/410 expired, 401/403 a signed URL gone
    stale) means "re-poll the task for a fresh URL", so it is a RequestRejected,
    never an AuthError that would stop the whole run.
    """
    if status in RETRIED_STATUSES or status < 300:
        return TransientError(message, status=status, retry_after=retry_after)
    if status >= 500 or status == 425:
        return TransientError(message, status=status, retry_after=retry_after, retryable=False)
    if download:
        return RequestRejected(f"image URL failed ({message}): re-poll the task", status=status)
    if status in (401, 403):
        return AuthError(
            f"{message} — the API key was refused: check APIMART_API_KEY", status=status
        )
    if status == 402:
        return BalanceExhausted(
            f"{message} — the account balance is exhausted: top it up to go on", status=status
        )
    # 400/404/409/422, any other 4xx and an unexpected redirect: retrying cannot help.
    return RequestRejected(message, status=status)


def _code_status(code: object) -> int | None:
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    text = code.strip() if isinstance(code, str) else ""
    # ASCII digits only ("²" is a digit to isdigit, not to int), and few of them.
    if text.isascii() and text.isdigit() and len(text) <= 6:
        return int(text)
    return None


def _is_success(code: object) -> bool:
    # Compared by type first: a list or an object as ``code`` is unhashable.
    return isinstance(code, int | str) and not isinstance(code, bool) and code in _SUCCESS_CODES


def unwrap(payload: object) -> object:
    """The ``data`` of a successful reply envelope ``{"code", "message", "data"}``.

    An error ``code`` inside an HTTP 200 reply (e.g. ``{"code": 402, ...}``) is
    classified as that status would be; anything else unexpected is malformed.
    """
    if not isinstance(payload, Mapping):
        raise malformed(f"expected a JSON object, got {_kind(payload)}")
    error = payload.get("error")
    if "code" not in payload and isinstance(error, Mapping) and payload.get("data") is None:
        # The versioned envelope's error: its ``code`` is the HTTP status it stands for.
        status = _code_status(error.get("code"))
        if status is not None and 300 <= status <= 599:
            raise error_for_status(status, error_message(payload, f"error code {status}"))
        raise malformed(f"an error reply with code {_brief(error.get('code'))}")
    code = payload.get("code")
    if "code" in payload and not _is_success(code):
        status = _code_status(code)
        if status is not None and 300 <= status <= 599:
            raise error_for_status(status, error_message(payload, f"error code {status}"))
        raise malformed(f"unexpected code {_brief(code)}")
    if payload.get("data") is None:
        raise malformed("no 'data' in the reply")
    return payload["data"]


def _single(data: object) -> Mapping[str, object]:
    """The one task object of ``data``: an object or a list holding exactly one."""
    if isinstance(data, list):
        if len(data) != 1:
            raise malformed(f"expected one task in 'data', got {len(data)}")
        data = data[0]
    if not isinstance(data, Mapping):
        raise malformed(f"expected a task object in 'data', got {_kind(data)}")
    return flatten_versioned(data)


def flatten_versioned(data: Mapping[str, object]) -> Mapping[str, object]:
    """A versioned task (``{"id", "generation": {"task", "result"}}``) in today's flat shape.

    A task without ``generation`` is returned as it is. ``data.id`` is the task's id;
    ``generation.task`` holds status, progress, estimated_time and error;
    ``generation.result`` the images.
    """
    generation = data.get("generation")
    if generation is None:
        return data
    if not isinstance(generation, Mapping):
        raise malformed(f"'generation' is {_kind(generation)}, not an object")
    task = generation.get("task", {})
    if not isinstance(task, Mapping):
        raise malformed(f"'generation.task' is {_kind(task)}, not an object")
    flat: dict[str, object] = {k: v for k, v in task.items() if k not in ("id", "task_id")}
    task_id = data.get("id", task.get("id", task.get("task_id")))
    if task_id is not None:
        flat["id"] = task_id
    if generation.get("result") is not None:
        flat["result"] = generation["result"]
    return flat


def request_id_of(payload: object, header: str | None = None) -> str | None:
    """The API's request id: the body's ``request_id``, else the ``X-Request-Id`` header.

    Only a short printable text is kept (it goes to the journal); anything else is None.
    """
    candidates: list[object] = []
    if isinstance(payload, Mapping):
        candidates.append(payload.get("request_id"))
    candidates.append(header)
    for raw in candidates:
        if isinstance(raw, str):
            text = raw.strip()
            if text and len(text) <= MAX_REQUEST_ID_CHARS and text.isprintable():
                return text
    return None


def is_replayed(header: str | None) -> bool:
    """Whether an ``Idempotency-Replayed`` header says the reply is a replay (``true``)."""
    return header is not None and header.strip().lower() == "true"


def parse_submit(payload: object, *, request_id: str | None = None,
                 replayed: str | None = None, asked_at: float | None = None) -> TaskState:
    """The task a ``POST /v1/images/generations`` reply announces.

    A missing ``status`` is taken as ``pending``: the task exists, which is all
    a submit must establish. A replayed submit may already say ``completed``
    without any result; its images then come from a poll. ``request_id`` and
    ``replayed`` are the reply's ``X-Request-Id`` and ``Idempotency-Replayed``
    headers, if any (see :func:`request_id_of`, :func:`is_replayed`); ``asked_at``
    when the request was sent (see :attr:`TaskState.asked_at`).
    """
    return _parse_task(_single(unwrap(payload)), expected_id=None, asked_at=asked_at,
                       request_id=request_id_of(payload, request_id),
                       replayed=is_replayed(replayed))


def parse_poll(payload: object, task_id: str, *, api_host: str = "",
               asked_at: float | None = None) -> TaskState:
    """The state a ``GET /v1/tasks/{task_id}`` reply describes.

    The reply may omit the id (the URL said it); a different id is malformed.
    ``api_host``: the API's own host when the API is reached over plain http, whose
    result URLs may then be http too (see :func:`result_url_problem`); ``asked_at``
    as for :func:`parse_submit`.
    """
    return _parse_task(_single(unwrap(payload)), expected_id=task_id, api_host=api_host,
                       asked_at=asked_at)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP address) is this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def result_url_problem(url: str, *, api_host: str = "") -> str | None:
    """Why imgspec must not fetch the result URL ``url``, or None when it may.

    https anywhere; plain http only from a loopback host (the simulator) or from
    ``api_host`` (given when the user pointed imgspec at an http API origin). A URL
    is printable ASCII (percent-encoded), as it is stored in the lockfile.
    """
    if not (url.isascii() and url.isprintable()) or " " in url:
        return "is not a plain URL (it holds spaces, control or non-ASCII characters)"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme in ("http", "https") and not host:
        return "has no host"
    if scheme == "https" and host:
        return None
    if scheme == "http" and host and (is_loopback(host) or host == api_host.lower()):
        return None
    if scheme == "http" and host:
        return "uses plain http to a remote host; imgspec downloads results only over https"
    if not scheme:
        return "is not an absolute URL; imgspec downloads results only over https"
    shown = shorten(scheme, 20)
    return (f"uses the {shown}: scheme; imgspec downloads results only over https "
            "(http only from a loopback host)")


def _parse_task(data: Mapping[str, object], *, expected_id: str | None, api_host: str = "",
                asked_at: float | None = None, request_id: str | None = None,
                replayed: bool = False) -> TaskState:
    task_id = _task_id(data, expected_id)
    raw_status = data.get("status")
    if raw_status is None and expected_id is None:
        status: TaskStatus = "pending"
    else:
        status = _status(raw_status)
    result = data.get("result")
    if status != "completed" or (expected_id is None and result is None):
        images: tuple[TaskImage, ...] = ()
    else:
        images = _images(result, api_host)
    error = _error_text(data.get("error")) if status in ("failed", "cancelled") else None
    progress = _number(data.get("progress"))
    return TaskState(
        task_id=task_id,
        status=status,
        progress=None if progress is None else max(0, min(100, int(progress))),
        estimated_time=_number(data.get("estimated_time"), upto=MAX_ESTIMATED_TIME),
        images=images,
        error=error,
        asked_at=asked_at,
        request_id=request_id,
        replayed=replayed,
        created=_number(data.get("created")),
    )


def _task_id(data: Mapping[str, object], expected: str | None) -> str:
    raw = data.get("task_id", data.get("id"))
    if raw is None and expected is not None:
        return expected
    if isinstance(raw, int) and not isinstance(raw, bool) and abs(raw) < 10**30:
        raw = str(raw)
    if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_TASK_ID_CHARS:
        raise malformed(f"no usable task id (got {_brief(raw)})")
    task_id = raw.strip()
    if not task_id.isprintable():  # lone surrogates and control characters included
        raise malformed(f"task id {shorten(task_id, 60)!r} holds characters no id has")
    if expected is not None and task_id != expected:
        raise malformed(f"asked for task {expected}, the reply is about {shorten(task_id, 60)}")
    return task_id


def _status(raw: object) -> TaskStatus:
    status = _STATUS_BY_NAME.get(raw.strip().lower()) if isinstance(raw, str) else None
    if status is not None:
        return status
    raise malformed(f"unknown task status {_brief(raw)}")


def _images(result: object, api_host: str) -> tuple[TaskImage, ...]:
    if not isinstance(result, Mapping) or not isinstance(result.get("images"), list):
        raise malformed("a completed task without 'result.images'")
    if len(result["images"]) > MAX_RESULT_IMAGES:
        raise malformed(f"{len(result['images'])} images in one task, more than any task makes")
    images: list[TaskImage] = []
    for item in result["images"]:
        if isinstance(item, str):  # undocumented, but unambiguous: a bare URL
            item = {"url": item}
        if not isinstance(item, Mapping):
            raise malformed(f"an image entry is {_kind(item)}, not an object")
        urls = item.get("url")
        url_list = urls if isinstance(urls, list) else [urls]
        if len(url_list) > MAX_RESULT_IMAGES:
            raise malformed(f"{len(url_list)} URLs for one image, more than any task makes")
        expires = _number(item.get("expires_at"), upto=MAX_EXPIRES_AT)
        for url in url_list:
            if not isinstance(url, str):
                raise malformed(f"an image url is {_brief(url)}, not a string")
            problem = result_url_problem(url, api_host=api_host)
            if problem is not None:
                raise BadResultLink(f"the result image URL {shorten(url, 80)!r} {problem}")
            images.append(TaskImage(url=url, expires_at=None if expires is None else int(expires)))
    if not images:
        raise malformed("a completed task with no image URLs")
    if len(images) > MAX_RESULT_IMAGES:
        raise malformed(f"{len(images)} image URLs in one task, more than any task makes")
    return tuple(images)


def _error_text(error: object) -> str | None:
    if isinstance(error, str):
        return shorten(error) or None
    if isinstance(error, Mapping):
        message, code = error.get("message"), error.get("code")
        text = message.strip() if isinstance(message, str) else ""
        code_text = ""
        if isinstance(code, str):
            code_text = shorten(code, 60)
        elif isinstance(code, int) and not isinstance(code, bool) and abs(code) < 10**30:
            code_text = str(code)
        if text and code_text:
            return shorten(f"{text} ({code_text})")
        return shorten(text or code_text) or None
    return None


def _number(value: object, *, upto: float = 1e15) -> float | None:
    """A finite number from 0 to ``upto`` from an int, float or numeric string; else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, str) and len(value) > 64:
        return None  # no real number is spelled this long
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):  # an int too large for a float overflows
        return None
    if math.isfinite(number) and 0 <= number <= upto:
        return number
    return None


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _brief(value: object) -> str:
    """A short description of a value for a message, without repr-ing a huge one."""
    if isinstance(value, str):
        return repr(shorten(value, 60))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"a number ({_kind(value)})" if abs(value) >= 10**30 else repr(value)
    if value is None or isinstance(value, bool):
        return repr(value)
    return f"a {_kind(value)}"


def parse_balance(payload: object) -> Balance:
    """The balance a ``GET /v1/balance`` reply gives (its fields at the top or in ``data``).

    ``{"success": true, "remain_balance": 10.5, "used_balance": 2.3,
    "unlimited_quota": false}``; ``unlimited_quota: true`` or a remain of -1 means
    unlimited. ``success: false`` is a RequestRejected with the API's message; a
    reply without a usable remain is malformed.
    """
    if not isinstance(payload, Mapping):
        raise malformed(f"expected a JSON object, got {_kind(payload)}")
    data = payload.get("data")
    fields: Mapping[str, object] = (
        data if "remain_balance" not in payload and isinstance(data, Mapping) else payload)
    if payload.get("success") is False or fields.get("success") is False:
        raise RequestRejected(f"the balance query failed: "
                              f"{error_message(payload, 'no message')}")
    unlimited = fields.get("unlimited_quota") is True
    remain = _money(fields.get("remain_balance"))
    used = _money(fields.get("used_balance"))
    if remain is not None and remain == -1:
        unlimited = True
    if unlimited:
        return Balance(remain=None, used=used, unlimited=True)
    if remain is None:
        raise malformed(f"no usable 'remain_balance' (got {_brief(fields.get('remain_balance'))})")
    return Balance(remain=remain, used=used, unlimited=False)


def _money(value: object) -> Decimal | None:
    """A finite amount from a JSON number or numeric string (as written: no float noise)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    text = str(value).strip()
    if len(text) > 40:
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def parse_upload(payload: object, *, now: float, api_host: str = "") -> Uploaded:
    """The URL an upload reply gives (``{url, filename, content_type, bytes, created_at}``,
    at the top or in ``data``), and its expiry: ``created_at`` (else ``now``) + 72 h.

    A URL imgspec would not fetch itself (see :func:`result_url_problem`) is refused
    as malformed: the upload is redone rather than a submission tied to it.
    """
    if not isinstance(payload, Mapping):
        raise malformed(f"expected a JSON object, got {_kind(payload)}")
    data = payload.get("data")
    fields: Mapping[str, object] = (
        data if "url" not in payload and isinstance(data, Mapping) else payload)
    url = fields.get("url")
    if not isinstance(url, str) or not url.strip():
        raise malformed(f"an upload reply without a 'url' (got {_brief(url)})")
    url = url.strip()
    problem = result_url_problem(url, api_host=api_host)
    if problem is not None:
        raise malformed(f"the uploaded image's URL {shorten(url, 80)!r} {problem}")
    created = _number(fields.get("created_at"), upto=MAX_EXPIRES_AT - UPLOAD_TTL)
    # A creation time far from ours would misplace the expiry: the earlier one is safe.
    start = now if created is None else min(created, now)
    return Uploaded(url=url, expires_at=int(start) + UPLOAD_TTL)
