"""Exit codes and messages of validate, plan, render and graph."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli.main import cli


def write(tmp_path: Path, body: str, name: str = "m.yaml") -> str:
    path = tmp_path / name
    path.write_text("version: 1\nname: t\n" + body, encoding="utf-8")
    return str(path)


def test_invalid_manifest_exit_1_with_positions(tmp_path: Path) -> None:
    """validate exits 1 and prints FILE:LINE:COL for each error, no traceback."""
    path = write(tmp_path, "jobs:\n  a: {prompt: x, n: 0}\n  b: {prompt: '{{ nope }}'}\n")
    result = CliRunner().invoke(cli, ["validate", path])
    assert result.exit_code == 1
    assert f"{path}:4:21: error: jobs.a.n:" in result.output
    assert "Traceback" not in result.output


def test_plan_over_budget_exits_3(tmp_path: Path) -> None:
    """plan exits 3 when the cost passes --max-cost, and says so."""
    path = write(tmp_path, "jobs:\n  a: {prompt: x, n: 4, model: wan2.7-image-pro}\n")
    result = CliRunner().invoke(cli, ["plan", path, "--max-cost", "1.5"])
    assert result.exit_code == 3
    assert "over the budget of ¥1.50" in result.output
    ok = CliRunner().invoke(cli, ["plan", path, "--max-cost", "2"])
    assert ok.exit_code == 0


def test_plan_invalid_exits_1(tmp_path: Path) -> None:
    """plan on an invalid manifest exits 1."""
    path = write(tmp_path, "jobs: {}\n")
    assert CliRunner().invoke(cli, ["plan", path]).exit_code == 1


def test_bad_max_cost_is_a_usage_error(tmp_path: Path) -> None:
    """A non-numeric --max-cost is a usage error (exit 2)."""
    path = write(tmp_path, "jobs:\n  a: {prompt: x}\n")
    result = CliRunner().invoke(cli, ["plan", path, "--max-cost", "lots"])
    assert result.exit_code == 2
    assert "not a number" in result.output


def test_unknown_flag_and_missing_file() -> None:
    """Unknown flags and bad paths get click's usual errors (exit 2)."""
    assert CliRunner().invoke(cli, ["plan", "--bogus", "x.yaml"]).exit_code == 2
    result = CliRunner().invoke(cli, ["plan", "does-not-exist.yaml"])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_render_job_filter(tmp_path: Path) -> None:
    """render --job limits the bodies to that job; an unknown job is a usage error."""
    path = write(tmp_path, "defaults: {model: wan2.7-image}\n"
                           "jobs:\n  a: {prompt: x}\n  b: {prompt: y}\n")
    result = CliRunner().invoke(cli, ["render", path, "--job", "b"])
    assert list(json.loads(result.output)) == ["b"]
    assert CliRunner().invoke(cli, ["render", path, "--job", "c"]).exit_code == 2


def test_plan_reads_the_lockfile(tmp_path: Path) -> None:
    """plan reports lockfile entries no longer in the manifest as orphaned."""
    path = write(tmp_path, "jobs:\n  a: {prompt: x, model: wan2.7-image}\n")
    (tmp_path / "m.lock.json").write_text(json.dumps({"version": 1, "entries": {
        "old": {"job": "old", "fingerprint": "f", "status": "done"}}}))
    data = json.loads(CliRunner().invoke(cli, ["plan", "--json", path]).output)
    assert data["orphaned"] == ["old"]
    assert data["counts"]["orphaned"] == 1


def test_damaged_lockfile_is_a_clear_error(tmp_path: Path) -> None:
    """A corrupt lockfile gives a message and exit 1, never a traceback."""
    path = write(tmp_path, "jobs:\n  a: {prompt: x, model: wan2.7-image}\n")
    (tmp_path / "m.lock.json").write_text("{broken")
    result = CliRunner().invoke(cli, ["plan", path])
    assert result.exit_code == 1
    assert "not valid JSON" in result.output


def test_outputs_folder_follows_the_manifest(tmp_path: Path) -> None:
    """Outputs live in the project holding manifests/, whatever the working directory."""
    from pipeline.operations.context import paths_for
    from pipeline.shell.store.manifests import load_manifest

    (tmp_path / "manifests").mkdir()
    path = Path(write(tmp_path / "manifests", "jobs:\n  a: {prompt: x}\n"))
    manifest, _ = load_manifest(path)
    assert paths_for(path, manifest).outputs == (tmp_path / "outputs" / "t").resolve()
    assert paths_for(path, manifest, simulate=True).outputs.name == "t.simulate"
