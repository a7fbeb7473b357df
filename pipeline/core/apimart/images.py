"""Input images: the API's format, size and aspect limits, and ``data:`` URIs.

Pure (bytes in, values out). Used by the manifest validator for local and
``data:`` inputs, by the client to check downloads, and by the simulator.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from typing import Final

from PIL import Image

from pipeline.core.apimart.rules import MAX_ASPECT, Problem

IMAGE_FORMATS: Final[tuple[str, ...]] = ("PNG", "JPEG", "WEBP", "BMP")
IMAGE_MIN_SIDE: Final = 240
IMAGE_MAX_SIDE: Final = 8000
IMAGE_MAX_BYTES: Final = 20 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What :func:`check_image` learned about an input image."""

    format: str  # "PNG", "JPEG", "WEBP", "BMP"
    width: int
    height: int
    size_bytes: int



def check_image(data: bytes) -> tuple[ImageInfo | None, list[Problem]]:
    """Check an input image's bytes against the API's limits (format, sides, aspect, bytes).

    Returns what could be read of the image (None if Pillow cannot identify it)
    and the problems, all with ``field="image_urls"``.
    """
    problems: list[Problem] = []
    size = len(data)
    if size > IMAGE_MAX_BYTES:
        problems.append(
            Problem(
                "image_urls",
                f"image is {size / 1048576:.1f} MB, more than the 20 MB limit",
                "compress or downscale the image (JPEG or WEBP keep it small)",
            )
        )
    try:
        with warnings.catch_warnings():
            # Large images are reported as problems below; Pillow's own warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt = image.format or ""
                width, height = image.size
                image.verify()
    except Image.DecompressionBombError:
        problems.append(
            Problem(
                "image_urls",
                "image has far more pixels than 8000x8000",
                f"downscale it to {IMAGE_MIN_SIDE}-{IMAGE_MAX_SIDE} px per side",
            )
        )
        return None, problems
    except Exception:  # Pillow raises many exception types on corrupt input
        problems.append(
            Problem(
                "image_urls",
                "data is not a readable JPEG, PNG, WEBP or BMP image",
                "check the file opens in an image viewer; re-export it as PNG or JPEG",
            )
        )
        return None, problems
    if fmt == "MPO":
        fmt = "JPEG"  # phone JPEGs carry extra pictures; Pillow names them MPO
    info = ImageInfo(fmt, width, height, size)
    if fmt not in IMAGE_FORMATS:
        problems.append(
            Problem(
                "image_urls",
                f"image is {fmt or 'of an unknown format'}, but the API takes only "
                + ", ".join(IMAGE_FORMATS),
                "convert the image to PNG or JPEG",
            )
        )
    for side, value in (("width", width), ("height", height)):
        if not IMAGE_MIN_SIDE <= value <= IMAGE_MAX_SIDE:
            problems.append(
                Problem(
                    "image_urls",
                    f"image {side} is {value} px, outside {IMAGE_MIN_SIDE}-{IMAGE_MAX_SIDE} px",
                    f"resize the image so each side is {IMAGE_MIN_SIDE}-{IMAGE_MAX_SIDE} px",
                )
            )
    if max(width, height) > MAX_ASPECT * min(width, height):
        problems.append(
            Problem(
                "image_urls",
                f"image is {width}x{height}, an aspect outside 1:8 .. 8:1",
                "crop the image so the longer side is at most 8 times the shorter",
            )
        )
    return info, problems


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """Split a ``data:<mime>;base64,<data>`` URI into its MIME type and decoded bytes.

    Raises ValueError, with a message saying what is malformed, for anything else.
    """
    if not uri.startswith("data:"):
        raise ValueError("not a data URI: it must start with 'data:'")
    header, comma, payload = uri[5:].partition(",")
    if not comma:
        raise ValueError("data URI has no ',' between its header and its data")
    params = header.split(";")
    mime = params[0].strip().lower()
    if params[-1] != "base64" or len(params) < 2:
        raise ValueError("data URI is not base64-encoded: its header must end in ';base64'")
    if not mime or "/" not in mime:
        raise ValueError(f"data URI has no valid MIME type (got {mime!r})")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"data URI's base64 data is malformed: {err}") from err
    if not data:
        raise ValueError("data URI holds no data")
    return mime, data
