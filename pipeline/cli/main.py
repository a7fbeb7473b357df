"""The ``imgspec`` command line: parse, call the core, print. Nothing else lives here."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import json
import os
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline import __version__
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
    from pipeline.core.planning.selection import Selection
    from pipeline.views.graph import GraphFormat
    from pipeline.views.progress import Reporter

# Each command imports what it needs when it runs (the core: YAML, jsonschema, Jinja;
# the run layer: aiohttp, stamina, rich), so `imgspec --help` and every command
# start with only click loaded.

# pipeline.views.graph.GRAPH_FORMATS, written out: click needs it when the command is
# declared, and importing the graph views for it would load the core (tested equal).
GRAPH_FORMATS = ("text", "mermaid", "dot")

DEFAULT_BASE_URL = "https://api.apimart.ai"
EXIT_INTERNAL = 70
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left

manifest_argument = click.argument(
    "manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
rehash_option = click.option(
    "--rehash", is_flag=True, help="Check recorded images by their sha256 too, not only "
    "their size (finds what `verify` finds; a damaged image is then downloaded again).")
lockfile_option = click.option(
    "--lockfile", type=click.Path(dir_okay=False, path_type=Path), default=None,
    metavar="PATH", help="Use this lockfile instead of the one beside the manifest "
    "(e.g. one per shard).")
output_dir_option = click.option(
    "--output-dir", metavar="DIR|URL", envvar="IMGSPEC_OUTPUT_DIR", default=None,
    help="Where the outputs are, instead of the manifest's output_dir: a folder, or a store "
    "URL such as s3://bucket/prefix (pip install 'imgspec[s3]').")


balance_unit_option = click.option(
    "--balance-unit", metavar="UNIT", envvar="IMGSPEC_BALANCE_UNIT", default=None,
    help="The unit of the account's balance (e.g. CNY; the API does not say): the "
    "balance is compared with a plan only in the plan's currency.")


def selection_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--job``, ``--where`` and ``--only-failed``, handed to ``command`` as ``selection``.

    The one definition ``plan`` and ``run`` share, so they cannot drift apart:
    the flags are parsed and checked here, at the edge, into a ``Selection``.
    """

    @functools.wraps(command)
    def with_selection(*args: Any, jobs: tuple[str, ...], where: tuple[str, ...],
                       only_failed: bool, shard: str | None, **kwargs: Any) -> None:
        from pipeline.core.planning.selection import Selection, parse_shard, parse_where

        selection = Selection(jobs=tuple(dict.fromkeys(jobs)), where=parse_where(where),
                              only_failed=only_failed,
                              shard=None if shard is None else parse_shard(shard))
        command(*args, selection=selection, **kwargs)

    for option in reversed((
        click.option("--job", "jobs", multiple=True, metavar="ID",
                     help="Only this job (repeatable)."),
        click.option("--where", "where", multiple=True, metavar="AXIS=VALUE",
                     help="Only instances with this matrix value (repeatable: values of "
                          "one axis are alternatives, different axes must all match)."),
        click.option("--only-failed", is_flag=True,
                     help="Only failed and unfinished instances (and what they block)."),
        click.option("--shard", metavar="K/N",
                     help="Only shard K of N (an edit goes with the image it edits); "
                          "records into its own lockfile, see `imgspec lock merge`."),
    )):
        with_selection = option(with_selection)
    return with_selection


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


def _checked_base_url(value: str) -> str:
    """The ``--base-url`` option's value checked and normalised (a UsageError naming where
    it came from: the option or APIMART_BASE_URL), before anything is read or sent."""
    from pipeline.shell.http.endpoint import parse_base_url

    source = click.get_current_context().get_parameter_source("base_url")
    origin = ("APIMART_BASE_URL" if source == click.core.ParameterSource.ENVIRONMENT
              else "--base-url")
    return parse_base_url(value, source=origin).url


def _max_cost(value: str | None) -> Decimal | None:
    return _money_option("--max-cost", value)


