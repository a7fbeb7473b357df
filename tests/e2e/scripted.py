"""A scripted HTTP server on 127.0.0.1, for client tests that need replies the simulator
never gives (hostile bodies, redirects, echoed keys, a proxy)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import RawTestServer

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[str]:
    """A server on a free port of 127.0.0.1 answering every request with ``handler``;
    yields its base URL (``http://127.0.0.1:PORT``). A client hanging up cancels the
    handler, so one that waits for ever ends with the request."""
    server = RawTestServer(handler, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()
