"""Results are found by what was asked: rename, copy, merge and clone never pay again.

Each test drives the real ``imgspec`` command in subprocesses against one simulator
and checks the money: the simulator's ledger against the lockfiles and the images.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.simulator import RunningSimulator
from tests.teams.conftest import Repo

MANIFEST = "manifests/shop.yaml"
LOCK = "manifests/shop.lock.json"
SHOP = """\
version: 1
name: shop
defaults: {model: wan2.7-image, size: 1K}
jobs:
  shot:
    prompt: "A {{ c }} vase on a table"
    matrix:
      c: [red, blue]
"""


def run(repo: Repo, sim: RunningSimulator, manifest: str = MANIFEST) -> str:
    """Run a manifest against the simulator; it must finish. Its output."""
    done = repo.imgspec("run", manifest, "--base-url", sim.base_url, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def plan_json(repo: Repo, manifest: str = MANIFEST) -> dict[str, Any]:
    """``imgspec plan --json`` of a manifest."""
    done = repo.imgspec("plan", manifest, "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def plan_text(repo: Repo, manifest: str = MANIFEST) -> str:
    """``imgspec plan`` of a manifest, as people read it."""
    done = repo.imgspec("plan", manifest)
    assert done.returncode == 0, done.stderr
    return done.stdout


def recorded_spend(repo: Repo) -> Decimal:
    """What every lockfile of the project says was charged."""
    return sum((Decimal(str(e["charged"])) for path in (repo.root / "manifests").glob(
        "*.lock.json") for e in json.loads(path.read_text())["entries"].values()), Decimal(0))


def assert_images_intact(repo: Repo, lock: str = LOCK, *, job: str | None = None) -> int:
    """Every image a lockfile lists (of one job) exists with its recorded sha256; how many."""
    count = 0
    for entry in repo.lock(lock)["entries"].values():
        if job is not None and entry["job"] != job:
            continue
        for output in entry["outputs"]:
            data = (repo.root / "manifests" / output["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == output["sha256"], output["path"]
            count += 1
    return count


def assert_money_agrees(repo: Repo, sim: RunningSimulator) -> None:
    """The ledger's charges equal the spend recorded across the project's lockfiles."""
    assert Decimal(sim.ledger().cost_charged) == recorded_spend(repo)


def rename(repo: Repo, old: str, new: str) -> None:
    """Rename a job in the manifest."""
    path = repo.root / MANIFEST
    path.write_text(path.read_text().replace(f"  {old}:\n", f"  {new}:\n"))


def set_up(repo: Repo, sim: RunningSimulator, text: str = SHOP) -> None:
    """The shop manifest, run and committed."""
    repo.write(MANIFEST, text)
    assert repo.imgspec("init").returncode == 0
    run(repo, sim)
    repo.commit("shop")


def test_renaming_a_job_reuses_its_images_without_paying(repo: Repo,
                                                         sim: RunningSimulator) -> None:
    """A renamed job plans as reuse, runs for nothing, and copies the images, hash checked."""
    set_up(repo, sim)
    assert sim.ledger().images_charged == 2
    rename(repo, "shot", "packshot")

    text = plan_text(repo)
    plan = plan_json(repo)
    out = run(repo, sim)

    assert "= reuse    packshot@c=red   from shot@c=red" in text
    assert "(copied; free)" in text
    assert plan["counts"]["reuse"] == 2
    assert plan["counts"]["new"] == 0
    assert plan["cost"]["total"] == 0
    assert "charged ¥0.00" in out
    assert sim.ledger().images_charged == 2
    entries = repo.lock(LOCK)["entries"]
    for colour in ("red", "blue"):
        new, old = entries[f"packshot@c={colour}"], entries[f"shot@c={colour}"]
        assert new["reused_from"] == f"shot@c={colour}"
        assert new["charged"] == 0
        assert new["task_id"] == old["task_id"]
        assert [o["sha256"] for o in new["outputs"]] == [o["sha256"] for o in old["outputs"]]
        assert new["outputs"][0]["path"].startswith("../outputs/shop/packshot/")
    assert assert_images_intact(repo) == 4
    assert_money_agrees(repo, sim)
    assert plan_json(repo)["counts"]["up-to-date"] == 2


def test_renaming_back_after_prune_pays_nothing(repo: Repo, sim: RunningSimulator) -> None:
    """Rename, run, prune the old entries, rename back: the request is found again, free."""
    set_up(repo, sim)
    rename(repo, "shot", "packshot")
    run(repo, sim)
    assert_money_agrees(repo, sim)
    spent = recorded_spend(repo)
    assert repo.imgspec("prune", MANIFEST).returncode == 0
    assert set(repo.lock(LOCK)["entries"]) == {"packshot@c=red", "packshot@c=blue"}
    rename(repo, "packshot", "shot")

    plan = plan_json(repo)
    run(repo, sim)

    assert plan["counts"]["reuse"] == 2
    assert sim.ledger().images_charged == 2
    assert sim.ledger().replays == 0  # found here, not left to the API's memory of keys
    assert repo.lock(LOCK)["entries"]["shot@c=red"]["reused_from"] == "packshot@c=red"
    assert_images_intact(repo)
    # Prune drops the paying entries' record of spend (what prune keeps is another
    # matter): the account paid nothing since.
    assert Decimal(sim.ledger().cost_charged) == spent


def test_copying_a_job_into_a_second_manifest_pays_nothing(repo: Repo,
                                                           sim: RunningSimulator) -> None:
    """The same job in another manifest of the project reuses the first one's results."""
    set_up(repo, sim)
    other = "manifests/catalogue.yaml"
    repo.write(other, SHOP.replace("name: shop", "name: catalogue"))

    plan = plan_json(repo, other)
    run(repo, sim, other)

    assert plan["counts"]["reuse"] == 2
    assert [i["reuse"]["from"] for i in plan["items"]] == [
        "shop.yaml: shot@c=red", "shop.yaml: shot@c=blue"]
    assert sim.ledger().images_charged == 2
    assert assert_images_intact(repo, "manifests/catalogue.lock.json") == 2
    assert (repo.root / "outputs" / "catalogue" / "shot" / "c=red").is_dir()
    assert_money_agrees(repo, sim)


