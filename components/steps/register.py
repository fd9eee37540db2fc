"""Pipeline step: assemble the model bundle and register it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from components.bundle import register_bundle, set_alias
from components.features import FeatureSpec
from components.model import FraudModel
from components.model_card import build_model_card, render_markdown
from components.profile import build_profile
from components.schema import LABEL
from components.split import TimeWindows
from components.steps.io import read_json, write_json
from components.store import open_store

__all__ = ["register_step"]

RAW_REFERENCE_COLUMNS = [
    "amount",
    "transaction_type",
    "channel",
    "account_type",
    "account_balance",
    "account_age_days",
    "merchant_category",
]


def register_step(
    model: str,
    spec_path: str,
    metrics: str,
    threshold: str,
    plots: str,
    data: str,
    features: str,
    windows: str,
    decision: str,
    train_info: str,
    validation_report: str,
    store_uri: str,
    model_name: str,
    reference_rows: int = 20_000,
    out_version: str | None = None,
) -> dict[str, Any]:
    """Assemble the bundle folder and register it; the first model becomes the champion.

    Later models that passed the gate get the ``candidate`` alias, ready for a canary rollout.
    """
    spec = FeatureSpec.from_json(Path(spec_path).read_text())
    gate = read_json(decision)
    if not gate["passed"]:
        raise ValueError(f"the gate did not pass ({gate['reason']}); nothing to register")
    store = open_store(store_uri)
    win = read_json(windows)
    plan = TimeWindows.from_dict(win["windows"])
    raw = pd.read_parquet(data)
    feats = pd.read_parquet(features)
    info = read_json(train_info)
    vreport = read_json(validation_report)
    fraud_model = FraudModel.load(Path(model))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bundle"
        shutil.copytree(model, folder / "model")
        shutil.copytree(plots, folder / "plots")
        shutil.copy(spec_path, folder / "feature_spec.json")
        shutil.copy(metrics, folder / "metrics.json")
        shutil.copy(threshold, folder / "threshold.json")
        shutil.copy(decision, folder / "gate.json")
        shutil.copy(train_info, folder / "training.json")

        train_mask = (feats["timestamp"] >= plan.train_start) & (
            feats["timestamp"] < plan.train_end
        )
        reference = _reference_sample(raw, feats, train_mask, spec, fraud_model, reference_rows)
        (folder / "reference").mkdir()
        reference.to_parquet(folder / "reference" / "sample.parquet", index=False)
        columns = [
            c for c in [*RAW_REFERENCE_COLUMNS, *spec.feature_names(), "score"] if c in reference
        ]
        profile_source = _profile_source(raw, feats, train_mask, spec, fraud_model)
        write_json(folder / "reference" / "profile.json", build_profile(profile_source, columns))

        (folder / "online").mkdir()
        _snapshot(raw, spec).to_parquet(folder / "online" / "snapshot.parquet", index=False)

        card = build_model_card(
            model_name,
            fraud_model.model_type,
            info["params"],
            plan.as_dict(),
            {
                "rows": vreport["rows_in"],
                "accepted_rows": vreport["accepted"],
                "quarantined_rows": vreport["quarantined"],
                "data_sha256": vreport["data_sha256"],
                "source": vreport["source"],
            },
            read_json(metrics),
            read_json(threshold),
            spec.feature_names(),
            gate,
            {k: info[k] for k in ("train_rows", "train_seconds", "valid_average_precision")},
        )
        write_json(folder / "model_card.json", card)
        (folder / "model_card.md").write_text(render_markdown(card))

        parent = gate.get("champion_version")
        version = register_bundle(
            store,
            model_name,
            folder,
            {
                "model_type": fraud_model.model_type,
                "training_data_sha256": vreport["data_sha256"],
                "training_window": plan.as_dict(),
                "parent_version": parent,
                "metrics": {
                    k: read_json(metrics)["test"][k] for k in ("average_precision", "roc_auc")
                },
                "threshold": read_json(threshold)["threshold"],
            },
        )
    alias = "candidate" if parent else "champion"
    set_alias(store, model_name, alias, version, reason=gate["reason"])
    result = {
        "version": version,
        "alias": alias,
        "uri": store.url_for(f"models/{model_name}/{version}"),
    }
    if out_version:
        write_json(out_version, result)
    return result


def _scored(
    raw: pd.DataFrame, feats: pd.DataFrame, mask: pd.Series, spec: FeatureSpec, model: FraudModel
):
    rows = raw.loc[mask.to_numpy()].reset_index(drop=True)
    f = feats.loc[mask.to_numpy(), spec.feature_names()].reset_index(drop=True)
    return rows, f, model.predict(f)


def _profile_source(raw, feats, mask, spec, model) -> pd.DataFrame:
    rows, f, scores = _scored(raw, feats, mask, spec, model)
    present = [c for c in RAW_REFERENCE_COLUMNS if c in rows and c not in f.columns]
    return pd.concat([rows[present], f, pd.Series(scores, name="score")], axis=1)


def _reference_sample(raw, feats, mask, spec, model, n: int) -> pd.DataFrame:
    source = _profile_source(raw, feats, mask, spec, model)
    meta = raw.loc[mask.to_numpy(), ["transaction_id", "timestamp", LABEL]].reset_index(drop=True)
    both = pd.concat([meta, source], axis=1)
    return both.sample(n=min(n, len(both)), random_state=0).sort_values("timestamp")


def _snapshot(raw: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Transactions the online windows still need at the end of the data.

    A label not yet known at that time is presumed genuine (0), as the server presumes for the
    transactions it scores and as training does (every transaction older than the label delay
    counts as labelled): a fraud that is reported later is not known to the online state.
    """
    end = raw["timestamp"].max()
    start = end - pd.Timedelta(days=spec.history_days)
    cols = [
        c
        for c in ["transaction_id", "timestamp", "customer_id", "terminal_id", "amount", LABEL]
        if c in raw
    ]
    recent = raw.loc[raw["timestamp"] > start, cols].copy()
    if "label_known_at" in raw:
        unknown = raw.loc[raw["timestamp"] > start, "label_known_at"] > end
        recent[LABEL] = recent[LABEL].astype("float64").where(~unknown.to_numpy(), 0.0)
    recent["customer_id"] = recent["customer_id"].astype(str)
    recent["terminal_id"] = recent["terminal_id"].astype(str)
    return recent.reset_index(drop=True)
