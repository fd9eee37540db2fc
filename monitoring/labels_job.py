"""`fraudops labels ingest`: late labels in, realised performance out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from components.cli_errors import friendly_errors

__all__ = ["app"]

app = typer.Typer(help="Late labels: confirmed fraud and chargebacks.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Late labels: confirmed fraud and chargebacks."""


@app.command("ingest")
@friendly_errors
def ingest(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV/Parquet: transaction_id, is_fraud (or chargeback); optional label_time, "
            "and terminal_id and timestamp of the transaction (else taken from its logged "
            "prediction)."
        ),
    ],
    model: Annotated[str, typer.Option(help="Model name.")] = "fraud-detector",
    store: Annotated[
        str | None, typer.Option(help="Object store (default: $FRAUDOPS_STORE).")
    ] = None,
    min_precision: Annotated[
        float, typer.Option(help="Floor: share of alerts that were fraud.")
    ] = 0.0,
    min_recall: Annotated[
        float, typer.Option(help="Floor: share of fraud that was alerted on.")
    ] = 0.5,
    min_average_precision: Annotated[float, typer.Option(help="Floor: average precision.")] = 0.3,
    min_frauds: Annotated[
        int, typer.Option(help="Days with fewer labelled frauds are not judged.")
    ] = 5,
    only_labelled: Annotated[
        bool,
        typer.Option(
            "--only-labelled",
            help="Judge only labelled predictions (default: unlabelled counts as genuine, "
            "as with a chargeback feed).",
        ),
    ] = False,
    retrain: Annotated[str, typer.Option(help="On a breach: none, local or kfp.")] = "none",
    retrain_data: Annotated[str, typer.Option(help="Newest training data for retraining.")] = "",
    kfp_host: Annotated[str, typer.Option(help="KFP endpoint, for --retrain kfp.")] = "",
    cooldown_hours: Annotated[
        float, typer.Option(help="No retraining within this time of the last.")
    ] = 24.0,
) -> None:
    """Join labels to logged predictions; store per-day realised precision, recall and AP.

    A day with enough labelled fraud below a floor is a performance event: it goes to the audit
    log, to the alert channels, and (with --retrain) triggers retraining. Exits 3 on a breach.
    """
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from components.audit import record_event
    from components.frames import default_store_uri
    from components.store import open_store
    from monitoring.alerts import Alert
    from monitoring.labels import LabelFileError, PerformanceFloor, ingest_labels
    from monitoring.notify import notify
    from monitoring.retrain import RetrainConfig, trigger_retraining

    console = Console()
    store_uri = default_store_uri(store)
    try:
        config = RetrainConfig(retrain, retrain_data, kfp_host)
        frame = (
            pd.read_parquet(file)
            if file.suffix in (".parquet", ".pq")
            # ids are text: "0042" and a column with blanks must not become 42 and 42.0
            else pd.read_csv(file, dtype={c: str for c in ("transaction_id", "terminal_id")})
        )
        s = open_store(store_uri)
        floor = PerformanceFloor(min_precision, min_recall, min_average_precision, min_frauds)
        result = ingest_labels(s, model, frame, floor, not only_labelled, str(file))
    except (LabelFileError, ValueError, FileNotFoundError) as e:
        console.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
        raise typer.Exit(2) from e
    console.print(
        f"labels in {result.labels_in:,}: matched {result.matched:,}, "
        f"unmatched {result.unmatched:,} (kept for later), "
        f"duplicates collapsed {result.duplicates:,}; {result.placed:,} with their "
        "transaction's terminal and time (the model servers put those in their online state)"
    )
    table = Table(title=f"realised performance of {model}")
    for column in (
        "day",
        "version",
        "transactions",
        "frauds",
        "alerts",
        "precision",
        "recall",
        "average_precision",
    ):
        table.add_column(column)
    for row in result.daily.to_dict("records"):
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)
    record_event(
        s,
        "labels_ingest",
        {"model": model, "file": str(file)},
        {
            "labels_in": result.labels_in,
            "matched": result.matched,
            "unmatched": result.unmatched,
            "placed": result.placed,
            "breaches": result.breaches,
        },
    )
    if not result.breaches:
        console.print("realised performance is above the floor")
        return
    reason = "; ".join(
        f"{b['day']} {b['version']}: "
        + ", ".join(f"{k} {v:.3f}" for k, v in b["below_floor"].items())
        for b in result.breaches
    )
    record_event(
        s,
        "performance_drop",
        {"model": model, "floor": floor.__dict__},
        {"breaches": result.breaches},
    )
    console.print(f"[bold yellow]performance below the floor:[/] {reason}")
    delivered = notify(
        s,
        Alert(
            kind="performance",
            severity="critical",
            title=f"Realised performance of {model} below the floor",
            summary=reason,
            details={"breaches": result.breaches, "floor": floor.__dict__},
            model=model,
        ),
    )
    console.print(f"alert: {delivered or 'no channel configured (recorded in the audit log)'}")
    outcome = trigger_retraining(
        s, store_uri, model, config, f"performance: {reason}", cooldown_hours
    )
    console.print(f"retraining: {outcome}")
    raise typer.Exit(3)