def test_merge_of_two_branches_run_in_one_checkout_reuses_the_superseded_results(
        repo: Repo, sim: RunningSimulator) -> None:
    """Branch one changes the prompt and runs; branch two, in the same checkout, refetches
    the old images (newer entries win the merge); after the merge the plan reuses the
    superseded entries' results (their task) instead of listing them as changed."""
    base = SHOP.replace("matrix:\n      c: [red, blue]", "matrix:\n      c: [red, blue, green]")
    set_up(repo, sim, base)
    repo.git("checkout", "-q", "-b", "one")
    path = repo.root / MANIFEST
    path.write_text(base.replace("on a table", "on a shelf"))
    run(repo, sim)
    repo.commit("one: on a shelf")
    repo.git("checkout", "-q", "main")
    repo.git("checkout", "-q", "-b", "two")
    # Branch one's images are in the shared outputs: two's plan sees the sizes differ and
    # downloads its own again, free, in a later second (the newer entries win the merge).
    time.sleep(1.0 - time.time() % 1.0 + 0.01)
    assert plan_json(repo)["counts"]["download"] == 3
    run(repo, sim)
    repo.commit("two: images fetched again")
    charged = sim.ledger().images_charged
    assert charged == 6

    merge = repo.git("merge", "--no-edit", "one", check=False)
    assert merge.returncode == 0, merge.stdout + merge.stderr
    assert sum(1 for k in repo.lock(LOCK)["entries"] if "#superseded:" in k) == 3

    plan = plan_json(repo)
    run(repo, sim)

    assert plan["counts"]["changed"] == 0
    assert plan["counts"]["reuse"] == 3
    assert plan["cost"]["total"] == 0
    assert sim.ledger().images_charged == charged
    assert assert_images_intact(repo) == 3
    assert plan_json(repo)["counts"]["up-to-date"] == 3
    assert_money_agrees(repo, sim)  # the base's charge, carried by both sides, once


