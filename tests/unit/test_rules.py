"""The API request rules: a passing and a failing case for every rule."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.apimart.rules import (
    ASPECT_RATIOS,
    MODELS,
    REQUEST_FIELDS,
    TIERS,
    Problem,
    check_request,
    output_dimensions,
)

PRO = "wan2.7-image-pro"
STD = "wan2.7-image"
URL = "https://example.com/a.png"


def t2i(**fields: object) -> dict[str, object]:
    """A valid pro text-to-image body with ``fields`` merged in."""
    return {"model": PRO, "prompt": "a flower shop", **fields}


def edit(count: int = 1, **fields: object) -> dict[str, object]:
    """A valid editing body with ``count`` image URLs and ``fields`` merged in."""
    urls = [f"https://example.com/{i}.png" for i in range(count)]
    return {"model": PRO, "prompt": "make it blue", "image_urls": urls, **fields}


def palette(*ratios: str) -> list[dict[str, str]]:
    """A color_palette with the given ratio strings and valid hex values."""
    return [{"hex": f"#{i:02X}{i:02X}{i:02X}", "ratio": r} for i, r in enumerate(ratios)]


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def warnings_of(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "warning"]


# The seven example bodies of APIMart's wan2.7 generation page (docs/apimart.md), verbatim.
DOC_EXAMPLES: list[dict[str, object]] = [
    {
        "model": "wan2.7-image-pro",
        "prompt": "A flower shop with exquisite windows, beautiful wooden door, flowers on display",
    },
    {
        "model": "wan2.7-image-pro",
        "prompt": "Summer beach, blue sky and white clouds, 4K ultra HD",
        "size": "4K",
        "thinking_mode": True,
    },
    {
        "model": "wan2.7-image-pro",
        "prompt": "Minimalist modern living room",
        "size": "2K",
        "color_palette": [
            {"hex": "#C2D1E6", "ratio": "23.51%"},
            {"hex": "#CDD8E9", "ratio": "20.13%"},
            {"hex": "#B5C8DB", "ratio": "15.88%"},
            {"hex": "#C0B5B4", "ratio": "13.27%"},
            {"hex": "#DAE0EC", "ratio": "10.11%"},
            {"hex": "#636574", "ratio": "8.93%"},
            {"hex": "#CACAD2", "ratio": "5.55%"},
            {"hex": "#CBD4E4", "ratio": "2.62%"},
        ],
    },
    {
        "model": "wan2.7-image-pro",
        "prompt": "Cinematic series: the same stray orange cat, consistent features. First: under "
        "cherry blossoms in spring. Second: old street shade in summer. Third: fallen leaves in "
        "autumn. Fourth: snow footprints in winter.",
        "enable_sequential": True,
        "n": 4,
        "size": "2K",
    },
    {
        "model": "wan2.7-image",
        "prompt": "Replace the background with a sunset scene, warm color tones",
        "image_urls": ["https://example.com/portrait.jpg"],
        "size": "2K",
    },
    {
        "model": "wan2.7-image-pro",
        "prompt": "Apply the graffiti from image 2 onto the car in image 1",
        "image_urls": ["https://example.com/car.webp", "https://example.com/paint.webp"],
        "size": "2K",
    },
    {
        "model": "wan2.7-image-pro",
        "prompt": "Place the alarm clock from image 1 into the selected area of image 2, "
        "blending naturally",
        "image_urls": ["https://example.com/clock.webp", "https://example.com/desk.webp"],
        "bbox_list": [[], [[989, 515, 1138, 681]]],
        "size": "2K",
    },
]


@pytest.mark.parametrize("body", DOC_EXAMPLES, ids=[f"doc-example-{i + 1}" for i in range(7)])
def test_documented_examples_pass(body: dict[str, object]) -> None:
    """Every example body in the API document has no problem at all."""
    assert check_request(body) == []


VALID: dict[str, Mapping[str, object]] = {
    "model-standard": {"model": STD, "prompt": "x"},
    "model-pro": {"model": PRO, "prompt": "x"},
    "prompt-5000-chars": t2i(prompt="x" * 5000),
    "prompt-optional-when-editing": {"model": STD, "image_urls": [URL]},
    "image-urls-1": edit(1),
    "image-urls-9": edit(9),
    "image-url-http": edit(image_urls=["http://example.com/a.jpg"]),
    "image-url-data-uri": edit(image_urls=["data:image/png;base64,iVBORw0KGgo="]),
    "n-1": t2i(n=1),
    "n-4-standard": t2i(n=4),
    "n-12-sequential": t2i(n=12, enable_sequential=True),
    "size-1K": t2i(size="1K"),
    "size-2K": t2i(size="2K"),
    "size-4K-pro-t2i": t2i(size="4K"),
    "size-aspect-16:9": t2i(size="16:9"),
    "size-aspect-2:3": t2i(size="2:3"),
    "size-pixels-x": t2i(size="1024x1024"),
    "size-pixels-star": t2i(size="1024*768"),
    "resolution-1K": t2i(resolution="1K"),
    "resolution-4K-pro-t2i": t2i(resolution="4K"),
    "resolution-with-aspect": t2i(size="16:9", resolution="1K"),
    "resolution-same-tier": t2i(size="2K", resolution="2K"),
    "tier-2K-editing": edit(size="2K"),
    "tier-2K-sequential": t2i(size="2K", enable_sequential=True, n=2),
    "tier-2K-standard-model": {"model": STD, "prompt": "x", "size": "2K"},
    "pixels-min-768x768": t2i(size="768x768"),
    "pixels-2048x2048-standard": {"model": STD, "prompt": "x", "size": "2048x2048"},
    "pixels-4096x4096-pro-t2i": t2i(size="4096x4096"),
    "pixels-aspect-8:1": t2i(size="3072x384"),
    "seed-0": t2i(seed=0),
    "seed-max": t2i(seed=2147483647),
    "watermark-bool": t2i(watermark=True),
    "thinking-mode-bool": t2i(thinking_mode=False),
    "sequential-bool": t2i(enable_sequential=False),
    "negative-prompt-string": t2i(negative_prompt="blurry"),
    "bbox-empty-entries": edit(2, bbox_list=[[], []]),
    "bbox-two-boxes": edit(1, bbox_list=[[[0, 0, 10, 10], [5, 5, 20, 30]]]),
    "palette-3-entries": t2i(color_palette=palette("33.33%", "33.33%", "33.34%")),
    "palette-10-entries": t2i(color_palette=palette(*["10.00%"] * 10)),
    "palette-lowercase-hex": t2i(
        color_palette=[
            {"hex": "#aabbcc", "ratio": "50.00%"},
            {"hex": "#ddeeff", "ratio": "25.00%"},
            {"hex": "#001122", "ratio": "25.00%"},
        ]
    ),
}


@pytest.mark.parametrize("body", VALID.values(), ids=VALID.keys())
def test_valid_bodies_have_no_errors(body: Mapping[str, object]) -> None:
    """A body that keeps a rule at its limits raises no error."""
    assert errors(check_request(body)) == []


INVALID: dict[str, tuple[Mapping[str, object], str, str]] = {
    # id: (body, field the error is on, a fragment of its message)
    "model-missing": ({"prompt": "x"}, "model", "missing"),
    "model-unknown": (t2i(model="wan2.6-image"), "model", "wan2.6-image"),
    "model-not-string": (t2i(model=7), "model", "7"),
    "prompt-not-string": (t2i(prompt=["a"]), "prompt", "not a string"),
    "prompt-too-long": (t2i(prompt="x" * 5001), "prompt", "5001"),
    "prompt-missing-t2i": ({"model": PRO}, "prompt", "requires one"),
    "prompt-blank-t2i": (t2i(prompt="   "), "prompt", "requires one"),
    "image-urls-empty": (edit(0), "image_urls", "empty"),
    "image-urls-10": (edit(10), "image_urls", "10 images"),
    "image-urls-not-list": (t2i(image_urls=URL), "image_urls", "not a list"),
    "image-url-not-string": (t2i(image_urls=[5]), "image_urls", "not a string"),
    "image-url-ftp": (t2i(image_urls=["ftp://example.com/a.png"]), "image_urls", "neither"),
    "image-url-no-scheme": (t2i(image_urls=["example.com/a.png"]), "image_urls", "neither"),
    "image-url-data-not-image": (
        t2i(image_urls=["data:text/plain;base64,aGk="]),
        "image_urls",
        "neither",
    ),
    "n-0": (t2i(n=0), "n", "n is 0"),
    "n-5-standard": (t2i(n=5), "n", "standard mode allows 1-4"),
    "n-13-sequential": (t2i(n=13, enable_sequential=True), "n", "sequential mode allows 1-12"),
    "n-string": (t2i(n="2"), "n", "not an integer"),
    "n-bool": (t2i(n=True), "n", "not an integer"),
    "n-float": (t2i(n=2.0), "n", "not an integer"),
    "size-lowercase": (t2i(size="2k"), "size", "'2k'"),
    "size-unknown-aspect": (t2i(size="5:4"), "size", "'5:4'"),
    "size-capital-X": (t2i(size="1024X1024"), "size", "1024X1024"),
    "size-number": (t2i(size=1024), "size", "1024"),
    "resolution-8K": (t2i(resolution="8K"), "resolution", "'8K'"),
    "resolution-with-pixels": (t2i(size="1024x1024", resolution="1K"), "resolution", "conflicts"),
    "resolution-other-tier": (t2i(size="1K", resolution="2K"), "resolution", "conflicts"),
    "tier-4K-standard-model": ({"model": STD, "prompt": "x", "size": "4K"}, "size", "only"),
    "tier-4K-resolution-standard": (
        {"model": STD, "prompt": "x", "resolution": "4K"},
        "resolution",
        "only",
    ),
    "tier-4K-editing": (edit(size="4K"), "size", "editing"),
    "tier-4K-sequential": (t2i(size="4K", enable_sequential=True), "size", "sequential"),
    "pixels-below-min": (t2i(size="767x768"), "size", "fewer than"),
    "pixels-above-2K-standard": (
        {"model": STD, "prompt": "x", "size": "2049x2048"},
        "size",
        "more than",
    ),
    "pixels-above-4K-pro": (t2i(size="4096*4097"), "size", "more than"),
    "pixels-above-2K-pro-editing": (edit(size="4096x4096"), "size", "more than"),
    "pixels-aspect-9:1": (t2i(size="2880x320"), "size", "aspect"),
    "seed-negative": (t2i(seed=-1), "seed", "-1"),
    "seed-too-big": (t2i(seed=2147483648), "seed", "2147483648"),
    "seed-string": (t2i(seed="1"), "seed", "not an integer"),
    "seed-bool": (t2i(seed=True), "seed", "not an integer"),
    "watermark-string": (t2i(watermark="true"), "watermark", "not true or false"),
    "thinking-mode-int": (t2i(thinking_mode=1), "thinking_mode", "not true or false"),
    "sequential-string": (t2i(enable_sequential="yes"), "enable_sequential", "not true"),
    "negative-prompt-number": (t2i(negative_prompt=3), "negative_prompt", "not a string"),
    "bbox-without-images": (t2i(bbox_list=[[]]), "bbox_list", "without image_urls"),
    "bbox-not-list": (edit(1, bbox_list="[]"), "bbox_list", "not a list"),
    "bbox-length-mismatch": (edit(2, bbox_list=[[]]), "bbox_list", "1 entry"),
    "bbox-three-boxes": (
        edit(1, bbox_list=[[[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 3, 3]]]),
        "bbox_list",
        "3 boxes",
    ),
    "bbox-three-numbers": (edit(1, bbox_list=[[[0, 0, 1]]]), "bbox_list", "4 non-negative"),
    "bbox-negative": (edit(1, bbox_list=[[[-1, 0, 5, 5]]]), "bbox_list", "4 non-negative"),
    "bbox-float": (edit(1, bbox_list=[[[0.5, 0, 5, 5]]]), "bbox_list", "4 non-negative"),
    "bbox-bool": (edit(1, bbox_list=[[[True, 0, 5, 5]]]), "bbox_list", "4 non-negative"),
    "bbox-x1-not-below-x2": (edit(1, bbox_list=[[[5, 0, 5, 5]]]), "bbox_list", "x1 < x2"),
    "bbox-y1-not-below-y2": (edit(1, bbox_list=[[[0, 9, 5, 5]]]), "bbox_list", "y1 < y2"),
    "bbox-entry-not-list": (edit(1, bbox_list=[5]), "bbox_list", "not a list of boxes"),
    "palette-not-list": (t2i(color_palette="#FFFFFF"), "color_palette", "not a list"),
    "palette-2-entries": (t2i(color_palette=palette("50.00%", "50.00%")), "color_palette", "3-10"),
    "palette-11-entries": (
        t2i(color_palette=palette(*["9.00%"] * 10, "10.00%")),
        "color_palette",
        "3-10",
    ),
    "palette-bad-hex": (
        t2i(color_palette=[{"hex": "red", "ratio": "50.00%"}, *palette("25.00%", "25.00%")]),
        "color_palette",
        "hex 'red'",
    ),
    "palette-ratio-no-decimals": (
        t2i(color_palette=palette("50%", "25.00%", "25.00%")),
        "color_palette",
        "'50%'",
    ),
    "palette-ratio-number": (
        t2i(color_palette=[{"hex": "#000000", "ratio": 50}, *palette("25.00%", "25.00%")]),
        "color_palette",
        "ratio 50",
    ),
    "palette-sum-99.99": (
        t2i(color_palette=palette("33.33%", "33.33%", "33.33%")),
        "color_palette",
        "99.99%",
    ),
    "palette-sum-100.01": (
        t2i(color_palette=palette("50.00%", "25.00%", "25.01%")),
        "color_palette",
        "100.01%",
    ),
    "palette-entry-not-object": (
        t2i(color_palette=["#000000", *palette("50.00%", "50.00%")]),
        "color_palette",
        "not an object",
    ),
}


@pytest.mark.parametrize(("body", "field", "fragment"), INVALID.values(), ids=INVALID.keys())
def test_invalid_bodies_name_the_field(
    body: Mapping[str, object], field: str, fragment: str
) -> None:
    """A body breaking a rule gets an error on that field whose message shows the value."""
    found = [p for p in errors(check_request(body)) if p.field == field]
    assert found, check_request(body)
    assert any(fragment in p.message for p in found), found


@pytest.mark.parametrize(("body", "field", "fragment"), INVALID.values(), ids=INVALID.keys())
def test_every_error_says_what_to_do(body: Mapping[str, object], field: str, fragment: str) -> None:
    """Every problem has a hint that differs from its message."""
    for problem in check_request(body):
        assert problem.hint.strip()
        assert problem.hint != problem.message


def test_check_urls_false_skips_url_syntax() -> None:
    """check_urls=False accepts placeholder URLs but still checks their count."""
    assert errors(check_request(edit(image_urls=["local:cat.png"]), check_urls=False)) == []
    assert errors(check_request(edit(image_urls=["local:cat.png"])))
    assert errors(check_request(edit(0), check_urls=False))


def test_bbox_checked_against_known_input_size() -> None:
    """A box must lie inside its image when input_sizes gives the image's size."""
    body = edit(2, bbox_list=[[], [[989, 515, 1138, 681]]])
    assert errors(check_request(body, input_sizes=[None, (1200, 700)])) == []
    outside = errors(check_request(body, input_sizes=[None, (1100, 700)]))
    assert [(p.field, p.index) for p in outside] == [("bbox_list", 1)]
    assert "1100x700" in outside[0].message
    assert errors(check_request(body, input_sizes=[None, None])) == []


