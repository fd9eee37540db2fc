"""`fraudops pipeline compile|submit`: the training pipeline on a Kubeflow cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fraudops.errors import friendly_errors

DEFAULT_IMAGE = "ghcr.io/fraudops/fraudops:0.1.0"  # = components.kfp_components.DEFAULT_IMAGE
COMPILED = Path("pipelines/compiled/training.yaml")

app = typer.Typer(
    help="Compile the training pipeline, or submit it to a KFP backend.", no_args_is_help=True
)
console = Console()


@app.command("compile")
@friendly_errors
def compile_(
    out: Annotated[Path, typer.Option(help="Output YAML.")] = COMPILED,
    image: Annotated[
        str, typer.Option(help="Project image the components run on.")
    ] = DEFAULT_IMAGE,
) -> None:
    """Compile the training pipeline to YAML (pipelines/compiled/training.yaml)."""
    from pipelines.compile import compile_training

    path = compile_training(out, image)
    console.print(f"compiled the training pipeline for {image} -> {path}")


def _parse_params(pairs: list[str] | None) -> dict:
    params = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(
                f"{pair!r}: expected name=value, e.g. data_uri=s3://fraudops/tx.parquet"
            )
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@app.command("submit")
@friendly_errors
def submit(
    host: Annotated[
        str,
        typer.Option(
            help="KFP API endpoint, e.g. http://localhost:8080 (port-forward of ml-pipeline-ui)."
        ),
    ],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="Pipeline parameter name=value (repeatable); data_uri is required.",
        ),
    ] = None,
    experiment: Annotated[str, typer.Option(help="Experiment (created if missing).")] = "fraudops",
    run_name: Annotated[str | None, typer.Option(help="Run name.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Kubeflow profile namespace.")] = None,
    package: Annotated[Path, typer.Option(help="Compiled pipeline YAML.")] = COMPILED,
) -> None:
    """Create a run of the compiled pipeline (as `kfp run create -f <compiled yaml>`).

    Credentials for MinIO come from the cluster (a Secret), never from this command.
    """

    from pipelines.submit import submit_training

    arguments = _parse_params(param)
    if "data_uri" not in arguments:
        raise typer.BadParameter("pass -p data_uri=s3://<bucket>/<file>", param_hint="--param")
    result = submit_training(host, arguments, experiment, run_name, package, namespace)
    console.print(f"run {result['run_id']} created: {result['url']}")