def _money_option(option: str, value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise UsageError(f"{option} {value!r} is not a number; write e.g. {option} 12.5"
                         ) from None
    if not amount.is_finite() or amount < 0:
        raise UsageError(f"{option} must be a number of at least 0")
    return amount


@cli.command()
@click.argument("manifests", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(manifests: tuple[Path, ...]) -> None:
    """Check manifests against the schema and the API's rules (exit 0 valid, 1 invalid)."""
    from pipeline.core.expansion.expand import expand
    from pipeline.core.lock.lockfile import Lockfile
    from pipeline.core.lock.moves import plan_moves
    from pipeline.core.manifest.load import load_manifest

    failed = 0
    for path in manifests:
        try:
            manifest, workspace = load_manifest(path)
            expansion = expand(manifest, workspace)
            moved = plan_moves(manifest.moves, Lockfile(manifest=path.name),
                               keys={i.key for i in expansion.instances},
                               jobs=manifest.jobs, diagnostic=manifest.document.diagnostic)
        except ImgspecError as exc:
            failed += 1
            click.echo(str(exc), err=True)
            continue
        for warning in (*expansion.warnings, *moved.warnings):
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
@lockfile_option
@rehash_option
@output_dir_option
@selection_options
def plan(manifest: Path, as_json: bool, max_cost: str | None, simulate: bool,
         lockfile: Path | None, rehash: bool, output_dir: str | None,
         selection: Selection) -> None:
    """Show what a run would do and cost (exit 0 ok, 1 invalid, 2 usage, 3 over budget).

    Takes the same --job/--where/--only-failed/--shard as `run`, and shows the same
    plan: with --shard, that shard's own work and cost.
    """
    from pipeline.core.planning.selection import narrow
    from pipeline.operations.project import prepare, write_plan_streamed
    from pipeline.operations.shards import shard_lock
    from pipeline.views.plan import plan_text, write_plan_json

    if as_json and not selection.narrows:
        # The whole plan, as JSON: streamed, never held (a million instances fit).
        head = write_plan_streamed(manifest, sys.stdout.write, simulate=simulate,
                                   max_cost=_max_cost(max_cost), lockfile=lockfile,
                                   rehash=rehash, output_dir=output_dir)
        if not head.within_budget:
            raise BudgetExceeded("the plan is over budget; nothing was spent",
                                 cost=head.tally.total, budget=head.budget)
        return
    lock = None
    if selection.shard is not None:
        shard = shard_lock(manifest, selection.shard, simulate=simulate, lockfile=lockfile)
        lockfile, lock = shard.path, shard.combined(manifest=manifest.name)
        if not as_json:
            from pipeline.views.teams import shard_note

            click.echo(shard_note(selection.shard, shard.path, shard.main))
    prepared = prepare(manifest, simulate=simulate, max_cost=_max_cost(max_cost),
                       lockfile=lockfile, lock=lock, rehash=rehash, output_dir=output_dir)
    the_plan = narrow(prepared.plan, selection, jobs=prepared.manifest.jobs)
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
    from pipeline.core.expansion.expand import expand
    from pipeline.core.manifest.load import load_manifest

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
@click.option("--format", "fmt", type=click.Choice(GRAPH_FORMATS),
              default="text", show_default=True, help="Output format.")
def graph(manifest: Path, fmt: GraphFormat) -> None:
    """Draw the job graph with instance counts (text, Mermaid or Graphviz dot)."""
    from pipeline.core.expansion.expand import expand
    from pipeline.core.manifest.graph import job_edges
    from pipeline.core.manifest.load import load_manifest
    from pipeline.views.graph import render_graph

    loaded, workspace = load_manifest(manifest)
    expansion = expand(loaded, workspace)
    click.echo(render_graph(loaded.name, expansion.job_order, job_edges(loaded),
                            expansion.counts(), fmt), nl=False)


@cli.command()
@manifest_argument
@click.option("--simulate", is_flag=True,
              help="Run against an in-process simulator: no key, no cost, own lockfile/outputs.")
@click.option("--base-url", metavar="URL", envvar="APIMART_BASE_URL",
              default=DEFAULT_BASE_URL, show_default=True, help="API origin.")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=8, show_default=True,
              help="Tasks in flight at once.")
@click.option("--max-rate", type=click.FloatRange(min=0.1), default=None,
              help="A hard cap on requests per second (all kinds). Without it, submissions "
              "and polls are unbounded until the API answers 429, then adapt to it.")
@selection_options
@click.option("--max-cost", metavar="X", help="Budget in CNY, overriding the manifest's.")
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
        selection: Selection, max_cost: str | None, task_timeout: float, yes: bool,
        as_json: bool, lockfile: Path | None, rehash: bool, output_dir: str | None,
        ignore_balance: bool, balance_unit: str | None) -> None:
    """Run what the plan says: submit, poll, download; rerun to do only what is left.

    Exit 0 all done, 1 invalid manifest or lockfile, 2 usage error (a wrong base URL
    too), 3 over budget, 4 items failed or unfinished, 5 another run holds this manifest,
    6 the API refused the key or cannot be connected to, 7 the balance ran out (top up,
    run again), 8 the balance cannot cover the plan (nothing submitted), 130 interrupted.
    """

    from pipeline.core.apimart.prices import money
    from pipeline.core.planning.pacing import RunOptions
    from pipeline.operations.run.eventloop import run_loop
    from pipeline.operations.run.run import (
        RunSettings,
        balance_gate,
        check_budget,
        execute_run,
        outcome_error,
        run_session,
        write_index,
    )
    from pipeline.operations.shards import shard_lock
    from pipeline.views.plan import plan_text
    from pipeline.views.progress import run_summary

    if not simulate:  # --simulate talks to its own simulator, whatever the option says
        base_url = _checked_base_url(base_url)
    if selection.shard is not None:
        shard = shard_lock(manifest, selection.shard, simulate=simulate, lockfile=lockfile)
        shard.sync(manifest=manifest.name)
        lockfile = shard.path
        from pipeline.views.teams import shard_note

        click.echo(shard_note(selection.shard, shard.path, shard.main),
                   file=sys.stderr if as_json else sys.stdout)
    api_key = "sim-key" if simulate else os.environ.get("APIMART_API_KEY", "")
    if not simulate and not api_key:
        raise UsageError("set APIMART_API_KEY to your APIMart key (or try --simulate)")
    if not simulate and not yes and not sys.stdin.isatty():
        raise UsageError("refusing to spend without confirmation: pass --yes "
                         "(there is no terminal to ask on)")
    settings = RunSettings(
        manifest=manifest, simulate=simulate, base_url=base_url, api_key=api_key,
        selection=selection,
        max_cost=_max_cost(max_cost),
        options=RunOptions(concurrency=concurrency, task_timeout=task_timeout),
        max_rate=max_rate, lockfile=lockfile, rehash=rehash, ignore_balance=ignore_balance,
        balance_unit=balance_unit, output_dir=output_dir)
    with contextlib.ExitStack() as stack:
        prepared, the_plan, store = stack.enter_context(run_session(settings))
        if simulate:  # under the run guard: one process at a time uses its state file
            from pipeline.simulator import run_in_thread
            from pipeline.simulator.config import for_simulate_run

            sim = stack.enter_context(run_in_thread(for_simulate_run(store.path)))
            # The simulated account bills in the plan's currency.
            settings = dataclasses.replace(settings, base_url=sim.base_url,
                                           balance_unit=the_plan.currency)
        out = sys.stderr if as_json else sys.stdout
        if not as_json:
            click.echo(plan_text(the_plan), nl=False)
        check_budget(the_plan)
        if the_plan.moves:
            from pipeline.operations.relocate import apply_moves
            from pipeline.views.plan import moves_done

            apply_moves(the_plan.moves, store, prepared.paths.output_folder())
            click.echo(moves_done(the_plan.moves), file=out, nl=False)
        if not the_plan.has_work:
            write_index(prepared, store)
            click.echo("Nothing to do.", file=out)
            return
        note = balance_gate(settings, the_plan)
        if note is not None:
            click.echo(note, file=out)
        if not simulate and not yes and not click.confirm(
            f"Spend up to {money(the_plan.total, the_plan.currency)}?", default=False
        ):
            raise UsageError("cancelled; nothing was submitted")
        reporter = _reporter(as_json, the_plan.currency, len(the_plan.items))
        with reporter:
            result = run_loop(execute_run(settings, prepared, the_plan, store,
                                             on_event=reporter))
    click.echo(run_summary(result, the_plan.currency, prepared.paths.shown), file=out,
               nl=False)
    error = outcome_error(result, budget=the_plan.budget)
    if error is not None:
        raise error


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
@click.option("--simulate", is_flag=True, help="Read the --simulate lockfile.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@lockfile_option
def status(manifest: Path, simulate: bool, as_json: bool, lockfile: Path | None) -> None:
    """What the lockfile says: counts, money charged, failures, tasks in progress.

    Reads only the lockfile: works on a manifest that no longer validates.
    """
    from pipeline.operations import housekeeping
    from pipeline.views.status import status_json, status_text

    report = housekeeping.status(manifest, simulate=simulate, lockfile=lockfile)
    if as_json:
        click.echo(json.dumps(status_json(report), indent=2, ensure_ascii=False))
    else:
        click.echo(status_text(report), nl=False)


@cli.command()
@manifest_argument
@click.option("--simulate", is_flag=True, help="Check the --simulate outputs.")
@lockfile_option
@output_dir_option
def verify(manifest: Path, simulate: bool, lockfile: Path | None,
           output_dir: str | None) -> None:
    """Re-hash every output and check index.json (exit 0 intact, 1 missing or changed).

    Needs only the manifest's name: and output_dir:, so it works on a manifest that
    no longer validates.
    """
    from pipeline.operations import housekeeping
    from pipeline.views.status import verify_lines

    checked, problems = housekeeping.verify(manifest, simulate=simulate, lockfile=lockfile,
                                            output_dir=output_dir)
    lines, summary = verify_lines(checked, problems)
    for line in lines:
        click.echo(line, err=True)
    click.echo(summary)
    if problems:
        raise LockfileError(f"{len(problems)} output(s) do not match the lockfile; "
                            "`imgspec run --rehash` downloads or regenerates them")


@cli.command()
@manifest_argument
@click.option("--simulate", is_flag=True, help="Prune the --simulate lockfile.")
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
    from pipeline.operations import housekeeping
    from pipeline.views.status import prune_text

    click.echo(prune_text(housekeeping.prune(manifest, simulate=simulate, lockfile=lockfile,
                                             dry_run=dry_run, outputs=outputs,
                                             output_dir=output_dir)), nl=False)


@cli.command()
@manifest_argument
@click.option("--simulate", is_flag=True, help="The gallery of the --simulate outputs.")
@click.option("--open", "open_page", is_flag=True, help="Open the page in the browser.")
@output_dir_option
def gallery(manifest: Path, simulate: bool, open_page: bool, output_dir: str | None) -> None:
    """Write outputs/<name>/index.html: contact sheets and X/Y grids of every instance.

    One self-contained file (thumbnails beside it, under _thumbs/): opens from
    file://, works as a CI artifact. Shows the review decisions already recorded.
    """
    from pipeline.operations.gallery.site import write_gallery
    from pipeline.operations.project import prepare

    path, shown = write_gallery(prepare(manifest, simulate=simulate, output_dir=output_dir))
    counts = {k: v for k, v in shown.counts().items() if v}
    click.echo(f"Gallery: {path} ({', '.join(f'{v:,} {k}' for k, v in counts.items())})")
    if open_page:
        import webbrowser

        webbrowser.open(path.as_uri())


@cli.command()
@manifest_argument
@click.option("--simulate", is_flag=True, help="Review the --simulate outputs.")
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
    import asyncio

    from pipeline.operations.gallery.server import ReviewSession, serve
    from pipeline.operations.project import prepare

    # A manifest that does not plan fails here, not later.
    prepare(manifest, simulate=simulate, output_dir=output_dir)
    session = ReviewSession(manifest, simulate, output_dir)

    def ready(url: str) -> None:
        click.echo(f"Reviewing {manifest} at {url}\nDecisions are written to {session.path}; "
                   "Ctrl-C stops.")
        sys.stdout.flush()
        if open_page:
            import webbrowser

            webbrowser.open(url)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(session, port=port, on_ready=ready))


