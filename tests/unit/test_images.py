"""Input image checks and data: URIs follow the API's limits."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from pipeline.core.apimart.images import ImageInfo, check_image, decode_data_uri


def image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    """A real image of the given size and format."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, format=fmt)
    return out.getvalue()

# -- check_image -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP"])
def test_check_image_accepts_supported_formats(fmt: str) -> None:
    """PNG, JPEG, WEBP and BMP images within limits pass, with their size reported."""
    data = image_bytes(300, 240, fmt)
    info, problems = check_image(data)
    assert problems == []
    assert info == ImageInfo(fmt, 300, 240, len(data))


@pytest.mark.parametrize(
    ("size", "fragment"),
    [((239, 300), "width is 239"), ((300, 8001), "height is 8001"), ((2000, 240), "aspect")],
    ids=["side-below-240", "side-above-8000", "aspect-above-8:1"],
)
def test_check_image_rejects_sizes(size: tuple[int, int], fragment: str) -> None:
    """Sides outside 240-8000 px or aspect beyond 8:1 are errors on image_urls."""
    info, problems = check_image(image_bytes(*size))
    assert info is not None
    assert (info.width, info.height) == size
    assert any(fragment in p.message and p.field == "image_urls" for p in problems), problems


def test_check_image_accepts_aspect_8_to_1() -> None:
    """An aspect of exactly 8:1 is inside the limit."""
    assert check_image(image_bytes(1920, 240))[1] == []


def test_check_image_rejects_gif() -> None:
    """A readable image in an unsupported format (GIF) is an error naming the format."""
    info, problems = check_image(image_bytes(300, 300, "GIF"))
    assert info is not None
    assert info.format == "GIF"
    assert any("GIF" in p.message for p in problems)


def test_check_image_rejects_over_20_mb() -> None:
    """An image file above 20 MB is an error even when its pixels are fine."""
    data = image_bytes(2600, 2700, "BMP")  # uncompressed: about 21 MB
    assert len(data) > 20 * 1024 * 1024
    _, problems = check_image(data)
    assert any("20 MB" in p.message for p in problems)


@pytest.mark.parametrize(
    "data", [b"", b"not an image", image_bytes(300, 300)[:100]], ids=["empty", "text", "cut-png"]
)
def test_check_image_rejects_unreadable_bytes(data: bytes) -> None:
    """Bytes Pillow cannot read give no info and one error."""
    info, problems = check_image(data)
    assert info is None
    assert len(problems) == 1
    assert problems[0].field == "image_urls"


# -- decode_data_uri ---------------------------------------------------------------


def test_decode_data_uri_round_trips() -> None:
    """A base64 data URI gives back its MIME type (lower-cased) and exact bytes."""
    data = image_bytes(300, 300)
    uri = "data:Image/PNG;base64," + base64.b64encode(data).decode()
    assert decode_data_uri(uri) == ("image/png", data)


@pytest.mark.parametrize(
    "uri",
    [
        "https://example.com/a.png",
        "data:image/png;base64",
        "data:image/png,aGVsbG8=",
        "data:image/png;base64,@@@@",
        "data:image/png;base64,",
        "data:;base64,aGVsbG8=",
    ],
    ids=["not-data", "no-comma", "not-base64", "bad-base64", "empty", "no-mime"],
)
def test_decode_data_uri_rejects_malformed(uri: str) -> None:
    """Anything but a well-formed base64 data URI raises ValueError."""
    with pytest.raises(ValueError, match="data URI"):
        decode_data_uri(uri)
