"""A run into ``s3://bucket/prefix`` through the real command line, against the simulator
and moto's S3 server: killed and resumed, repaired free, verified, pruned, and the
simulator's ledger equal to the images in the bucket after every step."""

from __future__ import annotations

import json
import signal
import time

from pipeline.core.lock.lockfile import Lockfile
from pipeline.operations.project import current_lock
from pipeline.simulator import RunningSimulator
from tests.simulator.simkit import StartSim
from tests.storage.conftest import IMAGES, SECRET, StoreProject, charged

GUARD = 120.0  # seconds: a hang guard, never a speed assertion


def recorded(project: StoreProject) -> Lockfile:
    """The lockfile with any journal of a killed run folded in (as the next run reads it)."""
    return current_lock(project.lockfile, manifest="shop.yaml")


def recorded_images(lock: Lockfile) -> list[str]:
    """The object keys of every image a done entry records."""
    return sorted(f"runs/shop/{o.path}" for e in lock.entries.values() if e.status == "done"
                  for o in e.outputs)


def test_a_run_writes_the_layout_into_the_bucket_and_verify_reads_it(
        project: StoreProject, sim: RunningSimulator) -> None:
    """Every image, meta.json and index.json land under the prefix, the lockfile's paths
    are relative to it, verify is clean and the ledger equals the images in the bucket."""
    done = project.run(sim)
    assert f"Outputs: {project.url}/" in done.stdout
    images = project.bucket.images()
    assert len(images) == IMAGES == charged(sim)
    keys = project.bucket.listing()
    assert "runs/shop/index.json" in keys
    assert sum(k.endswith("/meta.json") for k in keys) == 9
    lock = json.loads(project.lockfile.read_text())
    paths = sorted(o["path"] for e in lock["entries"].values() for o in e["outputs"])
    assert [f"runs/shop/{p}" for p in paths] == images
    for entry in lock["entries"].values():  # each object carries the sha256 recorded
        for output in entry["outputs"]:
            stored = project.bucket.metadata(f"runs/shop/{output['path']}")
            assert stored["sha256"] == output["sha256"]
    meta = json.loads(project.bucket.get("runs/shop/gen/shop=bakery,season=winter/meta.json"))
    assert [i["file"] for i in meta["images"]] == ["0.png", "1.png"]
    verified = project.cli("verify", "manifests/shop.yaml")
    assert verified.returncode == 0, verified.stderr
    assert f"{IMAGES + 1} file(s) checked, 0 problem(s)" in verified.stdout
    assert not (project.root / "outputs").exists()  # nothing written beside the project


def test_a_run_killed_mid_way_resumes_without_paying_twice(
        project: StoreProject, start_sim: StartSim) -> None:
    """SIGKILL in the middle of a run: every image the lockfile records is in the bucket;
    the rerun finishes, verify is clean, and the ledger equals the images in the bucket."""
    sim = start_sim(latency=(0.4, 1.2))
    process = project.spawn("run", "manifests/shop.yaml", "--base-url", sim.base_url,
                            "--yes", "--concurrency", "2")
    deadline = time.monotonic() + GUARD
    while not project.bucket.images() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=GUARD)
    assert process.returncode == -signal.SIGKILL
    lock = recorded(project)
    in_bucket = set(project.bucket.images())
    assert set(recorded_images(lock)) <= in_bucket  # nothing recorded that is not there
    assert len(in_bucket) < IMAGES  # killed before the end
    project.run(sim)
    assert len(project.bucket.images()) == IMAGES == charged(sim)
    assert recorded_images(recorded(project)) == project.bucket.images()
    assert project.cli("verify", "manifests/shop.yaml").returncode == 0


def test_a_deleted_and_a_truncated_object_are_repaired_free(
        project: StoreProject, sim: RunningSimulator) -> None:
    """verify reports one object missing and one changed; the plan downloads both again
    for nothing, the run does, and verify is clean with the ledger unchanged."""
    project.run(sim)
    gone, cut = project.bucket.images()[0], project.bucket.images()[3]
    project.bucket.delete(gone)
    project.bucket.put(cut, project.bucket.get(cut)[:1000])
    verified = project.cli("verify", "manifests/shop.yaml")
    assert verified.returncode == 1
    said = verified.stdout + verified.stderr
    assert "missing: " + gone.removeprefix("runs/shop/") in said
    assert "changed: " + cut.removeprefix("runs/shop/") in said
    plan = json.loads(project.cli("plan", "--json", "manifests/shop.yaml").stdout)
    assert sorted(i["status"] for i in plan["items"] if i["status"] != "up-to-date") == [
        "download", "download"]
    assert plan["cost"]["total"] == 0
    project.run(sim)
    assert project.cli("verify", "manifests/shop.yaml").returncode == 0
    assert len(project.bucket.images()) == IMAGES == charged(sim)


def test_prune_outputs_removes_objects_only_under_the_prefix(
        project: StoreProject, sim: RunningSimulator) -> None:
    """Dropping a job and pruning with --outputs deletes its objects and meta.json under
    the prefix; a neighbouring prefix that starts with the same name is left alone."""
    project.bucket.put("runs/shop2/night/shop=bakery,season=winter/0.png", b"not ours")
    project.bucket.put("runs/shop-night.png", b"not ours either")
    project.run(sim)
    text = project.manifest.read_text()
    project.manifest.write_text(text[:text.index("  night:")])
    pruned = project.cli("prune", "--outputs", "manifests/shop.yaml")
    assert pruned.returncode == 0, pruned.stderr
    assert project.bucket.listing("runs/shop/night/") == []
    assert len(project.bucket.images()) == 12
    assert project.bucket.listing("runs/shop2/") == [
        "runs/shop2/night/shop=bakery,season=winter/0.png"]
    assert "runs/shop-night.png" in project.bucket.listing("runs/")
    assert project.cli("verify", "manifests/shop.yaml").returncode == 0


