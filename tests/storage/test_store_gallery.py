"""The gallery and export --picked of outputs in a bucket: thumbnails made from the
objects in the local cache, and picked images copied down from the store."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx

from pipeline.simulator import RunningSimulator
from tests.gallery.helpers import review_text
from tests.storage.conftest import IMAGES, StoreProject


def test_gallery_and_export_work_from_the_store(
        project: StoreProject, sim: RunningSimulator) -> None:
    """`gallery` writes its page and thumbnails in the store's cache from the objects;
    `export --picked` copies the picked object and its meta.json, byte for byte."""
    project.run(sim)
    made = project.cli("gallery", "manifests/shop.yaml")
    assert made.returncode == 0, made.stdout + made.stderr
    cache = Path(project.env["IMGSPEC_CACHE_DIR"])
    (page,) = cache.rglob("index.html")
    assert len(list(page.parent.glob("_thumbs/*/*.jpg"))) == IMAGES
    lock = json.loads(project.lockfile.read_text())
    key, entry = sorted(lock["entries"].items())[0]
    output = entry["outputs"][1]
    (project.root / "manifests" / "shop.review.yaml").write_text(
        review_text((key, 1, output["sha256"], "pick")))
    dest = project.root.parent / f"{project.root.name}-handoff"
    exported = project.cli("export", "manifests/shop.yaml", "--picked", str(dest))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    copied = dest / output["path"]
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == output["sha256"]
    assert json.loads((copied.parent / "meta.json").read_text())["key"] == key


def test_review_serves_the_gallery_of_a_store(
        project: StoreProject, sim: RunningSimulator) -> None:
    """`imgspec review` of a store serves its page, thumbnails and full images from the
    local cache of the objects."""
    project.run(sim)
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "review", "manifests/shop.yaml"],
        cwd=project.root, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split(" at ")[1].strip()
        page = httpx.get(url, timeout=60)
        assert page.status_code == 200
        lock = json.loads(project.lockfile.read_text())
        output = sorted(lock["entries"].items())[0][1]["outputs"][0]
        full = httpx.get(f"{url}objects/{quote(output['path'], safe='/=,+')}", timeout=60)
        assert hashlib.sha256(full.content).hexdigest() == output["sha256"]
        thumb = httpx.get(f"{url}_thumbs/{output['sha256'][:2]}/{output['sha256']}.jpg",
                          timeout=60)
        assert thumb.status_code == 200
        assert thumb.headers["Content-Type"] == "image/jpeg"
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
