"""Result images: real PNGs at the right size, deterministic, and fast to make."""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from pipeline.rules import output_dimensions
from pipeline.simulator.images import render_png
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
