"""Prices per generated image, as data a manifest can override.

APIMart bills wan2.7 per successfully generated image, pre-charging ``n`` at
submission; resolution and aspect do not change the price. Prices change, so
they live in a table, not in code paths: the plan, the budget check and the
simulator's ledger all read one :class:`PriceTable`, whose defaults come from the
model catalogue (``pipeline/core/apimart/models.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType

from pipeline.core.apimart.models import CATALOGUE, CURRENCY
from pipeline.errors import UsageError, money

__all__ = ["CURRENCY", "DEFAULT_PRICES", "DEFAULT_PRICE_TABLE", "PriceTable", "money"]

DEFAULT_PRICES: Mapping[str, Decimal] = MappingProxyType(
    {model.name: model.price for model in CATALOGUE.values()}
)


def _as_price(model: str, value: object) -> Decimal:
    """A non-negative finite Decimal from a price given as Decimal, int, float or str."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise UsageError(
            f"price for {model} is {value!r}, not a number: give a price in {CURRENCY} like 0.45"
        )
    try:
        # str() first: Decimal(0.45) would carry the float's binary error into costs.
        price = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise UsageError(
            f"price for {model} is {value!r}, not a number: give a price in {CURRENCY} like 0.45"
        ) from None
    if not price.is_finite() or price < 0:
        raise UsageError(
            f"price for {model} is {value!r}: give a finite price of 0 or more {CURRENCY}"
        )
    return price


@dataclass(frozen=True)
class PriceTable:
    """Price per generated image for each model, in one currency."""

    prices: Mapping[str, Decimal] = field(default_factory=lambda: DEFAULT_PRICES, hash=False)
    currency: str = CURRENCY

    def __post_init__(self) -> None:
        checked = {model: _as_price(model, value) for model, value in self.prices.items()}
        # A read-only copy: a caller's dict changing later must not change the prices.
        object.__setattr__(self, "prices", MappingProxyType(checked))

    def price(self, model: str) -> Decimal:
        """The price of one image of ``model``; UsageError naming the known models if none."""
        try:
            return self.prices[model]
        except KeyError:
            known = ", ".join(sorted(self.prices)) or "none"
            raise UsageError(
                f"no price for model {model!r} (priced models: {known}): "
                f"add it under pricing: in the manifest"
            ) from None

    def cost(self, model: str, n: int) -> Decimal:
        """What ``n`` images of ``model`` cost (the amount pre-charged at submission)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise UsageError(f"image count is {n!r}: give a whole number of 0 or more")
        return self.price(model) * n

    def with_overrides(self, overrides: Mapping[str, object]) -> PriceTable:
        """A new table with ``overrides`` (model -> price) replacing or adding prices.

        Any model name is accepted, so a manifest can price a model this table does
        not know yet; the request rules decide whether the model itself is valid.
        """
        merged: dict[str, Decimal] = dict(self.prices)
        for model, value in overrides.items():
            if not isinstance(model, str) or not model:
                raise UsageError(f"price key {model!r} is not a model name")
            merged[model] = _as_price(model, value)
        return PriceTable(prices=merged, currency=self.currency)


DEFAULT_PRICE_TABLE = PriceTable()



def json_number(value: Decimal) -> float | int:
    """Money as a JSON number with no binary noise (0.7, not 0.7000000000000001)."""
    number = float(value)
    return int(number) if number == int(number) else number
