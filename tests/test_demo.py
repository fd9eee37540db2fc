"""The README's main command: the whole loop, end to end, at the smallest scale."""

import json

import pandas as pd
from typer.testing import CliRunner

from components.audit import read_audit
from components.bundle import resolve
from components.inference_log import read_frame
from components.store import open_store
from fraudops.cli import app
from monitoring.labels import load_labels


def test_demo_runs_the_whole_loop_at_tiny_scale(tmp_path):
    home = tmp_path / "home"
    result = CliRunner().invoke(app, ["demo", "--scale", "tiny", "--home", str(home)])
    assert result.exit_code == 0, result.output
    out = result.output
    store = open_store(str(home / "store"))

    # data: a history, a normal live week, a changed period after it
    history = pd.read_parquet(home / "data" / "history.parquet")
    changed = pd.read_parquet(home / "data" / "changed.parquet")
    assert 15_000 < len(history) < 25_000
    assert changed["timestamp"].min() > history["timestamp"].max()

    # v1 trained and served; the normal week passed the drift job, the changed traffic did not
    assert "v1 registered as champion" in out
    drift = {
        e["inputs"]["window"]["start"]: e["outcome"] for e in read_audit(store, "drift_decision")
    }
    decisions = [o["decision"] for _, o in sorted(drift.items())]
    assert decisions == ["no drift", "drift"], decisions
    reports = sorted((home / "reports").glob("drift-*.html"))
    assert len(reports) == 2 and all(r.stat().st_size > 10_000 for r in reports)
    summaries = [json.loads(p.read_text()) for p in sorted((home / "reports").glob("*.json"))]
    assert summaries[-1]["retraining"]["status"] == "started"

    # the drift alert reached the webhook receiver
    alerts = [json.loads(p.read_text()) for p in (home / "alerts").glob("alert-*.json")]
    assert any(a.get("kind") == "drift" for a in alerts), alerts

    # v2 came from retraining and went through the canary analysis
    v2 = summaries[-1]["retraining"]["version"]
    assert v2 == "v2"
    steps = read_audit(store, "rollout.step")
    assert steps and all(s["inputs"]["canary"] == "v2" for s in steps)
    outcome = read_audit(store, "rollout.promote") + read_audit(store, "rollout.rollback")
    assert len(outcome) == 1
    expected_champion = "v2" if read_audit(store, "rollout.promote") else "v1"
    assert resolve(store, "fraud-detector", "champion") == expected_champion
    assert "client saw 0 failed" in out

    # every transaction a client sent is in the inference log, and labels joined to them
    logged = read_frame(store, "fraud-detector", columns=["tx.transaction_id", "version"])
    assert logged["tx.transaction_id"].is_unique
    assert set(logged["version"].astype(str)) == {"v1", "v2"}
    assert "realised performance" in out and "labels matched" in out
    # each label joined to its prediction carries the transaction's terminal and time
    labels = load_labels(store, "fraud-detector")
    joined = labels["transaction_id"].isin(logged["tx.transaction_id"].astype(str))
    assert joined.sum() > 0
    assert labels.loc[joined, ["terminal_id", "timestamp"]].notna().all().all()
    daily = pd.read_parquet(home / "store" / "performance" / "fraud-detector" / "daily.parquet")
    assert set(daily["version"].astype(str)) == {"v1", "v2"}
    assert daily["transactions"].sum() == len(logged)

    # the summary table and the files to open
    assert "summary" in out and "alerts sent" in out
    assert (home / "bundles" / "fraud-detector" / "v1" / "model_card.md").exists()


def test_demo_rejects_an_unknown_scale(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--scale", "huge", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert "choose one of tiny, small, medium, large" in result.output
