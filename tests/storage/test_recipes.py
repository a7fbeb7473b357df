"""The scale-out recipes with the images in a bucket run as written: the GitHub Actions
workflow (4 shards into one bucket, then merge and verify) and the Kubernetes Indexed Job
(pod K runs shard K+1 of 4)."""

from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.planning.selection import Shard, parse_shard, shard_lockfile
from pipeline.shell.store.store import parse_output_dir
from tests.teams.test_workflow import imgspec_calls, scripts, unknown_words, uses

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "imgspec-s3.example.yml"
INDEXED_JOB = ROOT / "docs" / "recipes" / "imgspec-indexed-job.yaml"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    """The bucket workflow as data."""
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def test_the_workflow_runs_four_shards_with_store_credentials(
        workflow: dict[str, Any]) -> None:
    """Four shards, each `run --shard K/4` after assuming the AWS role by OIDC (no key in
    the workflow), uploading exactly its own lockfile, even when it failed."""
    assert workflow["permissions"]["id-token"] == "write"
    job = workflow["jobs"]["run"]
    shards = job["strategy"]["matrix"]["shard"]
    assert shards == [1, 2, 3, 4]
    assert job["strategy"]["fail-fast"] is False
    assert "s3" in scripts(job)  # imgspec[s3]
    assert uses(job, "aws-actions/configure-aws-credentials")
    (call,) = [c for c in imgspec_calls(scripts(job)) if c[0] == "run"]
    assert call[call.index("--shard") + 1] == "X/4"
    (upload,) = uses(job, "actions/upload-artifact")
    assert upload["if"] == "always()"
    pattern = upload["with"]["path"]
    for k in shards:
        mine = pattern.replace("${{ matrix.shard }}", str(k))
        written = shard_lockfile(Path("manifests/storefronts.lock.json"), Shard(k, 4))
        assert fnmatch.fnmatch(written.as_posix(), mine)
    assert "AWS_SECRET_ACCESS_KEY" not in WORKFLOW.read_text()


def test_the_workflow_merges_the_lockfiles_and_verifies_the_bucket(
        workflow: dict[str, Any]) -> None:
    """After every shard, the merge job downloads the lockfiles beside the manifest,
    merges them into its lockfile, commits it, then verifies the store and plans."""
    job = workflow["jobs"]["merge"]
    assert job["needs"] == "run"
    assert job["if"] == "always()"
    download = uses(job, "actions/download-artifact")[0]["with"]
    assert download["merge-multiple"] is True
    assert download["path"].rstrip("/") == "manifests"
    calls = imgspec_calls(scripts(job))
    assert [c[0] for c in calls] == ["lock", "verify", "plan"]
    assert "--into" in calls[0]
    assert uses(job, "aws-actions/configure-aws-credentials")
    assert "git push" in scripts(job)


def test_every_imgspec_option_in_the_recipes_exists(workflow: dict[str, Any]) -> None:
    """Each imgspec command the workflow runs names a real command and real options."""
    calls = [c for job in workflow["jobs"].values() for c in imgspec_calls(scripts(job))]
    calls += imgspec_calls(_pod_script())
    assert len(calls) >= 5
    for call in calls:
        assert unknown_words(call) == [], call


def _job() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(INDEXED_JOB.read_text())
    return data


def _pod_script() -> str:
    (container,) = _job()["spec"]["template"]["spec"]["containers"]
    script: str = container["args"][0]
    return script


def test_the_indexed_job_maps_each_completion_index_to_its_shard(tmp_path: Path) -> None:
    """An Indexed Job of 4 completions; its pod script, run by sh with imgspec and aws
    stubbed, runs shard K+1/4 for JOB_COMPLETION_INDEX K and copies that shard's lockfile."""
    job = _job()
    assert job["kind"] == "Job"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert parse_output_dir(env["LOCKS"]) is not None
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in ("imgspec", "aws"):
        stub = stubs / tool
        stub.write_text(f'#!/bin/sh\necho {tool} "$@" >> "$CALLS"\n')
        stub.chmod(0o755)
    (tmp_path / "manifests").mkdir()
    for index in range(4):
        calls = tmp_path / f"calls-{index}"
        done = subprocess.run(
            ["/bin/sh", "-c", _pod_script()], cwd=tmp_path, check=False, text=True,
            capture_output=True, timeout=30,
            env={"PATH": f"{stubs}:/usr/bin:/bin", "CALLS": str(calls),
                 "JOB_COMPLETION_INDEX": str(index),
                 **{k: v for k, v in env.items() if v is not None}})
        assert done.returncode == 0, done.stderr
        lines = calls.read_text().splitlines()
        (run,) = [line.split() for line in lines if line.startswith("imgspec run")]
        assert parse_shard(run[run.index("--shard") + 1]) == Shard(index + 1, 4)
        lock = shard_lockfile(Path("manifests/storefronts.lock.json"), Shard(index + 1, 4))
        assert any(lock.name in line for line in lines if line.startswith("aws s3 cp"))
