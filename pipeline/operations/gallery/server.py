"""``imgspec review``: the gallery page served on 127.0.0.1, with keys that record decisions.

The page is rebuilt from the manifest, lockfile and review file on every load,
so a run in another terminal shows up on reload. Each decision is written to
the review file (atomically, under a lock: see ``edit_review``) as it is made;
``undo`` withdraws the page's own latest decision from the file as it is then.

Only loopback is served. The API accepts only JSON from a page whose Host is
the server's own address: a web page elsewhere cannot make the browser record
decisions (a cross-site JSON POST needs a CORS preflight, which is refused),
and a DNS-rebound name is not the loopback address. No answer may be framed
(``X-Frame-Options`` and CSP ``frame-ancestors``), and a request the page would
never send is answered 4xx with a JSON error, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import http_exceptions, web

from pipeline.core.lock.lockfile import Lockfile
from pipeline.errors import ImgspecError, UsageError
from pipeline.operations.gallery.page import gallery_policy, render_gallery
from pipeline.operations.gallery.review import (
    VERDICTS,
    Decision,
    Review,
    current,
    edit_review,
    read_review,
    review_path,
)
from pipeline.operations.gallery.site import gallery_of
from pipeline.operations.project import Paths, Prepared, current_lock, locate, prepare, read_header
from pipeline.shell.store.outputs import utc_now

HOST = "127.0.0.1"


CLIENT = re.compile(r"[A-Za-z0-9_-]{8,64}")
MAX_BODY = 64 * 1024  # bytes: a decision is a few hundred; anything larger is not the page
MAX_CLIENTS = 64  # page loads whose decisions undo remembers (the oldest are forgotten)
MAX_UNDO = 1000  # decisions per page load that undo can withdraw
FRAMED = "frame-ancestors 'none'"  # only a header can say this (a <meta> policy cannot)
API_POLICY = f"default-src 'none'; {FRAMED}"


def _not_malformed(record: logging.LogRecord) -> bool:
    """Whether a server log record is about something other than a malformed request."""
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, http_exceptions.HttpProcessingError)


# aiohttp answers a request its parser refuses (a line over 8190 bytes, bytes that
# are not HTTP) with a 400 itself, and logs it with a traceback, as it does a
# crash: the malformed request is dropped from the log, a crash still shows.
SERVER_LOG = logging.getLogger("pipeline.operations.gallery.server.http")
SERVER_LOG.addFilter(_not_malformed)


class BadRequest(ValueError):
    """The request is not one the page sends (400): its message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Made:
    """A decision one page load wrote, and the decision about the same image it replaced."""

    decision: Decision
    replaced: Decision | None


@dataclass
class ReviewSession:
    """One ``imgspec review``: the manifest, where decisions go, and what each page can undo.

    A page load is a client: it makes up a random id and sends it with every
    request, so undo withdraws that page's own latest decision, never another
    browser's. Undo changes the file as it is now (re-read under the edit lock),
    so decisions and edits made since by anyone else are kept.
    """

    manifest: Path
    simulate: bool
    output_dir: str | None = None  # --output-dir: a folder or store URL, not the manifest's
    made: OrderedDict[str, list[Made]] = field(default_factory=OrderedDict)
    _memory: threading.Lock = field(default_factory=threading.Lock)

    @property
    def path(self) -> Path:
        """The review file beside the manifest."""
        return review_path(self.manifest)

    def prepared(self) -> Prepared:
        """The manifest planned against its lockfile, as it is now."""
        return prepare(self.manifest, simulate=self.simulate, output_dir=self.output_dir)

    def page(self) -> str:
        """The gallery page with review keys."""
        prepared = self.prepared()
        return render_gallery(gallery_of(prepared, read_review(self.path)), review=True)

    def decide(self, body: Any) -> dict[str, Any]:
        """Record a decision about a current image; the decisions that apply now."""
        client = _client(body)
        key, image, sha, verdict = (body.get("key"), body.get("image"), body.get("sha256"),
                                    body.get("verdict"))
        if verdict not in VERDICTS:
            raise BadRequest(f"verdict must be one of {', '.join(VERDICTS)}")
        if not isinstance(key, str) or not isinstance(image, int) or isinstance(image, bool) \
                or not isinstance(sha, str):
            raise BadRequest("key (string), image (integer) and sha256 (string) are required")
        lock = self._lock()
        entry = lock.entries.get(key)
        if entry is None or not 0 <= image < len(entry.outputs) \
                or entry.outputs[image].sha256 != sha:
            raise ValueError(f"{key} #{image} is not the image the lockfile records now "
                             "(reload the page)")
        decision = Decision(key, image, sha, verdict, at=utc_now())

        def change(review: Review) -> tuple[Review, Made]:
            return review.decide(decision), Made(decision, review.about(decision.target))

        after, made = edit_review(self.path, change)
        with self._memory:
            stack = self.made.setdefault(client, [])
            self.made.move_to_end(client)
            stack.append(made)
            del stack[:-MAX_UNDO]
            while len(self.made) > MAX_CLIENTS:
                self.made.popitem(last=False)
        return self._answer(after, lock)

    def undo(self, body: Any) -> dict[str, Any]:
        """Withdraw this client's latest decision from the file as it is now."""
        client = _client(body)
        lock = self._lock()
        with self._memory:
            stack = self.made.get(client)
            made = stack.pop() if stack else None
        if made is None:
            return {**self._answer(read_review(self.path), lock), "undone": None}

        def change(review: Review) -> tuple[Review, bool]:
            taken = review.take_back(made.decision, made.replaced)
            return (review, False) if taken is None else (taken, True)

        after, undone = edit_review(self.path, change)
        d = made.decision
        what = f"{d.verdict} {d.key} #{d.image}"
        if not undone:
            raise ValueError(f"{what} was changed since, by another reviewer or by hand; "
                             "nothing undone (reload the page to see it)")
        return {**self._answer(after, lock), "undone": what}

    def paths(self) -> Paths:
        """The lockfile and output folder (from the manifest's header alone: no expansion)."""
        return locate(self.manifest, read_header(self.manifest), simulate=self.simulate,
                      output_dir=self.output_dir)

    def _lock(self) -> Lockfile:
        return current_lock(self.paths().lockfile, manifest=self.manifest.name)

    def _answer(self, review: Review, lock: Lockfile) -> dict[str, Any]:
        decisions = current(review, lock)
        return {"file": self.path.name,
                "decisions": [[k, i, d.verdict] for (k, i), d in sorted(decisions.items())]}


