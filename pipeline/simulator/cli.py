"""``imgspec simulator``: run the local APIMart simulator until Ctrl-C."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from pipeline.errors import UsageError
from pipeline.simulator.config import Envelope, LatencyShape, SimulatorConfig, parse_latency
from pipeline.simulator.faults import FAULTS_HELP, parse_faults


def _balance(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        raise UsageError(f"balance {text!r} is not a number: give CNY, e.g. 10.00") from None


# \b keeps click from re-wrapping the table of fault kinds.
_EPILOG = "\b\n" + FAULTS_HELP


@click.command("simulator", epilog=_EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=int, default=8787, show_default=True, help="Port to listen on (0: any free one)."
)
@click.option("--api-key", default="sim-key", show_default=True, help="Bearer key to accept.")
@click.option(
    "--latency",
    default="1..3",
    show_default=True,
    help="Task latency in seconds: S (fixed) or A..B (sampled per task).",
)
@click.option(
    "--latency-shape",
    type=click.Choice(["uniform", "log-uniform"]),
    default="uniform",
    show_default=True,
    help="How latencies spread over A..B (log-uniform: many short, a long tail).",
)
@click.option(
    "--estimate-factor",
    type=float,
    default=1.0,
    show_default=True,
    help="Report estimated_time = latency x this (3: an API over-estimating threefold).",
)
@click.option(
    "--url-ttl",
    type=float,
    default=86_400.0,
    show_default=True,
    help="Seconds a result URL stays valid after the task completes.",
)
@click.option("--faults", "faults_spec", default="", help="Fault rates, e.g. 'submit.429=0.1'.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for every random choice."
)
@click.option(
    "--stuck-factor",
    type=float,
    default=20.0,
    show_default=True,
    help="A stuck task takes this many times its latency.",
)
@click.option("--balance", default=None, help="Account balance in CNY; beyond it, 402.")
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the simulated API's memory (tasks, Idempotency-Keys, ledger), "
    "so a restarted simulator carries on; default: none, all is forgotten on exit.",
)
@click.option(
    "--envelope",
    type=click.Choice(["requested", "legacy", "versioned"]),
    default="requested",
    show_default=True,
    help="Reply envelope: the versioned one when the request sends "
    "X-APIMart-Response-Version (requested), or always legacy / versioned.",
)
@click.option("--refuse-data-uris", is_flag=True,
              help="Refuse base64 data URIs in image_urls (400), as the upload page says; "
              "default: accept them, as the wan2.7 page says.")
def simulator(
    host: str,
    port: int,
    api_key: str,
    latency: str,
    latency_shape: LatencyShape,
    estimate_factor: float,
    url_ttl: float,
    faults_spec: str,
    seed: int,
    stuck_factor: float,
    balance: str | None,
    state: Path | None,
    envelope: Envelope,
    refuse_data_uris: bool,
) -> None:
    """Run a local simulator of the APIMart image API (with fault injection).

    Point imgspec at it with APIMART_BASE_URL=<printed URL> and APIMART_API_KEY=<key>.
    Exit 0 when stopped (Ctrl-C), 2 for a bad option value or a port in use.
    """
    try:
        config = SimulatorConfig(
            host=host,
            port=port,
            api_key=api_key,
            latency=parse_latency(latency),
            latency_shape=latency_shape,
            estimate_factor=estimate_factor,
            url_ttl=url_ttl,
            faults=parse_faults(faults_spec),
            seed=seed,
            stuck_factor=stuck_factor,
            balance=_balance(balance),
            state=state,
            envelope=envelope,
            accept_data_uris=not refuse_data_uris,
        )

        def ready(base_url: str) -> None:
            faults = ",".join(f"{k}={v:g}" for k, v in config.faults.items()) or "none"
            click.echo(f"simulator listening on {base_url}", nl=True)
            click.echo(
                f"  key {api_key!r}, latency {latency} s, faults {faults}, seed {seed}; "
                f"ledger at {base_url}/_sim/ledger; Ctrl-C to stop"
            )

        from pipeline.simulator.runner import serve  # aiohttp: only when a server starts

        serve(config, on_ready=ready)
    except KeyboardInterrupt:
        pass
    click.echo("simulator stopped")
