"""The async client for APIMart's image API: submit, poll, upload, download.

aiohttp is used directly, with no httpx layer over it: at 100 requests in flight
that layer cost three times aiohttp's own CPU per request, and the event loop is
what limits a run at 1,000 tasks in flight (figures in ``bench/RESULTS.md``). No
redirects on API calls: a 3xx is an error naming the base URL. Each request's
headers are built once per client (or once per call for a submit's
Idempotency-Key).

The parts, each in its module of this package: the connection pool, trust store
and per-host proxies (:mod:`~pipeline.shell.http.connections`); request-rate
bounds, a hard cap only with ``--max-rate`` and per kind of request one that
adapts to the API's 429s (:mod:`~pipeline.shell.http.gates`); what a failure
becomes (:mod:`~pipeline.shell.http.failures`, the one boundary for foreign
exceptions); a download's redirects, limits and stream
(:mod:`~pipeline.shell.http.image_fetch`). What a reply *means* lives in
:mod:`pipeline.core.apimart.replies` (pure functions).

Retries (the manual's table in docs/running.md): 408, 429, 502, 503, 504, network failures and
malformed replies are retried; 500 and other statuses are not (see
:func:`pipeline.core.apimart.replies.error_for_status`). The backoff, and a
``Retry-After`` replacing it, are :mod:`pipeline.shell.http.retrying`'s, bounded by
``retry_attempts`` and ``retry_timeout``. A
submit whose outcome is unknown is retried with the same Idempotency-Key, so
the server replays the task instead of charging again. Downloads retry
themselves too (truncated, undecodable, 502/503/504, network); an expired URL
(404/410, and 401/403 from a signed URL) is a RequestRejected at once, since
only a re-poll can give a fresh URL.

A result URL that is not https (plain http only from loopback or an http API
origin) is refused before any request, and a download past its deadline or below
its minimum rate is stopped: both a RequestRejected naming the reason.
Defaults: ``IMGSPEC_DOWNLOAD_DEADLINE`` (300 s), ``IMGSPEC_DOWNLOAD_MIN_RATE``
(1024 bytes/s) over ``IMGSPEC_DOWNLOAD_RATE_WINDOW`` (30 s), or the constructor's
keyword options.

The base URL is checked by :func:`pipeline.shell.http.endpoint.parse_base_url`: the key
travels only over https, or plain http to this machine (the simulator). It is
sent only to the API's origin, never to a foreign image host, and is masked out
of every message. HTTP(S)_PROXY / NO_PROXY are honoured, except for a loopback
host (the simulator), which a proxy could not reach.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDict

from pipeline.core.apimart.replies import (
    RESPONSE_VERSION,
    Balance,
    TaskImage,
    TaskState,
    Uploaded,
    decode_json,
    parse_balance,
    parse_poll,
    parse_submit,
    parse_upload,
    result_url_problem,
    shorten,
)
from pipeline.core.planning.pacing import Bound
from pipeline.errors import (
    ApiUnreachable,
    AuthError,
    RequestRejected,
    TransientError,
    UsageError,
)
from pipeline.shell.http.connections import Connections, origin
from pipeline.shell.http.downloads import Downloaded, DownloadLimits
from pipeline.shell.http.endpoint import parse_base_url
from pipeline.shell.http.failures import Failures
from pipeline.shell.http.gates import RateGate, RateLimiter, learn
from pipeline.shell.http.image_fetch import ImageFetcher
from pipeline.shell.http.retrying import RetryEvent, report_retries_as_events, retrying

__all__ = ["ApiClient", "Balance", "TaskImage", "TaskState", "Uploaded"]

T = TypeVar("T")

USER_AGENT: Final = "imgspec/0.1 (+aiohttp)"
RESPONSE_VERSION_HEADER: Final = "X-APIMart-Response-Version"


def upload_filename(filename: str) -> str:
    """The file name an upload sends: printable ASCII without quotes or backslashes
    (what every multipart parser reads the same way), else ``image``."""
    return "".join(c for c in filename if c.isascii() and c.isprintable()
                   and c not in '"\\') or "image"


class ApiClient:
    """An async client for one API origin and key; use as ``async with ApiClient(...)``."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float = 30.0,
        max_rate: float | None = None,
        retry_attempts: int = 6,
        retry_timeout: float = 120.0,
        max_download_bytes: int = 64 * 2**20,
        on_retry: Callable[[RetryEvent], None] | None = None,
        download_limits: DownloadLimits | None = None,
    ) -> None:
        """Check the settings (no request is made, and the connection pool is opened by
        the first request, inside the running event loop).

        Raises AuthError for an unusable key and UsageError for other bad values;
        neither message contains the key. ``download_limits`` defaults to
        :meth:`DownloadLimits.from_env`.
        """
        if not api_key or not api_key.isascii() or not api_key.isprintable() or " " in api_key:
            raise AuthError(
                "the API key is empty or holds spaces, control or non-ASCII characters: "
                "check APIMART_API_KEY"
            )
        try:
            checked = parse_base_url(base_url)
        except UsageError as exc:
            raise UsageError(str(exc).replace(api_key, "***")) from None
        scheme, host = checked.scheme, checked.host
        if not (timeout > 0 and retry_timeout > 0 and retry_attempts >= 1):
            raise UsageError("timeout and retry_timeout must be > 0 and retry_attempts >= 1")
        if max_rate is not None and not max_rate > 0:
            raise UsageError(f"max_rate {max_rate} must be a positive number of requests/s")
        if max_download_bytes < 1:
            raise UsageError("max_download_bytes must be positive")
        self._base_url = checked.url
        # An API reached over plain http may hand out plain http result URLs of its own.
        self._http_api_host = host if scheme == "http" else ""
        self._retry_attempts = retry_attempts
        self._retry_timeout = retry_timeout
        self._on_retry = on_retry
        # --max-rate: a hard cap on every request, only when given. Otherwise each kind
        # of request is unbounded until the API limits it (429), then adapts (pacing).
        self._limiter = RateLimiter(max_rate) if max_rate is not None else None
        self._gates = {"submit": RateGate(), "poll": RateGate(), "download": RateGate()}
        # Built once: aiohttp copies a CIMultiDict as it is, without converting it.
        # Every call asks for the versioned envelope, as the official client does;
        # replies parses it and today's shapes alike.
        common = {"User-Agent": USER_AGENT, RESPONSE_VERSION_HEADER: RESPONSE_VERSION}
        auth = {"Authorization": f"Bearer {api_key}"}
        self._api_headers = CIMultiDict({**common, "Accept": "application/json", **auth})
        self._connections = Connections(
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout,
                                          sock_read=timeout),
            tls=scheme == "https")
        self._api_proxy = self._connections.proxy(scheme, host)
        self._failures = Failures(key=api_key, address=checked.address,
                                  api_proxy=self._api_proxy)
        self._images = ImageFetcher(
            connections=self._connections, failures=self._failures,
            gate=self._gates["download"], limiter=self._limiter,
            limits=download_limits or DownloadLimits.from_env(),
            max_bytes=max_download_bytes, api_origin=origin(checked.url),
            headers=CIMultiDict({**common, "Accept": "image/*"}),
            keyed_headers=CIMultiDict({**common, "Accept": "image/*", **auth}))
        report_retries_as_events()

    def __repr__(self) -> str:
        return f"ApiClient(base_url={self._base_url!r}, api_key='***')"

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Calling it twice is harmless."""
        await self._connections.aclose()

    # -- the operations --------------------------------------------------------

    async def submit(self, body: Mapping[str, Any], *, idempotency_key: str) -> TaskState:
        """Create a generation task: ``POST /v1/images/generations``.

        Every retry sends the same ``Idempotency-Key``, so a POST whose reply was
        lost is replayed by the server, never charged twice. Returns the task as
        created (normally pending or processing).
        """
        if (
            not idempotency_key
            or not idempotency_key.isascii()
            or not idempotency_key.isprintable()
        ):
            raise ValueError("idempotency_key must be non-empty printable ASCII")
        try:
            content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise RequestRejected(f"the request body cannot be sent as JSON: {exc}") from exc
        headers = self._api_headers.copy()
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = idempotency_key
        url = f"{self._base_url}/v1/images/generations"
        sent = False  # whether any attempt got past connecting: then a task may exist
        attempts = 0  # more than one: a replay may answer this call's own first sending

        async def once() -> TaskState:
            nonlocal sent, attempts
            attempts += 1
            try:
                payload, asked_at, got = await self._request_json(
                    "submit", "POST", url, headers, content)
                return parse_submit(payload, request_id=got.get("X-Request-Id"),
                                    replayed=got.get("Idempotency-Replayed"),
                                    asked_at=asked_at)
            except ApiUnreachable:
                raise
            except BaseException:  # sent, and maybe answered (a malformed reply, say)
                sent = True
                raise

        try:
            state = await self._retrying("submit", once)
        except ApiUnreachable as exc:
            if not sent:
                raise
            # An earlier attempt reached the API: its outcome is unknown, whatever the last.
            raise TransientError(f"submit: outcome unknown; then {exc}") from exc
        return dataclasses.replace(state, resent=True) if attempts > 1 else state

    async def poll(self, task_id: str) -> TaskState:
        """The task's current state: ``GET /v1/tasks/{task_id}?language=en``.

        An unknown task id (404) is a RequestRejected.
        """
        if not task_id:
            raise RequestRejected("cannot poll a task with an empty id")
        url = f"{self._base_url}/v1/tasks/{quote(task_id, safe='')}?language=en"

        async def once() -> TaskState:
            payload, asked_at, _got = await self._request_json("poll", "GET", url,
                                                                self._api_headers, None)
            return parse_poll(payload, task_id, api_host=self._http_api_host,
                              asked_at=asked_at)

        return await self._retrying("poll", once)

    async def balance(self) -> Balance:
        """The key's balance: ``GET /v1/balance`` (retried like a poll; it costs nothing)."""
        url = f"{self._base_url}/v1/balance"

        async def once() -> Balance:
            payload, _asked_at, _got = await self._request_json("balance", "GET", url,
                                                                 self._api_headers, None)
            return parse_balance(payload)

        return await self._retrying("balance", once)

    async def upload_image(self, data: bytes, *, filename: str, content_type: str) -> Uploaded:
        """Upload one input image: ``POST /v1/uploads/images``, multipart field ``file``
        named :func:`upload_filename` of ``filename``, of type ``content_type``.

        Free, so an upload whose outcome is unknown (lost reply, reset) is simply
        retried; the caller sends the returned URL only once this has returned.
        """
        name = upload_filename(filename)
        url = f"{self._base_url}/v1/uploads/images"

        async def once() -> Uploaded:
            # aiohttp's own multipart form (its writer picks the boundary and sets the
            # Content-Type and Content-Length), built again for each attempt: aiohttp
            # before 3.12 sends a form only once. ``quote_fields=False``: the name goes
            # out as it is, where the default would percent-encode it.
            form = aiohttp.FormData(quote_fields=False)
            form.add_field("file", data, filename=name, content_type=content_type)
            payload, _asked_at, _got = await self._request_json("upload", "POST", url,
                                                                self._api_headers, form)
            return parse_upload(payload, now=time.time(), api_host=self._http_api_host)

        return await self._retrying("upload", once)

    async def download(self, url: str, dest: Path) -> Downloaded:
        """Stream one result image into ``dest`` (a temporary path; its folder is created).

        The file is written, flushed and fsynced, bounded by ``max_download_bytes``,
        then must decode as a PNG/JPEG/WEBP/BMP of a plausible size. Transient
        failures (truncated, undecodable, 5xx, network) are retried here; if they
        persist, TransientError. An expired or unknown URL (404/410, 401/403) is a
        RequestRejected at once: re-poll the task for fresh URLs. So is a URL that
        is not https (see :func:`pipeline.core.apimart.replies.result_url_problem`) and a download
        past its deadline or below its minimum rate (:class:`DownloadLimits`). On any
        failure ``dest`` is removed.
        """
        problem = result_url_problem(url, api_host=self._http_api_host)
        if problem is not None:
            shown = shorten(self._failures.redact(url), 80)
            raise RequestRejected(f"download: the image URL {shown!r} {problem}")
        try:
            return await self._retrying("download", lambda: self._images.fetch(url, dest))
        except BaseException:
            with contextlib.suppress(OSError):
                dest.unlink(missing_ok=True)
            raise

    def holding(self, within: float = 1.0) -> Bound | None:
        """The rate bound that made a request wait in the last ``within`` s, if any."""
        now = time.monotonic()
        if self._limiter is not None and now - self._limiter.held_at <= within:
            return Bound.MAX_RATE
        for gate in self._gates.values():
            held = gate.holding(now, within)
            if held is not None:
                return held
        return None

    def rate_bound(self, operation: str) -> float | None:
        """The adaptive rate bound now in force for ``operation`` (None: unbounded)."""
        gate = self._gates.get(operation)
        return None if gate is None else gate.adaptive.rate

    # -- plumbing ------------------------------------------------------------

    async def _request_json(
        self,
        what: str,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        content: bytes | aiohttp.FormData | None,
    ) -> tuple[object, float, Mapping[str, str]]:
        """One API request: the decoded JSON body of a 2xx reply, when it was asked
        (``time.monotonic()`` just before the request was handed to aiohttp) and the
        reply's headers (request id, replay marker). Any other reply raises the right
        error.
        """
        if self._limiter is not None:
            await self._limiter.wait()
        gate = self._gates.get(what)
        if gate is None:
            gate = self._gates[what] = RateGate()
        await gate.through()
        session = self._connections.session()
        failures = self._failures
        with failures.translated(what, api=True):
            asked_at = time.monotonic()
            # No redirects: a 3xx is an error naming the base URL (see status_error).
            async with session.request(method, url, headers=headers, data=content,
                                       allow_redirects=False,
                                       proxy=self._api_proxy) as response:
                failures.reached = True
                body = await response.read()
            status = response.status
            got = response.headers
            learn(gate, status, got)
            if not 200 <= status < 300:
                raise failures.status_error(status, got, body)
            return decode_json(body, what=what), asked_at, got

    async def _retrying(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried by this client's policy (:func:`retrying.retrying`)."""
        return await retrying(operation, call, attempts=self._retry_attempts,
                              timeout=self._retry_timeout, on_retry=self._on_retry)
