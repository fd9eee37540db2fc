"""Pipeline step: threshold on validation, metrics and plots on test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from components.evaluation import ThresholdPolicy, choose_threshold, evaluate_scores, roc_points
from components.features import FeatureSpec
from components.model import FraudModel
from components.plots import write_plots
from components.schema import LABEL
from components.steps.io import days_covered, write_json, xy

__all__ = ["evaluate_step"]


def evaluate_step(
    model: str,
    valid: str,
    test: str,
    spec_path: str,
    policy: str,
    k: int,
    out_metrics: str,
    out_threshold: str,
    out_plots: str,
    out_scores: str,
) -> dict[str, Any]:
    """Choose the threshold on validation, evaluate on test, draw the plots."""
    spec = FeatureSpec.from_json(Path(spec_path).read_text())
    fraud_model = FraudModel.load(Path(model))
    vframe, Xv, yv = xy(valid, spec)
    tframe, Xt, yt = xy(test, spec)
    valid_scores = fraud_model.predict(Xv)
    test_scores = fraud_model.predict(Xt)
    threshold = choose_threshold(
        yv, valid_scores, days_covered(vframe["timestamp"]), ThresholdPolicy.parse(policy)
    )
    cut = threshold["threshold"]
    metrics = {
        "valid": evaluate_scores(
            yv, valid_scores, cut, vframe["customer_id"], vframe["timestamp"], k
        ).as_dict(),
        "test": evaluate_scores(
            yt, test_scores, cut, tframe["customer_id"], tframe["timestamp"], k
        ).as_dict(),
    }
    write_json(out_metrics, metrics)
    write_json(out_threshold, threshold)
    write_plots(
        Path(out_plots),
        yt,
        test_scores,
        cut,
        fraud_model.feature_importance(),
        f"{fraud_model.model_type} (test window)",
    )
    pd.DataFrame(
        {"transaction_id": tframe["transaction_id"], "score": test_scores, LABEL: yt}
    ).to_parquet(out_scores, index=False)
    return {**metrics, "roc": roc_points(yt, test_scores)}
