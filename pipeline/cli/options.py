"""The command line's shared options, declared once: every command takes them from here.

Values are checked where the API takes them (``pipeline.api``); what is the command
line's alone (which option or variable a value came from) is worked out here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypedDict

import click

DEFAULT_BASE_URL = "https://api.apimart.ai"

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
json_option = click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
max_cost_option = click.option("--max-cost", metavar="X",
                               help="Budget in CNY, overriding the manifest's.")


def base_url_option(help_text: str = "API origin.") -> Callable[[Callable[..., None]],
                                                                 Callable[..., None]]:
    """``--base-url`` (or ``APIMART_BASE_URL``), APIMart's origin by default."""
    return click.option("--base-url", metavar="URL", envvar="APIMART_BASE_URL",
                        default=DEFAULT_BASE_URL, show_default=True, help=help_text)


def simulate_option(help_text: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``--simulate``: the simulate side's lockfile and outputs (its own words per command)."""
    return click.option("--simulate", is_flag=True, help=help_text)


class Selecting(TypedDict):
    """``--job``, ``--where``, ``--only-failed`` and ``--shard``, as the API takes them."""

    jobs: tuple[str, ...]
    where: tuple[str, ...]
    only_failed: bool
    shard: str | None


def selection_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--job``, ``--where``, ``--only-failed`` and ``--shard``, handed to ``command`` as
    ``selection`` (a ``Selecting``: the API's keywords).

    The one definition ``plan`` and ``run`` share, so they cannot drift apart; the
    values are parsed into a selection before anything is read.
    """

    @functools.wraps(command)
    def with_selection(*args: Any, jobs: tuple[str, ...], where: tuple[str, ...],
                       only_failed: bool, shard: str | None, **kwargs: Any) -> None:
        from pipeline.api.source import selection

        chosen = Selecting(jobs=jobs, where=where, only_failed=only_failed, shard=shard)
        selection(**chosen)  # checked at the edge, before the command reads anything
        command(*args, selection=chosen, **kwargs)

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


def money_option(option: str, value: str | None) -> Decimal | None:
    """A money option's value (``--max-cost``, ``--fail-above``), or a UsageError naming it."""
    from pipeline.api.source import amount

    return amount(value, name=option)


def checked_base_url(value: str) -> str:
    """The ``--base-url`` option's value checked and normalised (a UsageError naming where
    it came from: the option or APIMART_BASE_URL), before anything is read or sent."""
    from pipeline.api.source import checked_base_url as check

    source = click.get_current_context().get_parameter_source("base_url")
    origin = ("APIMART_BASE_URL" if source == click.core.ParameterSource.ENVIRONMENT
              else "--base-url")
    return check(value, source=origin)
