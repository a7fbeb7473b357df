"""What a failed request becomes: the one place aiohttp's exceptions and the API's
error replies turn into :mod:`pipeline.errors` classes (``raise ... from``).

What a reply *means* (which status is retried, the error's message in the body)
is :mod:`pipeline.core.apimart.replies`' (pure); here are the exceptions of the
network, of the local file a download writes, and the API key masked out of every
message.

A request that cannot connect to the API (refused, no such host, connect timeout,
failed TLS handshake) never left this machine: it is an :class:`ApiUnreachable`
naming ``HOST:PORT``, never an unknown outcome, and it is retried only once the
API has answered this client (before that the base URL or the network is wrong,
and retrying would only delay saying so). A TLS handshake answered in plain http
is a :class:`NotTls`: the base URL should say http://.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final, NoReturn

import aiohttp
from yarl import URL

from pipeline.core.apimart.replies import (
    decode_json,
    error_for_status,
    error_message,
    parse_retry_after,
    shorten,
)
from pipeline.errors import ApiError, ApiUnreachable, NotTls, RequestRejected, TransientError

__all__ = ["Failures", "why"]

# OpenSSL's reasons when the server answers a TLS handshake in plain http.
_PLAIN_HTTP_REASONS: Final = frozenset({"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG"})
_CHECK_BASE_URL: Final = "check --base-url / APIMART_BASE_URL"


def why(exc: OSError) -> str:
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


class Failures:
    """The error translation of one client: its key (masked), the API's ``HOST:PORT``
    and proxy (named when unreachable), and whether the API has answered it yet
    (``reached``, set by the client on the first reply)."""

    __slots__ = ("_address", "_api_proxy", "_key", "reached")

    def __init__(self, *, key: str, address: str, api_proxy: URL | None) -> None:
        self._key = key
        self._address = address
        self._api_proxy = api_proxy
        self.reached = False

    def redact(self, text: str) -> str:
        """``text`` with the API key masked."""
        return text.replace(self._key, "***")

    @contextlib.contextmanager
    def translated(self, what: str, dest: Path | None = None, *,
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
                raise self.unreachable(what, exc) from exc
            if isinstance(exc, TimeoutError):
                raise TransientError(f"{what}: timed out ({type(exc).__name__})") from exc
            self._network_error(what, exc)
        except aiohttp.InvalidURL as exc:  # also a ValueError: before ClientError's branch
            raise RequestRejected(f"{what}: {type(exc).__name__}: "
                                  f"{shorten(self.redact(str(exc)))}") from exc
        except aiohttp.ClientError as exc:
            self._network_error(what, exc)

    def unreachable(self, what: str, exc: OSError) -> ApiUnreachable:
        """The error for an API call that could not connect: nothing was sent.

        Retryable only once the API has answered this client: a first contact that
        fails is final, so a wrong base URL is said at once, not after the backoff.
        """
        if isinstance(exc, aiohttp.ClientProxyConnectionError) and self._api_proxy is not None:
            proxy = f"{self._api_proxy.host}:{self._api_proxy.port}"
            return ApiUnreachable(
                f"{what}: cannot connect to the proxy {proxy} ({why(exc)}) — check "
                "HTTPS_PROXY / HTTP_PROXY / NO_PROXY; nothing was sent",
                address=proxy, retryable=self.reached)
        address = self._address
        reason = getattr(getattr(exc, "os_error", None), "reason", None)
        if isinstance(exc, aiohttp.ClientConnectorSSLError) and reason in _PLAIN_HTTP_REASONS:
            return NotTls(
                f"the server at {address} does not speak TLS — use http:// for a local "
                f"simulator ({_CHECK_BASE_URL}); nothing was sent",
                address=address, retryable=False)
        return ApiUnreachable(
            f"{what}: cannot connect to {address} ({why(exc)}) — {_CHECK_BASE_URL} "
            "and the network; nothing was sent", address=address, retryable=self.reached)

    def _network_error(self, what: str, exc: BaseException) -> NoReturn:
        # aiohttp's class name says what happened (ServerDisconnectedError,
        # ClientPayloadError for a body cut short, ClientConnectorError, ...).
        detail = self.redact(str(exc)) or "connection failed"
        raise TransientError(f"{what}: {type(exc).__name__}: {shorten(detail)}") from exc

    def status_error(self, status: int, headers: Mapping[str, str], body: bytes, *,
                     download: bool = False) -> ApiError:
        """The error for a reply that is not a success (``body``: its first bytes)."""
        # Mask before shortening, so a key cut in half by the shortening cannot survive.
        text = self.redact(body.decode("utf-8", errors="replace"))
        payload: object = None
        with contextlib.suppress(TransientError):  # not JSON: the text itself is the message
            payload = decode_json(text)
        message = self.redact(error_message(payload, text))
        if 300 <= status < 400:
            location = self.redact(headers.get("Location", "nowhere"))
            message = f"unexpected redirect to {shorten(location, 100)}: check the base URL"
        retry_after = parse_retry_after(headers.get("Retry-After"), now=time.time())
        return error_for_status(status, message, retry_after=retry_after, download=download)