@cli.command()
@manifest_argument
@click.option("--picked", "dest", required=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Copy the picked images (with their meta.json) into DIR.")
@click.option("--simulate", is_flag=True, help="Export from the --simulate outputs.")
@output_dir_option
def export(manifest: Path, dest: Path, simulate: bool, output_dir: str | None) -> None:
    """Copy the images picked in review, with their meta.json, for hand-off.

    A pick applies only to the image it was made about (its sha256): picks of
    images since replaced are not exported. Exit 1 when a picked file is missing.
    """
    from pipeline.operations.gallery.site import export_picked
    from pipeline.operations.project import prepare

    done = export_picked(prepare(manifest, simulate=simulate, output_dir=output_dir), dest)
    for name, why in done.skipped:
        click.echo(f"not exported: {name}: {why}", err=True)
    click.echo(f"{len(done.images):,} picked image(s) copied to {dest}")
    if done.skipped:
        raise LockfileError(f"{len(done.skipped)} picked image(s) are missing")


@cli.command()
@manifest_argument
@click.option("--against", "ref", default="HEAD", show_default=True, metavar="REF",
              help="The git revision to compare with (its manifest, includes and lockfile).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]),
              default="text", show_default=True,
              help="markdown is made to be posted as a pull-request comment.")
@click.option("--fail-above", metavar="X",
              help="Exit 3 when the cost to apply the change is above X (a CI gate).")
def diff(manifest: Path, ref: str, fmt: str, fail_above: str | None) -> None:
    """What a change to the manifest adds, changes and removes, and what it costs.

    Compares the manifest at REF (read with git) with the working tree: per
    instance and field, the cost to apply (what `run` would pay given REF's
    lockfile) and the spec's full cost before and after. Exit 0, 1 invalid
    manifest at either side, 2 usage, 3 above --fail-above.
    """
    from pipeline.core.apimart.prices import money
    from pipeline.shell.store.gitspec import spec_diff
    from pipeline.views.diff import diff_json, diff_markdown, diff_text

    limit = _money_option("--fail-above", fail_above)
    result = spec_diff(manifest, against=ref)
    if fmt == "json":
        click.echo(json.dumps(diff_json(result), indent=2, ensure_ascii=False))
    elif fmt == "markdown":
        click.echo(diff_markdown(result), nl=False)
    else:
        click.echo(diff_text(result), nl=False)
    if limit is not None and result.to_apply > limit:
        raise BudgetExceeded(f"the change costs {money(result.to_apply, result.currency)} "
                             f"to apply, above --fail-above {money(limit, result.currency)}",
                             cost=result.to_apply, budget=limit)


@cli.group()
def lock() -> None:
    """Work on lockfiles: check them, merge them (git's merge driver, or shards'),
    move entries to new keys (mv)."""


@lock.command("check")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def lock_check(files: tuple[Path, ...]) -> None:
    """Check lockfiles against the lockfile schema (exit 0 valid, 1 not): what the
    pre-commit hook `imgspec-lockfile` runs on each staged *.lock.json."""
    from pipeline.shell.store.journal import read_lockfile

    problems = []
    for path in files:
        try:
            read_lockfile(path)
        except LockfileError as exc:
            problems.append(str(exc))
    if problems:
        raise LockfileError("\n".join(problems))
    click.echo(f"{len(files)} lockfile{'s' if len(files) != 1 else ''} valid")


@lock.command("merge")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--into", type=click.Path(dir_okay=False, path_type=Path), metavar="X",
              help="Merge FILES (and X itself, if it exists) into X.")
