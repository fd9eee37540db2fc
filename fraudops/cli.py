"""The `fraudops` console script: one subcommand per job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fraudops import __version__, cli_data, cli_model, cli_pipeline, cli_serve, cli_train
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
) -> None:
    """Run the main job on embedded defaults and print a summary.

    Currently: generate a portfolio's history and a drifted later period, and validate both.
    """
    from components.frames import default_home
    from fraudops.demo import run_demo

    if scale not in SCALES:
        raise typer.BadParameter(f"choose one of {', '.join(SCALES)}", param_hint="--scale")
    home = home or default_home()
    result = run_demo(home, scale=scale, seed=seed, log=lambda line: console.print(line))
    table = Table(title="fraudops demo")
    for column in result.stages[0]:
        table.add_column(column)
    for row in result.stages:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    console.print(table)
    for name, path in result.files.items():
        console.print(f"{name}: {path}")


def main() -> None:
    """Entry point of the console script."""
    app()
