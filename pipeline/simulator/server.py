"""The simulator's HTTP application (aiohttp): endpoints, auth, rules and faults.

Routes:

- ``POST /v1/images/generations``: bearer auth, every :mod:`pipeline.core.apimart.rules` rule
  (400), Idempotency-Key replay (422 on a different body), balance (402).
- ``GET /v1/tasks/{task_id}``: bearer auth; ``?language=`` is accepted and ignored.
- ``GET /files/{token}.png``: result images; no auth, like a CDN link; 404 unknown,
  410 expired.
- ``POST /v1/uploads/images``: bearer auth; multipart field ``file`` (JPEG, PNG,
  WebP, GIF up to 20 MB); its own faults; ``GET /uploads/{name}`` serves it for
  ``upload_ttl`` (72 h). Its URLs are signed (size and time inside), so a
  generation request naming one is checked without a table, across restarts.
- ``GET /v1/balance`` (and ``/balance``): bearer auth; the configured balance less
  what is charged (``remain_balance`` -1 and ``unlimited_quota`` when there is none).
- ``GET /_sim/ledger``: the billing ledger as JSON; no auth, it is the
  simulator's own control surface and holds no secret.

All state lives in one event loop thread, so handlers need no locks; image
encoding and input-image decoding run in a small thread pool.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from aiohttp import web

from pipeline.core.apimart.rules import Problem, check_request, output_dimensions
from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.faults import FaultInjector
from pipeline.simulator.images import ImageCache, parse_hex_colours, render_png
from pipeline.simulator.inputs import check_data_uri, foreign_size, unreachable
from pipeline.simulator.responses import (
    RESPONSE_VERSION,
    UploadSigner,
    UrlSigner,
    error_body,
    json_bytes,
    poll_reply,
    submit_reply,
    upload_info,
    versioned_bytes,
)
from pipeline.simulator.tasks import Ledger, TaskStore, body_digest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# Nine 20 MB images, base64-encoded, plus the rest of the JSON.
MAX_BODY_BYTES = 9 * 20 * 1024 * 1024 * 4 // 3 + 1024 * 1024
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
VERSION_HEADER = "X-APIMart-Response-Version"
_REQUEST_ID = web.RequestKey("request_id", str)


# Up to 2K a render takes well under a millisecond (``images`` caches the costly part):
# cheaper on the loop than a trip to a worker thread. Larger ones go to the thread.
_INLINE_RENDER_PIXELS = 2048 * 2048
_DRIP_SECONDS = 60  # how long download.drip goes on before closing the connection


def _json(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _error(status: int, message: str, kind: str, **headers: str) -> web.Response:
    return _json(status, error_body(status, message, kind), headers or None)


def _reset(request: web.Request) -> web.Response:
    """Reset the TCP connection (RST, not FIN): what a crashed proxy looks like."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 makes close() send RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    # aiohttp fails to write this to the dead transport and drops it quietly.
    return web.Response(status=500)


def _drop(request: web.Request) -> web.Response:
    """Close the connection without replying: the request was handled, the reply is lost."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=500)


def _guard(handler: Handler) -> Handler:
    """Turn a bug in a handler into a JSON 500 instead of a logged traceback."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "request body is too large", "invalid_request")
        except web.HTTPException:
            raise
        except Exception as err:  # a simulator bug must not kill the connection silently
            return _error(500, f"simulator error: {type(err).__name__}: {err}", "server_error")

    return guarded


def _format_problems(errors: list[Problem]) -> str:
    parts = []
    for p in errors:
        where = p.field or "request"
        parts.append(f"{where}: {p.message} ({p.hint})")
    return "invalid request: " + "; ".join(parts)


