"""`moved:` mistakes are reported like every other manifest error: FILE:LINE:COL, all at once.

The messages are snapshot-reviewed (syrupy): regenerate only with --snapshot-update
when a change to them is intended.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from syrupy.assertion import SnapshotAssertion

from pipeline.cli.main import cli

HEAD = """\
version: 1
name: cups
defaults: {model: wan2.7-image, size: 1K}
jobs:
  packshot:
    prompt: "A {{ c }} cup"
    matrix: {c: [red, blue]}
moved:
"""


Validate = Callable[[str], tuple[int, str]]


@pytest.fixture
def validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Validate:
    """`imgspec validate cups.yaml` of a manifest with the given moved: items."""
    monkeypatch.chdir(tmp_path)

    def run(moved: str) -> tuple[int, str]:
        (tmp_path / "cups.yaml").write_text(HEAD + moved)
        result = CliRunner().invoke(cli, ["validate", "cups.yaml"])
        return result.exit_code, result.output

    return run


def test_every_moved_mistake_is_reported_with_its_position(
        validate: Validate, snapshot: SnapshotAssertion) -> None:
    """A from that is still a job, a move to itself, two moves to one destination, a cycle
    and a job moved to a key: each an error at its line and column, all in one pass."""
    code, output = validate(
        "  - {from: packshot, to: shot}\n"
        "  - {from: mug, to: mug}\n"
        "  - {from: cup, to: packshot}\n"
        "  - {from: glass, to: packshot}\n"
        "  - {from: a, to: b}\n"
        "  - {from: b, to: a}\n"
        "  - {from: bowl, to: packshot@c=red}\n")
    assert code == 1
    assert output == snapshot


def test_an_instance_key_moved_from_that_still_exists_is_an_error(
        validate: Validate, snapshot: SnapshotAssertion) -> None:
    """A key from: that the manifest still expands to is an error at its position."""
    code, output = validate("  - {from: packshot@c=red, to: packshot@c=green}\n")
    assert code == 1
    assert output == snapshot


def test_a_move_to_nothing_of_the_manifest_is_a_warning(
        validate: Validate, snapshot: SnapshotAssertion) -> None:
    """A to: naming no job or instance of the manifest is a warning (the move is not
    applied), so the manifest still validates."""
    code, output = validate("  - {from: shot, to: packshoot}\n"
                            "  - {from: packshot@colour=red, to: packshot@c=green}\n")
    assert code == 0
    assert output == snapshot


def test_moves_chain_from_old_names_to_new(
        validate: Validate, snapshot: SnapshotAssertion) -> None:
    """a to b then b to packshot is a chain, not a cycle, and b needs no job of its own."""
    code, output = validate("  - {from: a, to: b}\n  - {from: b, to: packshot}\n")
    assert code == 0
    assert output == snapshot
