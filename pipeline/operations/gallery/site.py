"""The gallery's files: thumbnails (Pillow), ``index.html``, and the export of picked images.

The shell around ``model`` (the gallery's values) and ``page`` (its HTML): it reads the
lockfile, the review file and the images on disk.
Thumbnails are named by the image's sha256 under ``<outputs>/_thumbs/`` (job ids
cannot start with ``_``), so each is made once and shared by identical images. For
outputs in an object store, the images are copied once into the store's local cache,
where the thumbnails and the page are made.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from PIL import Image, UnidentifiedImageError

from pipeline.core.lock.lockfile import Output
from pipeline.errors import ImgspecError
from pipeline.operations.context import project_root
from pipeline.operations.gallery.model import Gallery, ImageFiles, build_gallery
from pipeline.operations.gallery.page import render_gallery
from pipeline.operations.project import Prepared, intact_on_disk
from pipeline.shell.store.confine import Confined, copy_into, export_folder
from pipeline.shell.store.files import write_atomic
from pipeline.shell.store.objectstore import ObjectStore
from pipeline.shell.store.outputs import OutputFolder
from pipeline.shell.store.review import Review, current, read_review, review_path, verdicts

THUMBS = "_thumbs"
THUMB_SIZE = 320  # px, the longer side: sharp at the page's 168 px cells on a 2x screen
PAGE = "index.html"


def thumb_name(sha256: str) -> str:
    """Where an image's thumbnail lives, relative to the output folder."""
    return f"{THUMBS}/{sha256[:2]}/{sha256}.jpg"


def _href(path: str) -> str:
    return quote(path, safe="/=,+")


def image_files(outputs: Iterable[Output], folder: OutputFolder) -> dict[str, ImageFiles]:
    """Thumbnails made (when missing) for every intact output; its files by sha256."""
    present = intact_on_disk(folder)
    todo: dict[str, Path] = {}
    for output in outputs:
        if output.sha256 not in todo and present(output):
            todo[output.sha256] = folder.absolute(output.path)

    def one(item: tuple[str, Path]) -> tuple[str, ImageFiles]:
        sha, full = item
        href = _href(Path(os.path.relpath(full, folder.root)).as_posix())
        thumb = folder.root / thumb_name(sha)
        if folder.stat(str(thumb)) is None and not _make_thumb(full, thumb, folder.checks):
            return sha, ImageFiles(href, href)  # not decodable: the browser may still try
        return sha, ImageFiles(href, _href(thumb_name(sha)))

    # Pillow decodes and resizes outside the GIL: a few threads go several times faster.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return dict(pool.map(one, todo.items()))


def _make_thumb(source: Path, thumb: Path, checks: Confined) -> bool:
    try:
        with Image.open(source) as image:
            image.draft("RGB", (THUMB_SIZE, THUMB_SIZE))  # JPEG: decode at a smaller scale
            image.thumbnail((THUMB_SIZE, THUMB_SIZE))
            small = image.convert("RGB")
        checks.make_folder(str(thumb.parent))  # a linked _thumbs is refused, not written
        temp = thumb.with_name(f".{thumb.name}.{os.getpid()}.part")
        with os.fdopen(checks.create(str(temp)), "wb") as handle:
            small.save(handle, "JPEG", quality=82, optimize=True)
        temp.replace(thumb)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return False
    return True


def store_image_files(outputs: Iterable[Output], store: ObjectStore) -> dict[str, ImageFiles]:
    """For a store: every intact output copied once into its local cache, a thumbnail made
    there; links relative to the cache, where the page of a store's gallery is written."""
    present = store.present()
    checks = Confined(store.cache, label="the store's cache", advice="")
    files: dict[str, ImageFiles] = {}
    for output in outputs:
        if output.sha256 in files or not present(output):
            continue
        local = store.local_file(output.path)
        href = _href(f"objects/{store.absolute(output.path)}")
        thumb = store.cache / thumb_name(output.sha256)
        made = thumb.is_file() or _make_thumb(local, thumb, checks)
        files[output.sha256] = ImageFiles(href, _href(thumb_name(output.sha256)) if made
                                          else href)
    return files


