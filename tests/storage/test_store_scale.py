"""Shards of one manifest writing to one bucket, merged and verified; and uploads broken
between imgspec and the store (503, reset, lost reply) losing nothing and paying
nothing twice. Through the real command line, the simulator and moto's S3 server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pipeline.simulator import RunningSimulator
from tests.storage.conftest import IMAGES, StoreProject, charged
from tests.storage.faultproxy import FAULTS, FaultProxy

GUARD = 240.0  # seconds: a hang guard, never a speed assertion


def test_four_shards_into_one_bucket_merge_and_verify(
        project: StoreProject, sim: RunningSimulator) -> None:
    """Four shards run side by side into one prefix, each recording into a lockfile in a
    folder of its own (as CI artifacts arrive); merged into the manifest's lockfile,
    verify is clean and the ledger equals the images in the bucket."""
    shards = []
    for k in range(1, 5):
        lockfile = project.root / "artifacts" / f"shard-{k}" / f"shop.shard-{k}.lock.json"
        lockfile.parent.mkdir(parents=True)
        shards.append((lockfile, subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", "manifests/shop.yaml", "--shard",
             f"{k}/4", "--lockfile", str(lockfile), "--base-url", sim.base_url, "--yes"],
            cwd=project.root, env=project.env, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)))
    for _, process in shards:
        out, _ = process.communicate(timeout=GUARD)
        assert process.returncode == 0, out
    assert len(project.bucket.images()) == IMAGES == charged(sim)
    # A shard with nothing to do writes no lockfile (its CI artifact is absent too).
    written = [str(lockfile) for lockfile, _ in shards if lockfile.is_file()]
    assert len(written) >= 2
    # Merged where the store is out of reach: the lockfile is merged all the same...
    merged = project.cli("lock", "merge", "--into", "manifests/shop.lock.json", *written,
                         AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_MAX_ATTEMPTS="1")
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert "rewrote" not in merged.stdout
    # ...and merged again where it is reachable, which rewrites the store's index.json.
    merged = project.cli("lock", "merge", "--into", "manifests/shop.lock.json", *written)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert f"rewrote {project.url}/index.json" in merged.stdout
    lock = json.loads(project.lockfile.read_text())
    paths = sorted(f"runs/shop/{o['path']}" for e in lock["entries"].values()
                   for o in e["outputs"])
    assert paths == project.bucket.images()  # store paths are not rebased
    verified = project.cli("verify", "manifests/shop.yaml")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    plan = project.cli("plan", "manifests/shop.yaml")
    assert "Nothing to submit" in plan.stdout
    assert len(project.bucket.images()) == IMAGES == charged(sim)


@pytest.fixture
def proxy(project: StoreProject) -> Iterator[FaultProxy]:
    """A fault proxy in front of the S3 server, made the project's AWS_ENDPOINT_URL."""
    made = FaultProxy(project.env["AWS_ENDPOINT_URL"])
    project.env["AWS_ENDPOINT_URL"] = made.url
    try:
        yield made
    finally:
        made.stop()


def test_broken_uploads_lose_nothing_and_pay_nothing_twice(
        project: StoreProject, sim: RunningSimulator, proxy: FaultProxy) -> None:
    """Every image's first PUT is broken (503, reset, or written with its reply lost):
    the uploads are made again, every image lands once, verify is clean, and the ledger
    equals the images in the bucket."""
    done = project.cli("run", "manifests/shop.yaml", "--base-url", sim.base_url, "--yes",
                       "--concurrency", "4")
    if done.returncode != 0:  # an instance left unfinished by the store: resumed, free
        assert done.returncode == 4, done.stdout + done.stderr
        project.run(sim)
    assert set(proxy.faults) == set(FAULTS)
    assert len(project.bucket.images()) == IMAGES == charged(sim)
    verified = project.cli("verify", "manifests/shop.yaml")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_store_that_cannot_be_reached_stops_the_run_before_it_pays(
        project: StoreProject, sim: RunningSimulator) -> None:
    """With nothing listening at the store's endpoint, the run says so and pays nothing."""
    down = project.cli("run", "manifests/shop.yaml", "--base-url", sim.base_url, "--yes",
                       "--concurrency", "4", AWS_ENDPOINT_URL="http://127.0.0.1:9")
    assert down.returncode == 1
    assert "listing the store failed" in down.stderr
    assert "Traceback" not in down.stdout + down.stderr
    assert charged(sim) == 0


def test_a_store_that_refuses_every_upload_leaves_the_run_unfinished_then_resumes_free(
        project: StoreProject, sim: RunningSimulator) -> None:
    """With every image PUT refused (503) after the run has started paying, no image is
    recorded and the run exits 4 (unfinished); once the store takes writes again, the
    next run stores them all without paying again."""
    proxy = FaultProxy(project.env["AWS_ENDPOINT_URL"], down=True)
    try:
        down = project.cli("run", "manifests/shop.yaml", "--base-url", sim.base_url,
                           "--yes", "--concurrency", "4", AWS_ENDPOINT_URL=proxy.url,
                           AWS_MAX_ATTEMPTS="1")
    finally:
        proxy.stop()
    assert down.returncode == 4, down.stdout + down.stderr
    assert "Traceback" not in down.stdout + down.stderr
    paid = charged(sim)
    assert paid > 0
    lock = json.loads(project.lockfile.read_text()) if project.lockfile.exists() else {}
    assert not [e for e in lock.get("entries", {}).values() if e["status"] == "done"]
    project.run(sim)
    assert len(project.bucket.images()) == IMAGES == charged(sim)
    assert project.cli("verify", "manifests/shop.yaml").returncode == 0
