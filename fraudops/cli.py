"""The `fraudops` console script: one subcommand per job."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fraudops import (
    __version__,
    cli_data,
    cli_model,
    cli_pipeline,
    cli_rollout,
    cli_serve,
    cli_state,
    cli_train,
)
from fraudops.demo import SCALES
from fraudops.errors import friendly_errors
from monitoring import alerts_job, drift_job, labels_job

app = typer.Typer(
    name="fraudops",
    help="Fraud-detection MLOps: data, training on Kubeflow Pipelines, serving on KServe, "
    "drift monitoring with Evidently. Every command explains itself with --help.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(cli_data.app, name="data")
app.command("train")(cli_train.train)
app.command("score")(cli_train.score)
app.command("serve")(cli_serve.serve)
app.add_typer(cli_pipeline.app, name="pipeline")
app.add_typer(cli_model.app, name="model")
app.add_typer(drift_job.app, name="drift")
app.add_typer(labels_job.app, name="labels")
app.add_typer(alerts_job.app, name="alerts")
app.add_typer(cli_rollout.app, name="rollout")
app.add_typer(cli_state.app, name="state")
console = Console()


def _version(value: bool) -> None:
    if value:
        console.print(f"fraudops {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Fraud-detection MLOps on Kubeflow Pipelines, KServe, MinIO and Evidently."""


@app.command()
@friendly_errors
def demo(
    scale: Annotated[
        str,
        typer.Option(
            help=f"Data size: {', '.join(f'{k} (~{v:,} tx)' for k, v in SCALES.items())}."
        ),
    ] = "small",
    home: Annotated[
        Path | None, typer.Option(help="Working folder (default: $FRAUDOPS_HOME or ./.fraudops).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated portfolio.")] = 7,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Leave the gateway and model servers up after the loop, to send requests "
            "yourself (Ctrl-C stops them).",
        ),
    ] = False,
    step_seconds: Annotated[
        float | None,
        typer.Option(help="Seconds of traffic per canary step (default: by scale)."),
    ] = None,
) -> None:
    """Run the whole loop on embedded defaults and print a summary.

    Generate a card portfolio -> train and register v1 with the Kubeflow pipeline (kfp.local)
    -> serve it with KServe behind the local gateway -> replay normal traffic, the drift job
    passes -> replay changed behaviour, the drift job flags it, alerts and retrains -> v2 goes
    out as a canary, promoted or rolled back by the analysis -> late labels give realised
    precision and recall. Exits non-zero when a stage fails. The demo's folders under --home
    (data, store, kfp, bundles, reports, alerts, logs) are replaced on each run.
    """
    from components.frames import default_home
    from fraudops.demo import MODEL_NAME, DemoFailedError, run_demo

    if scale not in SCALES:
        raise typer.BadParameter(f"choose one of {', '.join(SCALES)}", param_hint="--scale")
    home = home or default_home()
    started = time.perf_counter()
    try:
        result = run_demo(
            home,
            scale=scale,
            seed=seed,
            log=console.print,
            keep_running=keep_running,
            step_seconds=step_seconds,
        )
    except DemoFailedError as e:
        console.print(f"[red]demo failed[/red]: {e}")
        raise typer.Exit(1) from None
    table = Table(title=f"fraudops demo ({scale}, {time.perf_counter() - started:.0f} s)")
    for column in ("stage", "result", "seconds"):
        table.add_column(column, overflow="fold")
    for row in result.stages:
        table.add_row(row["stage"], row["result"], str(row["seconds"]))
    console.print(table)
    summary = Table(title="summary", show_header=False)
    for key, value in result.summary.items():
        if key != "stop":
            summary.add_row(key, _describe(value))
    console.print(summary)
    console.print("[bold]open these[/bold]")
    for name, path in result.files.items():
        console.print(f"  {name}: {path}")
    if keep_running:
        _serve_until_interrupted(result.gateway_url, MODEL_NAME, result.summary["stop"])


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_describe(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_describe(v) for v in value)
    return str(value)


def _serve_until_interrupted(url: str, model: str, stop) -> None:
    console.print(
        f"""[bold]the servers are up[/bold] at {url}; try (Ctrl-C stops them):
  curl -s {url}/v1/models/{model}:predict -H 'content-type: application/json' \\
    -d '{{"instances": [{{"transaction_id": "t-1", "timestamp": "2026-07-10T12:00:00Z",
         "customer_id": "C000001", "terminal_id": "T000001", "amount": 912.5}}]}}'
  curl -s {url}/v2/models/{model}/infer -H 'content-type: application/json' -d '{{"inputs": [
    {{"name": "transaction_id", "shape": [1], "datatype": "BYTES", "data": ["t-2"]}},
    {{"name": "timestamp", "shape": [1], "datatype": "BYTES", "data": ["2026-07-10T12:00:00Z"]}},
    {{"name": "customer_id", "shape": [1], "datatype": "BYTES", "data": ["C000001"]}},
    {{"name": "terminal_id", "shape": [1], "datatype": "BYTES", "data": ["T000001"]}},
    {{"name": "amount", "shape": [1], "datatype": "FP64", "data": [912.5]}}]}}'
  curl -s {url}/rollout      # which versions serve, and the canary's share"""
    )

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # `kill` stops the servers as cleanly as Ctrl-C
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping the servers (their inference logs are flushed first) ...")
    finally:
        stop()


def main() -> None:
    """Entry point of the console script."""
    app()
