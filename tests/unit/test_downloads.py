"""A download's bytes reach the disk whole, hashed, and checked, however they arrive."""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.shell.http.downloads import SPOOL_BYTES, ImageSink


def noise_png(width: int, height: int) -> bytes:
    """A PNG that does not compress (random pixels): large for its size in pixels."""
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(
        out, format="PNG", compress_level=0)
    return out.getvalue()


def fed(sink: ImageSink, data: bytes, cuts: list[int]) -> tuple[str, tuple[str, int, int] | None]:
    """Feed ``data`` in pieces cut at ``cuts``, spilling when asked, as the client does."""
    edges = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    for start, end in itertools.pairwise(edges):
        if end > start and sink.add(data[start:end]):
            sink.spill()
    return sink.finish()


SMALL = noise_png(40, 30)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(SMALL)), max_size=12))
def test_a_small_image_is_written_hashed_and_checked_from_memory(
        tmp_path: Path, cuts: list[int]) -> None:
    """An image under the buffer size: the file holds its bytes, whatever the chunks."""
    dest = tmp_path / "a" / f"{len(cuts)}-{hashlib.sha256(repr(cuts).encode()).hexdigest()}.part"
    sha256, seen = fed(ImageSink(dest), SMALL, cuts)
    assert dest.read_bytes() == SMALL
    assert sha256 == hashlib.sha256(SMALL).hexdigest()
    assert seen == ("PNG", 40, 30)


def test_a_large_image_is_spilled_and_checked_from_the_file(tmp_path: Path) -> None:
    """An image several buffers long is written as it comes and read back to be checked."""
    data = noise_png(1000, 800)
    assert len(data) > 2 * SPOOL_BYTES
    dest = tmp_path / "big.part"
    sha256, seen = fed(ImageSink(dest), data, list(range(0, len(data), 65_536)))
    assert dest.read_bytes() == data
    assert sha256 == hashlib.sha256(data).hexdigest()
    assert seen == ("PNG", 1000, 800)


@pytest.mark.parametrize("size", [100, 3 * SPOOL_BYTES], ids=["in-memory", "spilled"])
def test_bytes_that_are_no_image_are_written_but_not_seen_as_one(
        tmp_path: Path, size: int) -> None:
    """Garbage is reported (None), in memory or spilled; the caller then removes it."""
    data = b"\x89PNG garbage " * (size // 13 + 1)
    dest = tmp_path / "junk.part"
    _sha256, seen = fed(ImageSink(dest), data, list(range(0, len(data), 500_000)))
    assert seen is None
    assert dest.stat().st_size == len(data)


def test_close_after_a_failed_spill_releases_the_descriptor(tmp_path: Path) -> None:
    """A sink whose file was opened and then abandoned closes it, once, on ``close``."""
    sink = ImageSink(tmp_path / "x.part")
    sink.add(b"x" * SPOOL_BYTES)
    sink.spill()
    fd = sink._fd
    assert fd is not None
    sink.close()
    sink.close()  # a second close is harmless
    with pytest.raises(OSError, match="Bad file descriptor") as closed:
        os.fstat(fd)
    assert closed.value.errno == errno.EBADF