def gallery_of(prepared: Prepared, review: Review | None = None) -> Gallery:
    """The gallery model of a prepared manifest, thumbnails made as needed."""
    if review is None:
        review = read_review(review_path(prepared.paths.manifest))
    outputs = (o for e in prepared.lock.entries.values() for o in e.outputs)
    store = prepared.paths.output_folder()
    if isinstance(store, ObjectStore):
        files = store_image_files(outputs, store)
        present = store.present()
    else:
        folder = prepared.paths.local_folder()
        files = image_files(outputs, folder)
        present = intact_on_disk(folder)
    return build_gallery(prepared.expansion, prepared.lock, prepared.plan, review,
                         locate=lambda output: files.get(output.sha256) if present(output)
                         else None)


def write_gallery(prepared: Prepared) -> tuple[Path, Gallery]:
    """Write ``<outputs>/index.html`` (and thumbnails); its path and what it shows."""
    shown = gallery_of(prepared)
    page = render_gallery(shown)
    path = prepared.paths.outputs / PAGE
    try:
        write_atomic(path, page, durable=False)  # rebuilt from the lockfile at will
    except OSError as exc:
        raise ImgspecError(f"{path}: cannot be written ({exc.strerror})") from exc
    return path, shown


@dataclass(frozen=True, slots=True)
class Exported:
    """What ``export --picked`` copied, and the picks it could not copy (with why)."""

    images: tuple[Path, ...]
    skipped: tuple[tuple[str, str], ...]


def export_picked(prepared: Prepared, dest: Path) -> Exported:
    """Copy every picked image (a pick about a current image) with its ``meta.json`` to ``dest``.

    The layout is the output folder's: ``<dest>/<job>/<instance folder>/<i>.<ext>``.
    """
    store = prepared.paths.output_folder()
    if isinstance(store, ObjectStore):
        return _export_from_store(prepared, store, dest)
    folder = prepared.paths.local_folder()
    present = intact_on_disk(folder)
    into = export_folder(dest, outputs=folder.checks, project=project_root(prepared.paths.manifest))
    review = read_review(review_path(prepared.paths.manifest))
    images: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for decision in verdicts(current(review, prepared.lock), "pick"):
        entry = prepared.lock.entries[decision.key]
        output = entry.outputs[decision.image]
        if not present(output):
            skipped.append((f"{decision.key} #{decision.image}", "its file is missing; "
                            "`imgspec run` downloads it again"))
            continue
        source = folder.absolute(output.path)  # ``present`` checked it by real path
        target = into.root / source.relative_to(folder.root)
        try:
            copy_into(into, str(source), str(target))
            meta = source.parent / "meta.json"
            found = folder.stat(str(meta))
            if found is not None and stat.S_ISREG(found.st_mode):
                copy_into(into, str(meta), str(target.parent / "meta.json"))
        except OSError as exc:
            raise ImgspecError(f"{target}: cannot be written ({exc.strerror})") from exc
        images.append(target)
    return Exported(tuple(images), tuple(skipped))


def _export_from_store(prepared: Prepared, store: ObjectStore, dest: Path) -> Exported:
    """``export_picked`` from an object store: each picked object (and its instance's
    meta.json) copied down to ``dest``, in the store's layout."""
    present = store.present()
    review = read_review(review_path(prepared.paths.manifest))
    images: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for decision in verdicts(current(review, prepared.lock), "pick"):
        output = prepared.lock.entries[decision.key].outputs[decision.image]
        if not present(output):
            skipped.append((f"{decision.key} #{decision.image}", "its object is missing; "
                            "`imgspec run` downloads it again"))
            continue
        rel = store.absolute(output.path)  # confined to the prefix: no ``..``
        target = dest / rel
        try:
            store.fetch(output.path, target)
            store.fetch(posixpath.join(posixpath.dirname(rel), "meta.json"),
                        target.parent / "meta.json")
        except OSError as exc:
            raise ImgspecError(f"{target}: cannot be written ({exc.strerror})") from exc
        images.append(target)
    return Exported(tuple(images), tuple(skipped))
