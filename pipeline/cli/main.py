"""The ``imgspec`` command line: parse, call the API (``pipeline.api``), print (``pipeline.views``).

Nothing else lives here. Each command imports what it needs when it runs (the
core: YAML, jsonschema, Jinja; the run layer: aiohttp, stamina, rich), so
``imgspec --help`` and every command start with only click loaded.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import click

from pipeline import __version__, api
from pipeline.cli.options import (
    Selecting,
    balance_unit_option,
    base_url_option,
    checked_base_url,
    json_option,
    lockfile_option,
    manifest_argument,
    max_cost_option,
    money_option,
    output_dir_option,
    rehash_option,
    selection_options,
    simulate_option,
)
from pipeline.errors import (
    EXIT_CODES,
    BudgetExceeded,
    ImgspecError,
    LockfileError,
    ManifestError,
    UsageError,
)
from pipeline.simulator.cli import simulator

if TYPE_CHECKING:
    from pipeline.api import Plan, RunEvent
    from pipeline.views.graph import GraphFormat
    from pipeline.views.progress import Reporter

# pipeline.views.graph.GRAPH_FORMATS, written out: click needs it when the command is
# declared, and importing the graph views for it would load the core (tested equal).
GRAPH_FORMATS = ("text", "mermaid", "dot")

EXIT_INTERNAL = 70
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left


class _Group(click.Group):
    """Turns every ``ImgspecError`` into its message and exit code: no traceback for users."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ImgspecError as exc:
            # Diagnostics carry "error:" on each of their own FILE:LINE:COL lines.
            click.echo(str(exc) if isinstance(exc, ManifestError) else f"error: {exc}",
                       err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            # The reader went away (`imgspec plan --json | head`): nothing is wrong, and
            # nothing more can be printed. Python would complain again when it flushes
            # stdout at exit, so stdout is pointed at /dev/null first.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(EXIT_PIPE)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get("IMGSPEC_DEBUG"):
                raise
            click.echo(f"internal error: {type(exc).__name__}: {exc}\n"
                       "This is a bug in imgspec; rerun with IMGSPEC_DEBUG=1 for details "
                       "and report it.", err=True)
            ctx.exit(EXIT_INTERNAL)  # EXIT_CODES' 70


def exit_code_table() -> str:
    """The exit statuses as a block click prints as written (``\\b``)."""
    return "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {meaning}"
                                          for code, meaning in EXIT_CODES)


@click.group(cls=_Group, epilog=exit_code_table())
@click.version_option(__version__, prog_name="imgspec")
def cli() -> None:
    """imgspec: declarative, reproducible, budgeted batches for the wan2.7 image API.

    Write a manifest, `validate` it, read the `plan` (exact cost, no spending),
    then `run` it; rerun to do only what failed or changed.
    """



