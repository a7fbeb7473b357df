"""Fetching one result image over HTTP: redirects, the key's fence, limits, the stream.

A download follows redirects here, one hop at a time, rather than through
aiohttp's ``allow_redirects``, for two reasons. Each hop is sent through the
proxy of its own host (:meth:`Connections.proxy`: NO_PROXY, a loopback host),
where aiohttp applies one request's ``proxy=`` to every hop of its redirects and
looks a proxy up per hop only with ``trust_env`` (worker-thread trips and netrc
logins on every request). And the API key's fence is this module's rule, whatever
the aiohttp version: the key goes to the API's own origin only (scheme, host and
port), and once a hop leaves that origin it is dropped for the rest of the chain,
even when a later hop comes back. (aiohttp 3.x drops ``Authorization`` at a
cross-origin hop too, but every copy of the header only from 3.14.3.) What this
loop relies on of aiohttp is only that ``allow_redirects=False`` hands back the
3xx reply itself, with its ``Location``, as every aiohttp 3.x does (pyproject keeps it
below 4).

A download has an overall deadline and a minimum rate (averaged over a window),
so an image host dripping bytes cannot hold a run past its task timeout. Its
bytes go to an :class:`ImageSink` (written, fsynced and hashed in a worker
thread, so the event loop never waits on the disk), and the result must decode
as an image of a plausible size.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import urljoin

import aiohttp
from multidict import CIMultiDict

from pipeline.core.apimart.images import IMAGE_FORMATS
from pipeline.core.apimart.links import Origin
from pipeline.core.apimart.replies import shorten
from pipeline.errors import RequestRejected, TransientError
from pipeline.shell.http.connections import NO_ORIGIN, Connections, origin
from pipeline.shell.http.downloads import (
    MAX_SIDE,
    MIN_SIDE,
    Downloaded,
    DownloadLimits,
    ImageSink,
    declared_length,
)
from pipeline.shell.http.failures import Failures
from pipeline.shell.http.gates import RateGate, RateLimiter, learn

__all__ = ["MAX_REDIRECTS", "ImageFetcher", "uncancelled"]

T = TypeVar("T")

MAX_REDIRECTS: Final = 20  # per download, as httpx's default
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_ERROR_BODY_BYTES: Final = 4096


async def uncancelled(work: Awaitable[T]) -> T:
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


class ImageFetcher:
    """One client's downloads: one attempt of one image per :meth:`fetch` call (the
    client retries it)."""

    def __init__(self, *, connections: Connections, failures: Failures, gate: RateGate,
                 limiter: RateLimiter | None, limits: DownloadLimits, max_bytes: int,
                 api_origin: Origin, headers: CIMultiDict[str],
                 keyed_headers: CIMultiDict[str]) -> None:
        self._connections = connections
        self._failures = failures
        self._gate = gate
        self._limiter = limiter
        self._limits = limits
        self._max_bytes = max_bytes
        self._api_origin = api_origin
        self._headers = headers
        self._keyed_headers = keyed_headers

    async def fetch(self, url: str, dest: Path) -> Downloaded:
        """One download under the deadline and minimum rate of the limits.

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
            # (``uncancelled``), before the caller removes it.
            return await self._once(url, sink)
        except asyncio.CancelledError:
            if problem is not None and task.uncancel() <= cancelling:
                raise RequestRejected(problem) from None
            raise
        finally:
            assert timer is not None
            timer.cancel()

    async def _once(self, url: str, sink: ImageSink) -> Downloaded:
        if self._limiter is not None:
            await self._limiter.wait()
        gate = self._gate
        await gate.through()
        translated = self._failures.translated
        dest = sink.dest
        try:
            with translated("download"):
                async with await self._get(url) as response:
                    got = response.headers
                    learn(gate, response.status, got)
                    if response.status != 200:
                        body = b""
                        async for chunk in response.content.iter_any():
                            body += chunk
                            if len(body) >= _ERROR_BODY_BYTES:
                                break
                        raise self._failures.status_error(response.status, got, body,
                                                          download=True)
                    declared = declared_length(got.get("Content-Length"))
                    if declared is not None:
                        self._check_size(declared)
                    # Chunks as they arrive (no re-chunking), so ``sink.size`` is the
                    # progress the rate watch in ``fetch`` sees.
                    async for chunk in response.content.iter_any():
                        self._check_size(sink.size + len(chunk))
                        if sink.add(chunk):
                            with translated("download", dest):
                                await uncancelled(asyncio.to_thread(sink.spill))
                    # aiohttp enforces Content-Length; this guards others. A
                    # content-encoded body decodes to another length: not compared.
                    plain = "Content-Encoding" not in got
                    if plain and declared is not None and sink.size != declared:
                        raise TransientError(
                            f"download: truncated image ({sink.size} of {declared} bytes)")
            with translated("download", dest):
                sha256, seen = await uncancelled(asyncio.to_thread(sink.finish))
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

    async def _get(self, url: str) -> aiohttp.ClientResponse:
        """GET ``url``, following redirects one hop at a time (see the module's text):
        the final response."""
        connections = self._connections
        session = connections.session()
        scheme, host, _port = here = origin(url)
        keyed = here == self._api_origin
        for _hop in range(MAX_REDIRECTS + 1):
            headers = self._keyed_headers if keyed else self._headers
            response = await session.get(url, headers=headers, allow_redirects=False,
                                         proxy=connections.proxy(scheme, host))
            location = response.headers.get("Location")
            if response.status not in _REDIRECT_STATUSES or location is None:
                return response
            response.release()
            try:
                target = urljoin(url, location)
                scheme, host, _port = hop = origin(target)
            except ValueError:  # e.g. a malformed IPv6 host
                target, hop = location, NO_ORIGIN
                scheme, host = "", ""
            if scheme not in ("http", "https") or not host or hop[2] == -1:
                shown = shorten(self._failures.redact(target), 80)
                raise RequestRejected(f"download: redirected to {shown!r}, not an http(s) URL")
            keyed = keyed and hop == here
            url, here = target, hop
        raise RequestRejected(f"download: more than {MAX_REDIRECTS} redirects; the image "
                              "host is misconfigured")

    def _check_size(self, size: int) -> None:
        if size > self._max_bytes:
            raise RequestRejected(
                f"download: the image is larger than the {self._max_bytes:,}-byte limit")
