"""``imgspec review``: the gallery page served on 127.0.0.1, with keys that record decisions.

The page is rebuilt from the manifest, lockfile and review file on every load,
so a run in another terminal shows up on reload. Each decision is written to
the review file (atomically) as it is made; ``undo`` restores the file as it
was before this session's last decision.

Only loopback is served. The API accepts only JSON from a page whose Host is
the server's own address: a web page elsewhere cannot make the browser record
decisions (a cross-site JSON POST needs a CORS preflight, which is refused),
and a DNS-rebound name is not the loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from pipeline.errors import ImgspecError, UsageError
from pipeline.gallery_site import gallery_of
from pipeline.lockfile import Lockfile
from pipeline.outputs import utc_now
from pipeline.project import Paths, Prepared, current_lock, locate, prepare, read_header
from pipeline.review import (
    VERDICTS,
    Decision,
    Review,
    current,
    read_review,
    review_path,
    write_review,
)
from pipeline.views.gallery import render_gallery

HOST = "127.0.0.1"


@dataclass
class ReviewSession:
    """One ``imgspec review``: the manifest, where decisions go, and what undo restores."""

    manifest: Path
    simulate: bool
    history: list[tuple[Review, str]] = field(default_factory=list)  # before, what changed

    @property
    def path(self) -> Path:
        """The review file beside the manifest."""
        return review_path(self.manifest)

    def prepared(self) -> Prepared:
        """The manifest planned against its lockfile, as it is now."""
        return prepare(self.manifest, simulate=self.simulate)

    def page(self) -> str:
        """The gallery page with review keys."""
        prepared = self.prepared()
        return render_gallery(gallery_of(prepared, read_review(self.path)), review=True)

    def decide(self, body: Any) -> dict[str, Any]:
        """Record a decision about a current image; the decisions that apply now."""
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        key, image, sha, verdict = (body.get("key"), body.get("image"), body.get("sha256"),
                                    body.get("verdict"))
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
        if not isinstance(key, str) or not isinstance(image, int) or isinstance(image, bool) \
                or not isinstance(sha, str):
            raise ValueError("key (string), image (integer) and sha256 (string) are required")
        lock = self._lock()
        entry = lock.entries.get(key)
        if entry is None or not 0 <= image < len(entry.outputs) \
                or entry.outputs[image].sha256 != sha:
            raise ValueError(f"{key} #{image} is not the image the lockfile records now "
                             "(reload the page)")
        before = read_review(self.path)
        after = before.decide(Decision(key, image, sha, verdict, at=utc_now()))
        write_review(self.path, after)
        self.history.append((before, f"{verdict} {key} #{image}"))
        return self._answer(after, lock)

    def undo(self) -> dict[str, Any]:
        """Put the review file back as it was before this session's last decision."""
        lock = self._lock()
        if not self.history:
            return {**self._answer(read_review(self.path), lock), "undone": None}
        before, what = self.history.pop()
        write_review(self.path, before)
        return {**self._answer(before, lock), "undone": what}

    def paths(self) -> Paths:
        """The lockfile and output folder (from the manifest's header alone: no expansion)."""
        return locate(self.manifest, read_header(self.manifest), simulate=self.simulate)

    def _lock(self) -> Lockfile:
        return current_lock(self.paths().lockfile, manifest=self.manifest.name)

    def _answer(self, review: Review, lock: Lockfile) -> dict[str, Any]:
        decisions = current(review, lock)
        return {"file": self.path.name,
                "decisions": [[k, i, d.verdict] for (k, i), d in sorted(decisions.items())]}


def make_app(session: ReviewSession, *, allowed_hosts: Callable[[], set[str]]) -> web.Application:
    """The review server: the page at ``/``, the output folder's images, and the API."""
    outputs = session.paths().outputs.resolve()

    @web.middleware
    async def same_host(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.host not in allowed_hosts():
            return web.json_response({"error": "unknown host"}, status=403)
        response: web.StreamResponse = await handler(request)
        return response

    async def page(request: web.Request) -> web.Response:
        try:
            text = await asyncio.to_thread(session.page)
        except ImgspecError as exc:
            return web.Response(text=str(exc), status=500, content_type="text/plain")
        return web.Response(text=text, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def api(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return web.json_response({"error": "send JSON"}, status=415)
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"error": "not JSON"}, status=400)
        action = request.match_info["action"]
        try:
            if action == "decide":
                answer = await asyncio.to_thread(session.decide, body)
            elif action == "undo":
                answer = await asyncio.to_thread(session.undo)
            else:
                return web.json_response({"error": f"no action {action}"}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        except ImgspecError as exc:
            return web.json_response({"error": str(exc)}, status=500)
        return web.json_response(answer)

    async def image(request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        full = (outputs / tail).resolve()
        if outputs not in full.parents or not full.is_file():
            raise web.HTTPNotFound
        return web.FileResponse(full, headers={"Cache-Control": "no-cache"})

    app = web.Application(middlewares=[same_host])
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
    runner = web.AppRunner(app, access_log=None)
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