def test_fresh_clone_without_outputs_reuses_by_link_or_says_missing(
        repo: Repo, sim: RunningSimulator, tmp_path: Path) -> None:
    """A clone with the lockfiles from git and no outputs: a renamed job is fetched by its
    recorded links for nothing; with the links expired it is honestly missing (paid)."""
    set_up(repo, sim)
    clone = Repo(tmp_path / "clone", repo.env)
    repo.git("clone", "-q", str(repo.root), str(clone.root))
    assert not (clone.root / "outputs").exists()
    rename(clone, "shot", "packshot")

    plan = plan_json(clone)
    run(clone, sim)

    assert plan["counts"]["reuse"] == 2
    assert {i["reuse"]["via"][0] for i in plan["items"]} == {"link"}
    assert sim.ledger().images_charged == 2
    assert assert_images_intact(clone, job="packshot") == 2

    expired = Repo(tmp_path / "expired", repo.env)
    repo.git("clone", "-q", str(repo.root), str(expired.root))
    data = expired.lock(LOCK)
    for entry in data["entries"].values():
        for output in entry["outputs"]:
            output["expires_at"] = 1_000_000_000
    expired.write(LOCK, json.dumps(data, indent=2, sort_keys=True) + "\n")
    rename(expired, "shot", "packshot")
    plan = plan_json(expired)
    assert plan["counts"]["missing"] == 0
    assert plan["counts"]["reuse"] == 0
    assert plan["counts"]["new"] == 2
    assert all("paid as shot@c=" in i["note"] for i in plan["items"])