def test_list_item_problems_carry_their_index() -> None:
    """Problems about one list item say which item (index) they are about."""
    body = edit(3, image_urls=[URL, 5, URL])
    (problem,) = errors(check_request(body))
    assert problem.index == 1


def test_palette_sum_hint_gives_the_difference() -> None:
    """The palette-sum hint says exactly how much to add or take away."""
    (low,) = errors(check_request(t2i(color_palette=palette("33.33%", "33.33%", "33.33%"))))
    assert "add 0.01%" in low.hint
    (high,) = errors(check_request(t2i(color_palette=palette("50.00%", "25.00%", "25.01%"))))
    assert "take 0.01%" in high.hint


def test_n_hint_offers_sequential_mode() -> None:
    """n over 4 in standard mode suggests sequential mode, which allows 12."""
    (problem,) = errors(check_request(t2i(n=6)))
    assert "enable_sequential" in problem.hint


WARNINGS: dict[str, tuple[Mapping[str, object], str]] = {
    "thinking-mode-with-images": (edit(thinking_mode=True), "thinking_mode"),
    "thinking-mode-sequential": (t2i(thinking_mode=True, enable_sequential=True), "thinking_mode"),
    "palette-sequential": (
        t2i(enable_sequential=True, color_palette=palette("50.00%", "25.00%", "25.00%")),
        "color_palette",
    ),
    "unknown-field": (t2i(aspect="16:9"), "aspect"),
}


