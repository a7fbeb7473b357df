"""``plan --json`` streams through a temporary file: a clear error when that fails, and
the held plan's order of errors (the manifest's before the lockfile's)."""

from __future__ import annotations

import errno
import io
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline.cli.main import cli


class _FullDisk(io.StringIO):
    """A temporary file on a full disk: every write fails."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_temporary_folder_is_an_error_not_a_bug(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No room for the items aside: exit 1, what failed and what to do, no plan, no traceback."""
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\nname: t\ndefaults: {model: wan2.7-image}\n"
                    "jobs:\n  a: {prompt: '{{ s }}', matrix: {s: [1, 2]}}\n")

    def full(*args: Any, **kwargs: Any) -> io.StringIO:
        return _FullDisk()

    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    result = CliRunner().invoke(cli, ["plan", "--json", str(path)])
    assert result.exit_code == 1
    assert "No space left on device" in result.output
    assert "set TMPDIR" in result.output
    assert '"items"' not in result.output
    assert "Traceback" not in result.output


def test_manifest_errors_come_before_lockfile_errors_as_in_the_held_plan(
        tmp_path: Path) -> None:
    """A late template error and a corrupt lockfile: the manifest's error, as without --json."""
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\nname: t\ndefaults: {model: wan2.7-image}\n"
                    "jobs:\n  a: {prompt: '{{ 10 // s }}', matrix: {s: [1, 0]}}\n")
    (tmp_path / "m.lock.json").write_text("{not json")
    streamed = CliRunner().invoke(cli, ["plan", "--json", str(path)])
    held = CliRunner().invoke(cli, ["plan", "--json", "--job", "a", str(path)])
    assert streamed.exit_code == held.exit_code == 1
    assert "a@s=0" in streamed.output
    assert streamed.output == held.output
    path.write_text(path.read_text().replace("[1, 0]", "[1, 2]"))
    fixed = CliRunner().invoke(cli, ["plan", "--json", str(path)])
    assert fixed.exit_code == 1
    assert "m.lock.json" in fixed.output
    assert fixed.output == CliRunner().invoke(cli, ["plan", "--json", "--job", "a",
                                                    str(path)]).output
