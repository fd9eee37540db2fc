"""The drift job: `fraudops drift check`, or `python -m monitoring.drift_job` in a CronJob."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from components.cli_errors import friendly_errors

__all__ = ["DriftRun", "app", "run_drift_check"]


@dataclass
class DriftRun:
    """Everything the drift job decided and wrote."""

    summary: dict[str, Any]
    html: Path
    store_keys: dict[str, str]


def run_drift_check(
    store_uri: str,
    model: str,
    ref: str,
    start: datetime,
    end: datetime,
    out_dir: Path,
    policy=None,
    retrain=None,
    now: datetime | None = None,
) -> DriftRun:
    """Judge the traffic of ``[start, end)`` against the bundle ``model:ref``'s training data.

    Args:
        store_uri: Object store with bundles and the inference log.
        model: Model name.
        ref: Version or alias of the bundle whose reference data to compare with (and whose
            traffic to read).
        start: Window start (UTC).
        end: Window end (UTC).
        out_dir: Local folder for the HTML report and the JSON summary.
        policy: :class:`monitoring.drift.DriftPolicy`.
        retrain: :class:`monitoring.retrain.RetrainConfig` (default: decide only).
        now: The current time (for the cooldown; default now).
    """
    import pandas as pd

    from components.audit import record_event
    from components.bundle import fetch_bundle
    from components.inference_log import read_frame
    from components.store import open_store
    from monitoring.alerts import Alert
    from monitoring.drift import (
        DriftPolicy,
        current_frame,
        decide,
        evidently_report,
        fast_drift,
        log_columns,
    )
    from monitoring.notify import notify
    from monitoring.retrain import RetrainConfig, trigger_retraining

    policy = policy or DriftPolicy()
    retrain = retrain or RetrainConfig()
    store = open_store(store_uri)
    now = now or datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = fetch_bundle(store, model, ref, Path(tmp))
        log = read_frame(store, model, bundle.version, start, end, log_columns(policy.monitored))
        current = current_frame(log, bundle, policy.monitored) if len(log) else pd.DataFrame()
        profile = json.loads((bundle.folder / "reference" / "profile.json").read_text())
        reference = pd.read_parquet(bundle.folder / "reference" / "sample.parquet")
        monitored = [c for c in policy.monitored if c in profile["columns"]]
        column_psi = fast_drift(profile, current, monitored) if len(current) else {}
        score_psi = fast_drift(profile, current, ["score"]).get("score") if len(current) else None
        decision = decide(column_psi, score_psi, len(current), policy)
        stamp = now.strftime("%Y-%m-%d/%H%M%S")
        html = out_dir / f"drift-{model}-{bundle.version}-{now:%Y%m%dT%H%M%S}.html"
        evidently: dict[str, Any] = {}
        if len(current):
            evidently = evidently_report(
                reference,
                current,
                monitored,
                html,
                policy.sample_rows,
                drift_share=policy.max_drifted_share,
            )
        summary = {
            "model": model,
            "version": bundle.version,
            "window": {"start": start.isoformat(), "end": end.isoformat()},
            "decision": "drift"
            if decision.drifted
            else ("no drift" if decision.judged else "not judged"),
            **decision.as_dict(),
            "evidently": evidently,
            "policy": policy.__dict__,
        }
    prefix = f"drift-reports/{model}/{bundle.version}/{stamp}"
    keys = {}
    if html.exists():
        keys["html"] = store.put_file(f"{prefix}/report.html", html, content_type="text/html").key
    if decision.drifted:
        summary["alerts"] = notify(
            store,
            Alert(
                kind="drift",
                severity="warning",
                title=f"Drift in live traffic of {model} {bundle.version}",
                summary="; ".join(decision.reasons),
                details={
                    "window": summary["window"],
                    "drifted_columns": decision.drifted_columns,
                    "score_psi": score_psi,
                    "report": keys.get("html"),
                },
                model=model,
                version=bundle.version,
            ),
        )
        summary["retraining"] = trigger_retraining(
            store,
            store_uri,
            model,
            retrain,
            "; ".join(decision.reasons),
            policy.cooldown_hours,
            now,
        )
    else:
        summary["retraining"] = {"status": "not needed"}
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / html.name.replace(".html", ".json")
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    keys["summary"] = store.put_json(f"{prefix}/summary.json", summary).key
    record_event(
        store,
        "drift_decision",
        {
            "model": model,
            "version": bundle.version,
            "window": summary["window"],
            "rows": len(current),
        },
        {
            "decision": summary["decision"],
            "drifted_columns": decision.drifted_columns,
            "score_psi": score_psi,
            "retraining": summary["retraining"],
            "report": keys.get("html"),
        },
    )
    return DriftRun(summary, html, keys)


app = typer.Typer(
    help="Drift of live traffic against the training data (Evidently).", no_args_is_help=True
)


@app.callback()
def _group() -> None:
    """Drift of live traffic against the training data (Evidently)."""


def _parse_time(value: str | None, default: datetime) -> datetime:
    if not value:
        return default
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@app.command("check")
@friendly_errors
def check(
    model: Annotated[
        str, typer.Option(help="name[:version|alias] (default alias: champion).")
    ] = "fraud-detector",
    store: Annotated[
        str | None, typer.Option(help="Object store (default: $FRAUDOPS_STORE or .fraudops/store).")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Window start, ISO time (default: end - --hours).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Window end, ISO time (default: now).")] = None,
    hours: Annotated[float, typer.Option(help="Window length when --start is not given.")] = 24.0,
    out_dir: Annotated[
        Path, typer.Option(help="Local folder for the HTML report and JSON summary.")
    ] = Path(".fraudops/drift"),
    psi_threshold: Annotated[float, typer.Option(help="A column drifted at this PSI.")] = 0.1,
    max_drifted_share: Annotated[
        float, typer.Option(help="Drift when this share of columns drifted.")
    ] = 0.25,
    score_psi_threshold: Annotated[
        float, typer.Option(help="Drift when the score PSI reaches this.")
    ] = 0.2,
    min_rows: Annotated[int, typer.Option(help="Windows with fewer rows are not judged.")] = 1000,
    cooldown_hours: Annotated[
        float, typer.Option(help="No retraining within this time of the last.")
    ] = 24.0,
    retrain: Annotated[
        str, typer.Option(help="On drift: none, local (kfp.local) or kfp (a KFP run).")
    ] = "none",
    retrain_data: Annotated[str, typer.Option(help="Newest training data for retraining.")] = "",
    kfp_host: Annotated[str, typer.Option(help="KFP endpoint, for --retrain kfp.")] = "",
    experiment: Annotated[
        str, typer.Option(help="KFP experiment, for --retrain kfp.")
    ] = "fraudops",
) -> None:
    """Judge logged traffic; write the Evidently HTML and a JSON summary; retrain on drift.

    Exits 0 when there is no drift, 3 when drift was found (so a CronJob or script can act),
    2 on a usage or configuration error.
    """
    from components.frames import default_store_uri
    from monitoring.drift import DriftPolicy
    from monitoring.retrain import RetrainConfig

    name, _, ref = model.partition(":")
    store_uri = default_store_uri(store)
    now = datetime.now(UTC)
    window_end = _parse_time(end, now)
    window_start = _parse_time(start, window_end - timedelta(hours=hours))
    try:
        policy = DriftPolicy(
            psi_threshold, max_drifted_share, score_psi_threshold, min_rows, cooldown_hours
        )
        config = RetrainConfig(retrain, retrain_data, kfp_host, experiment)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    run = run_drift_check(
        store_uri, name, ref or "champion", window_start, window_end, out_dir, policy, config
    )
    s = run.summary
    typer.echo(
        f"{s['model']} {s['version']}: {s['rows']:,} transactions from "
        f"{window_start:%Y-%m-%d %H:%M} to {window_end:%Y-%m-%d %H:%M} UTC"
    )
    for column, psi in sorted(s["column_psi"].items(), key=lambda kv: -kv[1]):
        flag = "DRIFT" if column in s["drifted_columns"] else "ok"
        typer.echo(f"  {column:<28} PSI {psi:7.3f}  {flag}")
    if s["score_psi"] is not None:
        typer.echo(f"  {'score':<28} PSI {s['score_psi']:7.3f}")
    typer.echo(f"decision: {s['decision'].upper()}: {'; '.join(s['reasons'])}")
    typer.echo(f"retraining: {json.dumps(s['retraining'], default=str)}")
    if run.html.exists():
        typer.echo(f"report: {run.html} (also {run.store_keys.get('html')} in the store)")
    raise typer.Exit(3 if s["decision"] == "drift" else 0)


def main() -> None:
    """Entry point of ``python -m monitoring.drift_job``."""
    app()


if __name__ == "__main__":
    main()
