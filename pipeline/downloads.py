"""Downloading a result image: its limits, and its bytes on their way to disk.

What the client streams is buffered here, written, hashed and fsynced by a worker
thread (``ImageSink``), then checked as a picture of plausible size; the limits
(``DownloadLimits``) stop a host that sends too slowly or for too long.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from pipeline.errors import UsageError
from pipeline.images import check_image

# Sides outside this range cannot come from the API (its largest output is ~11585 px
# on the long side at 4K and 8:1); such a "picture" is a placeholder or garbage.
MIN_SIDE: Final = 16
MAX_SIDE: Final = 16384

# A download is buffered up to this much between trips to the disk (in a worker thread).
SPOOL_BYTES: Final = 2**20
DOWNLOAD_DEADLINE: Final = 300.0  # seconds for one whole download, headers included
DOWNLOAD_MIN_RATE: Final = 1024.0  # bytes/s, averaged over each window
DOWNLOAD_RATE_WINDOW: Final = 30.0  # seconds
_LIMIT_ENV: Final = {
    "deadline": "IMGSPEC_DOWNLOAD_DEADLINE",
    "min_rate": "IMGSPEC_DOWNLOAD_MIN_RATE",
    "window": "IMGSPEC_DOWNLOAD_RATE_WINDOW",
}


@dataclass(frozen=True, slots=True)
class DownloadLimits:
    """How long one download may take and how slowly it may arrive."""

    deadline: float = DOWNLOAD_DEADLINE
    min_rate: float = DOWNLOAD_MIN_RATE  # 0: no minimum
    window: float = DOWNLOAD_RATE_WINDOW

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> DownloadLimits:
        """The defaults, overridden by ``IMGSPEC_DOWNLOAD_*``; UsageError if one is bad."""
        values: dict[str, float] = {}
        for field_name, name in _LIMIT_ENV.items():
            text = environ.get(name, "").strip()
            if not text:
                continue
            try:
                values[field_name] = float(text)
            except ValueError:
                raise UsageError(f"{name}={text!r} is not a number of "
                                 f"{'bytes/s' if field_name == 'min_rate' else 'seconds'}"
                                 ) from None
        return cls(**values)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.deadline) and self.deadline > 0
                and math.isfinite(self.window) and self.window > 0
                and math.isfinite(self.min_rate) and self.min_rate >= 0):
            raise UsageError("download limits: the deadline and rate window must be positive "
                             "seconds and the minimum rate 0 or more bytes/s")


@dataclass(frozen=True, slots=True)
class Downloaded:
    """A verified image on disk: its hash, size in bytes, pixel size and format."""

    sha256: str
    bytes: int
    width: int
    height: int
    format: str  # "PNG", "JPEG", "WEBP", "BMP"


def inspect_image(path: Path) -> tuple[str, int, int] | None:
    """(format, width, height) if the file decodes as an image (Pillow verify), else None.

    ``check_image``'s problems are about *input* images (e.g. its 20 MB cap) and
    do not apply to results; only whether it could read the image matters here.
    """
    info, _problems = check_image(path.read_bytes())
    return None if info is None else (info.format, info.width, info.height)


class ImageSink:
    """A download's bytes on their way to a file: buffered in memory, then written,
    hashed and fsynced by a worker thread (``spill``, ``finish``), never on the loop.

    Only one of ``add`` / ``spill`` / ``finish`` runs at a time: the caller awaits each
    worker-thread call before adding more.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.size = 0
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._digest = hashlib.sha256()
        self._file: IO[bytes] | None = None

    def add(self, chunk: bytes) -> bool:
        """Buffer ``chunk``; True when the buffer is full enough to ``spill``."""
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self.size += len(chunk)
        return self._buffered >= SPOOL_BYTES

    def spill(self) -> None:
        """(Worker thread.) Write and hash the buffered bytes, creating the file first."""
        if self._file is None:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.dest.open("wb")
        for chunk in self._chunks:
            self._digest.update(chunk)
            self._file.write(chunk)
        self._chunks.clear()
        self._buffered = 0

    def finish(self) -> tuple[str, tuple[str, int, int] | None]:
        """(Worker thread.) Write the rest, fsync, close; the SHA-256 and what the image is."""
        self.spill()
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._digest.hexdigest(), inspect_image(self.dest)

    def close(self) -> None:
        """Close the file if a failure left it open (the caller removes it)."""
        if self._file is not None:
            self._file.close()


def declared_length(value: str | None) -> int | None:
    """A Content-Length as a number; None if absent or not one (ASCII digits, not absurd)."""
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None
