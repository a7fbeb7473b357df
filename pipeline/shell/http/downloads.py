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
from typing import Final

from pipeline.core.apimart.images import check_image
from pipeline.errors import UsageError
from pipeline.shell.store.files import write_all

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


def inspect_image(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) if ``data`` decodes as an image (Pillow verify), else None.

    ``check_image``'s problems are about *input* images (e.g. its 20 MB cap) and
    do not apply to results; only whether it could read the image matters here.
    """
    info, _problems = check_image(data)
    return None if info is None else (info.format, info.width, info.height)


class ImageSink:
    """A download's bytes on their way to a file: buffered in memory, then written,
    hashed and fsynced by a worker thread (``spill``, ``finish``), never on the loop.

    Only one of ``add`` / ``spill`` / ``finish`` runs at a time: the caller awaits each
    worker-thread call before adding more.

    The file is a bare descriptor, not a Python file object: opening one costs three
    more system calls (fstat, a terminal check, a seek), and in a worker thread each
    system call gives the interpreter lock back and waits to take it again from a busy
    event loop: at a thousand downloads in flight they (and a read-back) weigh on the
    run's context switches and CPU (figures in ``bench/RESULTS.md``). An image that
    never filled the buffer is checked from memory, not read back from the file just
    written.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.size = 0
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._digest = hashlib.sha256()
        self._fd: int | None = None

    def add(self, chunk: bytes) -> bool:
        """Buffer ``chunk``; True when the buffer is full enough to ``spill``."""
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self.size += len(chunk)
        return self._buffered >= SPOOL_BYTES

    def spill(self) -> None:
        """(Worker thread.) Write and hash the buffered bytes, creating the file first."""
        self._write(self._drain())

    def finish(self) -> tuple[str, tuple[str, int, int] | None]:
        """(Worker thread.) Write the rest, fsync, close; the SHA-256 and what the image is."""
        whole = self._fd is None  # nothing spilled: every byte is still in memory
        data = self._drain()
        fd = self._write(data)
        os.fsync(fd)
        self._fd = None
        os.close(fd)
        # A spilled image is read back whole from the file just written.
        return self._digest.hexdigest(), inspect_image(data if whole else self.dest.read_bytes())

    def close(self) -> None:
        """Close the file if a failure left it open (the caller removes it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _drain(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return data

    def _write(self, data: bytes) -> int:
        """Hash and write ``data`` whole, opening the file first; its descriptor."""
        fd = self._fd
        if fd is None:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            fd = self._fd = os.open(
                self.dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        self._digest.update(data)
        write_all(fd, data)
        return fd


def declared_length(value: str | None) -> int | None:
    """A Content-Length as a number; None if absent or not one (ASCII digits, not absurd)."""
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None