@click.option("--name", metavar="PATH", help="The lockfile's path in the repository "
              "(git's %P), for messages.")
@click.option("--base-url", metavar="URL", envvar="APIMART_BASE_URL",
              default=DEFAULT_BASE_URL, show_default=True,
              help="API origin: upload URLs off its site are dropped.")
def lock_merge(files: tuple[Path, ...], into: Path | None, name: str | None,
               base_url: str) -> None:
    """Merge lockfiles entry by entry, losing no paid task (exit 0 merged, 1 conflict).

    \b
    As git's merge driver:  imgspec lock merge %O %A %B   (result written to %A)
    Shards' lockfiles:      imgspec lock merge --into X.lock.json A B C ...

    A done entry wins over one in flight, which wins over a failed one; a task id
    or idempotency key either side recorded is kept. `imgspec init` registers the
    driver.
    """
    from pipeline.operations.merge_driver import merge_driver, merge_into
    from pipeline.views.teams import merge_text

    if into is not None:
        merged = merge_into(into, files, base_url=base_url)
        target = str(into)
    elif len(files) == 3:
        base, ours, theirs = files
        merged = merge_driver(base, ours, theirs, name=name, base_url=base_url)
        target = name or str(ours)
    else:
        raise UsageError("give BASE OURS THEIRS (git's %O %A %B), or --into X and the "
                         "lockfiles to merge into X")
    click.echo(merge_text(merged, target=target), nl=False)


