"""Every example manifest validates, plans, renders and draws; outputs are snapshot-reviewed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from syrupy.assertion import SnapshotAssertion

from pipeline.cli.main import cli
from tests.cli.conftest import EXAMPLES


def test_there_is_an_example_per_api_request() -> None:
    """manifests/ ships one example per API document example, plus the realistic one."""
    names = {e.split("/")[-1] for e in EXAMPLES}
    assert {"minimal.yaml", "resolution.yaml", "color-palette.yaml", "sequential.yaml",
            "single-edit.yaml", "multi-image-fusion.yaml", "bbox-edit.yaml",
            "storefronts.yaml"} <= names


def test_validate_all_examples(runner: CliRunner) -> None:
    """`imgspec validate` accepts every example at once (exit 0)."""
    result = runner.invoke(cli, ["validate", *EXAMPLES])
    assert result.exit_code == 0, result.output
    assert result.output.count(": valid (") == len(EXAMPLES)


@pytest.mark.parametrize("manifest", EXAMPLES)
def test_plan_text(runner: CliRunner, manifest: str, snapshot: SnapshotAssertion) -> None:
    """The human plan of each example (no lockfile yet)."""
    result = runner.invoke(cli, ["plan", manifest])
    assert result.exit_code == 0, result.output
    assert result.output == snapshot


@pytest.mark.parametrize("manifest", EXAMPLES)
def test_plan_json(runner: CliRunner, manifest: str, snapshot: SnapshotAssertion) -> None:
    """The machine plan of each example."""
    result = runner.invoke(cli, ["plan", "--json", manifest])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == snapshot


@pytest.mark.parametrize("manifest", EXAMPLES)
def test_render(runner: CliRunner, manifest: str, snapshot: SnapshotAssertion) -> None:
    """The exact request bodies of each example."""
    result = runner.invoke(cli, ["render", manifest])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == snapshot


@pytest.mark.parametrize("fmt", ["text", "mermaid", "dot"])
def test_graph(runner: CliRunner, fmt: str, snapshot: SnapshotAssertion) -> None:
    """The job graph of the multi-job example in each format."""
    result = runner.invoke(cli, ["graph", "--format", fmt, "manifests/storefronts.yaml"])
    assert result.exit_code == 0, result.output
    assert result.output == snapshot
