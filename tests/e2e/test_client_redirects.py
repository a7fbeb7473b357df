"""A download's redirect chain across origins and proxies: each hop through its own
host's proxy (or none), the key only while the chain stays at the API's origin."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image

from pipeline.shell.http.client import ApiClient
from pipeline.shell.http.downloads import Downloaded
from tests.e2e.scripted import Handler, scripted

KEY = "sk-live-HOPS-SECRET-c4f2e1"
_PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                    "all_proxy", "NO_PROXY", "no_proxy")

Routes = dict[str, Callable[[], web.StreamResponse]]


def _png() -> bytes:
    """A small real PNG image."""
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


def _redirect(location: str) -> web.Response:
    """A 302 to ``location``."""
    return web.Response(status=302, headers={"Location": location})


def test_chain_from_the_api_through_a_proxied_host_to_another_origin_keeps_the_key_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """API (keyed, direct) → a remote host (through HTTP_PROXY, no key) → the API's host on
    another port (another origin: direct, as a loopback host, and still no key)."""
    seen: list[tuple[str, str, str, str]] = []  # (server, Host, path, Authorization)
    image = _png()

    def recorder(name: str, routes: Routes) -> Handler:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            seen.append((name, request.host, request.path,
                         request.headers.get("Authorization", "")))
            return routes[request.path]()
        return handle

    async def scenario() -> tuple[Downloaded, str, str]:
        api_routes: Routes = {}
        proxy_routes: Routes = {}
        other_routes: Routes = {}
        async with scripted(recorder("api", api_routes)) as api, \
                scripted(recorder("proxy", proxy_routes)) as proxy, \
                scripted(recorder("other", other_routes)) as other:
            monkeypatch.setenv("HTTP_PROXY", proxy)
            api_routes["/files/start"] = lambda: _redirect("http://cdn.example.test/img")
            proxy_routes["/img"] = lambda: _redirect(f"{other}/back")
            other_routes["/back"] = lambda: web.Response(body=image, content_type="image/png")
            async with ApiClient(base_url=api, api_key=KEY) as client:
                got = await client.download(f"{api}/files/start", tmp_path / "a.png")
            return got, api.removeprefix("http://"), other.removeprefix("http://")

    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    got, api_host, other_host = asyncio.run(scenario())
    assert seen == [("api", api_host, "/files/start", f"Bearer {KEY}"),
                    ("proxy", "cdn.example.test", "/img", ""),
                    ("other", other_host, "/back", "")]
    assert got == Downloaded(hashlib.sha256(image).hexdigest(), len(image), 64, 64, "PNG")


def test_a_hop_to_the_api_host_on_another_port_gets_no_key(tmp_path: Path) -> None:
    """Same host, another port is another origin: the key stays behind at once."""
    seen: list[tuple[str, str]] = []  # (server, Authorization)
    image = _png()

    async def scenario() -> None:
        async def other(request: web.BaseRequest) -> web.StreamResponse:
            seen.append(("other", request.headers.get("Authorization", "")))
            return web.Response(body=image, content_type="image/png")

        async with scripted(other) as other_url:

            async def api(request: web.BaseRequest) -> web.StreamResponse:
                seen.append(("api", request.headers.get("Authorization", "")))
                return _redirect(f"{other_url}/img")

            async with scripted(api) as api_url, \
                    ApiClient(base_url=api_url, api_key=KEY) as client:
                await client.download(f"{api_url}/files/a.png", tmp_path / "a.png")

    asyncio.run(scenario())
    assert seen == [("api", f"Bearer {KEY}"), ("other", "")]
