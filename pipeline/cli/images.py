"""The commands that look at the images: ``gallery``, ``review`` and ``export``."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from pipeline import api
from pipeline.cli.options import manifest_argument, output_dir_option, simulate_option
from pipeline.errors import LockfileError


@click.command()
@manifest_argument
@simulate_option("The gallery of the --simulate outputs.")
@click.option("--open", "open_page", is_flag=True, help="Open the page in the browser.")
@output_dir_option
def gallery(manifest: Path, simulate: bool, open_page: bool, output_dir: str | None) -> None:
    """Write outputs/<name>/index.html: contact sheets and X/Y grids of every instance.

    One self-contained file (thumbnails beside it, under _thumbs/): opens from
    file://, works as a CI artifact. Shows the review decisions already recorded.
    """
    path, shown = api.gallery(manifest, simulate=simulate, output_dir=output_dir)
    counts = {k: v for k, v in shown.counts().items() if v}
    click.echo(f"Gallery: {path} ({', '.join(f'{v:,} {k}' for k, v in counts.items())})")
    if open_page:
        import webbrowser

        webbrowser.open(path.as_uri())


@click.command()
@manifest_argument
@simulate_option("Review the --simulate outputs.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--open", "open_page", is_flag=True, help="Open the page in the browser.")
@output_dir_option
def review(manifest: Path, simulate: bool, port: int, open_page: bool,
           output_dir: str | None) -> None:
    """Serve the gallery on 127.0.0.1 with keys to pick, reject or re-roll images.

    p pick, x reject, r re-roll, u undo (on the open or focused image). Each
    decision is written at once to <manifest stem>.review.yaml beside the
    manifest; `plan` and `run` then re-roll what was marked (a paid new
    generation with a new seed), and `export --picked` copies the picks.
    """

    def ready(url: str, decisions: Path) -> None:
        click.echo(f"Reviewing {manifest} at {url}\nDecisions are written to {decisions}; "
                   "Ctrl-C stops.")
        sys.stdout.flush()
        if open_page:
            import webbrowser

            webbrowser.open(url)

    with contextlib.suppress(KeyboardInterrupt):
        api.review(manifest, simulate=simulate, port=port, output_dir=output_dir,
                   on_ready=ready)


@click.command()
@manifest_argument
@click.option("--picked", "dest", required=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Copy the picked images (with their meta.json) into DIR.")
@simulate_option("Export from the --simulate outputs.")
@output_dir_option
def export(manifest: Path, dest: Path, simulate: bool, output_dir: str | None) -> None:
    """Copy the images picked in review, with their meta.json, for hand-off.

    A pick applies only to the image it was made about (its sha256): picks of
    images since replaced are not exported. Exit 1 when a picked file is missing.
    """
    done = api.export(manifest, dest, simulate=simulate, output_dir=output_dir)
    for name, why in done.skipped:
        click.echo(f"not exported: {name}: {why}", err=True)
    click.echo(f"{len(done.images):,} picked image(s) copied to {dest}")
    if done.skipped:
        raise LockfileError(f"{len(done.skipped)} picked image(s) are missing")