@pytest.mark.parametrize(("body", "field"), WARNINGS.values(), ids=WARNINGS.keys())
def test_ignored_settings_are_warnings_not_errors(body: Mapping[str, object], field: str) -> None:
    """Settings the API ignores give a warning on that field and no error."""
    problems = check_request(body)
    assert errors(problems) == []
    assert [p.field for p in warnings_of(problems)] == [field]


NO_WARNINGS: dict[str, Mapping[str, object]] = {
    "thinking-mode-t2i": t2i(thinking_mode=True),
    "thinking-mode-off-with-images": edit(thinking_mode=False),
    "palette-standard": t2i(color_palette=palette("50.00%", "25.00%", "25.00%")),
}


@pytest.mark.parametrize("body", NO_WARNINGS.values(), ids=NO_WARNINGS.keys())
def test_effective_settings_give_no_warning(body: Mapping[str, object]) -> None:
    """Settings that take effect (or ask for what happens anyway) give no warning."""
    assert check_request(body) == []


# -- output_dimensions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (t2i(), (2048, 2048)),
        (t2i(size="1K"), (1024, 1024)),
        (t2i(size="4K"), (4096, 4096)),
        (t2i(resolution="4K"), (4096, 4096)),
        (t2i(size="16:9"), (2720, 1536)),
        (t2i(size="9:16", resolution="1K"), (768, 1360)),
        (t2i(size="1024*768"), (1024, 768)),
        (t2i(size="3000x1000"), (3000, 1000)),
        (edit(size="16:9"), (2048, 2048)),
    ],
    ids=[
        "default-2K",
        "tier-1K",
        "tier-4K",
        "resolution-4K",
        "aspect-16:9",
        "aspect-9:16-at-1K",
        "pixels-star",
        "pixels-unrounded",
        "editing-unknown-input",
    ],
)
def test_output_dimensions(body: Mapping[str, object], expected: tuple[int, int]) -> None:
    """Tier, aspect and pixel sizes map to the documented output pixels."""
    assert output_dimensions(body) == expected


