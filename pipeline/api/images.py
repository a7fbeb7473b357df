"""Looking at the images: the gallery page, the review server, exporting the picks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pipeline.api.source import ManifestSource, place_of
from pipeline.operations.gallery.model import Gallery
from pipeline.operations.gallery.site import Exported


def gallery(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None,
            simulate: bool = False, output_dir: str | os.PathLike[str] | None = None
            ) -> tuple[Path, Gallery]:
    """Write ``outputs/<name>/index.html`` (contact sheets and grids); the page and what
    it shows. ``output_dir``: a folder or a store URL instead of the manifest's (the
    page of a store is made in its local cache)."""
    from pipeline.operations.gallery.site import write_gallery
    from pipeline.operations.project import prepare

    return write_gallery(prepare(place_of(manifest, root=root, simulate=simulate,
                                          output_dir=output_dir)))


def export(manifest: ManifestSource, dest: str | os.PathLike[str], *,
           root: str | os.PathLike[str] | None = None, simulate: bool = False,
           output_dir: str | os.PathLike[str] | None = None) -> Exported:
    """Copy the images picked in review, with their ``meta.json``, into ``dest``
    (from a store when ``output_dir`` or the manifest's names one)."""
    from pipeline.operations.gallery.site import export_picked
    from pipeline.operations.project import prepare

    return export_picked(prepare(place_of(manifest, root=root, simulate=simulate,
                                          output_dir=output_dir)),
                         Path(os.fspath(dest)))


def review(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None,
           simulate: bool = False, port: int = 0,
           output_dir: str | os.PathLike[str] | None = None,
           on_ready: Callable[[str, Path], None] | None = None) -> None:
    """Serve the review page on 127.0.0.1 until SIGINT/SIGTERM (or KeyboardInterrupt).

    ``on_ready(url, review_file)`` once the port is bound; decisions are written to
    the review file beside the manifest as they are made. A manifest that does not
    plan fails before anything is served.
    """
    import asyncio

    from pipeline.operations.gallery.server import ReviewSession, serve
    from pipeline.operations.project import prepare

    place = place_of(manifest, root=root, simulate=simulate, output_dir=output_dir)
    prepare(place)  # a manifest that does not plan fails here, not later
    session = ReviewSession(place)

    def ready(url: str) -> None:
        if on_ready is not None:
            on_ready(url, session.path)

    asyncio.run(serve(session, port=port, on_ready=ready))
