"""gallery, plan/run with review decisions, and export --picked, through the command line."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from pipeline.simulator import RunningSimulator
from tests.gallery.helpers import (
    KEY,
    REROLLED,
    imgspec,
    lock_entries,
    review_text,
    storefronts,
)
from tests.simulator.simkit import simulators

STOREFRONT_IMAGES = 23
PICKED = "products@product=ceramic vase,colour=sage green,price=24.90,angle=front"


def page_data(index: Path) -> dict[str, object]:
    """The data inlined in a gallery page."""
    found = re.search(r'<script type="application/json" id="gallery-data">(.*?)</script>',
                      index.read_text(), re.S)
    assert found is not None
    data: dict[str, object] = json.loads(found.group(1))
    return data


def sha(path: Path) -> str:
    """A file's sha256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storefronts project after `imgspec run --simulate` (shared, read-only)."""
    manifest = storefronts(tmp_path_factory.mktemp("sim"))
    imgspec("run", "--simulate", str(manifest), cwd=manifest.parent.parent)
    return manifest


def test_gallery_writes_one_page_and_thumbnails(simulated: Path) -> None:
    """outputs/<name>/index.html with every instance, a thumbnail per image, no network."""
    done = imgspec("gallery", "--simulate", str(simulated), cwd=simulated.parent.parent)
    index = simulated.parent.parent / "outputs" / "storefronts.simulate" / "index.html"
    assert f"Gallery: {index} (16 done)" in done.stdout
    text = index.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    data = page_data(index)
    jobs = data["jobs"]
    assert isinstance(jobs, list)
    assert [j["id"] for j in jobs] == ["storefront", "storefront-night", "products"]
    pictures = [p for j in jobs for e in j["entries"] for p in e["im"]]
    assert len(pictures) == STOREFRONT_IMAGES
    for picture in pictures:
        assert (index.parent / unquote(picture[0])).is_file()
        assert (index.parent / unquote(picture[1])).is_file()
        assert picture[1].startswith("_thumbs/")


def test_review_decisions_feed_plan_and_run(tmp_path: Path) -> None:
    """A re-roll is planned with its cost, run with a new seed, recorded, then up to date."""
    manifest = storefronts(tmp_path)
    root = tmp_path
    imgspec("run", "--simulate", str(manifest), cwd=root)
    lockfile = manifest.with_name("storefronts.simulate.lock.json")
    before = lock_entries(lockfile)[REROLLED]
    old_image = root / "outputs" / "storefronts.simulate" / before["outputs"][1]["path"].split(
        "storefronts.simulate/")[1]
    old_sha = before["outputs"][1]["sha256"]
    other = lock_entries(lockfile)[PICKED]
    manifest.with_name("storefronts.review.yaml").write_text(review_text(
        (REROLLED, 1, old_sha, "reroll"),
        (PICKED, 0, other["outputs"][0]["sha256"], "pick")))

    plan = imgspec("plan", "--simulate", str(manifest), cwd=root).stdout
    line = next(x for x in plan.splitlines() if REROLLED in x)
    assert "↺ reroll" in line
    assert "¥0.40" in line
    assert "all 2 images, new derived seed" in line
    assert "Plan: 1 to submit (2 images, ¥0.40)" in plan

    imgspec("run", "--simulate", str(manifest), cwd=root)
    after = lock_entries(lockfile)[REROLLED]
    assert after["reroll"] == 1
    assert after["seed"] != before["seed"]
    assert after["outputs"][1]["sha256"] != old_sha
    assert sha(old_image) == after["outputs"][1]["sha256"]  # the new image, in place
    again = imgspec("plan", "--simulate", str(manifest), cwd=root).stdout
    assert "No changes. Every instance is up to date." in again

    dest = tmp_path / "handoff"
    out = imgspec("export", "--simulate", str(manifest), "--picked", str(dest), cwd=root)
    assert "1 picked image(s) copied" in out.stdout
    copied = sorted(p.name for p in dest.rglob("*") if p.is_file())
    assert copied == ["0.png", "meta.json"]


def test_a_failed_reroll_keeps_the_old_images(tmp_path: Path) -> None:
    """Until the new images are in place the old ones stay; the gallery shows the failure."""
    manifest = storefronts(tmp_path)
    root = tmp_path
    lockfile = manifest.with_name("storefronts.lock.json")
    with simulators(latency=(0.05, 0.2), seed=5, api_key=KEY) as start:
        good: RunningSimulator = start()
        imgspec("run", str(manifest), "--base-url", good.base_url, "--yes", cwd=root)
        before = lock_entries(lockfile)[REROLLED]
        manifest.with_name("storefronts.review.yaml").write_text(review_text(
            (REROLLED, 0, before["outputs"][0]["sha256"], "reroll")))
        failing = start(faults={"task.fail": 1.0})
        run = imgspec("run", str(manifest), "--base-url", failing.base_url, "--yes", cwd=root,
                      check=False)
    assert run.returncode == 4
    after = lock_entries(lockfile)[REROLLED]
    assert after["status"] == "failed"
    assert after["reroll"] == 1
    assert after["outputs"] == before["outputs"]
    folder = root / "outputs" / "storefronts"
    for output in before["outputs"]:
        assert sha(folder / output["path"].split("outputs/storefronts/")[1]) == output["sha256"]
    plan = imgspec("plan", str(manifest), cwd=root).stdout
    assert "↻ retry" in next(x for x in plan.splitlines() if REROLLED in x)

    imgspec("gallery", str(manifest), cwd=root)
    data = page_data(folder / "index.html")
    jobs = data["jobs"]
    assert isinstance(jobs, list)
    shown = next(e for e in jobs[0]["entries"] if e["k"] == REROLLED)
    assert shown["st"] == "failed"
    assert shown["e"]
    assert [p[2] for p in shown["im"]] == [o["sha256"] for o in before["outputs"]]
    assert shown["im"][0][5] == "reroll"  # the decision still names the image shown


def test_a_broken_review_file_is_reported_with_its_line(tmp_path: Path) -> None:
    """plan refuses a review file that does not follow the schema, pointing at the line."""
    manifest = storefronts(tmp_path)
    review = manifest.with_name("storefronts.review.yaml")
    review.write_text("version: 1\ndecisions:\n  - key: x\n    image: -1\n")
    done = imgspec("plan", str(manifest), cwd=tmp_path, check=False)
    assert done.returncode == 1
    assert (f"{review}:4:12: error: decisions[0].image: -1 is less than the minimum of 0"
            in done.stderr)
    assert f"{review}:3:5: error: decisions[0]: 'verdict' is required" in done.stderr
