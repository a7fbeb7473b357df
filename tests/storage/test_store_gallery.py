"""The gallery and export --picked of outputs in a bucket: thumbnails made from the
objects in the local cache, and picked images copied down from the store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

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
