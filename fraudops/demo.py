"""`fraudops demo`: the whole loop on embedded defaults.

generate a portfolio -> train and register v1 (Kubeflow pipeline under ``kfp.local``) -> serve v1
behind the local gateway (KServe model server) -> replay normal traffic -> the drift job passes ->
traffic with changed behaviour arrives -> the drift job flags it, writes its Evidently report,
alerts and retrains -> v2 is registered as the candidate -> v2 goes out as a canary and the
analysis promotes or rolls it back -> late labels arrive and realised performance is reported.

Everything runs on this machine: the object store is a folder, the pipeline runs under
``kfp.local``, the model servers are real KServe servers on loopback, alerts go over the webhook
channel to a receiver on loopback (``<home>/alerts``). In the demo the labels of the changed
period are known up front (the generator knows them); in life retraining waits for them.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["SCALES", "DemoFailedError", "DemoResult", "run_demo"]

MODEL_NAME = "fraud-detector"
SCALES = {"tiny": 20_000, "small": 200_000, "medium": 1_000_000, "large": 5_000_000}
# Transactions replayed through the server per traffic stage, by scale.
REPLAYED = {"tiny": 2_000, "small": 5_000, "medium": 10_000, "large": 20_000}
# Days of each period. The changed period's first RETRAIN_DAYS come back labelled and go into
# retraining; the canary then serves the days after them, later than both models' data (a model
# server's online state must never see transactions older than its bundle's snapshot).
HISTORY_DAYS, LIVE_DAYS, CHANGED_DAYS, RETRAIN_DAYS = 60, 7, 42, 28
CANARY_STEPS = (25, 50, 100)
ALERT_SHARE = 0.01  # the fraud team reviews about 1% of transactions (the threshold policy)
# v2 is retrained because behaviour changed: it is expected to score the changed traffic
# differently from v1 and to flag a different share of it (it learned the new fraud pattern).
# So the score shift is recorded, not a gate, and the alert-rate band is wider than the
# default [0.5, 2]; errors and latency gate as usual, and a model that flags everything or
# nothing still fails (docs/rollout.md, "a model retrained after drift").
RETRAINED_AFTER_DRIFT = {
    "min_requests": 20,
    "min_transactions": 100,
    "max_score_psi": None,
    "min_alert_rate_ratio": 0.25,
    "max_alert_rate_ratio": 4.0,
}


class DemoFailedError(RuntimeError):
    """A stage of the demo failed; the message names the stage and what to look at."""


@dataclass
class DemoResult:
    """What the demo produced: one row per stage, the summary numbers and the files to open."""

    stages: list[dict] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    gateway_url: str = ""


@dataclass
class _Run:
    home: Path
    scale: str
    log: Callable[[str], None]
    progress: bool
    result: DemoResult = field(default_factory=DemoResult)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def store_uri(self) -> str:
        return str(self.home / "store")

    @property
    def training_params(self) -> dict[str, Any]:
        per_day = max(3, round(SCALES[self.scale] / HISTORY_DAYS * ALERT_SHARE))
        return {"model_name": MODEL_NAME, "threshold_policy": f"alert_budget:{per_day}"}

    @contextmanager
    def stage(self, name: str) -> Iterator[dict]:
        """Time a stage, record its row, and turn any failure into :class:`DemoFailedError`."""
        row: dict[str, Any] = {"stage": name, "result": ""}
        started = time.perf_counter()
        self.log(f"[bold]{name}[/bold] ...")
        try:
            yield row
        except DemoFailedError:
            raise
        except Exception as e:
            row["result"] = f"FAILED: {e}"
            raise DemoFailedError(f"stage '{name}' failed: {e}") from e
        finally:
            row["seconds"] = round(time.perf_counter() - started, 1)
            self.result.stages.append(row)
        self.log(f"  {row['result']} ({row['seconds']} s)")


def run_demo(
    home: Path,
    scale: str = "small",
    seed: int = 7,
    log: Callable[[str], None] = print,
    keep_running: bool = False,
    progress: bool = True,
    step_seconds: float | None = None,
) -> DemoResult:
    """Run the whole loop and return its results.

    Args:
        home: Working folder; the demo's data, store and reports are replaced on each run.
        scale: One of :data:`SCALES` (number of transactions of the history).
        seed: Seed of the generated portfolio.
        log: Called with one line per stage (rich markup allowed).
        keep_running: Leave the gateway and model servers up (the caller stops them with
            ``result.summary['stop']()``).
        progress: Show progress bars.
        step_seconds: Length of each canary step's analysis window (default by scale).

    Raises:
        DemoFailedError: a stage failed.
    """
    from fraudops.inbox import WebhookInbox

    for folder in ("data", "store", "kfp", "bundles", "reports", "alerts", "logs"):
        shutil.rmtree(home / folder, ignore_errors=True)
    run = _Run(home, scale, log, progress)
    inbox = WebhookInbox(home / "alerts")
    previous = os.environ.get("FRAUDOPS_ALERT_WEBHOOK_URL")
    os.environ["FRAUDOPS_ALERT_WEBHOOK_URL"] = inbox.url
    gateway = None
    try:
        _generate(run, seed)
        v1 = _train(run)
        gateway = _serve(run)
        _replay_and_check(run, gateway.url, "live", expect_drift=False)
        v2 = _replay_and_check(run, gateway.url, "changed", expect_drift=True)
        if v2:
            _canary(run, gateway.url, v1, v2, step_seconds)
        _labels(run)
        run.result.summary["alerts sent"] = len(inbox.received)
        run.result.files["alerts received"] = str(home / "alerts")
        run.result.gateway_url = gateway.url
    finally:
        if gateway is not None and not keep_running:
            gateway.stop()
        elif gateway is not None:
            run.result.summary["stop"] = gateway.stop
        inbox.close()
        if previous is None:
            os.environ.pop("FRAUDOPS_ALERT_WEBHOOK_URL", None)
        else:
            os.environ["FRAUDOPS_ALERT_WEBHOOK_URL"] = previous
    return run.result


def _generate(run: _Run, seed: int) -> None:
    """History for training, a normal live week, then a period with changed behaviour."""
    from components.frames import write_table
    from components.generator import GeneratorConfig, drift_period, generate_transactions
    from components.validation import ValidationConfig, check_rejected_share, validate_transactions

    base = GeneratorConfig.for_transactions(SCALES[run.scale], n_days=HISTORY_DAYS, seed=seed)
    live = replace(drift_period(base, n_days=LIVE_DAYS), drift=False)
    periods = {"history": base, "live": live, "changed": drift_period(live, CHANGED_DAYS)}
    with run.stage("generate + validate") as row:
        counts = []
        for name, config in periods.items():
            frame = generate_transactions(config)
            path = write_table(frame, run.home / "data" / f"{name}.parquet")
            validation = validate_transactions(frame, ValidationConfig(require_label=True))
            check_rejected_share(validation, str(path))
            run.frames[name] = frame
            run.result.files[f"{name} data"] = str(path)
            counts.append(
                f"{name} {validation.report['accepted']:,}/{len(frame):,} "
                f"({frame['is_fraud'].mean():.2%} fraud)"
            )
        row["result"] = "accepted: " + ", ".join(counts)


def _train(run: _Run) -> str:
    """Train and register v1 on the history with the Kubeflow pipeline under kfp.local."""
    from pipelines.local import run_training_locally

    with run.stage("train + register v1 (Kubeflow pipeline, kfp.local)") as row:
        result = run_training_locally(
            run.result.files["history data"],
            run.store_uri,
            run.home / "kfp",
            **run.training_params,
        )
        if result.version is None:
            raise RuntimeError(f"the gate refused the first model: {result.gate.get('reason')}")
        test = _bundle(run, result.version).metrics()["test"]
        run.result.summary["v1"] = {
            "test AP": round(test["average_precision"], 3),
            "ROC-AUC": round(test["roc_auc"], 3),
        }
        row["result"] = (
            f"{result.version} registered as champion: test average precision "
            f"{test['average_precision']:.3f}, ROC-AUC {test['roc_auc']:.3f}"
        )
    return result.version


def _bundle(run: _Run, version: str):
    from components.bundle import fetch_bundle
    from components.store import open_store

    bundle = fetch_bundle(open_store(run.store_uri), MODEL_NAME, version, run.home / "bundles")
    run.result.files[f"model card {version}"] = str(bundle.folder / "model_card.md")
    run.result.files[f"plots {version}"] = str(bundle.folder / "plots")
    return bundle


def _serve(run: _Run):
    """The local gateway in front of a KServe model server for the champion."""
    from fraudops.local_processes import LocalProcess, free_port

    with run.stage("serve v1 (KServe model server behind the local gateway)") as row:
        port = free_port()
        args = [
            *("-m", "serving.gateway"),
            "--model_uri",
            f"{run.store_uri}#{MODEL_NAME}:champion",
            "--port",
            str(port),
            *("--server_arg", "--log_flush_interval", "--server_arg", "0.5"),
            *("--server_arg", "--reasons_for", "--server_arg", "alerts"),
        ]
        gateway = LocalProcess(
            args,
            f"http://127.0.0.1:{port}/v2/health/ready",
            run.home / "logs" / "gateway.log",
        )
        gateway.url = f"http://127.0.0.1:{port}"
        gateway.wait_ready()
        run.result.files["server logs"] = str(run.home / "logs")
        row["result"] = f"V1 and V2 at {gateway.url}/v1/models/{MODEL_NAME}:predict"
    return gateway


def _replay(run: _Run, url: str, frame: pd.DataFrame, label: str, **kwargs):
    """Replay transactions through the gateway with a progress bar; fail on any failed request."""
    from rich.progress import Progress

    from fraudops.traffic import replay

    with Progress(disable=not run.progress, transient=True) as bar:
        task = bar.add_task(f"replaying {label}", total=len(frame))
        stats = replay(url, MODEL_NAME, frame, progress=lambda n: bar.advance(task, n), **kwargs)
    previous = run.frames.get("replayed")
    run.frames["replayed"] = frame if previous is None else pd.concat([previous, frame])
    if not stats.ok:
        raise RuntimeError(
            f"{stats.failed_requests} of {stats.requests} requests failed: {stats.first_errors}"
        )
    return stats


def _wait_for_log(run: _Run, version: str | None, since: datetime, expected: int) -> None:
    """Wait until the servers flushed ``expected`` records of this window (one version or all)."""
    from components.inference_log import read_frame
    from components.store import open_store

    store = open_store(run.store_uri)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        n = len(read_frame(store, MODEL_NAME, version, since, None, ["id"]))
        if n >= expected:
            return
        time.sleep(0.5)
    raise RuntimeError(f"only {n:,} of {expected:,} inference-log records arrived in 60 s")


def _replay_and_check(run: _Run, url: str, period: str, expect_drift: bool) -> str | None:
    """Replay a period's first transactions, then run the drift job on exactly that window."""
    from monitoring.drift import DriftPolicy
    from monitoring.drift_job import run_drift_check
    from monitoring.retrain import RetrainConfig

    frame = run.frames[period].sort_values("timestamp", kind="stable").head(REPLAYED[run.scale])
    started = datetime.now(UTC)
    with run.stage(f"replay {period} traffic") as row:
        stats = _replay(run, url, frame, f"{period} traffic")
        version = stats.by_version.most_common(1)[0][0]
        _wait_for_log(run, version, started, stats.transactions)
        row["result"] = (
            f"{stats.transactions:,} transactions in {stats.requests:,} requests "
            f"({dict(stats.by_protocol)}), {stats.alerts} alerts, 0 failed, "
            f"{stats.transactions / stats.seconds:,.0f} tx/s"
        )
    ended = datetime.now(UTC)
    retrain = RetrainConfig()
    if expect_drift:
        data = run.home / "data" / "latest.parquet"
        changed = run.frames["changed"]
        known = changed[changed["timestamp"] < _retrain_cut(changed)]
        pd.concat([run.frames["history"], run.frames["live"], known]).to_parquet(data)
        run.result.files["retraining data"] = str(data)
        retrain = RetrainConfig(
            mode="local",
            data_uri=str(data),
            pipeline_root=str(run.home / "kfp"),
            params={
                "threshold_policy": run.training_params["threshold_policy"],
                "train_days": 40.0,
            },
        )
    with run.stage(f"drift job on the {period} window") as row:
        check = run_drift_check(
            run.store_uri,
            MODEL_NAME,
            version,
            started,
            ended,
            run.home / "reports",
            policy=DriftPolicy(min_rows=min(1000, len(frame) // 2)),
            retrain=retrain,
        )
        summary = check.summary
        drifted = summary["decision"] == "drift"
        run.result.files[f"drift report ({period})"] = str(check.html)
        run.result.summary[f"drift ({period})"] = {
            "decision": summary["decision"],
            "drifted columns": len(summary.get("drifted_columns") or []),
            "score PSI": _round(summary.get("score_psi")),
        }
        row["result"] = (
            f"{summary['decision']}: {len(summary.get('drifted_columns') or [])} columns drifted"
            f", score PSI {_round(summary.get('score_psi'))}"
        )
        if drifted != expect_drift:
            raise RuntimeError(
                f"expected {'drift' if expect_drift else 'no drift'}, the job said "
                f"{summary['decision']} (report: {check.html})"
            )
        if not expect_drift:
            return None
        retraining = summary["retraining"]
        row["result"] += f"; retraining {retraining['status']}"
        new = retraining.get("version")
        if new:
            test = _bundle(run, new).metrics()["test"]
            run.result.summary["v2"] = {"test AP": round(test["average_precision"], 3)}
            row["result"] += (
                f" -> {new} registered as candidate (test AP {test['average_precision']:.3f})"
            )
        else:
            row["result"] += f" ({retraining.get('gate', {}).get('reason', 'no new version')})"
        return new


def _canary(run: _Run, url: str, stable: str, canary: str, step_seconds: float | None) -> None:
    """Roll the candidate out as a canary through the gateway while traffic keeps flowing."""
    from components.store import open_store
    from monitoring.canary import CanaryThresholds
    from monitoring.rollout import GatewayMetrics, LocalGatewayTarget, run_rollout

    step_seconds = step_seconds or {"tiny": 5.0, "small": 8.0}.get(run.scale, 15.0)
    changed = run.frames["changed"]
    traffic = changed[changed["timestamp"] >= _retrain_cut(changed)]
    batch = 5 if run.scale == "tiny" else 25  # enough traffic to judge, and to last the steps
    stop = threading.Event()
    stats: dict[str, Any] = {}
    started = datetime.now(UTC)

    def send() -> None:
        from fraudops.traffic import replay

        stats["replay"] = replay(url, MODEL_NAME, traffic, batch_size=batch, stop=stop, rate=20.0)

    with run.stage(f"canary rollout of {canary} ({' -> '.join(map(str, CANARY_STEPS))}%)") as row:
        client = threading.Thread(target=send, daemon=True)
        client.start()
        try:
            outcome = run_rollout(
                LocalGatewayTarget(url),
                GatewayMetrics(url),
                store=open_store(run.store_uri),
                model=MODEL_NAME,
                version=canary,
                steps=CANARY_STEPS,
                step_seconds=step_seconds,
                thresholds=CanaryThresholds(**RETRAINED_AFTER_DRIFT),
                log_delay_seconds=1.0,
                log=lambda line: run.log(f"  {line}"),
            )
        finally:
            stop.set()
            client.join(60)
        replayed = stats["replay"]
        _wait_for_log(run, None, started, replayed.transactions)
        sent = traffic.head(replayed.transactions)
        run.frames["replayed"] = pd.concat([run.frames["replayed"], sent])
        run.result.summary["rollout"] = {
            "decision": outcome.decision,
            "steps": ", ".join(f"{s.percent}% {s.verdict.status}" for s in outcome.steps),
            "client requests": replayed.requests,
            "failed": replayed.failed_requests,
        }
        row["result"] = (
            f"{outcome.decision} ({outcome.reason}); client saw {replayed.failed_requests} "
            f"failed of {replayed.requests} requests, by version {dict(replayed.by_version)}"
        )
        if not replayed.ok:
            raise RuntimeError(f"clients saw failed requests: {replayed.first_errors}")


def _labels(run: _Run) -> None:
    """Late labels for the replayed transactions arrive; realised performance per version."""
    from components.store import open_store
    from monitoring.labels import ingest_labels

    replayed = run.frames["replayed"]
    labels = replayed[["transaction_id", "is_fraud", "label_known_at"]].rename(
        columns={"label_known_at": "label_time"}
    )
    with run.stage("late labels -> realised performance") as row:
        ingest = ingest_labels(open_store(run.store_uri), MODEL_NAME, labels)
        daily = ingest.daily
        per_version = []
        for version, group in daily.groupby("version"):
            tp_alerts = (group["precision"].fillna(0) * group["alerts"]).sum()
            precision = tp_alerts / group["alerts"].sum() if group["alerts"].sum() else None
            recall = tp_alerts / group["frauds"].sum() if group["frauds"].sum() else None
            realised = {
                "transactions": int(group["transactions"].sum()),
                "frauds": int(group["frauds"].sum()),
                "alerts": int(group["alerts"].sum()),
                "precision": _round(precision),
                "recall": _round(recall),
            }
            run.result.summary[f"realised {version}"] = realised
            per_version.append(
                f"{version}: precision {realised['precision']}, recall {realised['recall']} "
                f"on {realised['transactions']:,} tx"
            )
        row["result"] = (
            f"{ingest.matched:,} of {ingest.labels_in:,} labels matched, {ingest.placed:,} "
            "placed for the servers' online state; " + "; ".join(per_version)
        )


def _retrain_cut(changed: pd.DataFrame) -> pd.Timestamp:
    """End of the changed period's part that retraining learns from."""
    return changed["timestamp"].min().normalize() + pd.Timedelta(days=RETRAIN_DAYS)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or value != value else round(float(value), digits)