@lock.command("mv")
@manifest_argument
@click.argument("source", metavar="OLD")
@click.argument("target", metavar="NEW")
@click.option("--dry-run", is_flag=True, help="Say what would move; change nothing.")
@click.option("--simulate", is_flag=True, help="Move in the --simulate lockfile.")
@lockfile_option
def lock_mv(manifest: Path, source: str, target: str, dry_run: bool, simulate: bool,
            lockfile: Path | None) -> None:
    """Move a lock entry (OLD a key) or all of a job's (OLD a job) to NEW, with its files.

    As `terraform state mv`: history, spend and images follow the new name, so a
    renamed job or key is not paid again. Refuses to overwrite an entry; waits for no
    run (exit 5 while one holds the manifest). For renames kept in the manifest, see
    `moved:`.
    """
    from pipeline.operations.relocate import lock_mv as move
    from pipeline.views.plan import moves_done

    done = move(manifest, source, target, simulate=simulate, lockfile=lockfile,
                dry_run=dry_run)
    click.echo(moves_done(done.moved, dry_run=dry_run), nl=False)


@cli.command("init")
@click.argument("folder", required=False, default=".",
                type=click.Path(file_okay=False, path_type=Path))
def init_command(folder: Path) -> None:
    """Set FOLDER (default: here) up: a starter manifest if it has none, and the lockfile
    merge driver in .gitattributes and the repository's git config. Safe to rerun."""
    from pipeline.operations.scaffold import init
    from pipeline.views.teams import init_text

    click.echo(init_text(init(folder)), nl=False)


