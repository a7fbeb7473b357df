"""The APIMart wan2.7 request rules, as pure functions.

One source of truth for what the generation endpoint accepts
(``docs/apimart.md`` states each rule with the APIMart documentation page it
comes from). The manifest validator calls it before any money moves, and the
simulator calls it to answer 400 exactly where the API would. Nothing here does
I/O or reads a clock, so everything is cheap to call and to test.

Every problem carries a concrete ``message`` (what is wrong, with the value)
and a ``hint`` (what to do about it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final, Literal
from urllib.parse import urlsplit

from pipeline.core.apimart.models import (
    CATALOGUE,
    DEFAULT_TIER,
    MODELS,
    SCENARIOS,
    TIERS,
    ImageModel,
    Limits,
    Scenario,
    models_with_tier,
    most_generous,
)

__all__ = ["DEFAULT_TIER", "MODELS", "TIERS"]  # re-exported: callers ask the rules

Severity = Literal["error", "warning"]

ASPECT_RATIOS: Final[tuple[str, ...]] = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")

MAX_PROMPT_CHARS: Final = 5000
MAX_IMAGES: Final = 9
MAX_SEED: Final = 2_147_483_647
MAX_BOXES_PER_IMAGE: Final = 2
PALETTE_MIN: Final = 3
PALETTE_MAX: Final = 10
MAX_ASPECT: Final = 8  # both for pixel sizes and input images: 1:8 .. 8:1


# Every field of the generation endpoint, in the order imgspec writes request bodies.
REQUEST_FIELDS: Final[tuple[str, ...]] = (
    "model", "prompt", "negative_prompt", "image_urls", "n", "size", "resolution",
    "seed", "watermark", "thinking_mode", "enable_sequential", "bbox_list", "color_palette",
)
KNOWN_FIELDS: Final[frozenset[str]] = frozenset(REQUEST_FIELDS)
BOOLEAN_FIELDS: Final[tuple[str, ...]] = ("watermark", "thinking_mode", "enable_sequential")

_PIXELS_RE: Final = re.compile(r"([1-9][0-9]{0,5})[x*]([1-9][0-9]{0,5})")
_DATA_URI_RE: Final = re.compile(r"data:image/[A-Za-z0-9.+-]+(?:;[^,;]+=[^,;]*)*;base64,.")
_HEX_RE: Final = re.compile(r"#[0-9A-Fa-f]{6}")
_RATIO_RE: Final = re.compile(r"([0-9]{1,3}\.[0-9]{2})%")


@dataclass(frozen=True, slots=True)
class Problem:
    """One rule a request breaks: what is wrong and what to do about it."""

    field: str  # top-level request field; "" = the whole request
    message: str  # what is wrong, concrete
    hint: str  # what to do
    severity: Severity = "error"
    index: int | None = None  # list item index within the field, when relevant


@dataclass(frozen=True, slots=True)
class _Size:
    """A parsed ``size`` value: exactly one of tier, aspect or pixels is set."""

    tier: str | None = None
    aspect: tuple[int, int] | None = None
    pixels: tuple[int, int] | None = None


def _parse_size(value: str) -> _Size | None:
    if value in TIERS:
        return _Size(tier=value)
    if value in ASPECT_RATIOS:
        a, b = value.split(":")
        return _Size(aspect=(int(a), int(b)))
    match = _PIXELS_RE.fullmatch(value)
    if match:
        return _Size(pixels=(int(match[1]), int(match[2])))
    return None


def _is_int(value: object) -> bool:
    # bool is an int subclass, but JSON true is not a number to the API.
    return isinstance(value, int) and not isinstance(value, bool)


def _count(number: int, singular: str, plural: str | None = None) -> str:
    return f"{number} {singular if number == 1 else (plural or singular + 's')}"


def _describe(value: object) -> str:
    """Show a value the way it looks in JSON/YAML, short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return repr(shown)
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    return repr(value)


