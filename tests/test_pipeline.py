"""The training pipeline: compiled YAML, kfp.local runs, the gate, and batch scoring."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from components.audit import read_audit
from components.bundle import fetch_bundle, resolve
from components.frames import write_table
from components.generator import GeneratorConfig, generate_transactions
from components.kfp_components import DEFAULT_IMAGE
from components.scoring import score_frame
from components.store import open_store
from fraudops.cli import app
from pipelines.compile import COMPILED, compile_training
from pipelines.local import run_training_locally

BUNDLE_FILES = {
    "MANIFEST.json",
    "feature_spec.json",
    "threshold.json",
    "metrics.json",
    "gate.json",
    "training.json",
    "model_card.md",
    "model_card.json",
    "model/model.json",
    "model/model_meta.json",
    "reference/sample.parquet",
    "reference/profile.json",
    "online/snapshot.parquet",
    "plots/roc.png",
    "plots/precision_recall.png",
    "plots/confusion_matrix.png",
    "plots/feature_importance.png",
    "plots/score_distribution.png",
}


@pytest.fixture(scope="module")
def training_file(tmp_path_factory) -> Path:
    """About 27k labelled transactions over 45 days."""
    frame = generate_transactions(
        GeneratorConfig(n_customers=300, n_terminals=600, n_days=45, seed=5)
    )
    return write_table(frame, tmp_path_factory.mktemp("data") / "train.parquet")


def _without_sdk_stamp(text: str) -> str:
    """The compiled YAML minus the line naming the kfp patch release that wrote it."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("sdkVersion:"))


def test_compiled_pipeline_is_up_to_date(tmp_path):
    fresh = compile_training(tmp_path / "training.yaml")
    assert _without_sdk_stamp(fresh.read_text()) == _without_sdk_stamp(COMPILED.read_text()), (
        "pipelines/compiled/training.yaml is stale: run `fraudops pipeline compile`"
    )


def test_compiled_pipeline_loads_back_with_the_kfp_sdk():
    import yaml
    from kfp import components

    pipeline = components.load_component_from_file(str(COMPILED))
    inputs = pipeline.component_spec.inputs
    assert {"data_uri", "store_uri", "model_type", "threshold_policy", "label_delay_days"} <= set(
        inputs
    )
    assert inputs["model_type"].default == "xgboost"
    spec, platform = yaml.safe_load_all(COMPILED.read_text())
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {DEFAULT_IMAGE}
    tasks = spec["root"]["dag"]["tasks"]
    assert {"validate-op", "features-op", "split-op", "train-op", "evaluate-op", "gate-op"} <= set(
        tasks
    )
    assert "condition-1" in tasks  # register runs only when the gate passes

    # On a cluster, exactly the steps that touch the store get the S3 Secret and ConfigMap.
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == {"exec-validate-op", "exec-gate-op", "exec-register-op"}
    for name, config in executors.items():
        (secret,) = config["secretAsEnv"]
        assert {e["envVar"] for e in secret["keyToEnv"]} == {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        }, name
        assert secret["secretNameParameter"]["componentInputParameter"].endswith("s3_secret")
        (config_map,) = config["configMapAsEnv"]
        assert "S3_ENDPOINT" in {e["envVar"] for e in config_map["keyToEnv"]}, name
    assert inputs["s3_secret"].default == "fraudops-s3"


def test_pipeline_under_kfp_local_registers_in_s3_and_refuses_a_worse_challenger(
    training_file, tmp_path, s3_env, monkeypatch
):
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)  # the step subprocesses read KServe's S3 variables
    store_uri = "s3://fraudops-e2e/registry"
    first = run_training_locally(
        str(training_file), store_uri, tmp_path / "kfp", model_name="fraud"
    )
    assert first.version == "v1"
    assert first.gate["passed"] and first.gate["champion"] is None

    store = open_store(store_uri)
    assert resolve(store, "fraud", "champion") == "v1"
    bundle = fetch_bundle(store, "fraud", "champion", tmp_path / "fetched")
    assert set(bundle.manifest["files"]) | {"MANIFEST.json"} == BUNDLE_FILES
    test = bundle.metrics()["test"]
    fraud_share = test["frauds"] / test["rows"]
    assert test["average_precision"] > 5 * fraud_share
    assert test["tp"] + test["fn"] == test["frauds"]
    assert (bundle.folder / "plots" / "roc.png").read_bytes()[:4] == b"\x89PNG"
    card = (bundle.folder / "model_card.md").read_text()
    for section in ("## Data", "## Threshold", "## Metrics on the test window", "## Known limits"):
        assert section in card
    assert (
        bundle.manifest["training_data_sha256"]
        == json.loads((bundle.folder / "model_card.json").read_text())["data"]["data_sha256"]
    )
    snapshot = pd.read_parquet(bundle.folder / "online" / "snapshot.parquet")
    # labels not yet known at the end are presumed genuine: frauds reported later are 0 there
    raw = pd.read_parquet(training_file).set_index("transaction_id")
    late = raw.loc[snapshot["transaction_id"], "label_known_at"] > raw["timestamp"].max()
    assert late.any() and snapshot["is_fraud"].notna().all()
    frauds = raw.loc[snapshot["transaction_id"], "is_fraud"].to_numpy()
    assert (snapshot["is_fraud"].to_numpy() == np.where(late.to_numpy(), 0, frauds)).all()

    worse = run_training_locally(
        str(training_file),
        store_uri,
        tmp_path / "kfp",
        model_name="fraud",
        model_params={"n_estimators": 1, "max_depth": 1},
        class_weighting="none",
    )
    assert worse.version is None
    assert worse.gate["passed"] is False
    assert worse.gate["champion"] > worse.gate["challenger"] + worse.gate["tolerance"]
    assert resolve(store, "fraud", "champion") == "v1"
    assert [e["outcome"]["passed"] for e in read_audit(store, "gate")] == [True, False]
    assert [e["outcome"]["version"] for e in read_audit(store, "register")] == ["v1"]


