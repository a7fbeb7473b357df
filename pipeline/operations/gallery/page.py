"""The gallery page: one self-contained HTML file (style, script and data inline).

Pure: a ``Gallery`` in, the page's text out. The same page is written by
``imgspec gallery`` (static, opens from ``file://``) and served by ``imgspec
review`` (``review=True``: keys record decisions through the server).

The page carries a Content-Security-Policy that allows its own inline style and
script (by hash) and images from its own folder or server, and nothing else: no
other script, no loads from elsewhere. ``frame-ancestors`` cannot be given in a
``<meta>`` policy, so the static page can still be framed; the review server
forbids framing with headers.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from pipeline.operations.gallery.model import Axis, Entry, Gallery, JobView


@cache
def _asset(name: str) -> str:
    return resources.files("pipeline.operations.gallery").joinpath(name).read_text(encoding="utf-8")


def _sha256_source(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def gallery_policy(*, review: bool) -> str:
    """The page's Content-Security-Policy: its own style and script, images, and the API."""
    return "; ".join([
        "default-src 'none'",
        f"script-src {_sha256_source(_asset('page.js'))}",
        f"style-src {_sha256_source(_asset('page.css'))}",
        # file: for the static page opened from disk, where not every browser counts
        # the page's own folder as 'self'; the served page needs only its own origin.
        "img-src 'self'" if review else "img-src 'self' file:",
        *(["connect-src 'self'"] if review else []),
        "base-uri 'none'",
        "form-action 'none'",
    ])


def gallery_data(gallery: Gallery, *, review: bool) -> dict[str, Any]:
    """The page's data: compact (value indexes, picture tuples), since it may hold 10,000s."""
    return {
        "name": gallery.name,
        "manifest": gallery.manifest,
        "currency": gallery.currency,
        "review": review,
        "jobs": [_job(job) for job in gallery.jobs],
    }


def _job(job: JobView) -> dict[str, Any]:
    index = [{v: i for i, v in enumerate(a.values)} for a in job.axes]
    return {
        "id": job.id,
        "axes": [{"name": a.name, "kind": a.kind, "values": list(a.values)} for a in job.axes],
        "entries": [_entry(e, job.axes, index) for e in job.entries],
    }


def _entry(entry: Entry, axes: tuple[Axis, ...], index: list[dict[str, int]]) -> dict[str, Any]:
    values = dict(entry.values)
    return {
        "k": entry.key,
        "st": entry.state,
        "v": [index[i][values[a.name]] for i, a in enumerate(axes) if a.kind != "image"],
        "p": entry.prompt,
        "r": dict(entry.request),
        "sd": entry.seed,
        "t": entry.task_id,
        "c": _number(entry.cost),
        "pc": _number(entry.planned),
        "tm": entry.time,
        "e": entry.error,
        "note": entry.note,
        "im": [[None, None, p.sha256, p.width, p.height, p.verdict] if p.files is None else
               [p.files.href, p.files.thumb, p.sha256, p.width, p.height, p.verdict]
               for p in entry.pictures],
    }


def _number(amount: Decimal) -> float:
    return float(amount)


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element: no ``</script>`` or ``<!--`` can end it early."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_gallery(gallery: Gallery, *, review: bool = False) -> str:
    """The whole page as text."""
    title = f"{gallery.name} · imgspec {'review' if review else 'gallery'}"
    data = _script_json(gallery_data(gallery, review=review))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="imgspec">
<meta http-equiv="Content-Security-Policy" content="{html.escape(gallery_policy(review=review))}">
<title>{html.escape(title)}</title>
<style>{_asset("page.css")}</style>
</head>
<body>
<header>
  <h1>{html.escape(gallery.name)}</h1><span class="manifest">{html.escape(gallery.manifest)}</span>
  <div class="controls">
    <label>job <select id="job"></select></label>
    <span><button id="view-grid" type="button">X/Y grid</button>
    <button id="view-sheet" type="button">contact sheet</button></span>
    <span id="axes"><label>X <select id="x-axis"></select></label>
    <label>Y <select id="y-axis"></select></label></span>
    <span id="selectors"></span>
  </div>
  <div class="controls"><span id="counts"></span>
    <span id="review-help" hidden><kbd>p</kbd> pick · <kbd>x</kbd> reject ·
    <kbd>r</kbd> re-roll · <kbd>u</kbd> undo (on the open or focused image)</span>
    <span id="review-status" role="status"></span></div>
</header>
<main id="view"></main>
<div id="lightbox" hidden><div id="lb-stage"></div><aside id="lb-info"></aside>
<button id="lb-close" type="button" title="close (Esc)">✕</button></div>
<script type="application/json" id="gallery-data">{data}</script>
<script>{_asset("page.js")}</script>
</body>
</html>
"""