def test_lockfile_paths_outside_the_prefix_are_refused(
        project: StoreProject, sim: RunningSimulator) -> None:
    """A lockfile whose output path climbs out of the prefix, is absolute or names another
    URL is refused by plan and verify, and nothing outside the prefix is read or deleted."""
    project.bucket.put("secret/elsewhere.png", b"someone else's")
    project.run(sim)
    for hostile in ("../../secret/elsewhere.png", "/secret/elsewhere.png",
                    "s3://other/x.png"):
        lock = json.loads(project.lockfile.read_text())
        entry = next(iter(lock["entries"].values()))
        entry["outputs"][0]["path"] = hostile
        project.lockfile.write_text(json.dumps(lock))
        for args in (("verify", "manifests/shop.yaml"), ("plan", "manifests/shop.yaml")):
            refused = project.cli(*args)
            assert refused.returncode == 1, refused.stdout
            assert hostile in refused.stderr
            assert "Traceback" not in refused.stderr
    assert project.bucket.get("secret/elsewhere.png") == b"someone else's"


def test_no_secret_reaches_lockfile_objects_output_or_errors(
        project: StoreProject, sim: RunningSimulator) -> None:
    """The secret key of the credential chain is in no lockfile, meta.json, index.json,
    output or error message, even when the store refuses (a bucket that does not exist)."""
    done = project.run(sim)
    texts = [done.stdout, done.stderr, project.lockfile.read_text()]
    texts += [project.bucket.get(k).decode() for k in project.bucket.listing()
              if k.endswith(".json")]
    project.manifest.write_text(project.manifest.read_text().replace(
        project.url, "s3://no-such-bucket-imgspec/runs/shop"))
    project.lockfile.unlink()  # a fresh start: every instance would be paid
    failed = project.cli("run", "manifests/shop.yaml", "--base-url", sim.base_url, "--yes",
                         "--concurrency", "4")
    assert failed.returncode == 1
    texts += [failed.stdout, failed.stderr]
    assert "the bucket no-such-bucket-imgspec does not exist" in failed.stderr
    assert charged(sim) == IMAGES  # nothing spent on results it could not keep
    assert "Traceback" not in failed.stdout + failed.stderr
    assert not [t for t in texts if SECRET in t]
    project.manifest.write_text(project.manifest.read_text() + (
        "storage_options: {secret: " + SECRET + "}\n"))
    refused = project.cli("plan", "manifests/shop.yaml")
    assert refused.returncode != 0
    assert "looks like a credential" in refused.stderr
    assert SECRET not in refused.stdout + refused.stderr


def test_output_dir_on_the_command_line_names_the_store(
        project: StoreProject, sim: RunningSimulator) -> None:
    """A manifest without output_dir: runs into the bucket given by --output-dir, and
    verify finds it there by IMGSPEC_OUTPUT_DIR; without either it looks on disk."""
    project.manifest.write_text(project.manifest.read_text().replace(
        f"output_dir: {project.url}\n", ""))
    project.run(sim, "--output-dir", project.url)
    assert len(project.bucket.images()) == IMAGES == charged(sim)
    assert not (project.root / "outputs").exists()
    verified = project.cli("verify", "manifests/shop.yaml", IMGSPEC_OUTPUT_DIR=project.url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    on_disk = project.cli("verify", "manifests/shop.yaml")
    assert on_disk.returncode == 1
    assert "lies outside the output folder" in on_disk.stderr


def test_a_file_url_store_confirms_by_bytes_and_repairs_free(
        project: StoreProject, sim: RunningSimulator) -> None:
    """Through the same layer, file:///abs/folder: the run's images are confirmed by the
    bytes read back, a deleted one is downloaded again free, and verify is clean."""
    folder = project.root.parent / f"{project.root.name}-store"
    project.manifest.write_text(project.manifest.read_text().replace(
        project.url, f"file://{folder}"))
    project.run(sim)
    images = sorted(folder.rglob("*.png"))
    assert len(images) == IMAGES == charged(sim)
    images[0].unlink()
    assert project.cli("verify", "manifests/shop.yaml").returncode == 1
    project.run(sim)
    assert len(sorted(folder.rglob("*.png"))) == IMAGES == charged(sim)
    assert project.cli("verify", "manifests/shop.yaml").returncode == 0


def test_lock_mv_moves_a_jobs_objects_within_the_prefix(
        project: StoreProject, sim: RunningSimulator) -> None:
    """Renaming a job in the manifest and `lock mv` of it: its objects and meta.json move
    to the new job's folder in the bucket, the plan has nothing to pay, verify is clean."""
    project.run(sim)
    project.manifest.write_text(project.manifest.read_text().replace("  night:", "  evening:"))
    moved = project.cli("lock", "mv", "manifests/shop.yaml", "night", "evening")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert project.bucket.listing("runs/shop/night/") == []
    evening = project.bucket.listing("runs/shop/evening/")
    assert sum(k.endswith(".png") for k in evening) == 3
    meta = json.loads(project.bucket.get(next(k for k in evening if k.endswith("meta.json"))))
    assert meta["job"] == "evening"
    assert meta["key"].startswith("evening@")
    assert "Nothing to submit" in project.cli("plan", "manifests/shop.yaml").stdout
    project.run(sim)
    assert project.cli("verify", "manifests/shop.yaml").returncode == 0
    assert len(project.bucket.images()) == IMAGES == charged(sim)
