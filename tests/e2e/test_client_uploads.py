"""ApiClient's uploads: the multipart form aiohttp builds, as a server and the simulator
read it, sent again whole on a retry."""

from __future__ import annotations

import asyncio
import hashlib
import io

import httpx
import stamina
from aiohttp import web
from PIL import Image

from pipeline.shell.http.client import ApiClient, Uploaded
from pipeline.simulator import SimulatorConfig, run_in_thread
from tests.e2e.scripted import scripted

KEY = "sk-live-UPLOAD-SECRET-5e1d9a"


def _png() -> bytes:
    """A small real PNG image."""
    out = io.BytesIO()
    Image.new("RGB", (48, 32), (30, 90, 200)).save(out, format="PNG")
    return out.getvalue()


def test_upload_sends_one_file_field_with_a_plain_name_and_its_type() -> None:
    """The form has one part, field ``file``, the image's bytes, its content type and a
    file name cut to printable ASCII without quotes, backslashes or line breaks; the
    request says its length (not chunked) and carries the key."""
    image = _png()
    seen: list[dict[str, object]] = []

    async def api(request: web.BaseRequest) -> web.StreamResponse:
        headers = request.headers
        form = await request.post()
        field = form["file"]
        assert isinstance(field, web.FileField)
        seen.append({"fields": list(form.keys()), "filename": field.filename,
                     "type": field.content_type, "bytes": field.file.read(),
                     "length": headers.get("Content-Length"),
                     "chunked": headers.get("Transfer-Encoding"),
                     "auth": headers.get("Authorization"),
                     "content_type": headers.get("Content-Type", "")})
        return web.json_response({"url": "https://upload.apimart.ai/f/1.png",
                                  "created_at": 1_700_000_000})

    async def scenario() -> Uploaded:
        async with scripted(api) as base, ApiClient(base_url=base, api_key=KEY) as client:
            return await client.upload_image(image, filename='sh"op\\ \r\nX: é 1.png',
                                             content_type="image/png")

    got = asyncio.run(scenario())
    assert got.url == "https://upload.apimart.ai/f/1.png"
    [one] = seen
    assert one["fields"] == ["file"]
    assert one["filename"] == "shop X:  1.png"
    assert one["type"] == "image/png"
    assert one["bytes"] == image
    assert one["chunked"] is None
    assert one["length"] is not None
    assert str(one["content_type"]).startswith("multipart/form-data; boundary=")
    assert one["auth"] == f"Bearer {KEY}"


def test_upload_with_no_usable_name_is_named_image() -> None:
    """A file name with nothing printable in ASCII goes out as ``image``."""
    names: list[str | None] = []

    async def api(request: web.BaseRequest) -> web.StreamResponse:
        field = (await request.post())["file"]
        assert isinstance(field, web.FileField)
        names.append(field.filename)
        return web.json_response({"url": "https://upload.apimart.ai/f/2.png"})

    async def scenario() -> None:
        async with scripted(api) as base, ApiClient(base_url=base, api_key=KEY) as client:
            await client.upload_image(_png(), filename="写真", content_type="image/png")

    asyncio.run(scenario())
    assert names == ["image"]


def test_a_retried_upload_sends_the_whole_form_again() -> None:
    """An upload answered 503 is sent again, the same file in full, and then succeeds."""
    image = _png()
    bodies: list[bytes] = []

    async def api(request: web.BaseRequest) -> web.StreamResponse:
        field = (await request.post())["file"]
        assert isinstance(field, web.FileField)
        bodies.append(field.file.read())
        if len(bodies) == 1:
            return web.json_response({"error": {"message": "busy"}}, status=503)
        return web.json_response({"url": "https://upload.apimart.ai/f/3.png"})

    async def scenario() -> Uploaded:
        async with scripted(api) as base, \
                ApiClient(base_url=base, api_key=KEY, retry_attempts=2) as client:
            return await client.upload_image(image, filename="a.png", content_type="image/png")

    with stamina.set_testing(True, attempts=2):
        got = asyncio.run(scenario())
    assert got.url == "https://upload.apimart.ai/f/3.png"
    assert bodies == [image, image]


def test_the_simulator_reads_the_form_and_serves_the_image_back() -> None:
    """The simulator parses the client's form (aiohttp's reader, as the API's own would
    read any standard form): the URL it answers serves the very bytes uploaded."""
    image = _png()
    with run_in_thread(SimulatorConfig(api_key=KEY, seed=3, latency=(0.05, 0.05))) as sim:

        async def scenario() -> Uploaded:
            async with ApiClient(base_url=sim.base_url, api_key=KEY) as client:
                return await client.upload_image(image, filename="in put.png",
                                                 content_type="image/png")

        got = asyncio.run(scenario())
        served = httpx.get(got.url, timeout=10)
    assert served.status_code == 200
    assert hashlib.sha256(served.content).hexdigest() == hashlib.sha256(image).hexdigest()
