"""Result images: real PNGs at the right size, deterministic, and fast to make."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import time
import zlib
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.core.apimart.rules import output_dimensions
from pipeline.simulator import images
from pipeline.simulator.images import adler32_combine, render_png
from pipeline.simulator.inputs import foreign_size
from tests.simulator.simkit import (
    PRO,
    STD,
    body,
    create,
    data_uri,
    png_size,
    result_urls,
    submit,
    task_id,
)

pytestmark = pytest.mark.timeout(60)


def fetch_all(client: httpx.Client, clock: Any, payload: dict[str, object]) -> list[bytes]:
    """Submit, let the task finish, and download every image."""
    tid = task_id(submit(client, payload))
    clock.advance(10)
    return [client.get(url).content for url in result_urls(client, tid)]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, (2048, 2048)),
        ({"size": "1K"}, (1024, 1024)),
        ({"size": "4K"}, (4096, 4096)),
        ({"size": "16:9"}, (2720, 1536)),
        ({"size": "3:4", "resolution": "1K"}, (880, 1168)),
        ({"size": "1000*800"}, (1000, 800)),
        ({"model": STD, "size": "2:3"}, (1664, 2496)),
    ],
    ids=["default-2K", "1K", "4K", "16:9", "3:4-at-1K", "pixels", "standard-2:3"],
)
def test_images_have_requested_dimensions(
    client: httpx.Client, clock: Any, fields: dict[str, object], expected: tuple[int, int]
) -> None:
    """Each result image is a PNG of the tier/aspect/pixel size asked for."""
    (data,) = fetch_all(client, clock, body(**fields))
    assert png_size(data) == expected


def test_edit_mode_follows_last_data_uri_input(client: httpx.Client, clock: Any) -> None:
    """In editing mode the output takes the aspect of the last input image."""
    payload = body(image_urls=[data_uri(300, 300), data_uri(600, 300)], size="2K")
    (data,) = fetch_all(client, clock, payload)
    assert png_size(data) == (2896, 1440)


def test_edit_mode_with_foreign_url_uses_assumed_size(client: httpx.Client, clock: Any) -> None:
    """A URL the simulator cannot fetch gets a size derived from its hash, used for the aspect."""
    url = "https://example.com/desk.webp"
    payload = body(model=STD, image_urls=[url], size="1K")
    (data,) = fetch_all(client, clock, payload)
    assert png_size(data) == output_dimensions(payload, last_input=foreign_size(url))
    assert foreign_size(url) == foreign_size(url)


def test_n_images_per_task_all_differ(client: httpx.Client, clock: Any) -> None:
    """A task with n=4 yields four distinct images."""
    images = fetch_all(client, clock, body(n=4, size="1K", seed=5))
    assert len(images) == 4
    assert len(set(images)) == 4


def test_same_body_and_seed_give_same_bytes(client: httpx.Client, clock: Any) -> None:
    """Two tasks from the same body with a seed produce byte-identical images."""
    payload = body(size="1K", seed=42)
    assert fetch_all(client, clock, payload) == fetch_all(client, clock, payload)


def test_different_seed_gives_different_bytes(client: httpx.Client, clock: Any) -> None:
    """Changing only the seed changes the image."""
    one = fetch_all(client, clock, body(size="1K", seed=1))
    two = fetch_all(client, clock, body(size="1K", seed=2))
    assert one != two


def test_no_seed_gives_different_images_per_task(client: httpx.Client, clock: Any) -> None:
    """Without a seed (the API picks one), equal bodies give different images."""
    assert fetch_all(client, clock, body(size="1K")) != fetch_all(client, clock, body(size="1K"))


def test_images_are_stable_across_simulator_runs(start_sim: Any, connect: Any, clock: Any) -> None:
    """Same simulator seed and same requests give the same task ids and bytes."""
    results = []
    for _ in range(2):
        client = connect(start_sim(seed=9))
        tid = create(client, size="1K")
        clock.advance(10)
        results.append((tid, [client.get(u).content for u in result_urls(client, tid)]))
    assert results[0] == results[1]


def test_4k_png_renders_fast() -> None:
    """A 4096x4096 PNG is made in well under a second and decodes at that size."""
    key = hashlib.sha256(b"speed").digest()
    started = time.perf_counter()
    data = render_png(4096, 4096, key)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"4K PNG took {elapsed:.3f} s"
    assert png_size(data) == (4096, 4096)


def test_4k_download_over_http(client: httpx.Client, clock: Any) -> None:
    """A pro text-to-image 4K task serves a real 4096x4096 PNG."""
    (data,) = fetch_all(client, clock, body(model=PRO, size="4K"))
    assert png_size(data) == (4096, 4096)


def test_palette_colours_appear_in_image(client: httpx.Client, clock: Any) -> None:
    """A color_palette's colours are used as the image's base colours."""
    palette = [
        {"hex": "#FF0000", "ratio": "50.00%"},
        {"hex": "#00FF00", "ratio": "25.00%"},
        {"hex": "#0000FF", "ratio": "25.00%"},
    ]
    (data,) = fetch_all(client, clock, body(size="1K", color_palette=palette, seed=3))
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    colours: set[tuple[int, int, int]] = set()
    for _, colour in rgb.getcolors(maxcolors=4096) or []:
        assert isinstance(colour, tuple)
        r, g, b = colour[:3]
        colours.add((r, g, b))
    assert any(r > 200 and g < 80 and b < 80 for r, g, b in colours)  # shades of #FF0000
    assert any(b > 200 and r < 80 and g < 80 for r, g, b in colours)  # shades of #0000FF


# The encoder before the zlib stream was assembled from cached pieces: the same
# random draws and scanlines, compressed whole with plain zlib.compress. The fast
# encoder must decode to exactly these pixels.


def _reference_ramp(base: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The 16 shades of one base colour, as the original encoder made them."""

    def shade(channel: int, t: float) -> int:
        return min(255, int(channel * (0.55 + 0.45 * t)) + int(60 * t))

    red, green, blue = base
    steps = [s / 15 for s in range(16)]
    return [(shade(red, t), shade(green, t), shade(blue, t)) for t in steps]