class _Checker:
    """Collects problems for one request body."""

    def __init__(
        self,
        body: Mapping[str, object],
        input_sizes: Sequence[tuple[int, int] | None],
        check_urls: bool,
    ) -> None:
        self.body = body
        self.input_sizes = input_sizes
        self.check_urls = check_urls
        self.problems: list[Problem] = []
        model = body.get("model")
        self.spec: ImageModel | None = (CATALOGUE.get(model) if isinstance(model, str)
                                        else None)
        self.model = None if self.spec is None else self.spec.name
        self.edit = "image_urls" in body
        self.sequential = body.get("enable_sequential") is True
        self.scenario: Scenario = ("sequential" if self.sequential
                                   else "edit" if self.edit else "text-to-image")
        # An unknown model is already an error: judge the rest by the most generous limits.
        self.limits: Limits = (most_generous(self.scenario) if self.spec is None
                               else self.spec.limits(self.scenario))

    def error(self, field: str, message: str, hint: str, index: int | None = None) -> None:
        self.problems.append(Problem(field, message, hint, "error", index))

    def warning(self, field: str, message: str, hint: str, index: int | None = None) -> None:
        self.problems.append(Problem(field, message, hint, "warning", index))

    def run(self) -> list[Problem]:
        self.check_model()
        self.check_prompt()
        self.check_image_urls()
        self.check_n()
        self.check_size()
        self.check_seed()
        self.check_booleans()
        self.check_negative_prompt()
        self.check_bbox_list()
        self.check_color_palette()
        self.check_ignored()
        return self.problems

    # -- individual rules -------------------------------------------------

    def check_model(self) -> None:
        choices = " or ".join(MODELS)
        if "model" not in self.body:
            self.error("model", "model is missing", f"add model: {choices}")
        elif self.model is None:
            self.error(
                "model",
                f"model is {_describe(self.body['model'])}, but the API knows only {choices}",
                f"set model to {choices}",
            )

    def check_prompt(self) -> None:
        prompt = self.body.get("prompt")
        if "prompt" in self.body and not isinstance(prompt, str):
            self.error(
                "prompt", f"prompt is {_describe(prompt)}, not a string", "write the prompt as text"
            )
            return
        if isinstance(prompt, str) and len(prompt) > MAX_PROMPT_CHARS:
            over = len(prompt) - MAX_PROMPT_CHARS
            self.error(
                "prompt",
                f"prompt is {len(prompt)} characters, but the limit is {MAX_PROMPT_CHARS}",
                f"shorten the prompt by at least {over} characters",
            )
        if not self.edit and (prompt is None or (isinstance(prompt, str) and not prompt.strip())):
            self.error(
                "prompt",
                "prompt is missing or empty, but text-to-image (no image_urls) requires one",
                "write a prompt, or give image_urls to edit images",
            )

    def check_image_urls(self) -> None:
        if not self.edit:
            return
        urls = self.body["image_urls"]
        if not isinstance(urls, list | tuple):
            self.error(
                "image_urls",
                f"image_urls is {_describe(urls)}, not a list",
                "give a list of 1-9 image URLs, or remove image_urls for text-to-image",
            )
            return
        if not urls:
            self.error(
                "image_urls",
                "image_urls is empty, but editing needs 1-9 images",
                "add at least one image, or remove image_urls for text-to-image",
            )
        elif len(urls) > MAX_IMAGES:
            self.error(
                "image_urls",
                f"image_urls has {_count(len(urls), 'image')}, "
                f"but the API takes at most {MAX_IMAGES}",
                f"drop {len(urls) - MAX_IMAGES} images, or split the work into several requests",
            )
        for i, url in enumerate(urls):
            if not isinstance(url, str):
                self.error(
                    "image_urls",
                    f"image {i + 1} is {_describe(url)}, not a string",
                    "give an http(s) URL or a data:image/...;base64,... URI",
                    index=i,
                )
            elif self.check_urls and not _is_image_url(url):
                self.error(
                    "image_urls",
                    f"image {i + 1} is {_describe(url)}, neither an http(s) URL "
                    "nor a data:image/...;base64,... URI",
                    "give an http(s) URL or a base64 data URI of a JPEG, PNG, WEBP or BMP image",
                    index=i,
                )

    def check_n(self) -> None:
        if "n" not in self.body:
            return
        n = self.body["n"]
        limit = self.limits.max_n
        mode = "sequential mode" if self.sequential else "standard mode"
        if isinstance(n, bool) or not isinstance(n, int):
            self.error(
                "n", f"n is {_describe(n)}, not an integer", f"set n to a whole number 1-{limit}"
            )
        elif not 1 <= n <= limit:
            hint = f"set n between 1 and {limit}"
            sequential = (most_generous("sequential") if self.spec is None
                          else self.spec.sequential).max_n
            if not self.sequential and 1 <= n <= sequential:
                hint = (
                    f"lower n to {limit} or less, "
                    f"or set enable_sequential: true (up to {sequential})"
                )
            self.error("n", f"n is {n}, but {mode} allows 1-{limit}", hint)

    def check_size(self) -> None:
        size_value = self.body.get("size")
        res_value = self.body.get("resolution")
        size: _Size | None = None
        if "size" in self.body:
            parsed = _parse_size(size_value) if isinstance(size_value, str) else None
            if parsed is None:
                self.error(
                    "size",
                    f"size is {_describe(size_value)}, which is not a tier, aspect ratio or WxH",
                    "use 1K, 2K or 4K; an aspect ratio (" + " ".join(ASPECT_RATIOS) + "); "
                    "or pixels like 1024x1024 or 1024*1024",
                )
            size = parsed
        resolution: str | None = None
        if "resolution" in self.body:
            if isinstance(res_value, str) and res_value in TIERS:
                resolution = res_value
            else:
                self.error(
                    "resolution",
                    f"resolution is {_describe(res_value)}, not one of 1K, 2K, 4K",
                    "set resolution to 1K, 2K or 4K",
                )
        if resolution is not None and size is not None:
            if size.pixels is not None:
                self.error(
                    "resolution",
                    f"resolution {resolution} conflicts with the pixel size {size_value}",
                    "drop resolution, or use an aspect-ratio size (like 16:9) with resolution",
                )
                return
            if size.tier is not None and size.tier != resolution:
                self.error(
                    "resolution",
                    f"resolution {resolution} conflicts with size {size.tier}",
                    "give the tier once: drop resolution or make both the same",
                )
                return
        if size is not None and size.pixels is not None:
            self.check_pixels(size.pixels, str(size_value))
            return
        if resolution == "4K":
            self.check_4k("resolution")
        elif size is not None and size.tier == "4K":
            self.check_4k("size")

    def _scenario(self) -> str:
        if self.edit:
            return "image editing (image_urls)"
        return "sequential mode"

    def check_4k(self, field: str) -> None:
        if self.spec is None:
            return  # the model error already says what to fix
        if "4K" in self.limits.tiers:
            return
        makers = " or ".join(models_with_tier("4K", "text-to-image"))
        if not any("4K" in self.spec.limits(s).tiers for s in SCENARIOS):
            self.error(
                field,
                f"4K is only available with {makers}, and model is {self.spec.name}",
                f"use 1K or 2K, or set model: {makers}",
            )
        else:
            self.error(
                field,
                f"4K is not available for {self._scenario()}: at most {self.limits.tiers[-1]}",
                "use 1K or 2K" + ("" if self.edit else ", or turn off enable_sequential"),
            )

    def check_pixels(self, pixels: tuple[int, int], text: str) -> None:
        width, height = pixels
        total = width * height
        minimum = min(m.min_pixels for m in CATALOGUE.values()) if self.spec is None else (
            self.spec.min_pixels)
        if total < minimum:
            side = math.isqrt(minimum)
            self.error(
                "size",
                f"size {text} has {total} pixels, fewer than the minimum {side}x{side} "
                f"({minimum})",
                "use a larger size, or a tier like 1K",
            )
        elif total > self.limits.max_pixels:
            self.error("size", *self._too_many_pixels(text, total))
        if max(width, height) > MAX_ASPECT * min(width, height):
            self.error(
                "size",
                f"size {text} has aspect {width}:{height}, outside 1:8 .. 8:1",
                "make the longer side at most 8 times the shorter",
            )

    def _too_many_pixels(self, text: str, total: int) -> tuple[str, str]:
        """The message and hint for a pixel size over this request's limit."""
        widest, scenario = max(((m, s) for m in CATALOGUE.values() for s in SCENARIOS),
                               key=lambda ms: ms[0].limits(ms[1]).max_pixels)
        top = widest.limits(scenario).max_side
        side = self.limits.max_side
        if self.spec is None or (self.spec is widest and self.scenario == scenario):
            context, hint = f"{widest.name} {scenario}", f"use at most {top}x{top} pixels in total"
        elif all(self.spec.limits(s).max_pixels <= self.limits.max_pixels for s in SCENARIOS):
            context = self.spec.name
            hint = f"use at most {side}x{side} pixels, or {widest.name} {scenario} for {top}x{top}"
        else:
            context, hint = self._scenario(), f"use at most {side}x{side} pixels in total"
        return (f"size {text} has {total} pixels, more than the {side}x{side} allowed for "
                f"{context}", hint)

    def check_seed(self) -> None:
        if "seed" not in self.body:
            return
        seed = self.body["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            self.error(
                "seed", f"seed is {_describe(seed)}, not an integer", f"set seed to 0-{MAX_SEED}"
            )
        elif not 0 <= seed <= MAX_SEED:
            self.error("seed", f"seed is {seed}, outside 0-{MAX_SEED}", f"set seed to 0-{MAX_SEED}")

    def check_booleans(self) -> None:
        for field in BOOLEAN_FIELDS:
            if field in self.body and not isinstance(self.body[field], bool):
                self.error(
                    field,
                    f"{field} is {_describe(self.body[field])}, not true or false",
                    f"set {field} to true or false (unquoted)",
                )

    def check_negative_prompt(self) -> None:
        if "negative_prompt" in self.body and not isinstance(self.body["negative_prompt"], str):
            self.error(
                "negative_prompt",
                f"negative_prompt is {_describe(self.body['negative_prompt'])}, not a string",
                "write the negative prompt as text",
            )

    def check_bbox_list(self) -> None:
        if "bbox_list" not in self.body:
            return
        boxes = self.body["bbox_list"]
        if not self.edit:
            self.error(
                "bbox_list",
                "bbox_list is given without image_urls",
                "remove bbox_list, or add the images its boxes refer to",
            )
            return
        if not isinstance(boxes, list | tuple):
            self.error(
                "bbox_list",
                f"bbox_list is {_describe(boxes)}, not a list",
                "give one list of boxes per image, [] for an image with no box",
            )
            return
        urls = self.body["image_urls"]
        if isinstance(urls, list | tuple) and len(boxes) != len(urls):
            self.error(
                "bbox_list",
                f"bbox_list has {_count(len(boxes), 'entry', 'entries')}, "
                f"but image_urls has {_count(len(urls), 'image')}",
                "give exactly one entry per image, [] for an image with no box",
            )
        for i, entry in enumerate(boxes):
            self.check_boxes_of_image(i, entry)

    def check_boxes_of_image(self, i: int, entry: object) -> None:
        if not isinstance(entry, list | tuple):
            self.error(
                "bbox_list",
                f"entry {i + 1} is {_describe(entry)}, not a list of boxes",
                "write [[x1, y1, x2, y2], ...], or [] for no box",
                index=i,
            )
            return
        if len(entry) > MAX_BOXES_PER_IMAGE:
            self.error(
                "bbox_list",
                f"image {i + 1} has {_count(len(entry), 'box', 'boxes')}, "
                f"but at most {MAX_BOXES_PER_IMAGE} "
                "are allowed per image",
                f"keep at most {MAX_BOXES_PER_IMAGE} boxes for this image",
                index=i,
            )
        known = self.input_sizes[i] if i < len(self.input_sizes) else None
        for j, box in enumerate(entry):
            where = f"box {j + 1} of image {i + 1}"
            if (
                not isinstance(box, list | tuple)
                or len(box) != 4
                or not all(_is_int(v) and isinstance(v, int) and v >= 0 for v in box)
            ):
                self.error(
                    "bbox_list",
                    f"{where} is {_describe(box)}, not 4 non-negative whole numbers",
                    "write a box as [x1, y1, x2, y2] in pixels, origin top-left",
                    index=i,
                )
                continue
            x1, y1, x2, y2 = box
            if not (x1 < x2 and y1 < y2):
                self.error(
                    "bbox_list",
                    f"{where} is [{x1}, {y1}, {x2}, {y2}], but needs x1 < x2 and y1 < y2",
                    "give the top-left corner first, then the bottom-right",
                    index=i,
                )
            elif known is not None and (x2 > known[0] or y2 > known[1]):
                self.error(
                    "bbox_list",
                    f"{where} is [{x1}, {y1}, {x2}, {y2}], outside the {known[0]}x{known[1]} image",
                    f"keep x2 <= {known[0]} and y2 <= {known[1]}",
                    index=i,
                )

    def check_color_palette(self) -> None:
        if "color_palette" not in self.body:
            return
        palette = self.body["color_palette"]
        if not isinstance(palette, list | tuple):
            self.error(
                "color_palette",
                f"color_palette is {_describe(palette)}, not a list",
                'give 3-10 entries like {hex: "#C2D1E6", ratio: "23.51%"}',
            )
            return
        if not PALETTE_MIN <= len(palette) <= PALETTE_MAX:
            self.error(
                "color_palette",
                f"color_palette has {_count(len(palette), 'entry', 'entries')}, "
                f"but needs {PALETTE_MIN}-{PALETTE_MAX}",
                "give 3-10 colours (8 recommended)",
            )
        total = Decimal(0)
        all_ratios_ok = True
        for i, entry in enumerate(palette):
            if not isinstance(entry, Mapping):
                self.error(
                    "color_palette",
                    f"entry {i + 1} is {_describe(entry)}, not an object with hex and ratio",
                    'write {hex: "#RRGGBB", ratio: "NN.NN%"}',
                    index=i,
                )
                all_ratios_ok = False
                continue
            hex_value = entry.get("hex")
            if not isinstance(hex_value, str) or not _HEX_RE.fullmatch(hex_value):
                self.error(
                    "color_palette",
                    f"entry {i + 1} has hex {_describe(hex_value)}, not a colour like #C2D1E6",
                    'write hex as "#RRGGBB" (quoted in YAML, since # starts a comment)',
                    index=i,
                )
            ratio = entry.get("ratio")
            match = _RATIO_RE.fullmatch(ratio) if isinstance(ratio, str) else None
            if match is None:
                self.error(
                    "color_palette",
                    f"entry {i + 1} has ratio {_describe(ratio)}, not a percentage like 23.51%",
                    'write ratio as a string with two decimals, like "23.50%"',
                    index=i,
                )
                all_ratios_ok = False
                continue
            try:
                total += Decimal(match[1])
            except InvalidOperation:  # pragma: no cover - the regex admits only decimals
                all_ratios_ok = False
        hundred = Decimal("100.00")
        if all_ratios_ok and palette and total != hundred:
            diff = hundred - total
            change = f"add {diff}%" if diff > 0 else f"take {-diff}%"
            self.error(
                "color_palette",
                f"color_palette ratios sum to {total}%, but must be exactly 100.00%",
                f"{change} {'to' if diff > 0 else 'from'} one of the entries",
            )

    def check_ignored(self) -> None:
        if self.body.get("thinking_mode") is True and (self.edit or self.sequential):
            self.warning(
                "thinking_mode",
                f"thinking_mode is ignored in {self._scenario()}",
                "remove thinking_mode; it only works for text-to-image without enable_sequential",
            )
        if self.sequential and "color_palette" in self.body:
            self.warning(
                "color_palette",
                "color_palette is ignored in sequential mode",
                "remove color_palette, or turn off enable_sequential to use it",
            )
        for key in self.body:
            if key not in KNOWN_FIELDS:
                self.warning(
                    str(key),
                    f"{key} is not a field of the API; it will be ignored",
                    "remove it, or check its spelling against the API fields",
                )


