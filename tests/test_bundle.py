"""Model formats and bundles: safe formats, checksums, immutability, aliases, audit."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from components.audit import read_audit
from components.bundle import (
    MANIFEST,
    Bundle,
    BundleError,
    BundleIntegrityError,
    fetch_bundle,
    list_versions,
    register_bundle,
    resolve,
    set_alias,
)
from components.features import FeatureSpec, compute_features
from components.model import FraudModel, UnsafeModelError
from components.store import LocalStore, open_store
from components.training import TrainConfig, train_model


@pytest.fixture(scope="module")
def xy(small_frame):
    features = compute_features(small_frame, FeatureSpec())
    return features, small_frame["is_fraud"].to_numpy()


@pytest.mark.parametrize(
    ("model_type", "params"),
    [
        ("xgboost", {"n_estimators": 20}),
        ("random_forest", {"n_estimators": 10}),
        ("logistic_regression", {}),
    ],
)
def test_models_round_trip_through_safe_formats(tmp_path, xy, model_type, params):
    X, y = xy
    trained = train_model(
        X, y, X, y, TrainConfig(model_type=model_type, params=params, class_weighting="sqrt")
    )
    files = trained.model.save(tmp_path / "m")
    assert {p.suffix for p in files} <= {".json", ".skops"}
    assert not any(p.suffix in (".pkl", ".pickle", ".joblib") for p in (tmp_path / "m").iterdir())
    loaded = FraudModel.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(X), trained.model.predict(X), rtol=1e-6)
    assert loaded.feature_names == list(X.columns)


def test_xgboost_contributions_add_up_to_the_margin(xy):
    import xgboost as xgb

    X, y = xy
    model = train_model(
        X, y, X, y, TrainConfig(params={"n_estimators": 20}, class_weighting="none")
    ).model
    contributions = model.contributions(X.head(50))
    margin = model.estimator.predict(xgb.DMatrix(X.head(50).to_numpy()), output_margin=True)
    bias = model.estimator.predict(xgb.DMatrix(X.head(50).to_numpy()), pred_contribs=True)[:, -1]
    np.testing.assert_allclose(contributions.sum(axis=1) + bias, margin, rtol=1e-4, atol=1e-4)


def test_skops_file_with_a_type_outside_the_allow_list_is_refused(tmp_path, xy):
    import skops.io as sio
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = xy
    folder = tmp_path / "m"
    folder.mkdir()
    sio.dump(GradientBoostingClassifier(n_estimators=2).fit(X.fillna(0), y), folder / "model.skops")
    (folder / "model_meta.json").write_text(
        json.dumps(
            {
                "model_type": "random_forest",
                "model_file": "model.skops",
                "feature_names": list(X.columns),
            }
        )
    )
    with pytest.raises(UnsafeModelError, match="GradientBoostingClassifier"):
        FraudModel.load(folder)


def _bundle_folder(tmp_path: Path, text: str = "model") -> Path:
    folder = tmp_path / "bundle"
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "model" / "model.json").write_text(text)
    (folder / "metrics.json").write_text('{"test": {}}')
    return folder


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    env = request.getfixturevalue("s3_env")
    return open_store(f"s3://bundles-{abs(hash(str(tmp_path))) % 10**8}/registry", env=env)


def test_register_fetch_and_verify(store, tmp_path):
    v1 = register_bundle(store, "fraud", _bundle_folder(tmp_path, "one"), {"parent_version": None})
    v2 = register_bundle(store, "fraud", _bundle_folder(tmp_path, "two"), {"parent_version": v1})
    assert (v1, v2) == ("v1", "v2")
    assert list_versions(store, "fraud") == ["v1", "v2"]
    manifest = store.get_json(f"models/fraud/v2/{MANIFEST}")
    assert manifest["parent_version"] == "v1"
    assert manifest["files"]["model/model.json"]["sha256"] == hashlib.sha256(b"two").hexdigest()
    assert set(manifest) >= {"created_at", "code_version", "files", "name", "version"}
    bundle = fetch_bundle(store, "fraud", "latest", tmp_path / "fetched")
    assert (bundle.folder / "model" / "model.json").read_text() == "two"
    assert Bundle.open(bundle.folder).version == "v2"  # a local folder verifies too


def test_a_bundle_without_manifest_is_invisible(store, tmp_path):
    register_bundle(store, "fraud", _bundle_folder(tmp_path), {})
    store.put_bytes("models/fraud/v2/model/model.json", b"half-written")  # crashed before MANIFEST
    assert list_versions(store, "fraud") == ["v1"]
    assert resolve(store, "fraud", "latest") == "v1"
    with pytest.raises(BundleError, match="no version v2"):
        resolve(store, "fraud", "v2")


def test_tampered_bundle_is_refused(store, tmp_path):
    register_bundle(store, "fraud", _bundle_folder(tmp_path, "honest"), {})
    # an attacker (or a bad copy) replaces the model, with a fresh object checksum
    store.put_bytes("models/fraud/v1/model/model.json", b"evil")
    with pytest.raises(BundleIntegrityError, match=r"model/model.json does not match the manifest"):
        fetch_bundle(store, "fraud", "v1", tmp_path / "out")


def test_tampered_local_folder_is_refused(tmp_path):
    store = LocalStore(tmp_path / "store")
    register_bundle(store, "fraud", _bundle_folder(tmp_path), {})
    bundle = fetch_bundle(store, "fraud", "v1", tmp_path / "out")
    (bundle.folder / "model" / "model.json").write_text("changed on disk")
    with pytest.raises(
        BundleIntegrityError, match=r"model/model.json has sha256 .* Refusing to load"
    ):
        Bundle.open(bundle.folder)
    (bundle.folder / "model" / "model.json").unlink()
    with pytest.raises(BundleIntegrityError, match="listed in the manifest but missing"):
        Bundle.open(bundle.folder)


def test_aliases_and_the_audit_log(store, tmp_path):
    with pytest.raises(BundleError, match="has no alias 'champion'"):
        resolve(store, "fraud", "champion")
    register_bundle(store, "fraud", _bundle_folder(tmp_path), {"training_data_sha256": "abc"})
    register_bundle(store, "fraud", _bundle_folder(tmp_path), {})
    set_alias(store, "fraud", "champion", "v1", reason="first")
    pointer = set_alias(store, "fraud", "champion", "v2", reason="better", actor="tester")
    assert pointer["previous"] == "v1"
    assert resolve(store, "fraud", "champion") == "v2"
    with pytest.raises(BundleError, match="no version v9"):
        set_alias(store, "fraud", "champion", "v9")
    registers = read_audit(store, "register")
    assert [e["outcome"]["version"] for e in registers] == ["v1", "v2"]
    assert registers[0]["inputs"]["training_data_sha256"] == "abc"
    last = read_audit(store, "alias")[-1]
    assert last["actor"] == "tester" and last["inputs"]["reason"] == "better"


def test_model_names_must_be_kubernetes_names(store, tmp_path):
    with pytest.raises(BundleError, match="lower-case letters"):
        register_bundle(store, "Fraud Model", _bundle_folder(tmp_path), {})
