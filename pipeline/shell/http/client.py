"""The async client for APIMart's image API: submit, poll, download.

One shared ``aiohttp.ClientSession`` (HTTP/1.1, no redirects on API calls),
request-rate bounds (``--max-rate``, a hard cap only when given; and per kind of
request, one that adapts to the API's 429s, see
:class:`pipeline.core.planning.pacing.AdaptiveRate`),
and retries with stamina on :class:`TransientError` only. aiohttp is used
directly, with no httpx layer over it: at 100 requests in flight that layer cost
three times aiohttp's own CPU per request, and the event loop is what limits a
run at 1,000 tasks in flight. Each request's headers are built once per client
(or once per call for a submit's Idempotency-Key); proxies are looked up once
per host, not by aiohttp on each request (its ``trust_env`` makes two
worker-thread trips per request, netrc and proxy, ~0.2 ms of CPU each time).
Downloads are written, fsynced, hashed and checked in a worker thread, so the
event loop never waits on the disk. Every failure leaves as
one of the :mod:`pipeline.errors` classes; foreign exceptions are translated in
exactly one place, :meth:`ApiClient._translated`. What a reply *means* lives in
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

A download has an overall deadline and a minimum rate (averaged over a window),
so an image host dripping bytes cannot hold a run past its task timeout; and a
result URL that is not https (plain http only from loopback or an http API
origin) is refused before any request. Both are a RequestRejected naming the reason.
Defaults: ``IMGSPEC_DOWNLOAD_DEADLINE`` (300 s), ``IMGSPEC_DOWNLOAD_MIN_RATE``
(1024 bytes/s) over ``IMGSPEC_DOWNLOAD_RATE_WINDOW`` (30 s), or the constructor's
keyword options.

The base URL is checked by :func:`pipeline.shell.http.endpoint.parse_base_url`: the key
travels only over https, or plain http to this machine (the simulator).
The API key is sent only to the API's origin (never to a foreign image host:
download redirects are followed here, one hop at a time, and the key is dropped
for good at the first hop that leaves the API's origin) and is masked out of
every message this module builds. HTTP(S)_PROXY / NO_PROXY are honoured, except
for a loopback host (the simulator), which a proxy could not reach.

A request that cannot connect to the API (refused, no such host, connect timeout,
failed TLS handshake) never left this machine: it is an :class:`ApiUnreachable`
naming ``HOST:PORT``, never an unknown outcome, and it is retried only once the
API has answered this client (before that the base URL or the network is wrong,
and retrying would only delay saying so). A TLS handshake answered in plain http
is a :class:`NotTls`: the base URL should say http://.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NoReturn, TypeVar
from urllib.parse import quote, urljoin, urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from pipeline.core.apimart.images import IMAGE_FORMATS
from pipeline.core.apimart.replies import (
    RESPONSE_VERSION,
    Balance,
    TaskImage,
    TaskState,
    Uploaded,
    decode_json,
    error_for_status,
    error_message,
    is_loopback,
    parse_balance,
    parse_poll,
    parse_retry_after,
    parse_submit,
    parse_upload,
    result_url_problem,
    shorten,
)
from pipeline.core.planning.pacing import Bound
from pipeline.errors import (
    ApiError,
    ApiUnreachable,
    AuthError,
    NotTls,
    RequestRejected,
    TransientError,
    UsageError,
)
from pipeline.shell.http.downloads import (
    MAX_SIDE,
    MIN_SIDE,
    Downloaded,
    DownloadLimits,
    ImageSink,
    declared_length,
)
from pipeline.shell.http.endpoint import parse_base_url
from pipeline.shell.http.gates import RateGate
from pipeline.shell.http.retrying import RetryEvent, report_retries_as_events, retrying

__all__ = ["ApiClient", "Balance", "TaskImage", "TaskState", "Uploaded"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

USER_AGENT: Final = "imgspec/0.1 (+aiohttp)"
RESPONSE_VERSION_HEADER: Final = "X-APIMart-Response-Version"
_ERROR_BODY_BYTES: Final = 4096
MAX_REDIRECTS: Final = 20  # per download, as httpx's default
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
# OpenSSL's reasons when the server answers a TLS handshake in plain http.
_PLAIN_HTTP_REASONS: Final = frozenset({"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG"})
_CHECK_BASE_URL: Final = "check --base-url / APIMART_BASE_URL"


class _RateLimiter:
    """Spaces requests at least ``1 / rate`` seconds apart, across all callers: the
    hard cap of ``--max-rate``.

    Each caller reserves the next free slot before sleeping. No lock is needed:
    nothing awaits between reading and writing ``_next``, and asyncio switches
    tasks only at an await.
    """

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0
        self.held_at = -math.inf  # when a request last had to wait for its slot

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            self.held_at = now
            await asyncio.sleep(slot - now)


def _learn(gate: RateGate, status: int, headers: Mapping[str, str]) -> None:
    """Tell ``gate`` how the API answered: a 429 slows it down, anything else lets it recover."""
    now = time.monotonic()
    if status == 429:
        gate.limited(now, parse_retry_after(headers.get("Retry-After"), now=time.time()))
    else:
        gate.succeeded(now)


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``; a port out of range is -1, no real origin's."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    return (parts.scheme.lower(), (parts.hostname or "").lower(), port)


@functools.cache
def _tls() -> ssl.SSLContext:
    """The trust store httpx used, so nothing changes for a user: SSL_CERT_FILE or
    SSL_CERT_DIR when set, else certifi's. One per process (it takes ~16 ms to build).
    """
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi  # only for an https API: not on the simulator's path

    return ssl.create_default_context(cafile=certifi.where())


def _env_proxy(scheme: str, host: str) -> URL | None:
    """The proxy HTTP(S)_PROXY / ALL_PROXY / NO_PROXY give for ``scheme``://``host``;
    never one for a loopback host (the simulator), which a proxy could not reach.

    What aiohttp's ``trust_env`` does on every request (in two worker-thread trips),
    done once per host; and without its netrc logins for the hosts themselves, which
    would clash with the API key's header. A proxy's credentials stay in its URL,
    where aiohttp reads them in every version. aiohttp speaks to http proxies only:
    another (socks5://...) is ignored, with a warning.
    """
    if not host or is_loopback(host) or proxy_bypass(host):
        return None
    proxies = getproxies()
    value = proxies.get(scheme) or proxies.get("all")
    if not value:
        return None
    try:
        proxy = URL(value if "://" in value else f"http://{value}")
    except ValueError:
        proxy = None
    if proxy is None or proxy.scheme != "http" or not proxy.host:
        _log.warning("ignoring the proxy set for %s URLs: aiohttp reaches hosts only "
                     "through http:// proxies", scheme)
        return None
    return proxy


def _why(exc: OSError) -> str:
    """Why a connection failed, in a few words (aiohttp's own text names the host)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "no answer to the connection attempt in time"
    cause = getattr(exc, "os_error", None)
    if isinstance(cause, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused: nothing listens there"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientConnectorCertificateError):
        return f"TLS handshake failed: {shorten(str(cause or exc), 120)}"
    return shorten(str(cause.strerror if isinstance(cause, OSError) and cause.strerror
                       else cause or exc), 120)


async def _uncancelled(work: Awaitable[T]) -> T:
    """Await ``work`` (a worker-thread call) to its end even when cancelled meanwhile.

    A thread cannot be stopped: returning early would let the caller close or
    remove the file the thread is still writing.
    """
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        # Cancelled again while waiting (Ctrl-C cancels the run, then the loop's
        # shutdown cancels what is left): still wait, or the caller closes the file
        # descriptor under the thread.
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({future})
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what the caller reports
        raise


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
        self._api_origin = _origin(checked.url)
        self._address = checked.address
        # Whether the API has answered this client yet: until it has, a failed connection
        # means a wrong base URL or no network, and is not retried (see _unreachable).
        self._reached = False
        # An API reached over plain http may hand out plain http result URLs of its own.
        self._http_api_host = host if scheme == "http" else ""
        self._limits = download_limits or DownloadLimits.from_env()
        self._key = api_key
        self._retry_attempts = retry_attempts
        self._retry_timeout = retry_timeout
        self._max_download_bytes = max_download_bytes
        self._on_retry = on_retry
        # --max-rate: a hard cap on every request, only when given. Otherwise each kind
        # of request is unbounded until the API limits it (429), then adapts (pacing).
        self._limiter = _RateLimiter(max_rate) if max_rate is not None else None
        self._gates = {"submit": RateGate(), "poll": RateGate(), "download": RateGate()}
        # Built once: aiohttp copies a CIMultiDict as it is, without converting it.
        # Every call asks for the versioned envelope, as the official client does;
        # replies parses it and today's shapes alike.
        common = {"User-Agent": USER_AGENT, RESPONSE_VERSION_HEADER: RESPONSE_VERSION}
        auth = {"Authorization": f"Bearer {api_key}"}
        self._api_headers = CIMultiDict({**common, "Accept": "application/json", **auth})
        self._image_headers = CIMultiDict({**common, "Accept": "image/*"})
        self._keyed_image_headers = CIMultiDict({**common, "Accept": "image/*", **auth})
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout,
                                              sock_connect=timeout, sock_read=timeout)
        self._tls = scheme == "https"
        self._proxies: dict[tuple[str, str], URL | None] = {}
        self._api_proxy = self._proxy(scheme, host)
        self._http: aiohttp.ClientSession | None = None
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
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        """The connection pool, made by the first request (inside the running loop).

        No connection limit: the executor bounds what is in flight. ``trust_env``
        stays off: proxies are looked up per host by :meth:`_proxy`. An https API
        gets its trust store (:func:`_tls`); an http origin (the simulator) leaves
        https links, if any, to aiohttp's default.
        """
        session = self._http
        if session is None:
            connector = aiohttp.TCPConnector(limit=0, ssl=_tls() if self._tls else True)
            # No cookies: the API sets none, and a jar costs work on every request.
            session = self._http = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar())
        return session

    def _proxy(self, scheme: str, host: str) -> URL | None:
        """The proxy (if any) for ``scheme``://``host``, looked up once per host."""
        key = (scheme, host)
        if key not in self._proxies:
            self._proxies[key] = _env_proxy(scheme, host)
        return self._proxies[key]

    # -- the three operations ------------------------------------------------

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
        """Upload one input image: ``POST /v1/uploads/images``, multipart field ``file``.

        Free, so an upload whose outcome is unknown (lost reply, reset) is simply
        retried; the caller sends the returned URL only once this has returned.
        """
        boundary = f"imgspec-{os.urandom(12).hex()}"
        safe_name = "".join(c for c in filename if c.isascii() and c.isprintable()
                            and c not in '"\\') or "image"
        content = b"".join((
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'.encode(),
            f"Content-Type: {content_type}\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ))
        headers = self._api_headers.copy()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        url = f"{self._base_url}/v1/uploads/images"

        async def once() -> Uploaded:
            payload, _asked_at, _got = await self._request_json("upload", "POST", url,
                                                                headers, content)
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
            raise RequestRejected(f"download: the image URL {shorten(self._redact(url), 80)!r} "
                                  f"{problem}")
        try:
            return await self._retrying("download", lambda: self._watched(url, dest))
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

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***")

    @contextlib.contextmanager
    def _translated(self, what: str, dest: Path | None = None, *,
                    api: bool = False) -> Iterator[None]:
        """The one place where foreign exceptions become :mod:`pipeline.errors` ones.

        Around network calls (``dest`` None) any OSError is the network's (aiohttp's
        own errors are OSErrors too, and so is TimeoutError); around the disk work of
        a download (``dest`` given) an OSError is the local file's, not retried. A
        call to the API (``api``) that cannot connect is an :class:`ApiUnreachable`.
        """
        try:
            yield
        except ApiError:
            raise
        except OSError as exc:
            if dest is not None:
                raise TransientError(f"{what}: local file {dest}: {exc.strerror or exc}",
                                     retryable=False) from exc
            if api and isinstance(exc, (aiohttp.ClientConnectorError,
                                        aiohttp.ConnectionTimeoutError)):
                raise self._unreachable(what, exc) from exc
            if isinstance(exc, TimeoutError):
                raise TransientError(f"{what}: timed out ({type(exc).__name__})") from exc
            self._network_error(what, exc)
        except aiohttp.InvalidURL as exc:  # also a ValueError: before ClientError's branch
            raise RequestRejected(f"{what}: {type(exc).__name__}: "
                                  f"{shorten(self._redact(str(exc)))}") from exc
        except aiohttp.ClientError as exc:
            self._network_error(what, exc)

    def _unreachable(self, what: str, exc: OSError) -> ApiUnreachable:
        """The error for an API call that could not connect: nothing was sent.

        Retryable only once the API has answered this client: a first contact that
        fails is final, so a wrong base URL is said at once, not after the backoff.
        """
        if isinstance(exc, aiohttp.ClientProxyConnectionError) and self._api_proxy is not None:
            proxy = f"{self._api_proxy.host}:{self._api_proxy.port}"
            return ApiUnreachable(
                f"{what}: cannot connect to the proxy {proxy} ({_why(exc)}) — check "
                "HTTPS_PROXY / HTTP_PROXY / NO_PROXY; nothing was sent",
                address=proxy, retryable=self._reached)
        address = self._address
        reason = getattr(getattr(exc, "os_error", None), "reason", None)
        if isinstance(exc, aiohttp.ClientConnectorSSLError) and reason in _PLAIN_HTTP_REASONS:
            return NotTls(
                f"the server at {address} does not speak TLS — use http:// for a local "
                f"simulator ({_CHECK_BASE_URL}); nothing was sent",
                address=address, retryable=False)
        return ApiUnreachable(
            f"{what}: cannot connect to {address} ({_why(exc)}) — {_CHECK_BASE_URL} "
            "and the network; nothing was sent", address=address, retryable=self._reached)

    def _network_error(self, what: str, exc: BaseException) -> NoReturn:
        # aiohttp's class name says what happened (ServerDisconnectedError,
        # ClientPayloadError for a body cut short, ClientConnectorError, ...).
        detail = self._redact(str(exc)) or "connection failed"
        raise TransientError(f"{what}: {type(exc).__name__}: {shorten(detail)}") from exc

    def _status_error(
        self, status: int, headers: Mapping[str, str], body: bytes, *, download: bool = False
    ) -> ApiError:
        # Mask before shortening, so a key cut in half by the shortening cannot survive.
        text = self._redact(body.decode("utf-8", errors="replace"))
        payload: object = None
        with contextlib.suppress(TransientError):  # not JSON: the text itself is the message
            payload = decode_json(text)
        message = self._redact(error_message(payload, text))
        if 300 <= status < 400:
            location = self._redact(headers.get("Location", "nowhere"))
            message = f"unexpected redirect to {shorten(location, 100)}: check the base URL"
        retry_after = parse_retry_after(headers.get("Retry-After"), now=time.time())
        return error_for_status(status, message, retry_after=retry_after, download=download)

    async def _request_json(
        self,
        what: str,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        content: bytes | None,
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
        session = self._session()
        proxy = self._api_proxy
        with self._translated(what, api=True):
            asked_at = time.monotonic()
            # No redirects: a 3xx is an error naming the base URL (see _status_error).
            async with session.request(method, url, headers=headers, data=content,
                                       allow_redirects=False, proxy=proxy) as response:
                self._reached = True
                body = await response.read()
            status = response.status
            got = response.headers
            _learn(gate, status, got)
            if not 200 <= status < 300:
                raise self._status_error(status, got, body)
            return decode_json(body, what=what), asked_at, got

    async def _watched(self, url: str, dest: Path) -> Downloaded:
        """One download under the deadline and minimum rate of ``self._limits``.

        The rate is checked window by window: each window must bring at least
        ``min_rate * window`` bytes (the first window includes connecting and
        the headers). Time-based, so a host sending nothing at all is caught too.
        A timer checks, and cancels this very task when a limit is passed (as
        ``asyncio.timeout`` does): no second task and no wait per download.
        """
        limits = self._limits
        sink = ImageSink(dest)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        started = loop.time()
        mark_time, mark_bytes = started, 0
        problem: str | None = None
        timer: asyncio.TimerHandle | None = None

        def watch() -> None:
            nonlocal mark_time, mark_bytes, problem, timer
            now = loop.time()
            if now - started >= limits.deadline:
                problem = (f"download: not finished after {limits.deadline:g} s "
                           f"({sink.size:,} bytes received); the image host is too slow")
            elif now - mark_time >= limits.window:
                rate = (sink.size - mark_bytes) / (now - mark_time)
                if rate < limits.min_rate:
                    problem = (f"download: {rate:,.0f} bytes/s over {now - mark_time:.3g} s, "
                               f"below the minimum of {limits.min_rate:g} bytes/s; the image "
                               "host is too slow")
                mark_time, mark_bytes = now, sink.size
            if problem is not None:
                task.cancel()
                return
            timer = loop.call_at(min(started + limits.deadline, mark_time + limits.window),
                                 watch)

        timer = loop.call_at(min(started + limits.deadline, started + limits.window), watch)
        try:
            # Cancelled by ``watch``, the download still closes its file first
            # (``_uncancelled``), before the caller removes it.
            return await self._download_once(url, sink)
        except asyncio.CancelledError:
            if problem is not None and task.uncancel() <= cancelling:
                raise RequestRejected(problem) from None
            raise
        finally:
            assert timer is not None
            timer.cancel()

    async def _download_once(self, url: str, sink: ImageSink) -> Downloaded:
        if self._limiter is not None:
            await self._limiter.wait()
        gate = self._gates["download"]
        await gate.through()
        dest = sink.dest
        try:
            with self._translated("download"):
                async with await self._get_image(url) as response:
                    got = response.headers
                    _learn(gate, response.status, got)
                    if response.status != 200:
                        body = b""
                        async for chunk in response.content.iter_any():
                            body += chunk
                            if len(body) >= _ERROR_BODY_BYTES:
                                break
                        raise self._status_error(response.status, got, body, download=True)
                    declared = declared_length(got.get("Content-Length"))
                    if declared is not None:
                        self._check_size(declared)
                    # Chunks as they arrive (no re-chunking), so ``sink.size`` is the
                    # progress the rate watch in ``_watched`` sees.
                    async for chunk in response.content.iter_any():
                        self._check_size(sink.size + len(chunk))
                        if sink.add(chunk):
                            with self._translated("download", dest):
                                await _uncancelled(asyncio.to_thread(sink.spill))
                    # aiohttp enforces Content-Length; this guards others. A
                    # content-encoded body decodes to another length: not compared.
                    plain = "Content-Encoding" not in got
                    if plain and declared is not None and sink.size != declared:
                        raise TransientError(
                            f"download: truncated image ({sink.size} of {declared} bytes)")
            with self._translated("download", dest):
                sha256, seen = await _uncancelled(asyncio.to_thread(sink.finish))
        finally:
            sink.close()
        if seen is None:
            raise TransientError(
                f"download: the {sink.size}-byte file is truncated or not an image")
        fmt, width, height = seen
        if fmt not in IMAGE_FORMATS or not (
            MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE
        ):
            raise TransientError(
                f"download: got a {width}x{height} {fmt or 'unknown'} image, not a plausible result"
            )
        return Downloaded(sha256, sink.size, width, height, fmt)

    async def _get_image(self, url: str) -> aiohttp.ClientResponse:
        """GET ``url``, following redirects one hop at a time: the final response.

        The key goes to the API's own origin only: a CDN link never receives it, and
        once a hop leaves the origin it is dropped for the rest of the chain (aiohttp
        drops it by itself only in some versions, so its redirects are not used).
        """
        session = self._session()
        scheme, host, _port = origin = _origin(url)
        keyed = origin == self._api_origin
        for _hop in range(MAX_REDIRECTS + 1):
            headers = self._keyed_image_headers if keyed else self._image_headers
            response = await session.get(url, headers=headers, allow_redirects=False,
                                         proxy=self._proxy(scheme, host))
            location = response.headers.get("Location")
            if response.status not in _REDIRECT_STATUSES or location is None:
                return response
            response.release()
            try:
                target = urljoin(url, location)
                scheme, host, _port = hop = _origin(target)
            except ValueError:  # e.g. a malformed IPv6 host
                target, hop = location, ("", "", None)
                scheme, host = "", ""
            if scheme not in ("http", "https") or not host or hop[2] == -1:
                shown = shorten(self._redact(target), 80)
                raise RequestRejected(f"download: redirected to {shown!r}, not an http(s) URL")
            keyed = keyed and hop == origin
            url, origin = target, hop
        raise RequestRejected(f"download: more than {MAX_REDIRECTS} redirects; the image "
                              "host is misconfigured")

    def _check_size(self, size: int) -> None:
        if size > self._max_download_bytes:
            raise RequestRejected(
                f"download: the image is larger than the {self._max_download_bytes:,}-byte limit"
            )

    async def _retrying(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried by this client's policy (:func:`retrying.retrying`)."""
        return await retrying(operation, call, attempts=self._retry_attempts,
                              timeout=self._retry_timeout, on_retry=self._on_retry)