def _is_image_url(url: str) -> bool:
    if url.startswith("data:"):
        return _DATA_URI_RE.match(url) is not None
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def check_request(
    body: Mapping[str, object],
    *,
    input_sizes: Sequence[tuple[int, int] | None] = (),
    check_urls: bool = True,
) -> list[Problem]:
    """Every rule of the generation endpoint that ``body`` breaks (errors and warnings).

    ``input_sizes[i]`` is the (width, height) of ``image_urls[i]`` when known; it lets
    bounding boxes be checked against the image. ``check_urls=False`` skips the
    URL syntax check (for bodies whose URLs are placeholders until upload).
    """
    return _Checker(body, input_sizes, check_urls).run()


def _floor16(value: float) -> int:
    return max(16, int(value) // 16 * 16)


def output_dimensions(
    body: Mapping[str, object], *, last_input: tuple[int, int] | None = None
) -> tuple[int, int]:
    """The (width, height) in pixels that a valid request yields.

    A pixel ``size`` is used as given. Otherwise the tier (``resolution``, a tier
    ``size``, or 2K) sets the area to about tier²; the aspect comes from the last
    input image in editing mode (1:1 when ``last_input`` is unknown), else from an
    aspect-ratio ``size``, else 1:1. Sides are rounded down to multiples of 16,
    so the area never passes the tier's.
    """
    size_value = body.get("size")
    size = _parse_size(size_value) if isinstance(size_value, str) else None
    if size is not None and size.pixels is not None:
        return size.pixels
    resolution = body.get("resolution")
    if isinstance(resolution, str) and resolution in TIERS:
        tier = resolution
    elif size is not None and size.tier is not None:
        tier = size.tier
    else:
        tier = DEFAULT_TIER
    side = TIERS[tier]
    if "image_urls" in body:
        aspect = last_input if last_input and last_input[0] > 0 and last_input[1] > 0 else (1, 1)
    elif size is not None and size.aspect is not None:
        aspect = size.aspect
    else:
        aspect = (1, 1)
    a, b = aspect
    if a == b:
        return side, side
    ratio = a / b
    return _floor16(side * math.sqrt(ratio)), _floor16(side / math.sqrt(ratio))
