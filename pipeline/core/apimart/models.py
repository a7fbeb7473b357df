"""The image models of the API and what each can do: one table, read by everything else.

The request rules (``rules``), the prices (``pricing``), the manifest schema
(held against this table by a test) and the simulator (through the rules and the
prices) all read :data:`CATALOGUE`. Adding a model of the same API is one entry
here plus its tests.

Facts from APIMart's wan2.7 generation page (``docs/apimart.md`` cites it): the
standard edition makes 1K and 2K in every scenario; the pro edition adds 4K (up to
4096x4096 pixels) for text-to-image only; both take 768x768 pixels at least, ``n``
1-4, or 1-12 in sequential mode; ¥0.20 and ¥0.50 per generated image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Final, Literal

Scenario = Literal["text-to-image", "edit", "sequential"]
SCENARIOS: Final[tuple[Scenario, ...]] = ("text-to-image", "edit", "sequential")

# Tier keywords and the side of the square each stands for.
TIERS: Final[Mapping[str, int]] = MappingProxyType({"1K": 1024, "2K": 2048, "4K": 4096})
DEFAULT_TIER: Final = "2K"
CURRENCY: Final = "CNY"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one model accepts in one scenario."""

    tiers: tuple[str, ...]  # the tier keywords it makes
    max_pixels: int  # width x height at most, for an explicit pixel size
    max_n: int  # images per request

    @property
    def max_side(self) -> int:
        """The side of the largest square (``2048`` for 2048x2048), for messages."""
        return math.isqrt(self.max_pixels)


@dataclass(frozen=True, slots=True)
class ImageModel:
    """One model of the API: its edition, price and limits per scenario."""

    name: str
    edition: Literal["standard", "pro"]
    price: Decimal  # per generated image, in CURRENCY
    text_to_image: Limits
    edit: Limits
    sequential: Limits
    min_pixels: int = 768 * 768

    def limits(self, scenario: Scenario) -> Limits:
        """The limits of ``scenario``."""
        if scenario == "edit":
            return self.edit
        if scenario == "sequential":
            return self.sequential
        return self.text_to_image


_STANDARD_LIMITS = Limits(tiers=("1K", "2K"), max_pixels=2048 * 2048, max_n=4)
_SEQUENTIAL_LIMITS = Limits(tiers=("1K", "2K"), max_pixels=2048 * 2048, max_n=12)

CATALOGUE: Final[Mapping[str, ImageModel]] = MappingProxyType({
    "wan2.7-image": ImageModel(
        name="wan2.7-image", edition="standard", price=Decimal("0.20"),
        text_to_image=_STANDARD_LIMITS, edit=_STANDARD_LIMITS, sequential=_SEQUENTIAL_LIMITS),
    "wan2.7-image-pro": ImageModel(
        name="wan2.7-image-pro", edition="pro", price=Decimal("0.50"),
        text_to_image=Limits(tiers=("1K", "2K", "4K"), max_pixels=4096 * 4096, max_n=4),
        edit=_STANDARD_LIMITS, sequential=_SEQUENTIAL_LIMITS),
})
MODELS: Final[tuple[str, ...]] = tuple(CATALOGUE)


def models_with_tier(tier: str, scenario: Scenario) -> tuple[str, ...]:
    """The models that make ``tier`` in ``scenario`` (for "use X" hints)."""
    return tuple(m.name for m in CATALOGUE.values() if tier in m.limits(scenario).tiers)


def most_generous(scenario: Scenario) -> Limits:
    """The widest limits any model has in ``scenario`` (to judge a request whose model is bad)."""
    every = [m.limits(scenario) for m in CATALOGUE.values()]
    return Limits(tiers=tuple(t for t in TIERS if any(t in lim.tiers for lim in every)),
                  max_pixels=max(lim.max_pixels for lim in every),
                  max_n=max(lim.max_n for lim in every))
