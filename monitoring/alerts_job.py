"""`fraudops alerts suspicious`: one batched alert of the transactions the model flagged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from components.cli_errors import friendly_errors

__all__ = ["app"]

app = typer.Typer(
    help="Alerts: suspicious transactions, by email and webhook.", no_args_is_help=True
)


@app.callback()
def _group() -> None:
    """Alerts: suspicious transactions, by email and webhook."""


@app.command("suspicious")
@friendly_errors
def suspicious(
    model: Annotated[str, typer.Option(help="Model name.")] = "fraud-detector",
    store: Annotated[
        str | None, typer.Option(help="Object store (default: $FRAUDOPS_STORE).")
    ] = None,
    minutes: Annotated[float, typer.Option(help="Look back this far.")] = 15.0,
    max_items: Annotated[int, typer.Option(help="Most transactions listed in one alert.")] = 50,
) -> None:
    """Send one alert listing the transactions flagged ('alert' decisions) in the last minutes.

    Channels come from the environment (FRAUDOPS_SMTP_*, FRAUDOPS_ALERT_*; see docs/alerts.md).
    Run it on a schedule (a CronJob) next to the model server.
    """
    from components.frames import default_store_uri
    from components.inference_log import read_records
    from components.store import open_store
    from monitoring.alerts import suspicious_transactions_alert
    from monitoring.notify import notify

    s = open_store(default_store_uri(store))
    end = datetime.now(UTC)
    records = read_records(s, model, start=end - timedelta(minutes=minutes), end=end)
    alert = suspicious_transactions_alert(records, max_items)
    if alert is None:
        typer.echo(
            f"no flagged transactions among {len(records):,} in the last {minutes:g} minutes"
        )
        return
    delivered = notify(s, alert)
    typer.echo(f"{alert.title}: {delivered or 'no channel configured (recorded in the audit log)'}")
