"""Deterministic PNGs for the simulator, fast at any size the API can produce.

An image is a grid of tiles, each a horizontal colour ramp, drawn from a
256-colour palette. Every pixel row inside a tile row is the same, so the PNG
is written by hand: each tile row's first scanline with filter 0 (None), the
rest with filter 2 (Up), whose filtered bytes are all zero. Those runs of
zero rows are the bulk of the data (16.8 MB of scanlines at 4096x4096), and
one render happens per download, so they are not compressed per image: the
zlib stream is assembled from raw-deflate pieces, each run's piece (and its
Adler-32) cached by (width, row count), and only the few distinct rows
compressed fresh. Pillow is not used to encode: it would filter and compress
every row the slow way.

The picture depends only on ``key`` (a hash of the request body, the image
index and a seed), so the same request gives the same bytes.
"""

from __future__ import annotations

import functools
import random
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SHADES = 16  # palette entries per base colour: the ramp inside one tile
_MAX_BASE_COLOURS = 256 // _SHADES
_LEVEL = 6
# CMF 0x78 (deflate, 32 KiB window) and FLG 0x9C (default level): what zlib.compress writes.
_ZLIB_HEADER = b"\x78\x9c"
_ADLER_BASE = 65521  # the largest prime below 2**16
_RUN_CHUNK = 1 << 20  # bytes of zero rows fed to zlib at once, to bound memory on a cache miss


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """The Adler-32 of ``a + b``, given ``adler1`` of ``a``, ``adler2`` of ``b`` and ``len(b)``.

    A port of zlib's ``adler32_combine``, which Python's zlib does not expose. It
    lets a cached run's checksum stand in for re-reading the run's megabytes.
    """
    low1, high1 = adler1 & 0xFFFF, adler1 >> 16
    low2, high2 = adler2 & 0xFFFF, adler2 >> 16
    # Each byte of ``b`` adds ``low1 - 1`` more to its running sum than it did alone.
    low = (low1 + low2 - 1) % _ADLER_BASE
    high = (high1 + high2 + (len2 % _ADLER_BASE) * (low1 - 1)) % _ADLER_BASE
    return low | high << 16


def _raw_deflater() -> zlib._Compress:
    """A compressor of raw deflate (no zlib header or trailer), to build a stream from pieces."""
    return zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)


# An empty final block: it sets BFINAL after the pieces, which a sync flush never does.
_FINAL_BLOCK = _raw_deflater().flush(zlib.Z_FINISH)


def _deflate(data: bytes) -> bytes:
    """``data`` as self-contained, non-final raw deflate blocks that end on a byte boundary.

    A sync flush byte-aligns the output without setting BFINAL, and a fresh
    compressor makes no back-reference into earlier pieces, so such pieces can
    simply be concatenated into one deflate stream.
    """
    compressor = _raw_deflater()
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


@functools.lru_cache(maxsize=128)
def _zero_rows(width: int, count: int) -> tuple[bytes, int]:
    """``count`` Up-filtered all-zero scanlines of ``width`` pixels: deflated, and their Adler-32.

    Images come in a few dozen sizes and tile rows in a few heights, so a small
    cache serves almost every run; each entry holds kilobytes, not the megabytes
    it stands for.
    """
    up_row = b"\x02" + bytes(width)
    per_chunk = max(1, _RUN_CHUNK // len(up_row))
    compressor = _raw_deflater()
    parts: list[bytes] = []
    adler = zlib.adler32(b"")
    while count > 0:
        chunk = up_row * min(per_chunk, count)
        parts.append(compressor.compress(chunk))
        adler = zlib.adler32(chunk, adler)
        count -= per_chunk
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts), adler


