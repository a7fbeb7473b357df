"""Four shards of one manifest run at once in separate processes, then merge into one lockfile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.core.expansion.identity import folder_name
from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import IMAGES, INSTANCES, KEY, ROOT, Project

TIMEOUT = 180  # seconds: guards against a hang only


def imgspec(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """Run this checkout's imgspec in the project folder."""
    env = {**os.environ, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=project.root,
                          env=env, text=True, capture_output=True, timeout=TIMEOUT,
                          check=False)


def images_on_disk(project: Project) -> int:
    """Image files in the output folder (not meta.json or index.json)."""
    return sum(1 for p in project.outputs.rglob("*.png"))


def test_four_shards_at_once_then_merge(project: Project, sim: RunningSimulator) -> None:
    """Every instance runs in exactly one shard; after lock merge --into, plan is all up to
    date, verify is clean, and the images charged are the images on disk."""
    manifest = "manifests/shop.yaml"
    env = {**os.environ, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", manifest, "--shard", f"{k}/4",
         "--base-url", sim.base_url, "--yes", "--concurrency", "4", "--json"],
        cwd=project.root, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for k in range(1, 5)]
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs

    shard_locks = sorted(project.lockfile.parent.glob("shop.shard-*-of-4.lock.json"))
    covered: list[str] = []
    for path in shard_locks:
        covered += json.loads(path.read_text())["entries"]
    assert len(covered) == len(set(covered)) == INSTANCES  # each instance in one shard
    assert not project.lockfile.exists()

    merge = imgspec(project, "lock", "merge", "--into", "manifests/shop.lock.json",
                    *(str(p.relative_to(project.root)) for p in shard_locks))
    assert merge.returncode == 0, merge.stderr
    assert f"{INSTANCES} entries" in merge.stdout

    plan = imgspec(project, "plan", manifest, "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["counts"]["up-to-date"] == INSTANCES
    verify = imgspec(project, "verify", manifest)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert sim.ledger().images_charged == images_on_disk(project) == IMAGES


def test_shard_plan_shows_its_own_cost_and_starts_from_the_manifests_lockfile(
        project: Project, sim: RunningSimulator) -> None:
    """plan --shard K/N costs that shard's work only; once the manifest's own lockfile holds
    the work (an earlier unsharded run), a shard run pays nothing again."""
    manifest = "manifests/shop.yaml"
    whole = json.loads(imgspec(project, "plan", manifest, "--json").stdout)["cost"]["total"]
    parts = [json.loads(imgspec(project, "plan", manifest, "--json", "--shard",
                                f"{k}/3").stdout)["cost"]["total"] for k in (1, 2, 3)]
    assert round(sum(parts), 2) == whole
    assert all(part < whole for part in parts)

    done = imgspec(project, "run", manifest, "--base-url", sim.base_url, "--yes")
    assert done.returncode == 0, done.stderr
    charged = sim.ledger().images_charged
    for k in (1, 2, 3):
        again = imgspec(project, "run", manifest, "--shard", f"{k}/3", "--base-url",
                        sim.base_url, "--yes")
        assert again.returncode == 0, again.stderr
        assert "Nothing to do." in again.stdout
        assert again.stdout.startswith(f"Shard {k}/3: recording into "
                                       f"manifests/shop.shard-{k}-of-3.lock.json")
    assert sim.ledger().images_charged == charged
    assert Path(project.root / "manifests" / "shop.shard-1-of-3.lock.json").exists()


def test_bad_shard_is_a_usage_error(project: Project) -> None:
    """--shard 5/4 exits 2 and says how to write it."""
    done = imgspec(project, "plan", "manifests/shop.yaml", "--shard", "5/4")
    assert done.returncode == 2
    assert "K must be between 1 and N" in done.stderr


def test_a_starting_shard_leaves_other_shards_downloads_alone(
        project: Project, sim: RunningSimulator) -> None:
    """A shard tidies download leftovers only in its own instances' folders: another
    shard's download in progress (a .part file in its folder) survives, its own go."""
    manifest = "manifests/shop.yaml"
    plan = imgspec(project, "plan", manifest, "--json", "--shard", "2/4")
    assert plan.returncode == 0, plan.stderr
    items = json.loads(plan.stdout)["items"]
    mine = [i for i in items if i["status"] != "skipped"]
    other = [i for i in items if i["status"] == "skipped"]
    assert mine
    assert other
    folders = {i["key"]: project.outputs / i["job"] / folder_name(i["key"])
               for i in (mine[0], other[0])}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".0.abcd1234.part").write_bytes(b"half an image")

    done = imgspec(project, "run", manifest, "--shard", "2/4", "--base-url", sim.base_url,
                   "--yes")

    assert done.returncode == 0, done.stderr
    assert not (folders[mine[0]["key"]] / ".0.abcd1234.part").exists()
    assert (folders[other[0]["key"]] / ".0.abcd1234.part").read_bytes() == b"half an image"
