"""`fraudops train` and `fraudops score`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fraudops.cli_data import FormatOpt, MapOpt, MappingOpt
from fraudops.errors import friendly_errors
from fraudops.options import DEFAULT_MODEL_NAME, ModelNameOpt, StoreOpt, store_uri

console = Console()


@friendly_errors
def train(
    data: Annotated[Path, typer.Option("--data", help="Training data (CSV/Parquet) with labels.")],
    store: StoreOpt = None,
    model_name: ModelNameOpt = DEFAULT_MODEL_NAME,
    mapping: Annotated[str, typer.Option(help="Column mapping (name or YAML).")] = "",
    model_type: Annotated[
        str, typer.Option(help="xgboost (default), random_forest or logistic_regression.")
    ] = "xgboost",
    threshold_policy: Annotated[
        str,
        typer.Option(help="alert_budget:<alerts a day> or target_precision:<0..1>."),
    ] = "alert_budget:100",
    label_delay_days: Annotated[
        float, typer.Option(help="Label delay; also the window gaps.")
    ] = 7.0,
    test_days: Annotated[float, typer.Option(help="Test window: the last days of the data.")] = 7.0,
    valid_days: Annotated[float, typer.Option(help="Validation window length.")] = 7.0,
    train_days: Annotated[float, typer.Option(help="Training window length (0: all).")] = 0.0,
    class_weighting: Annotated[str, typer.Option(help="auto, balanced, sqrt or none.")] = "auto",
    resampling: Annotated[str, typer.Option(help="none or smote.")] = "none",
    search_budget: Annotated[
        float, typer.Option(help="Seconds of hyperparameter search on validation (0: off).")
    ] = 0.0,
    gate_tolerance: Annotated[
        float, typer.Option(help="Allowed average-precision loss against the champion.")
    ] = 0.005,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    pipeline_root: Annotated[
        Path | None,
        typer.Option(help="Where kfp.local keeps artifacts (default: $FRAUDOPS_HOME/kfp)."),
    ] = None,
) -> None:
    """Run the training pipeline locally with kfp.local and register the bundle.

    The same pipeline a cluster runs: validate -> features -> split -> train -> evaluate ->
    gate -> register. The first model becomes the champion; a later one that passes the gate
    gets the 'candidate' alias.
    """
    from components.evaluation import ThresholdPolicy
    from components.frames import default_home
    from components.store import open_store
    from components.training import TrainConfig
    from pipelines.local import run_training_locally

    try:  # refuse bad options before the pipeline starts
        TrainConfig(model_type=model_type, class_weighting=class_weighting, resampling=resampling)
        ThresholdPolicy.parse(threshold_policy)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    uri = store_uri(store)
    console.print(f"running the training pipeline locally (kfp.local) on {data}")
    with console.status(
        "training pipeline running (validate, features, split, train, evaluate, gate, register)"
    ):
        result = run_training_locally(
            str(data),
            uri,
            pipeline_root or default_home() / "kfp",
            model_name=model_name,
            mapping=mapping,
            model_type=model_type,
            threshold_policy=threshold_policy,
            label_delay_days=label_delay_days,
            test_days=test_days,
            valid_days=valid_days,
            train_days=train_days,
            class_weighting=class_weighting,
            resampling=resampling,
            search_budget_seconds=search_budget,
            gate_tolerance=gate_tolerance,
            seed=seed,
        )
    console.print(f"gate: {result.gate.get('reason', '?')}")
    if result.version is None:
        console.print(
            "[yellow]not registered:[/] the challenger did not pass the gate "
            f"({result.seconds:.0f} s)"
        )
        raise typer.Exit(1)
    bundle_uri = open_store(uri).url_for(f"models/{model_name}/{result.version}")
    console.print(
        f"[green]registered[/] {model_name} {result.version} in {result.seconds:.0f} s "
        f"-> {bundle_uri}"
    )


def open_model(model: str, store: str | None, folder: Path):
    """A verified bundle from a local folder or ``name[:version|alias]`` in the store."""
    from components.bundle import Bundle, fetch_bundle
    from components.store import open_store

    path = Path(model)
    if path.is_dir():
        return Bundle.open(path)
    name, _, ref = model.partition(":")
    return fetch_bundle(open_store(store_uri(store)), name, ref or "champion", folder)


@friendly_errors
def score(
    model: Annotated[
        str,
        typer.Option(
            help="name[:version|alias] in the store (default alias: champion), or a bundle folder."
        ),
    ] = DEFAULT_MODEL_NAME,
    data: Annotated[
        Path, typer.Option("--data", help="Transactions to score (CSV/Parquet).")
    ] = Path(),
    out: Annotated[Path, typer.Option("--out", help="Output file (.csv or .parquet).")] = Path(
        "scores.csv"
    ),
    reasons: Annotated[int, typer.Option(help="Reason codes per row (0: none).")] = 0,
    contributions: Annotated[
        str,
        typer.Option(
            help="Reason codes from XGBoost's approx (Saabas, fast; the server's default) or "
            "exact (tree SHAP) contributions."
        ),
    ] = "approx",
    store: StoreOpt = None,
    mapping: MappingOpt = None,
    map_: MapOpt = None,
    file_format: FormatOpt = None,
    max_rejected_share: Annotated[
        float, typer.Option(help="Fail above this share of bad rows.")
    ] = 0.05,
) -> None:
    """Score a file with a registered bundle: transaction_id, score, decision (and reasons).

    Features are computed point-in-time from the history inside the given data, so include the
    preceding weeks of transactions for meaningful windowed features. Rows that fail validation
    are not scored; they are counted and written next to the output (<out>.quarantine.csv).
    """
    from components.frames import write_table
    from components.loaders import load_transactions
    from components.mapping import load_mapping, parse_map_options
    from components.model import CONTRIBUTION_METHODS
    from components.scoring import score_frame
    from components.validation import (
        ValidationConfig,
        check_rejected_share,
        validate_transactions,
    )

    if contributions not in CONTRIBUTION_METHODS:
        raise typer.BadParameter(
            f"choose one of {', '.join(CONTRIBUTION_METHODS)}", param_hint="--contributions"
        )
    with tempfile.TemporaryDirectory() as tmp:
        bundle = open_model(model, store, Path(tmp))
        loaded = load_transactions(
            data, load_mapping(mapping).merged(parse_map_options(map_)), file_format
        )
        result = validate_transactions(
            loaded.frame,
            ValidationConfig(max_rejected_share=max_rejected_share),
            extra_numeric=loaded.extra_columns,
        )
        check_rejected_share(result, str(data))
        with console.status(
            f"scoring {len(result.accepted):,} transactions with {bundle.name} {bundle.version}"
        ):
            scored = score_frame(bundle, result.accepted, reasons, contributions)
    write_table(scored, out)
    if len(result.quarantined):
        write_table(result.quarantined, out.with_suffix(".quarantine.csv"))
    alerts = int((scored["decision"] == "alert").sum())
    console.print(
        f"scored {len(scored):,} of {result.report['rows_in']:,} rows with {bundle.name} "
        f"{bundle.version}: {alerts:,} alerts; {result.report['quarantined']:,} quarantined "
        f"-> {out}"
    )