def _client(body: Any) -> str:
    """The page load's id from a request body (a JSON object)."""
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object")
    client = body.get("client")
    if not isinstance(client, str) or CLIENT.fullmatch(client) is None:
        raise BadRequest("client (8 to 64 letters, digits, - or _, made up once per page "
                         "load) is required")
    return client


async def read_json(request: web.Request) -> Any:
    """The request's body as JSON, or ``BadRequest``/``HTTPException`` saying what is wrong."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(reason="send JSON (Content-Type: application/json)")
    if (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
        raise web.HTTPUnsupportedMediaType(reason="send JSON in UTF-8")
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise web.HTTPUnsupportedMediaType(reason="send the body uncompressed")
    raw = await request.read()  # the app's client_max_size refuses a larger body (413)
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    except (ValueError, RecursionError):  # RecursionError: nested too deep to be the page's
        raise BadRequest("the body is not JSON") from None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(session: ReviewSession, *, allowed_hosts: Callable[[], set[str]]) -> web.Application:
    """The review server: the page at ``/``, the output folder's images, and the API."""
    outputs = session.paths().outputs.resolve()
    page_policy = f"{gallery_policy(review=True)}; {FRAMED}"

    @web.middleware
    async def guarded(request: web.Request, handler: Any) -> web.StreamResponse:
        # Every answer, error or not, may not be framed by another page (clickjacking:
        # a key press in an invisible frame would record a paid re-roll).
        if request.host not in allowed_hosts():
            response: web.StreamResponse = _error(403, "unknown host")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = _error(exc.status, exc.reason)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Content-Security-Policy", API_POLICY)
        return response

    async def page(request: web.Request) -> web.Response:
        try:
            text = await asyncio.to_thread(session.page)
        except ImgspecError as exc:
            return web.Response(text=str(exc), status=500, content_type="text/plain")
        return web.Response(text=text, content_type="text/html",
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": page_policy})

    async def api(request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in ("decide", "undo"):
            return _error(404, f"no action {action}")
        try:
            body = await read_json(request)
            if action == "decide":
                answer = await asyncio.to_thread(session.decide, body)
            else:
                answer = await asyncio.to_thread(session.undo, body)
        except BadRequest as exc:
            return _error(400, str(exc))
        except ValueError as exc:
            return _error(409, str(exc))
        except ImgspecError as exc:
            return _error(500, str(exc))
        return web.json_response(answer)

    async def image(request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        try:
            full = (outputs / tail).resolve()
            found = outputs in full.parents and full.is_file()
        except (OSError, ValueError):  # a NUL byte, a name too long: not a file we serve
            found = False
        if not found:
            raise web.HTTPNotFound
        return web.FileResponse(full, headers={"Cache-Control": "no-cache"})

    app = web.Application(middlewares=[guarded], client_max_size=MAX_BODY)
    app.router.add_get("/", page)
    app.router.add_get("/index.html", page)
    app.router.add_post("/api/{action}", api)
    app.router.add_get("/{tail:.+}", image)
    return app


async def serve(session: ReviewSession, *, port: int,
                on_ready: Callable[[str], None]) -> None:
    """Serve until cancelled; ``on_ready(url)`` once the port is bound."""
    bound: set[str] = set()
    app = make_app(session, allowed_hosts=lambda: bound)
    # auto_decompress off: the page never compresses a body, and aiohttp decompressing a
    # damaged one it then drains unread logs a traceback; a compressed body is refused.
    runner = web.AppRunner(app, access_log=None, auto_decompress=False, logger=SERVER_LOG)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, port)
        try:
            await site.start()
        except OSError as exc:
            raise UsageError(f"cannot listen on {HOST}:{port} ({exc.strerror}); "
                             "choose another --port") from exc
        server = site._server  # aiohttp exposes the bound port only here
        assert server is not None
        actual = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        bound.update({f"{HOST}:{actual}", f"localhost:{actual}"})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)  # a clean stop: decisions are on disk
        on_ready(f"http://{HOST}:{actual}/")
        await stop.wait()
    finally:
        await runner.cleanup()
