"""The shipped GitHub Actions example parses and uses imgspec's commands as they really are."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from pipeline.cli.main import cli
from pipeline.core.planning.selection import Shard, shard_lockfile

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "imgspec.example.yml"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    """The example workflow as data."""
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    """A job's steps."""
    found: list[dict[str, Any]] = job["steps"]
    return found


def scripts(job: dict[str, Any]) -> str:
    """Every shell script of a job, joined, with line continuations undone."""
    return "\n".join(s.get("run", "") for s in steps(job)).replace("\\\n", " ")


def uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    """The steps of a job that use ``action`` (any version)."""
    return [s for s in steps(job) if s.get("uses", "").startswith(action + "@")]


def imgspec_calls(script: str) -> list[list[str]]:
    """Every ``imgspec ...`` command line of a script, as words (expressions neutralised)."""
    calls = []
    for line in script.splitlines():
        line = re.sub(r"\$\{\{[^}]*\}\}", "X", line).split("||")[0].split(">")[0]
        words = shlex.split(line.strip()) if line.strip() else []
        if words[:1] == ["imgspec"]:
            calls.append(words[1:])
    return calls


def test_triggers_and_jobs(workflow: dict[str, Any]) -> None:
    """Pull requests get the diff job; pushes to main and manual runs get run and merge."""
    triggers: dict[str, Any] = workflow.get("on") or workflow[True]  # type: ignore[index]
    # (YAML 1.1 reads a bare `on` as true)
    assert {"pull_request", "push", "workflow_dispatch"} <= set(triggers)
    assert set(workflow["jobs"]) == {"diff", "run", "merge"}
    assert "pull_request" in workflow["jobs"]["diff"]["if"]


def test_diff_job_posts_markdown_and_fails_above_the_threshold(
        workflow: dict[str, Any]) -> None:
    """The pull-request job reads the base with git, comments the markdown diff, and fails
    when the cost to apply passes FAIL_ABOVE."""
    job = workflow["jobs"]["diff"]
    assert uses(job, "actions/checkout")[0]["with"]["fetch-depth"] == 0
    assert job["permissions"]["pull-requests"] == "write"
    (call,) = [c for c in imgspec_calls(scripts(job)) if c[0] == "diff"]
    assert call[call.index("--format") + 1] == "markdown"
    assert "--fail-above" in call
    assert "--against" in call
    assert "gh pr comment" in scripts(job)
    assert "imgspec-diff.md" in scripts(job)
    fail = next(s for s in steps(job) if s.get("if", "").startswith("steps.diff"))
    assert "exit 1" in fail["run"]


def test_run_job_is_a_matrix_of_shards_uploading_lockfiles_and_outputs(
        workflow: dict[str, Any]) -> None:
    """N shards, each `run --shard K/N` with its own lockfile; the upload pattern matches the
    lockfile imgspec writes for that shard, and outputs go along."""
    job = workflow["jobs"]["run"]
    shards = job["strategy"]["matrix"]["shard"]
    count = len(shards)
    assert shards == list(range(1, count + 1))
    assert job["strategy"]["fail-fast"] is False
    (call,) = [c for c in imgspec_calls(scripts(job)) if c[0] == "run"]
    assert call[call.index("--shard") + 1] == f"X/{count}"
    assert "--yes" in call
    assert "--max-cost" in call
    (upload,) = uses(job, "actions/upload-artifact")
    assert upload["if"] == "always()"
    paths = upload["with"]["path"].splitlines()
    assert "outputs/" in paths
    for k in shards:
        pattern = paths[0].replace("${{ matrix.shard }}", str(k))
        written = shard_lockfile(Path("manifests/storefronts.lock.json"), Shard(k, count))
        assert fnmatch.fnmatch(written.as_posix(), pattern)
        others = [shard_lockfile(written, Shard(j, count)) for j in shards if j != k]
        assert not any(fnmatch.fnmatch(o.as_posix(), pattern) for o in others)


def test_merge_job_merges_verifies_and_commits(workflow: dict[str, Any]) -> None:
    """After every shard (even a failed one), the lockfiles are merged into the manifest's,
    committed and pushed, and every image verified."""
    job = workflow["jobs"]["merge"]
    assert job["needs"] == "run"
    assert job["if"].startswith("always()")
    assert job["permissions"]["contents"] == "write"
    download = uses(job, "actions/download-artifact")[0]["with"]
    assert download["merge-multiple"] is True
    calls = imgspec_calls(scripts(job))
    merge = next(c for c in calls if c[:2] == ["lock", "merge"])
    assert "--into" in merge
    assert any(c[0] == "verify" for c in calls)
    script = scripts(job)
    assert "git commit" in script
    assert "git push" in script


def unknown_words(call: list[str]) -> list[str]:
    """What of one imgspec command line names no command or option of the real CLI
    (empty when all of it exists)."""
    command: click.Command = cli
    words = list(call)
    while isinstance(command, click.Group):
        found = command.get_command(click.Context(command), words[0]) if words else None
        if found is None:
            return words[:1] or ["<no command>"]
        words.pop(0)
        command = found
    options = {o for p in command.params for o in getattr(p, "opts", ())}
    return [w for w in words if w.startswith("--") and w not in options]


def test_every_imgspec_option_in_the_workflow_exists(workflow: dict[str, Any]) -> None:
    """Each imgspec command the example runs names a real command and real options."""
    calls = [c for job in workflow["jobs"].values() for c in imgspec_calls(scripts(job))]
    assert len(calls) >= 6
    for call in calls:
        assert unknown_words(call) == [], call


def test_unknown_words_names_a_misspelled_command_or_option() -> None:
    """The check behind the recipes' tests finds a command or option the CLI lacks."""
    assert unknown_words(["run", "m.yaml", "--shard", "1/4"]) == []
    assert unknown_words(["run", "m.yaml", "--shards", "1/4"]) == ["--shards"]
    assert unknown_words(["lock", "merj", "a"]) == ["merj"]
    assert unknown_words(["lock"]) == ["<no command>"]