@cli.command("schema")
@click.argument("which", type=click.Choice(["manifest", "lockfile"]), default="manifest")
def schema_command(which: str) -> None:
    """Print the JSON Schema (draft 2020-12) of a manifest (default) or of a lockfile.

    Point an editor at it: `imgspec init` writes the manifest's to
    schemas/manifest.schema.json, where its starter manifest's first line points."""
    from pipeline.core.manifest.schema import schema_dir

    click.echo((schema_dir() / f"{which}.schema.json").read_text(encoding="utf-8"), nl=False)


@cli.command("balance")
@click.option("--base-url", metavar="URL", envvar="APIMART_BASE_URL",
              default=DEFAULT_BASE_URL, show_default=True, help="API origin.")
@balance_unit_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def balance_command(base_url: str, balance_unit: str | None, as_json: bool) -> None:
    """The API key's balance (GET /v1/balance), as the API gives it.

    Exit 6 if the API refuses the key or cannot be reached, 2 if the base URL is wrong.
    """

    from pipeline.operations.run.eventloop import run_loop
    from pipeline.operations.run.run import read_balance
    from pipeline.views.balance import balance_json, balance_text

    base_url = _checked_base_url(base_url)
    api_key = os.environ.get("APIMART_API_KEY", "")
    if not api_key:
        raise UsageError("set APIMART_API_KEY to your APIMart key")
    got = run_loop(read_balance(base_url=base_url, api_key=api_key))
    if as_json:
        click.echo(json.dumps(balance_json(got, unit=balance_unit)))
    else:
        click.echo(balance_text(got, unit=balance_unit), nl=False)


cli.add_command(simulator)


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="imgspec")
    finally:
        # The process ends here, and every object still alive goes with it. Frozen,
        # they are freed without the interpreter's last cycle collection walking them
        # all first: 0.1 s at the end of a 1,000-task run, 0.4 s at 30,000.
        gc.freeze()
