"""The drift job on generated traffic: no drift passes, --drift traffic is flagged."""

import json
from dataclasses import replace
from datetime import timedelta

import pandas as pd
import pytest
from typer.testing import CliRunner

from components.audit import read_audit
from components.bundle import fetch_bundle, list_versions
from components.frames import write_table
from components.generator import GeneratorConfig, generate_transactions
from components.inference_log import make_record, write_batch
from components.scoring import score_frame
from components.store import open_store
from monitoring.drift import DriftPolicy
from monitoring.drift_job import app, run_drift_check
from monitoring.retrain import RetrainConfig

BASE = GeneratorConfig(n_customers=300, n_terminals=600, n_days=45, seed=5)


@pytest.fixture(scope="module")
def world(tmp_path_factory, training_steps):
    """A registered champion and two later weeks of traffic, logged as the server logs it."""
    root = tmp_path_factory.mktemp("drift")
    history = generate_transactions(BASE)
    data = write_table(history, root / "history.parquet")
    store_uri = str(root / "store")
    (root / "steps").mkdir()
    training_steps(root / "steps", data, store_uri)
    store = open_store(store_uri)
    bundle = fetch_bundle(store, "fraud", "champion", root / "bundle")
    calm = generate_transactions(replace(BASE, start_date="2026-05-16", n_days=7))
    shifted = generate_transactions(replace(BASE, start_date="2026-05-23", n_days=7, drift=True))
    for frame in (calm, shifted):
        scored = score_frame(bundle, pd.concat([history, frame], ignore_index=True), reasons=0)
        scored = scored.iloc[len(history) :]
        records = [
            make_record(
                model="fraud",
                version=bundle.version,
                transaction={
                    **{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in tx.items()},
                },
                score=score,
                decision=decision,
                time=tx["timestamp"].to_pydatetime(),
            )
            for tx, score, decision in zip(
                frame.drop(columns=["is_fraud", "label_known_at", "fraud_scenario"])
                .astype(object)
                .to_dict("records"),
                scored["score"],
                scored["decision"],
                strict=True,
            )
        ]
        write_batch(store, records)
    return {"store": store_uri, "calm": calm, "shifted": shifted, "root": root, "data": data}


def _window(frame):
    return frame["timestamp"].min().to_pydatetime(), frame[
        "timestamp"
    ].max().to_pydatetime() + timedelta(seconds=1)


def test_traffic_without_drift_passes(world, tmp_path, webhook_receiver):
    start, end = _window(world["calm"])
    run = run_drift_check(world["store"], "fraud", "champion", start, end, tmp_path)
    s = run.summary
    assert webhook_receiver == []  # no drift, no alert
    assert s["rows"] == len(world["calm"])
    assert s["decision"] == "no drift", s["reasons"]
    assert s["retraining"] == {"status": "not needed"}
    assert run.html.exists() and run.html.stat().st_size > 100_000


def test_drifted_traffic_is_flagged_with_the_right_columns_and_reports(
    world, tmp_path, webhook_receiver
):
    start, end = _window(world["shifted"])
    run = run_drift_check(world["store"], "fraud", "champion", start, end, tmp_path)
    s = run.summary
    assert [a["kind"] for a in webhook_receiver] == ["drift"]
    assert "amount" in webhook_receiver[0]["details"]["drifted_columns"]
    assert s["alerts"]["webhook"]["status"] == "delivered"
    assert s["decision"] == "drift", s["reasons"]
    assert {"amount", "log_amount", "channel"} <= set(s["drifted_columns"])
    assert "merchant_category" not in s["drifted_columns"]  # the mix of merchants did not change
    assert (
        s["evidently"]["columns"]["amount"]["value"]
        > s["evidently"]["columns"]["merchant_category"]["value"]
    )
    html = run.html.read_text()
    assert "<html" in html.lower() and '<script src="http' not in html  # opens offline
    # the report's own headline agrees with the decision (Evidently's default share is 0.5)
    assert s["evidently"]["drifted_share"] >= DriftPolicy().max_drifted_share
    store = open_store(world["store"])
    assert store.exists(run.store_keys["html"]) and store.exists(run.store_keys["summary"])
    saved = json.loads(run.html.with_suffix(".json").read_text())
    assert saved["decision"] == "drift"
    event = read_audit(store, "drift_decision")[-1]
    assert (
        event["outcome"]["decision"] == "drift" and "amount" in event["outcome"]["drifted_columns"]
    )