@cli.command()
@click.argument("manifests", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(manifests: tuple[Path, ...]) -> None:
    """Check manifests against the schema and the API's rules (exit 0 valid, 1 invalid)."""
    failed = 0
    for path in manifests:
        try:
            checked = api.check(path)
        except ImgspecError as exc:
            failed += 1
            click.echo(str(exc), err=True)
            continue
        for warning in checked.warnings:
            click.echo(warning.format(), err=True)
        click.echo(f"{path}: valid ({checked.instances:,} instances in "
                   f"{checked.jobs} jobs)")
    if failed:
        sys.exit(1)


@cli.command()
@manifest_argument
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@max_cost_option
@simulate_option("Plan against the --simulate lockfile.")
@lockfile_option
@rehash_option
@output_dir_option
@selection_options
def plan(manifest: Path, as_json: bool, max_cost: str | None, simulate: bool,
         lockfile: Path | None, rehash: bool, output_dir: str | None,
         selection: Selecting) -> None:
    """Show what a run would do and cost (exit 0 ok, 1 invalid, 2 usage, 3 over budget).

    Takes the same --job/--where/--only-failed/--shard as `run`, and shows the same
    plan: with --shard, that shard's own work and cost.
    """
    from pipeline.views.plan import plan_text, write_plan_json
    from pipeline.views.plan_stream import write_plan_stream

    narrows = bool(selection["jobs"] or selection["where"] or selection["only_failed"]
                   or selection["shard"])
    if as_json and not narrows:
        # The whole plan, as JSON: streamed, never held (a million instances fit).
        head = write_plan_stream(api.plan_items(manifest, simulate=simulate,
                                                max_cost=money_option("--max-cost", max_cost),
                                                lockfile=lockfile, rehash=rehash,
                                                output_dir=output_dir),
                                 sys.stdout.write)
        if not head.within_budget:
            raise BudgetExceeded("the plan is over budget; nothing was spent",
                                 cost=head.tally.total, budget=head.budget)
        return
    if selection["shard"] is not None and not as_json:
        from pipeline.views.teams import shard_note

        shard = api.shard_of(manifest, selection["shard"], simulate=simulate,
                             lockfile=lockfile)
        click.echo(shard_note(shard.shard, shard.path, shard.main))
    the_plan = api.plan(manifest, simulate=simulate,
                        max_cost=money_option("--max-cost", max_cost), lockfile=lockfile,
                        rehash=rehash, output_dir=output_dir, **selection)
    if as_json:
        write_plan_json(the_plan, sys.stdout.write)
    else:
        click.echo(plan_text(the_plan), nl=False)
    if not the_plan.within_budget:
        raise BudgetExceeded("the plan is over budget; nothing was spent",
                             cost=the_plan.total, budget=the_plan.budget)


@cli.command()
@manifest_argument
@click.option("--job", "jobs", multiple=True, metavar="ID", help="Only this job (repeatable).")
def render(manifest: Path, jobs: tuple[str, ...]) -> None:
    """Print the exact request bodies, one per instance, without touching the network.

    Local images appear as file:PATH#sha256=..., data: URIs by their hash, and
    upstream images as upstream:KEY#INDEX (they exist only after a run).
    """
    click.echo(json.dumps(api.requests(manifest, jobs=jobs), indent=2, ensure_ascii=False))


@cli.command()
@manifest_argument
@click.option("--format", "fmt", type=click.Choice(GRAPH_FORMATS),
              default="text", show_default=True, help="Output format.")
def graph(manifest: Path, fmt: GraphFormat) -> None:
    """Draw the job graph with instance counts (text, Mermaid or Graphviz dot)."""
    from pipeline.views.graph import render_graph

    jobs = api.graph(manifest)
    click.echo(render_graph(jobs.name, jobs.jobs, jobs.edges, jobs.counts, fmt), nl=False)


@cli.command()
@manifest_argument
@simulate_option("Run against an in-process simulator: no key, no cost, own lockfile/outputs.")
@base_url_option()
@click.option("--concurrency", type=click.IntRange(1, 1000), default=8, show_default=True,
              help="Tasks in flight at once.")
@click.option("--max-rate", type=click.FloatRange(min=0.1), default=None,
              help="A hard cap on requests per second (all kinds). Without it, submissions "
              "and polls are unbounded until the API answers 429, then adapt to it.")
@selection_options
@max_cost_option
@click.option("--task-timeout", type=click.FloatRange(min=1), default=1800.0,
              show_default=True, help="Seconds to poll one task before leaving it to the "
              "next run.")
@click.option("--yes", is_flag=True, help="Do not ask before spending.")
@click.option("--json", "as_json", is_flag=True, help="Emit one JSON event per line.")
@lockfile_option
@rehash_option
@output_dir_option
@click.option("--ignore-balance", is_flag=True,
              help="Do not check the account's balance (GET /v1/balance) before submitting.")
@balance_unit_option
def run(manifest: Path, simulate: bool, base_url: str, concurrency: int, max_rate: float | None,
        selection: Selecting, max_cost: str | None, task_timeout: float, yes: bool,
        as_json: bool, lockfile: Path | None, rehash: bool, output_dir: str | None,
        ignore_balance: bool, balance_unit: str | None) -> None:
    """Run what the plan says: submit, poll, download; rerun to do only what is left.

    Exit 0 all done, 1 invalid manifest or lockfile, 2 usage error (a wrong base URL
    too), 3 over budget, 4 items failed or unfinished, 5 another run holds this manifest,
    6 the API refused the key or cannot be connected to, 7 the balance ran out (top up,
    run again), 8 the balance cannot cover the plan (nothing submitted), 130 interrupted.
    """
    from pipeline.api.source import environment_key
    from pipeline.views.plan import plan_text, spend_question
    from pipeline.views.progress import run_note, run_summary

    api_key = None
    if not simulate:  # --simulate talks to its own simulator, whatever the option says
        base_url = checked_base_url(base_url)
        api_key = environment_key()
        if not yes and not sys.stdin.isatty():
            raise UsageError("refusing to spend without confirmation: pass --yes "
                             "(there is no terminal to ask on)")
    out = sys.stderr if as_json else sys.stdout
    progress = _Progress(as_json)

    def planned(the_plan: Plan) -> None:
        progress.plan = the_plan
        if not as_json:
            click.echo(plan_text(the_plan), nl=False)

    def confirm(the_plan: Plan) -> bool:
        return click.confirm(spend_question(the_plan), default=False)

    result = api.run(manifest, simulate=simulate, base_url=base_url, api_key=api_key,
                     concurrency=concurrency, max_rate=max_rate, task_timeout=task_timeout,
                     max_cost=money_option("--max-cost", max_cost), lockfile=lockfile,
                     rehash=rehash, ignore_balance=ignore_balance, balance_unit=balance_unit,
                     output_dir=output_dir, confirm=None if simulate or yes else confirm,
                     on_plan=planned,
                     on_note=lambda note: click.echo(run_note(note), file=out, nl=False),
                     on_event=progress, **selection)
    if result.plan is None or not result.plan.has_work:
        return
    assert result.outputs is not None
    click.echo(run_summary(result, result.plan.currency, result.outputs), file=out, nl=False)
    error = api.run_error(result)
    if error is not None:
        raise error


class _Progress:
    """The run's reporter, made once the plan is known (its currency and size) and
    entered around the execution alone."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.plan: Plan | None = None
        self.reporter: Reporter | None = None

    def __call__(self, event: RunEvent) -> None:
        assert self.reporter is not None
        self.reporter(event)

    def __enter__(self) -> _Progress:
        assert self.plan is not None
        self.reporter = _reporter(self.as_json, self.plan.currency, len(self.plan.items))
        self.reporter.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self.reporter is not None
        self.reporter.__exit__(kind, exc, tb)


def _reporter(as_json: bool, currency: str, total: int) -> Reporter:
    from pipeline.views.progress import JsonReporter, LiveReporter, PlainReporter

    if as_json:
        return JsonReporter(currency, sys.stdout)
    if sys.stdout.isatty():
        from rich.console import Console

        return LiveReporter(currency, Console(), total)
    return PlainReporter(currency, sys.stdout)


@cli.command()
@manifest_argument
@simulate_option("Read the --simulate lockfile.")
@json_option
@lockfile_option
def status(manifest: Path, simulate: bool, as_json: bool, lockfile: Path | None) -> None:
    """What the lockfile says: counts, money charged, failures, tasks in progress.

    Reads only the lockfile: works on a manifest that no longer validates.
    """
    from pipeline.views.status import status_json, status_text

    report = api.status(manifest, simulate=simulate, lockfile=lockfile)
    if as_json:
        click.echo(json.dumps(status_json(report), indent=2, ensure_ascii=False))
    else:
        click.echo(status_text(report), nl=False)


@cli.command()
@manifest_argument
@simulate_option("Check the --simulate outputs.")
@lockfile_option
@output_dir_option
def verify(manifest: Path, simulate: bool, lockfile: Path | None,
           output_dir: str | None) -> None:
    """Re-hash every output and check index.json (exit 0 intact, 1 missing or changed).

    Needs only the manifest's name: and output_dir:, so it works on a manifest that
    no longer validates.
    """
    from pipeline.views.status import verify_lines

    checked = api.verify(manifest, simulate=simulate, lockfile=lockfile, output_dir=output_dir)
    lines, summary = verify_lines(checked.checked, list(checked.problems))
    for line in lines:
        click.echo(line, err=True)
    click.echo(summary)
    if checked.problems:
        raise LockfileError(f"{len(checked.problems)} output(s) do not match the lockfile; "
                            "`imgspec run --rehash` downloads or regenerates them")


@cli.command()
@manifest_argument
@simulate_option("Prune the --simulate lockfile.")
@lockfile_option
@click.option("--dry-run", is_flag=True, help="List what would be removed; change nothing.")
@click.option("--outputs", is_flag=True, help="Also delete the pruned entries' images "
              "(paid for: without this they are left on disk, and listed).")
@output_dir_option
def prune(manifest: Path, simulate: bool, lockfile: Path | None, dry_run: bool,
          outputs: bool, output_dir: str | None) -> None:
    """Drop lockfile entries whose instances are no longer in the manifest.

    Their spend stays counted in "charged so far" (the lockfile keeps it as history).
    Their images are left on disk and listed unless --outputs.
    """
    from pipeline.views.status import prune_text

    click.echo(prune_text(api.prune(manifest, simulate=simulate, lockfile=lockfile,
                                    dry_run=dry_run, outputs=outputs, output_dir=output_dir)),
               nl=False)


def _add_commands() -> None:
    """The commands declared beside this module, and the simulator's."""
    from pipeline.cli import images, project

    for command in (images.gallery, images.review, images.export, project.diff,
                    project.lock, project.init_command, project.schema_command,
                    project.balance_command, simulator):
        cli.add_command(command)


_add_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="imgspec")
    finally:
        # The process ends here, and every object still alive goes with it. Frozen,
        # they are freed without the interpreter's last cycle collection walking them
        # all first: 0.1 s at the end of a 1,000-task run, 0.4 s at 30,000.
        gc.freeze()