class Simulator:
    """One simulated APIMart account: its tasks, ledger, faults and HTTP app."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.faults = FaultInjector(config.faults, config.seed)
        self.store = TaskStore(config, self.faults.injected)
        self.signer = UrlSigner(config.seed)
        self.cache = ImageCache()
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="imgspec-sim")
        self.port = config.port  # the bound port, set by the runner once listening
        self._auth = config.api_key.encode()
        self.uploads = UploadSigner(config.seed)
        # Bytes of the images uploaded to this process, for GET (the URLs verify without).
        self.uploaded_files: dict[str, tuple[bytes, str]] = {}

    def app(self) -> web.Application:
        """The aiohttp application serving this simulator."""
        app = web.Application(client_max_size=MAX_BODY_BYTES,
                              middlewares=[self._request_ids])
        app.router.add_post("/v1/images/generations", _guard(self.submit))
        app.router.add_get("/v1/tasks/{task_id}", _guard(self.poll))
        app.router.add_get("/files/{token}.png", _guard(self.download))
        app.router.add_post("/v1/uploads/images", _guard(self.upload))
        app.router.add_get("/uploads/{name}", _guard(self.uploaded))
        app.router.add_get("/v1/balance", _guard(self.balance))
        app.router.add_get("/balance", _guard(self.balance))
        app.router.add_get("/_sim/ledger", _guard(self.ledger_endpoint))
        return app

    def ledger(self) -> Ledger:
        """The ledger now (call from the event loop thread)."""
        return self.store.ledger(self.config.clock(), self.faults.injected)

    def close(self) -> None:
        """Release the worker threads; save the counters and close the state file."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    # -- helpers ------------------------------------------------------------

    @web.middleware
    async def _request_ids(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every reply names its request (``X-Request-Id``) and, when versioned, its version."""
        request_id = f"req_{secrets.token_hex(10)}"
        request[_REQUEST_ID] = request_id
        response = await handler(request)
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
            if self._versioned(request):
                response.headers[VERSION_HEADER] = RESPONSE_VERSION
        return response

    def _versioned(self, request: web.Request) -> bool:
        """Whether this request is answered in the versioned envelope (config ``envelope``)."""
        if self.config.envelope == "requested":
            return request.headers.get(VERSION_HEADER, "").strip() == RESPONSE_VERSION
        return self.config.envelope == "versioned"

    def _shaped(self, request: web.Request, legacy: bytes) -> bytes:
        """A task reply body in the envelope this request is answered in."""
        if not self._versioned(request):
            return legacy
        return versioned_bytes(legacy, request.get(_REQUEST_ID, ""))

    def _denied(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization")
        if header is None:
            return _error(
                401,
                "missing Authorization header: send 'Authorization: Bearer <your API key>'",
                "authentication_error",
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self._auth
        ):
            return _error(401, "invalid API key", "authentication_error")
        return None

    def _rate_limited(self, name: str) -> web.Response:
        self.faults.record(name)
        seconds = str(self.config.retry_after)
        return _error(
            429,
            f"rate limit exceeded: retry after {seconds} s",
            "rate_limited",
            **{"Retry-After": seconds},
        )

    def _server_error(self, name: str) -> web.Response:
        self.faults.record(name)
        status = self.faults.server_error_status()
        return _error(status, "upstream service temporarily unavailable", "server_error")

    def _own_image(self, url: str, request: web.Request) -> tuple[int, int] | str | None:
        """Size of an image this simulator served; an error text if it is gone; None if
        the URL is not one of ours."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return None
        hosts = _LOOPBACK_NAMES | {self.config.host, request.url.host or ""}
        if parts.hostname not in hosts or port != self.port:
            return None
        path = parts.path
        if path.startswith("/uploads/"):
            return self._own_upload(url, path.removeprefix("/uploads/"))
        if not (path.startswith("/files/") and path.endswith(".png")):
            return f"{url} was not found (HTTP 404)"
        parsed = self.signer.parse(path[len("/files/") : -len(".png")])
        task = self.store.tasks.get(parsed[0]) if parsed else None
        if parsed is None or task is None or parsed[1] >= task.n:
            return f"{url} was not found (HTTP 404)"
        now = self.config.clock()
        if task.status_at(now)[0] != "completed":
            return f"{url} was not found (HTTP 404)"
        if now >= task.expires_at(parsed[2], self.config.url_ttl):
            return f"{url} has expired (HTTP 410)"
        return task.width, task.height

    def _own_upload(self, url: str, name: str) -> tuple[int, int] | str:
        """Size of an image uploaded here, or why its URL does not work."""
        parsed = self.uploads.parse(name)
        if parsed is None:
            return f"{url} was not found (HTTP 404)"
        width, height, created = parsed
        if self.config.clock() >= created + self.config.upload_ttl:
            return f"{url} has expired (HTTP 410)"
        return width, height

    async def _check(
        self, body: dict[str, object], request: web.Request
    ) -> tuple[list[Problem], tuple[int, int]]:
        """All problems of a request body, and the size its images would have."""
        urls = body.get("image_urls")
        sizes: list[tuple[int, int] | None] = []
        last: tuple[int, int] | None = None
        fetch_problems: list[Problem] = []
        if isinstance(urls, list) and 0 < len(urls) <= 9:
            data_uris: dict[int, str] = {}
            for i, url in enumerate(urls):
                size: tuple[int, int] | None = None
                assumed: tuple[int, int] | None = None
                if isinstance(url, str) and url.startswith("data:"):
                    if not self.config.accept_data_uris:
                        fetch_problems.append(Problem(
                            "image_urls",
                            f"image {i + 1}: base64 data URIs are no longer accepted",
                            "upload the image (POST /v1/uploads/images) and send its URL; "
                            "in imgspec: inputs: upload",
                            index=i))
                        continue
                    data_uris[i] = url
                elif isinstance(url, str) and url.startswith(("http://", "https://")):
                    own = self._own_image(url, request)
                    if isinstance(own, str):
                        fetch_problems.append(
                            Problem(
                                "image_urls",
                                f"image {i + 1}: {own}",
                                "poll the task again for a fresh URL, or use another image",
                                index=i,
                            )
                        )
                    elif own is not None:
                        size = own
                    elif (problem := unreachable(url, i)) is not None:
                        fetch_problems.append(problem)
                    else:
                        assumed = foreign_size(url)
                sizes.append(size)
                last = size or assumed
            if data_uris:
                loop = asyncio.get_running_loop()
                checked = await loop.run_in_executor(self.executor, _check_data_uris, data_uris)
                for i, (size, problems) in checked.items():
                    sizes[i] = size
                    fetch_problems.extend(problems)
                last = sizes[-1] if sizes[-1] is not None else last
        problems = check_request(body, input_sizes=sizes)
        # A URL the rules already reject needs no second complaint about its contents.
        flagged = {p.index for p in problems if p.field == "image_urls"}
        problems.extend(p for p in fetch_problems if p.index not in flagged)
        return problems, output_dimensions(body, last_input=last)

    def _replay(self, request: web.Request, key: str, digest: str) -> web.Response | None:
        """The earlier task's reply for a reused Idempotency-Key; 422 if the body differs."""
        known = self.store.idempotency.get(key)
        if known is None:
            return None
        if known[0] != digest:
            self.store.rejected += 1
            return _error(
                422,
                f"Idempotency-Key {key!r} was already used with a different request body: "
                "use a new key for a new request",
                "idempotency_conflict",
            )
        self.store.replays += 1
        task = self.store.tasks[known[1]]
        status, _ = task.status_at(self.config.clock())
        return _json(200, self._shaped(request, submit_reply(task, status)),
                     {"Idempotency-Replayed": "true"})

    # -- handlers -----------------------------------------------------------

    async def submit(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/images/generations."""
        store = self.store
        store.tick(self.config.clock())
        store.submissions += 1
        denied = self._denied(request)
        if denied is not None:
            store.rejected += 1
            return denied
        raw = await request.read()
        fault = self.faults.draw("submit")
        if fault == "submit.429":
            return self._rate_limited(fault)
        if fault == "submit.5xx":
            return self._server_error(fault)
        if fault == "submit.reset":
            self.faults.record(fault)
            return _reset(request)
        try:
            body = json.loads(raw)
        except ValueError as err:
            store.rejected += 1
            return _error(400, f"request body is not valid JSON: {err}", "invalid_request")
        if not isinstance(body, dict):
            store.rejected += 1
            return _error(400, "request body must be a JSON object", "invalid_request")
        digest = body_digest(body)
        key = request.headers.get("Idempotency-Key") or None
        reply = self._replay(request, key, digest) if key else None
        if reply is None:
            problems, size = await self._check(body, request)
            errors = [p for p in problems if p.severity == "error"]
            if errors:
                store.rejected += 1
                return _error(400, _format_problems(errors), "invalid_request")
            # Another request may have taken the key while the inputs were checked.
            reply = self._replay(request, key, digest) if key else None
            if reply is None:
                reply = self._create(request, body, digest, size, key)
        if fault == "submit.lost_reply" and reply.status == 200:
            self.faults.record(fault)
            return _drop(request)
        return reply

    def _create(
        self, request: web.Request, body: dict[str, object], digest: str,
        size: tuple[int, int], key: str | None
    ) -> web.Response:
        store = self.store
        model = str(body["model"])
        n = body.get("n", 1)
        count = n if isinstance(n, int) else 1
        if not store.can_afford(model, count):
            store.rejected += 1
            return _error(402, "insufficient balance: top up the account", "insufficient_balance")
        fate = self.faults.draw("task")
        if fate is not None:
            self.faults.record(fate)
        sequential = body.get("enable_sequential") is True
        colours = () if sequential else tuple(parse_hex_colours(body.get("color_palette")))
        now = self.config.clock()
        task = store.create(
            body,
            digest=digest,
            size=size,
            now=now,
            fails=fate == "task.fail",
            stuck=fate == "task.stuck",
            colours=colours,
            key=key,
        )
        status, _ = task.status_at(now)
        if status not in ("pending", "processing"):
            # A zero-latency task is already done, but a submission reply is always in flight.
            status = "processing"
        return _json(200, self._shaped(request, submit_reply(task, status)))

    async def poll(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/tasks/{task_id}."""
        self.store.tick(self.config.clock())
        self.store.polls += 1
        denied = self._denied(request)
        if denied is not None:
            return denied
        fault = self.faults.draw("poll")
        if fault == "poll.429":
            return self._rate_limited(fault)
        if fault == "poll.5xx":
            return self._server_error(fault)
        task_id = request.match_info["task_id"]
        task = self.store.tasks.get(task_id)
        if task is None:
            return _error(404, f"task {task_id!r} not found", "not_found")
        now = self.config.clock()
        origin = f"{request.scheme}://{request.host}"
        body = self._shaped(request,
                            poll_reply(task, now, origin, self.config.url_ttl, self.signer))
        self.store.settle_task(task, now)
        if fault == "poll.malformed":
            self.faults.record(fault)
            body = body[: len(body) // 2]
        elif fault == "poll.bad_url" and task.status_at(now)[0] == "completed":
            self.faults.record(fault)
            scheme = b"file://" if self.faults.injected[fault] % 2 else b"gopher://localhost"
            body = body.replace(origin.encode() + b"/files/", scheme + b"/files/")
        return _json(200, body)

    async def download(self, request: web.Request) -> web.StreamResponse:
        """GET /files/{token}.png."""
        store = self.store
        store.tick(self.config.clock())
        store.downloads += 1
        parsed = self.signer.parse(request.match_info["token"])
        task = store.tasks.get(parsed[0]) if parsed else None
        now = self.config.clock()
        if (
            parsed is None
            or task is None
            or parsed[1] >= task.n
            or task.status_at(now)[0] != "completed"
        ):
            return _error(404, "file not found", "not_found")
        _, index, epoch = parsed
        expires = task.expires_at(epoch, self.config.url_ttl)
        if now >= expires:
            return _error(
                410, f"this URL expired at {expires}: poll the task for a fresh URL", "expired"
            )
        fault = self.faults.draw("download")
        if fault == "download.5xx":
            return self._server_error(fault)
        if fault == "download.expired":
            self.faults.record(fault)
            return _error(410, "this URL expired: poll the task for a fresh URL", "expired")
        render = functools.partial(
            render_png,
            task.width,
            task.height,
            task.image_keys[index],
            colours=task.colours,
            watermark=task.watermark,
        )
        cache_key = (task.id, index)
        data = self.cache.get(cache_key)
        if data is None and task.width * task.height <= _INLINE_RENDER_PIXELS:
            data = self.cache.get_or_render(cache_key, render)
        if data is None:
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(
                self.executor, self.cache.get_or_render, cache_key, render
            )
        if fault == "download.truncate":
            self.faults.record(fault)
            return await _truncated(request, data)
        if fault == "download.drip":
            self.faults.record(fault)
            return await _dripped(request, data)
        store.downloads_ok += 1
        return web.Response(body=data, content_type="image/png")

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/uploads/images: multipart field ``file``; JPEG, PNG, WebP, GIF to 20 MB."""
        store = self.store
        store.tick(self.config.clock())
        denied = self._denied(request)
        if denied is not None:
            return denied
        fault = self.faults.draw("upload")
        if fault == "upload.5xx":
            await request.read()
            return self._server_error(fault)
        if fault == "upload.reset":
            await request.read()
            self.faults.record(fault)
            return _reset(request)
        if not request.content_type.startswith("multipart/"):
            return _error(400, "send the image as multipart/form-data, field 'file'",
                          "invalid_request")
        form = await request.post()
        field = form.get("file")
        if not isinstance(field, web.FileField):
            return _error(400, "missing file field: send the image as form field 'file'",
                          "invalid_request")
        data = field.file.read()
        if len(data) > MAX_UPLOAD_BYTES:
            return _error(413, "file too large: at most 20 MB", "invalid_request")
        loop = asyncio.get_running_loop()
        seen = await loop.run_in_executor(self.executor, upload_info, data)
        if seen is None:
            return _error(400, "unsupported format: JPEG, PNG, WebP or GIF", "invalid_request")
        fmt, width, height = seen
        created = int(self.config.clock())
        name = self.uploads.name(width, height, created, fmt.lower(), serial=store.uploads)
        mime = f"image/{fmt.lower()}"
        self.uploaded_files[name] = (data, mime)
        store.uploads += 1
        origin = f"{request.scheme}://{request.host}"
        reply = _json(200, json_bytes({
            "url": f"{origin}/uploads/{name}", "filename": field.filename or "image",
            "content_type": mime, "bytes": len(data), "created_at": created}))
        if fault == "upload.lost_reply":
            self.faults.record(fault)
            return _drop(request)
        return reply

    async def uploaded(self, request: web.Request) -> web.StreamResponse:
        """GET /uploads/{name}: an uploaded image, while its URL lives (410 after)."""
        name = request.match_info["name"]
        parsed = self.uploads.parse(name)
        if parsed is None:
            return _error(404, "file not found", "not_found")
        if self.config.clock() >= parsed[2] + self.config.upload_ttl:
            return _error(410, "this upload URL has expired: upload the image again", "expired")
        held = self.uploaded_files.get(name)
        if held is None:  # uploaded to an earlier process of a --state simulator
            return _error(404, "file not found", "not_found")
        return web.Response(body=held[0], content_type=held[1])

    async def balance(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/balance (and /balance): what is left of ``config.balance``, in CNY.

        Falls as images are pre-charged and rises as failed tasks are refunded; an
        account without a balance is unlimited (``remain_balance`` -1).
        """
        self.store.tick(self.config.clock())
        denied = self._denied(request)
        if denied is not None:
            return denied
        self.store.settle(self.config.clock())
        used = self.store.cost_charged
        limit = self.config.balance
        return _json(200, json_bytes({
            "success": True,
            "remain_balance": -1 if limit is None else float(limit - used),
            "used_balance": float(used),
            "unlimited_quota": limit is None,
        }))

    async def ledger_endpoint(self, request: web.Request) -> web.StreamResponse:
        """GET /_sim/ledger."""
        return _json(200, json_bytes(self.ledger().to_json()))


async def _truncated(request: web.Request, data: bytes) -> web.StreamResponse:
    """Announce the whole image, send half, then close: a connection cut mid-download."""
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    response.content_length = len(data)
    await response.prepare(request)
    await response.write(data[: len(data) // 2])
    transport = request.transport
    if transport is not None:
        transport.close()  # close() flushes what was written, then sends FIN
    return response


async def _dripped(request: web.Request, data: bytes) -> web.StreamResponse:
    """Announce the whole image, then send it a byte a second: a host that never stalls
    outright, so only an overall deadline or a minimum rate stops the download.

    Gives up after a minute (closing the connection), so a simulator being stopped
    never waits long for it.
    """
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    response.content_length = len(data)
    await response.prepare(request)
    for index in range(min(len(data), _DRIP_SECONDS)):
        await asyncio.sleep(1.0)
        transport = request.transport
        if transport is None or transport.is_closing():
            break  # the client gave up
        try:
            await response.write(data[index : index + 1])
        except ConnectionError:
            break
    transport = request.transport
    if transport is not None:
        transport.close()
    return response


def _check_data_uris(
    uris: Mapping[int, str],
) -> dict[int, tuple[tuple[int, int] | None, list[Problem]]]:
    return {i: check_data_uri(uri, i) for i, uri in uris.items()}
