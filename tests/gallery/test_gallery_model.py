"""The gallery model: every instance in its state, axes to lay grids on, decisions shown."""

from __future__ import annotations

from dataclasses import asdict, replace
from decimal import Decimal

from syrupy.assertion import SnapshotAssertion

from pipeline.core.expansion.identity import fingerprint
from pipeline.core.expansion.instances import Expansion
from pipeline.core.lock.lockfile import LockEntry, Lockfile, Output
from pipeline.core.planning.plan import make_plan, resolved_request
from pipeline.operations.gallery.model import Gallery, ImageFiles, build_gallery
from pipeline.operations.gallery.page import gallery_data, render_gallery
from pipeline.shell.store.review import Decision, Review, reroll_keys
from tests.unit.conftest import Build

MANIFEST = """
defaults: {model: wan2.7-image}
jobs:
  gen:
    prompt: "{{ shop }} in {{ season }}"
    n: 2
    size: "{{ '2K' if shop == 'b' else '1K' }}"
    matrix:
      shop: [a, b]
      season: [spring, winter]
      include: [{shop: c, season: autumn, model: wan2.7-image-pro}]
  night:
    prompt: night
    image_urls: [{from: gen, where: {season: winter}, image: 0}]
  solo:
    prompt: solo
  fresh:
    prompt: fresh
"""
GONE = "gen@shop=b,season=spring"


def entry(exp: Expansion, key: str, tag: str, **changes: object) -> LockEntry:
    """A done lock entry for ``key`` whose images' hashes start with ``tag``."""
    inst = exp.by_key()[key]
    request = resolved_request(inst, {})
    assert request is not None
    done = LockEntry(
        key=key, job=inst.job, fingerprint=fingerprint(request), status="done",
        request=request, seed=inst.seed, task_id=f"task_{tag}", cost=Decimal("0.40"),
        updated_at="2026-11-30T01:00:00Z",
        outputs=tuple(Output(f"../outputs/t/{tag}/{i}.png", tag * 16 + f"{i:032d}", 100,
                             64, 48) for i in range(inst.n)))
    return replace(done, **changes)  # type: ignore[arg-type]


def scene(build: Build) -> tuple[Expansion, Lockfile, Review]:
    """One instance in each state the gallery shows, and a few decisions."""
    exp = build(MANIFEST)
    entries = [
        entry(exp, "gen@shop=a,season=spring", "a1"),
        entry(exp, "gen@shop=a,season=winter", "a2", status="failed",
              last_error="the prompt was refused by the content filter", outputs=()),
        entry(exp, GONE, "b1"),
        entry(exp, "gen@shop=b,season=winter", "b2"),
        entry(exp, "gen@shop=c,season=autumn,model=wan2.7-image-pro", "c1", status="running",
              outputs=()),
        entry(exp, "solo", "s1", fingerprint="sha256:old"),
    ]
    review = Review((
        Decision("gen@shop=a,season=spring", 0, "a1" * 16 + f"{0:032d}", "pick"),
        Decision("gen@shop=a,season=spring", 1, "ff" * 32, "reject"),  # an older image
        Decision("gen@shop=b,season=winter", 1, "b2" * 16 + f"{1:032d}", "reroll"),
    ))
    return exp, Lockfile("m.yaml", {e.key: e for e in entries}), review


def gallery(build: Build) -> Gallery:
    """The scene's gallery; GONE's files are missing on disk."""
    exp, lock, review = scene(build)

    def present(output: Output) -> bool:
        return "/b1/" not in output.path

    plan = make_plan(exp, lock, present=present, rerolls=reroll_keys(review, lock))
    return build_gallery(exp, lock, plan, review, locate=lambda o: ImageFiles(
        o.path, f"_thumbs/{o.sha256[:4]}.jpg") if present(o) else None)


def test_every_instance_is_shown_in_its_state(build: Build) -> None:
    """done, failed, blocked, waiting, missing, stale, reroll, running and pending all appear."""
    shown = gallery(build)
    states = {e.key: e.state for j in shown.jobs for e in j.entries}
    assert states == {
        "gen@shop=a,season=spring": "done",
        "gen@shop=a,season=winter": "failed",
        GONE: "missing",
        "gen@shop=b,season=winter": "reroll",
        "gen@shop=c,season=autumn,model=wan2.7-image-pro": "running",
        "night@shop=a,season=winter": "blocked",
        "night@shop=b,season=winter": "waiting",
        "solo": "stale",
        "fresh": "pending",
    }


def test_a_slot_without_an_image_keeps_its_place(build: Build) -> None:
    """A failed n=2 instance still has two slots, with no files, and the API's message."""
    failed = next(e for j in gallery(build).jobs for e in j.entries if e.state == "failed")
    assert [p.files for p in failed.pictures] == [None, None]
    assert failed.error == "the prompt was refused by the content filter"


def test_axes_are_matrix_axes_varying_fields_and_the_image_index(build: Build) -> None:
    """gen lays out on shop, season, model (include; the request's where a row lacks it),
    size (varies) and image (n=2)."""
    gen = gallery(build).jobs[0]
    assert [(a.name, a.kind, a.values) for a in gen.axes] == [
        ("shop", "matrix", ("a", "b", "c")),
        ("season", "matrix", ("spring", "winter", "autumn")),
        ("model", "matrix", ("wan2.7-image-pro", "wan2.7-image")),
        ("size", "field", ("1K", "2K")),
        ("image", "image", ("0", "1")),
    ]


def test_only_current_decisions_are_shown(build: Build) -> None:
    """A pick about the current image shows; a reject about an older image does not."""
    done = gallery(build).jobs[0].entries[0]
    assert [p.verdict for p in done.pictures] == ["pick", None]


def test_the_model_snapshot(build: Build, snapshot: SnapshotAssertion) -> None:
    """The whole model, and the page data built from it, as the page receives them."""
    shown = gallery(build)
    assert asdict(shown) == snapshot(name="model")
    assert shown.counts() == snapshot(name="counts")
    assert gallery_data(shown, review=False) == snapshot(name="page-data")


def test_the_page_is_self_contained_and_escapes_its_data(build: Build) -> None:
    """One HTML file: style and script inline, no external URL, no way out of the script."""
    exp, lock, review = scene(build)
    hostile = replace(lock.entries["gen@shop=a,season=winter"],
                      last_error="</script><script>alert(1)</script>")
    lock = lock.with_entry(hostile)
    plan = make_plan(exp, lock, present=lambda o: True)
    page = render_gallery(build_gallery(exp, lock, plan, review, locate=lambda o: None))
    assert page.count("</script>") == 2
    assert "http://" not in page
    assert "https://" not in page
    assert "<style>" in page