def test_a_file_whose_hash_differs_is_not_reused(repo: Repo, sim: RunningSimulator) -> None:
    """A tampered image (same size, other bytes) is never copied: its link is used instead,
    and without a valid link the instance is priced."""
    set_up(repo, sim)
    entry = repo.lock(LOCK)["entries"]["shot@c=red"]
    image = repo.root / "manifests" / entry["outputs"][0]["path"]
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF
    image.write_bytes(bytes(data))
    rename(repo, "shot", "packshot")

    plan = plan_json(repo)
    run(repo, sim)

    red = next(i for i in plan["items"] if i["key"] == "packshot@c=red")
    assert red["status"] == "reuse"
    assert red["reuse"]["via"] == ["link"]
    assert sim.ledger().images_charged == 2
    new = repo.lock(LOCK)["entries"]["packshot@c=red"]["outputs"][0]
    assert hashlib.sha256((repo.root / "manifests" / new["path"]).read_bytes()
                          ).hexdigest() == entry["outputs"][0]["sha256"]

    # Without a valid link, the tampered file leaves nothing to reuse: it is priced.
    data_lock = repo.lock(LOCK)
    for key in list(data_lock["entries"]):
        for output in data_lock["entries"][key]["outputs"]:
            output["expires_at"] = 1_000_000_000
    repo.write(LOCK, json.dumps(data_lock, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(repo.root / "outputs" / "shop" / "packshot")
    rename(repo, "packshot", "still")
    plan = plan_json(repo)
    statuses = {i["key"]: i["status"] for i in plan["items"]}
    assert statuses == {"still@c=red": "new", "still@c=blue": "reuse"}


def test_a_pruned_result_whose_image_was_replaced_is_fetched_by_its_meta_link(
        repo: Repo, sim: RunningSimulator) -> None:
    """A pruned entry's kept folder whose image was since replaced: its meta.json records
    the image's link and expiry, so asking for the request again fetches it by that link,
    free, instead of pricing it missing; a meta.json without links is still read."""
    set_up(repo, sim)
    path = repo.root / MANIFEST
    path.write_text(SHOP.replace("[red, blue]", "[red]"))
    assert repo.imgspec("prune", MANIFEST).returncode == 0
    folder = repo.root / "outputs" / "shop" / "shot" / "c=blue"
    recorded = json.loads((folder / "meta.json").read_text())["images"][0]["sha256"]
    (folder / "0.png").write_bytes(b"not the paid image")
    path.write_text(SHOP)

    plan = plan_json(repo)
    run(repo, sim)

    blue = next(i for i in plan["items"] if i["key"] == "shot@c=blue")
    assert blue["status"] == "reuse"
    assert blue["reuse"]["via"] == ["link"]
    assert plan["cost"]["total"] == 0
    assert sim.ledger().images_charged == 2
    assert sim.ledger().replays == 0
    new = repo.lock(LOCK)["entries"]["shot@c=blue"]
    assert new["charged"] == 0
    assert new["outputs"][0]["sha256"] == recorded
    assert_images_intact(repo)

    # A meta.json written before links were recorded (no url, no expires_at) still counts
    # by its file.
    path.write_text(SHOP.replace("[red, blue]", "[red]"))
    assert repo.imgspec("prune", MANIFEST).returncode == 0
    old = json.loads((folder / "meta.json").read_text())
    for image in old["images"]:
        del image["url"], image["expires_at"]
    (folder / "meta.json").write_text(json.dumps(old))
    path.write_text(SHOP)
    again = plan_json(repo)
    blue = next(i for i in again["items"] if i["key"] == "shot@c=blue")
    assert (blue["status"], blue["reuse"]["via"]) == ("reuse", ["file"])


def test_an_image_reused_from_a_kept_folder_is_downloaded_again_by_its_link(
        repo: Repo, sim: RunningSimulator) -> None:
    """A result reused from a pruned entry's kept folder records the image's link, so
    when the image is damaged later the plan downloads it again for nothing instead of
    pricing it missing."""
    set_up(repo, sim)
    path = repo.root / MANIFEST
    path.write_text(SHOP.replace("[red, blue]", "[red]"))
    assert repo.imgspec("prune", MANIFEST).returncode == 0
    path.write_text(SHOP)
    run(repo, sim)
    reused = repo.lock(LOCK)["entries"]["shot@c=blue"]
    assert reused["reused_from"] == "shot@c=blue"
    (repo.root / "manifests" / reused["outputs"][0]["path"]).write_bytes(b"damaged")

    plan = plan_json(repo)
    run(repo, sim)

    blue = next(i for i in plan["items"] if i["key"] == "shot@c=blue")
    assert blue["status"] == "download"
    assert plan["cost"]["total"] == 0
    assert sim.ledger().images_charged == 2
    assert sim.ledger().replays == 0
    assert assert_images_intact(repo) == 2


def test_a_recorded_link_off_the_apis_site_is_not_fetched_to_reuse(
        repo: Repo, sim: RunningSimulator, tmp_path: Path) -> None:
    """A lockfile whose links point off the API's origin (here another port of the same
    host, serving the very bytes): reuse does not fetch them, fails the items with the
    reason, pays nothing, and the next plan prices them honestly."""
    set_up(repo, sim)
    images = {p.name: p.read_bytes() for p in (repo.root / "outputs" / "shop").rglob("*.png")}
    hits: list[str] = []

    class Spy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = next(iter(images.values()))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Spy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        clone = Repo(tmp_path / "clone", repo.env)
        repo.git("clone", "-q", str(repo.root), str(clone.root))
        data = clone.lock(LOCK)
        for entry in data["entries"].values():
            for output in entry["outputs"]:
                output["url"] = f"http://127.0.0.1:{server.server_port}/{output['sha256']}.png"
        clone.write(LOCK, json.dumps(data, indent=2, sort_keys=True) + "\n")
        rename(clone, "shot", "packshot")

        assert plan_json(clone)["counts"]["reuse"] == 2
        done = clone.imgspec("run", MANIFEST, "--base-url", sim.base_url, "--yes")
    finally:
        server.shutdown()
        server.server_close()

    assert done.returncode != 0
    assert "is not the API's; it was not fetched" in done.stdout + done.stderr
    assert hits == []
    assert sim.ledger().images_charged == 2
    after = plan_json(clone)
    assert after["counts"]["reuse"] == 0
    assert after["counts"]["retry"] + after["counts"]["new"] == 2
