"""Deterministic PNGs for the simulator, fast at any size the API can produce.

An image is a grid of tiles, each a horizontal colour ramp, drawn from a
256-colour palette. Every pixel row inside a tile row is the same, so the PNG
is written by hand: each tile row's first scanline with filter 0 (None), the
rest with filter 2 (Up), whose filtered bytes are all zero. zlib then sees
long zero runs and compresses a 4096x4096 image (16.8 MB of scanlines) in a
few tens of milliseconds, to tens of kilobytes. Pillow is not used to encode:
it would filter and compress every row the slow way.

The picture depends only on ``key`` (a hash of the request body, the image
index and a seed), so the same request gives the same bytes.
"""

from __future__ import annotations

import random
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SHADES = 16  # palette entries per base colour: the ramp inside one tile
_MAX_BASE_COLOURS = 256 // _SHADES


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

    up_row = b"\x02" + bytes(width)  # an Up-filtered copy of the row above: all zeros
    pieces: list[bytes] = []
    mark_top = height - max(1, height // 16)
    mark_left = width - max(1, width // 5)
    for r in range(rows):
        top, bottom = ys[r], ys[r + 1]
        row = tile_row(r)
        if watermark and bottom > mark_top:
            marked = row[:mark_left] + bytes([mark_index]) * (width - mark_left)
            plain_rows = max(0, mark_top - top)
            if plain_rows:
                pieces.append(b"\x00" + row)
                pieces.append(up_row * (plain_rows - 1))
            pieces.append(b"\x00" + marked)
            pieces.append(up_row * (bottom - max(top, mark_top) - 1))
        else:
            pieces.append(b"\x00" + row)
            pieces.append(up_row * (bottom - top - 1))
    raw = b"".join(pieces)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    plte = b"".join(bytes(rgb) for rgb in palette)
    text = b"Software\x00imgspec simulator"
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", ihdr),
            _chunk(b"PLTE", plte),
            _chunk(b"tEXt", text),
            _chunk(b"IDAT", zlib.compress(raw, 6)),
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