@pytest.mark.slow  # two whole training runs (about 70 s); `make test-all` runs it
def test_same_data_and_seed_same_metrics_and_scores_match_the_evaluation(
    training_file, tmp_path, training_steps
):
    store = str(tmp_path / "store")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = training_steps(tmp_path / "a", training_file, store)
    b = training_steps(tmp_path / "b", training_file, store)
    assert json.loads(Path(a["metrics.json"]).read_text()) == json.loads(
        Path(b["metrics.json"]).read_text()
    )
    assert (a["version"], a["alias"], b["version"], b["alias"]) == (
        "v1",
        "champion",
        "v2",
        "candidate",
    )

    # batch scoring of the bundle reproduces the evaluation step's scores on the test rows
    bundle = fetch_bundle(open_store(store), "fraud", "v1", tmp_path / "fetched")
    accepted = pd.read_parquet(a["accepted.parquet"])
    scored = score_frame(bundle, accepted, reasons=3).set_index("transaction_id")
    evaluated = pd.read_parquet(a["scores.parquet"]).set_index("transaction_id")
    np.testing.assert_allclose(scored.loc[evaluated.index, "score"], evaluated["score"], rtol=1e-6)
    threshold = bundle.threshold()["threshold"]
    assert ((scored["score"] >= threshold) == (scored["decision"] == "alert")).all()
    top = scored.sort_values("score").iloc[-1]
    assert top["reason_1"] and "(+" in top["reason_1"]


def test_train_score_and_model_commands(training_file, tmp_path, monkeypatch):
    monkeypatch.setenv("FRAUDOPS_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    result = runner.invoke(
        app, ["train", "--data", str(training_file), "--threshold-policy", "alert_budget:30"]
    )
    assert result.exit_code == 0, result.output
    assert "registered fraud-detector v1" in result.output

    listed = runner.invoke(app, ["model", "list"])
    assert listed.exit_code == 0 and "champion" in listed.output

    out = tmp_path / "scores.csv"
    scored = runner.invoke(
        app, ["score", "--data", str(training_file), "--out", str(out), "--reasons", "2"]
    )
    assert scored.exit_code == 0, scored.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["transaction_id", "score", "decision", "reason_1", "reason_2"]
    assert len(frame) == len(pd.read_parquet(training_file))

    shown = runner.invoke(app, ["model", "show", "fraud-detector", "v1"])
    assert shown.exit_code == 0 and "verified 17 files" in shown.output

    bad = runner.invoke(app, ["train", "--data", str(training_file), "--threshold-policy", "lots"])
    assert bad.exit_code == 2 and "alert_budget" in bad.output
    missing = runner.invoke(
        app, ["score", "--model", "fraud-detector:v7", "--data", str(training_file)]
    )
    assert missing.exit_code == 2 and "no version v7" in missing.output


def test_submit_creates_a_run_like_kfp_run_create(tmp_path):
    """No KFP backend can run here: a stand-in client records what would be sent."""
    from pipelines.submit import submit_training

    class RecordingClient:
        def create_run_from_pipeline_package(self, package, **kwargs):
            self.call = (package, kwargs)
            return type("Run", (), {"run_id": "run-123"})()

    client = RecordingClient()
    result = submit_training(
        "http://kfp.example:8080",
        {"data_uri": "s3://fraudops/tx.parquet"},
        "fraud-exp",
        client=client,
    )
    assert result == {"run_id": "run-123", "url": "http://kfp.example:8080/#/runs/details/run-123"}
    package, kwargs = client.call
    assert package == str(COMPILED)
    assert kwargs["arguments"] == {"data_uri": "s3://fraudops/tx.parquet"}
    assert kwargs["experiment_name"] == "fraud-exp"