def test_small_windows_are_not_judged(world, tmp_path):
    start, _ = _window(world["shifted"])
    run = run_drift_check(
        world["store"], "fraud", "champion", start, start + timedelta(minutes=30), tmp_path
    )
    assert run.summary["decision"] == "not judged"
    assert "minimum 1000" in run.summary["reasons"][0]


@pytest.mark.slow  # a kfp.local training run (about 50 s); the demo test retrains on drift
def test_drift_triggers_local_retraining_then_the_cooldown_holds(world, tmp_path):
    store = open_store(world["store"])
    # the newest data: the history, then four weeks of the changed behaviour
    changed = generate_transactions(replace(BASE, start_date="2026-05-16", n_days=28, drift=True))
    newest = write_table(
        pd.concat([generate_transactions(BASE), changed], ignore_index=True),
        tmp_path / "newest.parquet",
    )
    config = RetrainConfig("local", str(newest), pipeline_root=str(tmp_path / "kfp"))
    start, end = _window(world["shifted"])
    before = list_versions(store, "fraud")
    first = run_drift_check(
        world["store"], "fraud", "champion", start, end, tmp_path, retrain=config
    )
    retraining = first.summary["retraining"]
    assert retraining["status"] == "started"
    assert retraining["gate"]["passed"], retraining["gate"]
    assert retraining["version"] not in before
    assert list_versions(store, "fraud") == [*before, retraining["version"]]
    second = run_drift_check(
        world["store"], "fraud", "champion", start, end, tmp_path, retrain=config
    )
    assert second.summary["retraining"]["status"] == "cooldown"
    assert [e["outcome"]["status"] for e in read_audit(store, "retrain")] == ["started"]


def test_command_line_exit_codes_and_summary(world, tmp_path):
    start, end = _window(world["shifted"])
    result = CliRunner().invoke(
        app,
        [
            "check",
            "--model",
            "fraud",
            "--store",
            world["store"],
            "--start",
            start.isoformat(),
            "--end",
            end.isoformat(),
            "--out-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 3, result.output
    assert "decision: DRIFT" in result.output and "amount" in result.output
    assert "report: " in result.output
    bad = CliRunner().invoke(app, ["check", "--store", world["store"], "--retrain", "local"])
    assert bad.exit_code == 2 and "--retrain-data" in bad.output


def test_retraining_on_a_cluster_creates_a_kfp_run(tmp_path):
    """No KFP backend runs here: a stand-in client records the run it is asked to create."""
    from components.store import LocalStore
    from monitoring.retrain import trigger_retraining

    class RecordingClient:
        def __init__(self):
            self.calls = []

        def create_run_from_pipeline_package(self, package, **kwargs):
            self.calls.append((package, kwargs))
            return type("Run", (), {"run_id": f"run-{len(self.calls)}"})()

    store = LocalStore(tmp_path / "store")
    config = RetrainConfig("kfp", "s3://fraudops/data/newest.parquet", kfp_host="http://kfp:8888")
    client = RecordingClient()
    outcome = trigger_retraining(
        store, "s3://fraudops", "fraud", config, "drift", 24, kfp_client=client
    )
    assert outcome["status"] == "started" and outcome["run_id"] == "run-1"
    package, kwargs = client.calls[0]
    assert package.endswith("pipelines/compiled/training.yaml")
    assert kwargs["arguments"] == {
        "data_uri": "s3://fraudops/data/newest.parquet",
        "store_uri": "s3://fraudops",
        "model_name": "fraud",
    }
    again = trigger_retraining(
        store, "s3://fraudops", "fraud", config, "drift", 24, kfp_client=client
    )
    assert again["status"] == "cooldown" and len(client.calls) == 1
    assert read_audit(store, "retrain")[0]["outcome"]["run_id"] == "run-1"
