"""The Python API as people use it: ``import imgspec`` against the simulator, checking money."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import imgspec
from pipeline.simulator import SimulatorConfig, run_in_thread
from pipeline.simulator.tasks import Ledger

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plan_and_run.py"

MANIFEST: dict[str, Any] = {
    "version": 1,
    "name": "apples",
    "defaults": {"model": "wan2.7-image", "size": "1K"},
    "jobs": {"pic": {"prompt": "A {{ colour }} apple", "n": 2,
                     "matrix": {"colour": ["red", "green"]}}},
}


def ledger_of(state: Path) -> Ledger:
    """The simulated account's ledger, from the state file a simulated run left."""
    with run_in_thread(SimulatorConfig(state=state)) as sim:
        return sim.ledger()


def images_in(folder: Path) -> list[Path]:
    """The images on disk under an output folder."""
    return sorted(p for p in folder.rglob("*.png") if p.is_file())


def test_example_plans_and_runs_paying_once_per_image(tmp_path: Path) -> None:
    """examples/plan_and_run.py run twice in a fresh folder: the ledger charges what is on disk."""
    for _ in range(2):  # the second run finds everything done and pays nothing more
        done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=240, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "plan: 3 instances" in done.stdout
    images = images_in(tmp_path / "outputs" / "postcards.simulate")
    ledger = ledger_of(tmp_path / "postcards.simulate.api.jsonl")
    assert not (tmp_path / "postcards.yaml").exists()  # a mapping leaves no manifest file
    assert len(images) == 3
    assert ledger.tasks_created == ledger.images_charged == len(images)
    recorded = imgspec.status({"version": 1, "name": "postcards", "jobs": {}}, root=tmp_path,
                              simulate=True)
    assert recorded.counts["done"] == 3
    assert recorded.charged == ledger.cost_charged > 0


def test_run_from_a_mapping_records_what_the_simulator_charged(tmp_path: Path) -> None:
    """imgspec.plan then imgspec.run of a mapping: plan cost = charged = ledger; files on disk."""
    planned = imgspec.plan(MANIFEST, root=tmp_path, simulate=True)
    assert len(planned.items) == 2
    heard: list[imgspec.Plan] = []
    result = imgspec.run(MANIFEST, root=tmp_path, simulate=True, on_plan=heard.append)
    assert result.complete
    assert heard
    assert heard[0].total == planned.total
    assert result.plan is not None
    assert result.plan.total == planned.total
    ledger = ledger_of(tmp_path / "apples.simulate.api.jsonl")
    assert ledger.images_charged == len(images_in(tmp_path / "outputs" / "apples.simulate")) == 4
    assert ledger.cost_charged == planned.total == result.tally.charged


def test_run_async_runs_on_the_callers_loop(tmp_path: Path) -> None:
    """imgspec.run_async of a manifest file completes it, and the ledger matches the images."""
    path = tmp_path / "apples.yaml"
    path.write_text("version: 1\nname: apples\ndefaults: {model: wan2.7-image, size: 1K}\n"
                    "jobs:\n  pic: {prompt: A pear, n: 3}\n", encoding="utf-8")
    result = asyncio.run(imgspec.run_async(path, simulate=True, concurrency=2))
    assert result.complete
    assert len(result.done) == 1
    ledger = ledger_of(tmp_path / "apples.simulate.api.jsonl")
    assert ledger.images_charged == len(images_in(tmp_path / "outputs" / "apples.simulate")) == 3


def test_a_refused_confirmation_submits_nothing(tmp_path: Path) -> None:
    """confirm returning False is a UsageError, and the simulated account saw no submission."""
    asked: list[Decimal] = []

    def refuse(plan: imgspec.Plan) -> bool:
        asked.append(plan.total)
        return False

    with pytest.raises(imgspec.UsageError, match="cancelled; nothing was submitted"):
        imgspec.run(MANIFEST, root=tmp_path, simulate=True, confirm=refuse)
    assert asked
    assert asked[0] > 0
    assert ledger_of(tmp_path / "apples.simulate.api.jsonl").submissions == 0
    assert images_in(tmp_path) == []


def test_validate_returns_diagnostics_instead_of_raising(tmp_path: Path) -> None:
    """An invalid mapping gives its errors as Diagnostic values, with a line in its YAML."""
    broken = {**MANIFEST, "jobs": {"pic": {"prompt": "x", "model": "no-such-model"}}}
    problems = imgspec.validate(broken, root=tmp_path)
    assert problems
    assert all(p.severity == "error" for p in problems)
    assert any("no-such-model" in p.format() for p in problems)
    assert imgspec.validate(MANIFEST, root=tmp_path) == []


def test_over_budget_run_raises_before_spending(tmp_path: Path) -> None:
    """max_cost below the plan: BudgetExceeded (exit 3) and no submission."""
    with pytest.raises(imgspec.BudgetExceeded) as refused:
        imgspec.run(MANIFEST, root=tmp_path, simulate=True, max_cost="0.01")
    assert refused.value.exit_code == 3
    assert ledger_of(tmp_path / "apples.simulate.api.jsonl").submissions == 0


def test_options_are_checked_before_anything_is_read(tmp_path: Path) -> None:
    """Bad option values are UsageErrors from the one hierarchy, and nothing is written."""
    with pytest.raises(imgspec.UsageError, match="max_cost"):
        imgspec.plan(MANIFEST, root=tmp_path, max_cost="lots")
    with pytest.raises(imgspec.UsageError, match="--shard"):
        imgspec.plan(MANIFEST, root=tmp_path, shard="3/2")
    with pytest.raises(imgspec.UsageError, match="APIMART_API_KEY"):
        imgspec.run(MANIFEST, root=tmp_path, api_key="")
    assert list(tmp_path.iterdir()) == []