def test_output_dimensions_follow_last_input_when_editing() -> None:
    """In editing mode the output takes the last input's aspect at the tier."""
    assert output_dimensions(edit(size="1K"), last_input=(2000, 1000)) == (1440, 720)
    assert output_dimensions(edit(), last_input=(1000, 1000)) == (2048, 2048)
    assert output_dimensions(edit(size="1024x1024"), last_input=(2000, 1000)) == (1024, 1024)


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("aspect", ASPECT_RATIOS)
def test_tier_sizes_are_multiples_of_16_within_area(tier: str, aspect: str) -> None:
    """Tier sizes are multiples of 16, near the aspect, with area in (0.95, 1] x tier²."""
    width, height = output_dimensions(t2i(size=aspect, resolution=tier))
    side = TIERS[tier]
    a, b = (int(v) for v in aspect.split(":"))
    assert width % 16 == 0
    assert height % 16 == 0
    assert 0.95 * side * side < width * height <= side * side
    assert math.isclose(width / height, a / b, rel_tol=0.02)


def test_models_constant() -> None:
    """MODELS lists exactly the two wan2.7 models."""
    assert MODELS == ("wan2.7-image", "wan2.7-image-pro")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = st.sampled_from([*REQUEST_FIELDS, "x"])  # every API field and an unknown one


@settings(max_examples=300, deadline=None)
@given(
    body=st.dictionaries(_FIELDS, _JSON, max_size=8),
    sizes=st.lists(st.none() | st.tuples(st.integers(1, 9000), st.integers(1, 9000)), max_size=10),
)
def test_check_request_never_raises(
    body: dict[str, object], sizes: list[tuple[int, int] | None]
) -> None:
    """Any JSON-like body gives a list of problems, never an exception."""
    problems = check_request(body, input_sizes=sizes)
    assert all(isinstance(p, Problem) and p.message and p.hint for p in problems)
    width, height = output_dimensions(body, last_input=sizes[-1] if sizes else None)
    assert width > 0
    assert height > 0
