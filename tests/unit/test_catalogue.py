"""The model catalogue is the one truth: schema, prices, rules and simulator agree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.apimart.models import CATALOGUE, MODELS, SCENARIOS, TIERS
from pipeline.core.apimart.prices import DEFAULT_PRICE_TABLE
from pipeline.core.apimart.rules import check_request
from pipeline.simulator import SimulatorConfig

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" /
                     "manifest.schema.json").read_text())
MODE_TO_BODY: dict[str, dict[str, Any]] = {
    "text-to-image": {},
    "edit": {"image_urls": ["https://example.com/a.png"]},
    "sequential": {"enable_sequential": True},
}


def schema_nodes(node: Any = SCHEMA, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object of the schema with its JSON pointer."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from schema_nodes(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from schema_nodes(value, f"{path}/{index}")


def test_schema_model_enum_is_the_catalogue() -> None:
    """The schema's model names are exactly the catalogue's, in its order."""
    enums = [n["enum"] for p, n in schema_nodes() if "/model/" in p + "/" and "enum" in n]
    assert enums
    assert all(tuple(e) == MODELS for e in enums)


def test_schema_tiers_are_the_catalogue_tiers() -> None:
    """The schema's resolution enum is the catalogue's tiers; size accepts each tier too."""
    resolution = [n["enum"] for p, n in schema_nodes() if p.endswith("/resolution/else")]
    size = [n["enum"] for p, n in schema_nodes() if p.endswith("/size/else/else")]
    assert resolution == [list(TIERS)]
    assert all(set(TIERS) <= set(e) for e in size)


def test_schema_describes_every_model_with_its_price() -> None:
    """Every description that names a model gives the catalogue's price for it."""
    texts = [n["description"] for _, n in schema_nodes()
             if isinstance(n.get("description"), str) and "wan2.7-image" in n["description"]]
    priced = [t for t in texts if "0.50" in t or "0.20" in t]
    assert priced
    for text in priced:
        for model in CATALOGUE.values():
            assert f"{model.price:.2f}" in text, (model.name, text)


def test_default_prices_and_simulator_prices_come_from_the_catalogue() -> None:
    """The plan's default prices and the simulator's ledger prices are the catalogue's."""
    for model in CATALOGUE.values():
        assert DEFAULT_PRICE_TABLE.price(model.name) == model.price
        assert SimulatorConfig().prices.price(model.name) == model.price


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("model", MODELS)
def test_rules_follow_the_catalogue_tiers_and_n(model: str, scenario: str) -> None:
    """A tier is accepted exactly where the catalogue lists it; n exactly up to its max_n."""
    spec = CATALOGUE[model]
    limits = spec.limits(scenario)  # type: ignore[arg-type]
    base = {"model": model, "prompt": "a cat", **MODE_TO_BODY[scenario]}
    for tier in TIERS:
        errors = [p for p in check_request({**base, "size": tier}, check_urls=False)
                  if p.severity == "error"]
        assert (not errors) == (tier in limits.tiers), (tier, errors)
    ok = check_request({**base, "n": limits.max_n}, check_urls=False)
    over = check_request({**base, "n": limits.max_n + 1}, check_urls=False)
    assert not [p for p in ok if p.severity == "error"]
    assert [p.field for p in over if p.severity == "error"] == ["n"]