def _reference_scanlines(
    width: int,
    height: int,
    key: bytes,
    colours: Sequence[tuple[int, int, int]] = (),
    watermark: bool = False,
) -> tuple[bytes, bytes]:
    """The palette bytes and the filtered raw scanlines, built row by row the slow way."""
    rng = random.Random(key)
    bases = list(colours[:15])
    if not bases:
        bases = [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(6)]
    palette = [rgb for base in bases for rgb in _reference_ramp(base)]
    mark_index = len(palette)
    palette.append((245, 245, 245))
    cols = min(rng.randint(3, 7), width)
    rows = min(rng.randint(3, 7), height)
    xs = [width * i // cols for i in range(cols + 1)]
    ys = [height * i // rows for i in range(rows + 1)]
    tiles = [[rng.randrange(len(bases)) for _ in range(cols)] for _ in range(rows)]
    mark_top = height - max(1, height // 16)
    mark_left = width - max(1, width // 5)
    lines: list[bytes] = []
    for r in range(rows):
        row = bytearray()
        for c in range(cols):
            span = xs[c + 1] - xs[c]
            for s in range(16):
                row += bytes([tiles[r][c] * 16 + s]) * (span * (s + 1) // 16 - span * s // 16)
        marked = bytes(row[:mark_left]) + bytes([mark_index]) * (width - mark_left)
        for y in range(ys[r], ys[r + 1]):
            first = y == ys[r] or (watermark and y == mark_top)
            if not first:
                lines.append(b"\x02" + bytes(width))
            elif watermark and y >= mark_top:
                lines.append(b"\x00" + marked)
            else:
                lines.append(b"\x00" + bytes(row))
    return b"".join(bytes(rgb) for rgb in palette), b"".join(lines)


def _reference_png(width: int, height: int, palette: bytes, raw: bytes) -> bytes:
    """A plain palette PNG of ``raw`` scanlines, compressed whole with zlib.compress."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)),
            chunk(b"PLTE", palette),
            chunk(b"IDAT", zlib.compress(raw, 6)),
            chunk(b"IEND", b""),
        )
    )


def _idat(data: bytes) -> bytes:
    """The concatenated IDAT payload of a PNG."""
    payload, offset = b"", 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        if data[offset + 4 : offset + 8] == b"IDAT":
            payload += data[offset + 8 : offset + 8 + length]
        offset += 12 + length
    return payload


def _decoded(data: bytes) -> tuple[tuple[int, int], str, list[int] | None, bytes]:
    """Size, mode, palette and pixel bytes of a PNG, fully decoded by Pillow."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size, image.mode, image.getpalette(), image.tobytes()


RED_GREEN_BLUE = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
ENCODING_CASES = [
    (1, 1, False, ()),
    (1, 1, True, ()),
    (17, 5, False, ()),
    (17, 5, True, RED_GREEN_BLUE),
    (5, 17, True, ()),
    (1024, 1024, False, ()),
    (1024, 1024, True, ()),
    (1024, 1024, False, RED_GREEN_BLUE),
    (2048, 256, False, ()),
    (2048, 256, True, RED_GREEN_BLUE),
    (2720, 1536, True, ()),
]


@pytest.mark.parametrize(("width", "height", "watermark", "colours"), ENCODING_CASES)
@pytest.mark.parametrize("seed", [b"a", b"b", b"c"])
def test_pixels_match_plain_zlib_encoding(
    width: int,
    height: int,
    watermark: bool,
    colours: tuple[tuple[int, int, int], ...],
    seed: bytes,
) -> None:
    """The pieced-together PNG decodes to the same image as one compressed with zlib.compress."""
    key = hashlib.sha256(seed).digest()
    data = render_png(width, height, key, colours=colours, watermark=watermark)
    palette, raw = _reference_scanlines(width, height, key, colours, watermark)
    assert _decoded(data) == _decoded(_reference_png(width, height, palette, raw))
    assert _decoded(data)[0] == (width, height)


@pytest.mark.parametrize(("width", "height", "watermark", "colours"), ENCODING_CASES)
def test_idat_inflates_to_the_raw_scanlines(
    width: int, height: int, watermark: bool, colours: tuple[tuple[int, int, int], ...]
) -> None:
    """The IDAT zlib stream inflates (Adler-32 checked) to exactly the filtered scanlines."""
    key = hashlib.sha256(b"idat").digest()
    data = render_png(width, height, key, colours=colours, watermark=watermark)
    _, raw = _reference_scanlines(width, height, key, colours, watermark)
    assert zlib.decompress(_idat(data)) == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=64), st.integers(0, 3000))
def test_adler32_combine_matches_zlib(first: bytes, unit: bytes, repeats: int) -> None:
    """adler32_combine of two checksums is zlib's Adler-32 of the joined bytes, empty or long."""
    second = unit * repeats  # up to ~190 KB: lengths past the modulus 65521 are covered
    combined = adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
    assert combined == zlib.adler32(first + second)


def test_same_key_gives_same_bytes_with_or_without_cache() -> None:
    """render_png is deterministic, whether the zero-row runs come from the cache or not."""
    key = hashlib.sha256(b"determinism").digest()
    images._zero_rows.cache_clear()
    cold = render_png(1024, 768, key, watermark=True)
    assert render_png(1024, 768, key, watermark=True) == cold
    images._zero_rows.cache_clear()
    assert render_png(1024, 768, key, watermark=True) == cold
