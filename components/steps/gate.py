"""Pipeline step: the challenger against the champion, on the same test window."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.metrics import average_precision_score

from components.audit import record_event
from components.bundle import BundleError, fetch_bundle, resolve
from components.features import compute_features
from components.schema import LABEL
from components.split import TimeWindows, split_by_time
from components.steps.io import read_json, write_json
from components.store import open_store

__all__ = ["gate_step"]


def gate_step(
    metrics: str,
    data: str,
    windows: str,
    store_uri: str,
    model_name: str,
    tolerance: float,
    out_decision: str,
) -> dict[str, Any]:
    """Compare the challenger with the champion on the same test window.

    The champion is scored with its own feature spec on the same rows. The challenger passes
    when its average precision is not worse than the champion's by more than ``tolerance``,
    or when there is no champion yet.
    """
    challenger_ap = read_json(metrics)["test"]["average_precision"]
    store = open_store(store_uri)
    decision: dict[str, Any] = {
        "primary_metric": "average_precision",
        "tolerance": tolerance,
        "challenger": challenger_ap,
    }
    try:
        champion_version = resolve(store, model_name, "champion")
    except BundleError:  # no champion (or no model at all) yet
        champion_version = None
    if champion_version is None:
        decision.update(passed=True, champion=None, reason="no champion yet: the first model")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            bundle = fetch_bundle(store, model_name, champion_version, Path(tmp))
            frame = pd.read_parquet(data)
            plan = TimeWindows.from_dict(read_json(windows)["windows"])
            test_mask = split_by_time(frame["timestamp"], plan)["test"]
            champion_features = compute_features(frame, bundle.spec())[test_mask]
            champion_scores = bundle.model().predict(champion_features)
        champion_ap = float(average_precision_score(frame.loc[test_mask, LABEL], champion_scores))
        passed = challenger_ap >= champion_ap - tolerance
        decision.update(
            passed=bool(passed),
            champion=champion_ap,
            champion_version=champion_version,
            reason=(
                f"challenger AP {challenger_ap:.4f} vs champion {champion_version} AP "
                f"{champion_ap:.4f} on the same test window (tolerance {tolerance})"
            ),
        )
    write_json(out_decision, decision)
    record_event(
        store,
        "gate",
        {"model": model_name, "metrics": metrics},
        decision,
    )
    return decision
