"""The ``imgspec`` command line: parse, call the core, print. Nothing else lives here."""

from __future__ import annotations

import json
import os
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from pipeline import __version__
from pipeline.errors import BudgetExceeded, ImgspecError, UsageError
from pipeline.expand import expand
from pipeline.graph import render_graph
from pipeline.manifest import load_manifest
from pipeline.project import prepare
from pipeline.report import plan_json, plan_text

EXIT_INTERNAL = 70

manifest_argument = click.argument(
    "manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


class _Group(click.Group):
    """Turns every ``ImgspecError`` into its message and exit code: no traceback for users."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ImgspecError as exc:
            click.echo(f"error: {exc}" if exc.exit_code != 1 else str(exc), err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get("IMGSPEC_DEBUG"):
                raise
            click.echo(f"internal error: {type(exc).__name__}: {exc}\n"
                       "This is a bug in imgspec; rerun with IMGSPEC_DEBUG=1 for details "
                       "and report it.", err=True)
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="imgspec")
def cli() -> None:
    """imgspec: declarative, reproducible, budgeted batches for the wan2.7 image API.

    Write a manifest, `validate` it, read the `plan` (exact cost, no spending),
    then `run` it; rerun to do only what failed or changed.
    """


def _max_cost(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise UsageError(f"--max-cost {value!r} is not a number; write e.g. --max-cost 12.5"
                         ) from None
    if not amount.is_finite() or amount < 0:
        raise UsageError("--max-cost must be a number of at least 0")
    return amount


@cli.command()
@click.argument("manifests", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(manifests: tuple[Path, ...]) -> None:
    """Check manifests against the schema and the API's rules (exit 0 valid, 1 invalid)."""
    failed = 0
    for path in manifests:
        try:
            manifest, workspace = load_manifest(path)
            expansion = expand(manifest, workspace)
        except ImgspecError as exc:
            failed += 1
            click.echo(str(exc), err=True)
            continue
        for warning in expansion.warnings:
            click.echo(warning.format(), err=True)
        click.echo(f"{path}: valid ({len(expansion.instances):,} instances in "
                   f"{len(expansion.job_order)} jobs)")
    if failed:
        sys.exit(1)


@cli.command()
@manifest_argument
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--max-cost", metavar="X", help="Budget in CNY, overriding the manifest's.")
@click.option("--simulate", is_flag=True, help="Plan against the --simulate lockfile.")
def plan(manifest: Path, as_json: bool, max_cost: str | None, simulate: bool) -> None:
    """Show what a run would do and cost (exit 0 ok, 1 invalid, 3 over budget)."""
    prepared = prepare(manifest, simulate=simulate, max_cost=_max_cost(max_cost))
    the_plan = prepared.plan
    if as_json:
        click.echo(json.dumps(plan_json(the_plan), indent=2, ensure_ascii=False))
    else:
        click.echo(plan_text(the_plan), nl=False)
    if not the_plan.within_budget:
        raise BudgetExceeded("the plan is over budget; nothing was spent")


@cli.command()
@manifest_argument
@click.option("--job", "jobs", multiple=True, metavar="ID", help="Only this job (repeatable).")
def render(manifest: Path, jobs: tuple[str, ...]) -> None:
    """Print the exact request bodies, one per instance, without touching the network.

    Local images appear as file:PATH#sha256=..., data: URIs by their hash, and
    upstream images as upstream:KEY#INDEX (they exist only after a run).
    """
    loaded, workspace = load_manifest(manifest)
    expansion = expand(loaded, workspace)
    unknown = [j for j in jobs if j not in loaded.jobs]
    if unknown:
        raise UsageError(f"unknown job {unknown[0]!r}; jobs: {', '.join(loaded.jobs)}")
    requests = {
        inst.key: inst.request
        for inst in expansion.instances
        if not jobs or inst.job in jobs
    }
    click.echo(json.dumps(requests, indent=2, ensure_ascii=False))


@cli.command()
@manifest_argument
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]),
              default="text", show_default=True, help="Output format.")
def graph(manifest: Path, fmt: str) -> None:
    """Draw the job graph with instance counts (text, Mermaid or Graphviz dot)."""
    loaded, workspace = load_manifest(manifest)
    expansion = expand(loaded, workspace)
    click.echo(render_graph(loaded, expansion.counts(), fmt), nl=False)


def _add_optional_commands() -> None:
    try:
        from pipeline.simulator.cli import simulator
    except ImportError:  # pragma: no cover - the simulator ships with the package
        return
    cli.add_command(simulator)


_add_optional_commands()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="imgspec")
