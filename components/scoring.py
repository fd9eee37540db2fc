"""Batch scoring with a model bundle: scores, decisions and reason codes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.bundle import Bundle
from components.features import compute_features
from components.model import FraudModel

__all__ = ["reason_codes", "score_frame"]


def reason_codes(model: FraudModel, features: pd.DataFrame, n: int = 3) -> list[list[str]]:
    """The ``n`` features that pushed each score up most (positive contributions only).

    Each code reads ``feature=value (+contribution)``, contributions in log-odds, from the
    model's own per-prediction contributions (exact tree SHAP for XGBoost).
    """
    contributions = model.contributions(features)
    names = np.asarray(model.feature_names)
    values = features[model.feature_names].to_numpy()
    top = np.argsort(-contributions, axis=1)[:, :n]
    codes = []
    for row, columns in enumerate(top):
        codes.append(
            [
                f"{names[c]}={values[row, c]:.4g} (+{contributions[row, c]:.2f})"
                for c in columns
                if contributions[row, c] > 0
            ]
        )
    return codes


def score_frame(bundle: Bundle, frame: pd.DataFrame, reasons: int = 0) -> pd.DataFrame:
    """Score validated transactions, computing features point-in-time from the frame itself.

    Args:
        bundle: A verified bundle.
        frame: Canonical, typed transactions (history and rows to score alike).
        reasons: How many reason codes per row (0: none).

    Returns:
        ``transaction_id, score, decision`` (and ``reason_1..n``), in the frame's order.
    """
    model = bundle.model()
    features = compute_features(frame, bundle.spec())
    scores = model.predict(features)
    threshold = bundle.threshold()["threshold"]
    out = pd.DataFrame(
        {
            "transaction_id": frame["transaction_id"].to_numpy(),
            "score": scores,
            "decision": np.where(scores >= threshold, "alert", "pass"),
        }
    )
    if reasons:
        codes = reason_codes(model, features, reasons)
        for i in range(reasons):
            out[f"reason_{i + 1}"] = [c[i] if i < len(c) else "" for c in codes]
    return out
