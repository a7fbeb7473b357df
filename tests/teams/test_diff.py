"""imgspec diff: what a committed change adds, changes and removes, and what it costs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from decimal import Decimal

import pytest
from PIL import Image
from syrupy.assertion import SnapshotAssertion

from pipeline.core.lock.lockfile import Lockfile
from pipeline.core.planning.diff import FieldChange, compare, field_changes
from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import MANIFEST
from tests.teams.conftest import TIMEOUT, Repo
from tests.unit.conftest import Build

PATH = "manifests/shop.yaml"


def png() -> bytes:
    """The e2e project's logo input."""
    buffer = io.BytesIO()
    Image.new("RGB", (320, 320), (30, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def changed(repo: Repo, sim: RunningSimulator) -> Repo:
    """HEAD~1: the e2e manifest, run, lockfile committed. HEAD: a prompt change, a new
    matrix value and a removed job (the logo)."""
    repo.write(PATH, MANIFEST)
    (repo.root / "manifests" / "assets").mkdir(parents=True)
    (repo.root / "manifests" / "assets" / "mark.png").write_bytes(png())
    done = repo.imgspec("run", PATH, "--base-url", sim.base_url, "--yes")
    assert done.returncode == 0, done.stderr
    repo.commit("shop, run")
    text = MANIFEST.replace('"A {{ shop }} called {{ brand }} in {{ season }}"',
                            '"A cosy {{ shop }} called {{ brand }} in {{ season }}"')
    text = text.replace("season: [spring, winter]", "season: [spring, winter, summer]")
    text = text[: text.index("  logo:")]
    repo.write(PATH, text)
    repo.commit("cosier, summer, no logo")
    return repo


def test_diff_shows_exactly_the_change_with_costs_matching_plan(changed: Repo) -> None:
    """The prompt change (4 instances), the new value (2 added) and the removed job show,
    and nothing else; the cost to apply is what `plan` says a run pays."""
    done = changed.imgspec("diff", PATH, "--against", "HEAD~1", "--format", "json")
    assert done.returncode == 0, done.stderr
    diff = json.loads(done.stdout)
    changes = {(i["key"], i["change"]) for i in diff["items"]}
    assert changes == {
        ("gen@shop=bakery,season=spring", "changed"), ("gen@shop=bakery,season=winter", "changed"),
        ("gen@shop=florist,season=spring", "changed"),
        ("gen@shop=florist,season=winter", "changed"),
        ("gen@shop=bakery,season=summer", "added"), ("gen@shop=florist,season=summer", "added"),
        ("logo", "removed")}
    assert {f["field"] for i in diff["items"] for f in i["fields"]} == {"prompt"}
    plan = json.loads(changed.imgspec("plan", PATH, "--json").stdout)
    assert diff["cost"]["to_apply"] == plan["cost"]["total"]
    assert diff["cost"]["by_job"]["gen"]["to_apply"] == plan["cost"]["by_job"]["gen"]
    assert diff["cost"]["by_job"]["night"]["to_apply"] == plan["cost"]["by_job"]["night"]
    assert diff["cost"]["delta"] == round(diff["cost"]["after"] - diff["cost"]["before"], 2)


@pytest.mark.parametrize("fmt", ["text", "json", "markdown"])
def test_diff_formats(changed: Repo, fmt: str, snapshot: SnapshotAssertion) -> None:
    """The text, JSON and markdown (pull-request comment) of the diff, as reviewed."""
    done = changed.imgspec("diff", PATH, "--against", "HEAD~1", "--format", fmt)
    assert done.returncode == 0, done.stderr
    assert done.stdout == snapshot


def test_fail_above_is_a_ci_gate(changed: Repo) -> None:
    """--fail-above exits 3 (after printing the diff) when applying costs more, else 0."""
    over = changed.imgspec("diff", PATH, "--against", "HEAD~1", "--fail-above", "1")
    assert over.returncode == 3
    assert "Cost to apply: ¥2.80" in over.stdout
    assert "above --fail-above ¥1.00" in over.stderr
    assert changed.imgspec("diff", PATH, "--against", "HEAD~1", "--fail-above",
                           "2.8").returncode == 0


def test_no_change_against_head(changed: Repo) -> None:
    """Against HEAD (the default) a clean working tree shows no change and the cost of
    what its lockfile has not done yet."""
    done = changed.imgspec("diff", PATH)
    assert done.returncode == 0, done.stderr
    assert "No instance is added, changed or removed." in done.stdout


def test_invalid_manifest_names_its_side(repo: Repo) -> None:
    """An invalid manifest exits 1 and says which side: the revision or the working tree."""
    repo.write(PATH, MANIFEST.replace("logo:\n", "logo:\n    size: 9K\n")
               .replace("    image_urls: [assets/mark.png]\n", ""))
    repo.commit("broken")
    repo.write(PATH, MANIFEST.replace("  logo:\n", "  xlogo:\n")
               .replace("    image_urls: [assets/mark.png]\n", ""))
    at_ref = repo.imgspec("diff", PATH)
    assert at_ref.returncode == 1
    assert at_ref.stderr.startswith("error: the manifest at HEAD is invalid:")
    assert "HEAD:manifests/shop.yaml:" in at_ref.stderr
    repo.write(PATH, "version: 1\nname: shop\njobs: {}\n")
    here = repo.imgspec("diff", PATH)
    assert here.returncode == 1
    assert here.stderr.startswith("error: the manifest in the working tree is invalid:")


def test_unknown_revision_and_new_manifest(repo: Repo) -> None:
    """An unknown revision is a usage error; a manifest not at the revision is all added."""
    repo.commit("empty")
    repo.write(PATH, "version: 1\nname: s\njobs:\n  a: {prompt: x, model: wan2.7-image}\n")
    assert repo.imgspec("diff", PATH, "--against", "nope").returncode == 2
    done = repo.imgspec("diff", PATH, "--format", "json")
    assert json.loads(done.stdout)["items"][0]["change"] == "added"


def test_field_changes_old_to_new() -> None:
    """Fields that differ, in name order; absent on one side is None."""
    assert field_changes({"prompt": "a", "n": 1, "size": "1K"},
                         {"prompt": "b", "n": 1, "seed": 3}) == (
        FieldChange("prompt", "a", "b"), FieldChange("seed", None, 3),
        FieldChange("size", "1K", None))


def test_compare_prices_each_side_with_its_own_table(build: Build) -> None:
    """A pricing: change alone changes no instance but changes the spec's cost."""
    body = "defaults: {model: wan2.7-image}\njobs:\n  a: {prompt: x}\n"
    before = build(body)
    after = build("pricing: {wan2.7-image: 0.5}\n" + body)
    diff = compare(before, after, Lockfile("m.yaml"), against="HEAD")
    assert diff.items == ()
    assert (diff.before, diff.after, diff.to_apply) == (
        Decimal("0.2"), Decimal("0.5"), Decimal("0.5"))
    assert diff.unchanged_to_run == 1


def test_include_rows_are_read_at_the_revision(repo: Repo) -> None:
    """A CSV the manifest includes is read from git at REF: rows added in the working tree
    show as added, an edited row (its values are in its key) as removed and added."""
    repo.write(PATH, "version: 1\nname: rows\ndefaults: {model: wan2.7-image}\njobs:\n"
               "  card:\n    prompt: \"{{ title }}\"\n    matrix: {include: rows.csv}\n")
    repo.write("manifests/rows.csv", "sku,title\na1,Mug\nb2,Bowl\n")
    repo.commit("rows")
    repo.write("manifests/rows.csv", "sku,title\na1,Mug\nb2,Big bowl\nc3,Plate\n")
    done = repo.imgspec("diff", PATH, "--format", "json")
    assert done.returncode == 0, done.stderr
    items = {i["key"]: i for i in json.loads(done.stdout)["items"]}
    assert {k: i["change"] for k, i in items.items()} == {
        "card@sku=b2,title=Big bowl": "added", "card@sku=c3,title=Plate": "added",
        "card@sku=b2,title=Bowl": "removed"}


# Runs ``argv[1:]`` and prints the peak resident memory (KiB) of it and its children
# (imgspec, and the git commands it runs).
PEAK_RSS = ("import resource, subprocess, sys\n"
            "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "sys.stderr.write(done.stderr)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.exit(done.returncode)\n")


def test_a_blob_over_the_limit_is_refused_before_it_is_read(repo: Repo) -> None:
    """A CSV at REF larger than an input may be is refused by its size: the blob is never
    read, so the memory of diff stays far below the blob's size."""
    repo.write(PATH, "version: 1\nname: rows\ndefaults: {model: wan2.7-image}\njobs:\n"
               "  card:\n    prompt: \"{{ title }}\"\n    matrix: {include: rows.csv}\n")
    block = f"a1,{'x' * 125}\n" * 8192  # 1 MiB
    size = 128 * len(block)  # five times the 25 MiB an input may have
    with (repo.root / "manifests" / "rows.csv").open("w") as out:
        out.write("sku,title\n")
        for _ in range(128):
            out.write(block)
    repo.commit("rows, too many")
    repo.write("manifests/rows.csv", "sku,title\na1,Mug\n")
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "pipeline",
                           "diff", PATH, "--against", "HEAD"], cwd=repo.root, env=repo.env,
                          text=True, capture_output=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 1
    assert "HEAD:manifests/rows.csv: " in done.stderr
    assert "is larger than the 26,214,400 bytes imgspec reads" in done.stderr
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    assert peak_kib * 1024 < size / 2