class _ZlibStream:
    """A zlib stream assembled from deflate pieces, with its Adler-32 kept up as they come."""

    def __init__(self) -> None:
        self._pieces = [_ZLIB_HEADER]
        self._adler = zlib.adler32(b"")

    def add(self, data: bytes) -> None:
        """Append ``data``, compressed now: for the small, distinct scanlines."""
        self._pieces.append(_deflate(data))
        self._adler = zlib.adler32(data, self._adler)

    def add_zero_rows(self, width: int, count: int) -> None:
        """Append ``count`` Up-filtered zero scanlines from the cache, not compressed anew."""
        if count <= 0:
            return
        deflated, adler = _zero_rows(width, count)
        self._pieces.append(deflated)
        self._adler = adler32_combine(self._adler, adler, count * (width + 1))

    def finish(self) -> bytes:
        """The complete zlib stream: header, pieces, final block and big-endian Adler-32."""
        return b"".join((*self._pieces, _FINAL_BLOCK, struct.pack(">I", self._adler)))


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _ramp(base: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """Shades of one colour, from darker to lighter, for a visible gradient."""

    def shade(channel: int, t: float) -> int:
        return min(255, int(channel * (0.55 + 0.45 * t)) + int(60 * t))

    red, green, blue = base
    steps = [s / (_SHADES - 1) for s in range(_SHADES)]
    return [(shade(red, t), shade(green, t), shade(blue, t)) for t in steps]


def _splits(total: int, parts: int) -> list[int]:
    """Boundaries that cut ``total`` into ``parts`` near-equal integer spans."""
    return [total * i // parts for i in range(parts + 1)]


def render_png(
    width: int,
    height: int,
    key: bytes,
    *,
    colours: Sequence[tuple[int, int, int]] = (),
    watermark: bool = False,
) -> bytes:
    """A valid, deterministic 8-bit palette PNG of ``width`` x ``height`` pixels.

    ``colours`` (e.g. from a request's ``color_palette``) are used as the tiles'
    base colours; otherwise they are drawn from ``key``. ``watermark`` adds a pale
    block in the bottom-right corner, where the API puts its "AI Generated" mark.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    rng = random.Random(key)
    bases = list(colours[: _MAX_BASE_COLOURS - 1])
    if not bases:
        bases = [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(6)]
    palette: list[tuple[int, int, int]] = []
    for base in bases:
        palette.extend(_ramp(base))
    mark_index = len(palette)
    palette.append((245, 245, 245))

    cols = rng.randint(3, 7)
    rows = min(rng.randint(3, 7), height)
    cols = min(cols, width)
    xs = _splits(width, cols)
    ys = _splits(height, rows)
    spans = [xs[c + 1] - xs[c] for c in range(cols)]
    tiles = [[rng.randrange(len(bases)) for _ in range(cols)] for _ in range(rows)]

    def tile_row(r: int) -> bytes:
        """One scanline of tile row ``r``: each tile a ramp of its colour's shades."""
        parts: list[bytes] = []
        for c in range(cols):
            base = tiles[r][c] * _SHADES
            span = spans[c]
            parts.extend(
                bytes([base + s]) * (span * (s + 1) // _SHADES - span * s // _SHADES)
                for s in range(_SHADES)
            )
        return b"".join(parts)

    stream = _ZlibStream()
    mark_top = height - max(1, height // 16)
    mark_left = width - max(1, width // 5)
    for r in range(rows):
        top, bottom = ys[r], ys[r + 1]
        row = tile_row(r)
        if watermark and bottom > mark_top:
            marked = row[:mark_left] + bytes([mark_index]) * (width - mark_left)
            plain_rows = max(0, mark_top - top)
            if plain_rows:
                stream.add(b"\x00" + row)
                stream.add_zero_rows(width, plain_rows - 1)
            stream.add(b"\x00" + marked)
            stream.add_zero_rows(width, bottom - max(top, mark_top) - 1)
        else:
            stream.add(b"\x00" + row)
            stream.add_zero_rows(width, bottom - top - 1)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    plte = b"".join(bytes(rgb) for rgb in palette)
    text = b"Software\x00imgspec simulator"
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", ihdr),
            _chunk(b"PLTE", plte),
            _chunk(b"tEXt", text),
            _chunk(b"IDAT", stream.finish()),
            _chunk(b"IEND", b""),
        )
    )


def parse_hex_colours(palette: object) -> list[tuple[int, int, int]]:
    """The ``#RRGGBB`` colours of a (valid) ``color_palette`` value, in order."""
    found: list[tuple[int, int, int]] = []
    if not isinstance(palette, list):
        return found
    for entry in palette:
        hex_value = entry.get("hex") if isinstance(entry, dict) else None
        if isinstance(hex_value, str) and len(hex_value) == 7:
            try:
                value = int(hex_value[1:], 16)
            except ValueError:
                continue
            found.append((value >> 16, (value >> 8) & 0xFF, value & 0xFF))
    return found


class ImageCache:
    """A thread-safe LRU of rendered PNG bytes, bounded by their total size.

    Rendering runs in worker threads; two requests for one image may both render
    it (the bytes are identical), which is cheaper than holding a lock while
    rendering.
    """

    def __init__(self, max_bytes: int = 128 * 1024 * 1024) -> None:
        self._max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> bytes | None:
        """The cached bytes for ``key``, or None."""
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def get_or_render(self, key: tuple[str, int], render: Callable[[], bytes]) -> bytes:
        """The cached bytes for ``key``, rendering and caching them on a miss."""
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
                return data
        data = render()
        with self._lock:
            if key not in self._items:
                self._items[key] = data
                self._bytes += len(data)
                while self._bytes > self._max_bytes and len(self._items) > 1:
                    _, dropped = self._items.popitem(last=False)
                    self._bytes -= len(dropped)
        return data
