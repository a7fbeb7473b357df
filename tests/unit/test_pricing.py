"""The price table: defaults, costs, overrides and clear errors."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.core.apimart.prices import CURRENCY, DEFAULT_PRICE_TABLE, DEFAULT_PRICES, PriceTable
from pipeline.core.apimart.rules import MODELS
from pipeline.errors import UsageError


def test_defaults_match_the_published_prices() -> None:
    """The built-in table is ¥0.50 for pro and ¥0.20 for standard, in CNY."""
    assert CURRENCY == "CNY"
    assert dict(DEFAULT_PRICES) == {
        "wan2.7-image-pro": Decimal("0.50"),
        "wan2.7-image": Decimal("0.20"),
    }
    assert DEFAULT_PRICE_TABLE.currency == "CNY"
    assert set(DEFAULT_PRICE_TABLE.prices) == set(MODELS)


def test_cost_is_price_times_n_exactly() -> None:
    """cost() multiplies in Decimal, so sums never drift."""
    assert DEFAULT_PRICE_TABLE.cost("wan2.7-image-pro", 3) == Decimal("1.50")
    assert DEFAULT_PRICE_TABLE.cost("wan2.7-image", 12) == Decimal("2.40")
    assert sum(DEFAULT_PRICE_TABLE.cost("wan2.7-image", 1) for _ in range(10)) == Decimal("2.00")


def test_unknown_model_is_a_usage_error() -> None:
    """Pricing an unknown model raises UsageError naming the priced models, not KeyError."""
    with pytest.raises(UsageError, match=r"wan2\.7-image-pro"):
        DEFAULT_PRICE_TABLE.price("wan2.6-image")


@pytest.mark.parametrize("n", [-1, True, 1.5])
def test_cost_rejects_bad_counts(n: object) -> None:
    """A negative, boolean or fractional image count is a UsageError."""
    with pytest.raises(UsageError):
        DEFAULT_PRICE_TABLE.cost("wan2.7-image", n)  # type: ignore[arg-type]


def test_overrides_make_a_new_table() -> None:
    """with_overrides returns a new table; floats are read via str, so 0.45 stays 0.45."""
    table = DEFAULT_PRICE_TABLE.with_overrides({"wan2.7-image-pro": 0.45, "future-model": "1"})
    assert table.price("wan2.7-image-pro") == Decimal("0.45")
    assert table.price("future-model") == Decimal("1")
    assert table.price("wan2.7-image") == Decimal("0.20")
    assert DEFAULT_PRICE_TABLE.price("wan2.7-image-pro") == Decimal("0.50")


@pytest.mark.parametrize("price", [-1, "abc", "NaN", True, None])
def test_overrides_reject_bad_prices(price: object) -> None:
    """Negative, non-numeric, NaN, boolean or missing prices are UsageErrors."""
    with pytest.raises(UsageError, match="price"):
        DEFAULT_PRICE_TABLE.with_overrides({"wan2.7-image": price})


def test_table_is_immutable() -> None:
    """A table's prices cannot change behind its back, even via the dict it was built from."""
    source = {"wan2.7-image": Decimal("0.30")}
    table = PriceTable(prices=source)
    source["wan2.7-image"] = Decimal("9")
    assert table.price("wan2.7-image") == Decimal("0.30")
    with pytest.raises(TypeError):
        table.prices["wan2.7-image"] = Decimal("1")  # type: ignore[index]
