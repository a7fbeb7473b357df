"""Input images of editing requests: what the simulator can know about them offline.

- ``data:`` URIs are decoded and checked with :func:`pipeline.core.apimart.images.check_image`.
- URLs of the simulator's own image hosting are resolved to the task image they
  name (unknown or expired ones are rejected, as a failed fetch would be).
- Any other URL cannot be fetched offline. Its size is *assumed*, derived from a
  hash of the URL (each side 512-2047 px, so always acceptable): the output
  aspect in editing mode follows it, and the same URL always gives the same
  size. Bounding boxes on such images are not checked against a size, since
  the real size is unknown. Hosts under the reserved ``.invalid`` top-level
  domain (RFC 2606) are treated as unreachable, so clients can provoke a
  failed fetch on purpose.
"""

from __future__ import annotations

import dataclasses
import hashlib
from urllib.parse import urlsplit

from pipeline.core.apimart.images import check_image, decode_data_uri
from pipeline.core.apimart.rules import Problem


def check_data_uri(uri: str, index: int) -> tuple[tuple[int, int] | None, list[Problem]]:
    """Decode and check one data URI input; (width, height) when it is a readable image."""
    try:
        _, data = decode_data_uri(uri)
    except ValueError as err:
        return None, [
            Problem(
                "image_urls",
                f"image {index + 1}: {err}",
                "encode the image as data:image/png;base64,<base64 of the file>",
                index=index,
            )
        ]
    info, problems = check_image(data)
    placed = [
        dataclasses.replace(p, message=f"image {index + 1}: {p.message}", index=index)
        for p in problems
    ]
    return (None if info is None else (info.width, info.height)), placed


def foreign_size(url: str) -> tuple[int, int]:
    """The size assumed for an image at a URL the simulator cannot fetch."""
    digest = hashlib.sha256(url.encode()).digest()
    width = 512 + int.from_bytes(digest[0:2], "big") % 1536
    height = 512 + int.from_bytes(digest[2:4], "big") % 1536
    return width, height


def unreachable(url: str, index: int) -> Problem | None:
    """A problem if ``url`` is on a host that can never be fetched (``*.invalid``)."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if host == "invalid" or host.endswith(".invalid"):
        return Problem(
            "image_urls",
            f"image {index + 1}: could not download {url} (host not found)",
            "check the URL opens in a browser and is public",
            index=index,
        )
    return None
