"""The commands of a project around its manifests: ``diff``, ``lock``, ``init``, ``schema``,
``balance``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import click

from pipeline import api
from pipeline.cli.options import (
    balance_unit_option,
    base_url_option,
    checked_base_url,
    json_option,
    lockfile_option,
    manifest_argument,
    money_option,
    simulate_option,
)
from pipeline.errors import BudgetExceeded, LockfileError


@click.command()
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
    from pipeline.views.diff import diff_json, diff_markdown, diff_text, fail_above_text

    limit = money_option("--fail-above", fail_above)
    result = api.diff(manifest, against=ref)
    if fmt == "json":
        click.echo(json.dumps(diff_json(result), indent=2, ensure_ascii=False))
    elif fmt == "markdown":
        click.echo(diff_markdown(result), nl=False)
    else:
        click.echo(diff_text(result), nl=False)
    if limit is not None and result.to_apply > limit:
        raise BudgetExceeded(fail_above_text(result, limit), cost=result.to_apply,
                             budget=limit)


@click.group()
def lock() -> None:
    """Work on lockfiles: check them, merge them (git's merge driver, or shards'),
    move entries to new keys (mv)."""


@lock.command("check")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def lock_check(files: tuple[Path, ...]) -> None:
    """Check lockfiles against the lockfile schema (exit 0 valid, 1 not): what the
    pre-commit hook `imgspec-lockfile` runs on each staged *.lock.json."""
    problems = []
    for path in files:
        try:
            api.check_lockfile(path)
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
@base_url_option("API origin: upload URLs off its site are dropped.")
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
    from pipeline.views.teams import merge_text

    merged = api.merge(files, into=into, name=name, base_url=base_url)
    target = str(into) if into is not None else name or str(files[1])
    click.echo(merge_text(merged, target=target), nl=False)


@lock.command("mv")
@manifest_argument
@click.argument("source", metavar="OLD")
@click.argument("target", metavar="NEW")
@click.option("--dry-run", is_flag=True, help="Say what would move; change nothing.")
@simulate_option("Move in the --simulate lockfile.")
@lockfile_option
def lock_mv(manifest: Path, source: str, target: str, dry_run: bool, simulate: bool,
            lockfile: Path | None) -> None:
    """Move a lock entry (OLD a key) or all of a job's (OLD a job) to NEW, with its files.

    As `terraform state mv`: history, spend and images follow the new name, so a
    renamed job or key is not paid again. Refuses to overwrite an entry; waits for no
    run (exit 5 while one holds the manifest). For renames kept in the manifest, see
    `moved:`.
    """
    from pipeline.views.plan import moves_done

    done = api.move(manifest, source, target, simulate=simulate, lockfile=lockfile,
                    dry_run=dry_run)
    click.echo(moves_done(done.moved, dry_run=dry_run), nl=False)


@click.command("init")
@click.argument("folder", required=False, default=".",
                type=click.Path(file_okay=False, path_type=Path))
def init_command(folder: Path) -> None:
    """Set FOLDER (default: here) up: a starter manifest if it has none, and the lockfile
    merge driver in .gitattributes and the repository's git config. Safe to rerun."""
    from pipeline.views.teams import init_text

    click.echo(init_text(api.init(folder)), nl=False)


@click.command("schema")
@click.argument("which", type=click.Choice(["manifest", "lockfile"]), default="manifest")
def schema_command(which: Literal["manifest", "lockfile"]) -> None:
    """Print the JSON Schema (draft 2020-12) of a manifest (default) or of a lockfile.

    Point an editor at it: `imgspec init` writes the manifest's to
    schemas/manifest.schema.json, where its starter manifest's first line points."""
    click.echo(api.schema(which), nl=False)


@click.command("balance")
@base_url_option()
@balance_unit_option
@json_option
def balance_command(base_url: str, balance_unit: str | None, as_json: bool) -> None:
    """The API key's balance (GET /v1/balance), as the API gives it.

    Exit 6 if the API refuses the key or cannot be reached, 2 if the base URL is wrong.
    """
    from pipeline.api.source import environment_key
    from pipeline.views.balance import balance_json, balance_text

    base_url = checked_base_url(base_url)
    got = api.balance(base_url=base_url, api_key=environment_key(advice=""))
    if as_json:
        click.echo(json.dumps(balance_json(got, unit=balance_unit)))
    else:
        click.echo(balance_text(got, unit=balance_unit), nl=False)
