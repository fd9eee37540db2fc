"""`fraudops serve`: the KServe model server for a registered bundle, on this machine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from components.bundle import ALIASES, VERSION_PATTERN
from fraudops.errors import friendly_errors
from fraudops.options import DEFAULT_MODEL_NAME, ModelNameOpt, StoreOpt, store_uri

_VERSION = re.compile(rf"{VERSION_PATTERN}|latest")


def model_uri_for(model: str, model_name: str, store: str) -> str:
    """The server's ``--model_uri`` for ``fraudops serve --model``.

    Args:
        model: A version (``v3``, ``latest``) or alias (``champion``, ``canary``) of
            ``model_name``; ``name[:version|alias]`` (a bare name: its champion); or a bundle
            folder (a folder named like a version or alias needs a path: ``./champion``).
        model_name: The registered model a bare version or alias refers to.
        store: The store's URI.
    """
    if _VERSION.fullmatch(model) or model in ALIASES:  # before folders: ./champion is not one
        return f"{store}#{model_name}:{model}"
    if Path(model).is_dir():
        return model
    name, _, ref = model.partition(":")
    return f"{store}#{name}:{ref or 'champion'}"


@friendly_errors
def serve(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="A version (v3, latest) or alias (champion, canary) of --model-name; or "
            "name[:version|alias] (a bare name: its champion); or a bundle folder.",
        ),
    ] = "champion",
    model_name: ModelNameOpt = DEFAULT_MODEL_NAME,
    store: StoreOpt = None,
    http_port: Annotated[
        int, typer.Option("--http-port", help="HTTP port (V1, V2, /metrics).")
    ] = 8080,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; 0.0.0.0 to accept other machines.")
    ] = "127.0.0.1",
    log_store: Annotated[
        str | None,
        typer.Option(
            "--log-store",
            help="Store for the inference log (default: the model's store; 'none': no log).",
        ),
    ] = None,
    reasons_for: Annotated[
        str, typer.Option("--reasons-for", help="Reason codes for: all, alerts, none.")
    ] = "all",
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most transactions/request.")] = (
        10_000
    ),
    name: Annotated[
        str | None, typer.Option("--name", help="Served model name (default: the model's name).")
    ] = None,
    extra: Annotated[
        list[str] | None,
        typer.Argument(
            help="More `python -m serving` options after --, e.g. -- --log_features true.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a registered model with KServe: REST V1 and V2 (Open Inference Protocol).

    Scores transactions with online windowed features (seeded from the bundle's snapshot),
    returns score, decision and reason codes, writes the inference log to the store and
    exposes Prometheus metrics at /metrics. Stop with Ctrl-C: the log is flushed first.
    """
    if reasons_for not in ("all", "alerts", "none"):
        raise typer.BadParameter("choose all, alerts or none", param_hint="--reasons-for")
    model_uri = model_uri_for(model, model_name, store_uri(store))
    argv = [
        "--model_uri",
        model_uri,
        "--http_port",
        str(http_port),
        "--host",
        host,
        "--reasons_for",
        reasons_for,
        "--max_batch",
        str(max_batch),
        "--load_retry_seconds",  # at a terminal a bundle that cannot load is an error now
        "0",  # (after --, --load_retry_seconds 30 serves unready and retries instead)
    ]
    if log_store:
        argv += ["--log_store", log_store]
    if name:
        argv += ["--model_name", name]
    argv += list(extra or [])

    from serving.__main__ import main  # heavy: KServe, FastAPI

    code = main(argv)
    if code:
        raise typer.Exit(code)
