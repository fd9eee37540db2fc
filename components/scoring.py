"""Batch scoring with a model bundle: scores, decisions and reason codes."""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd

from components.bundle import Bundle
from components.features import compute_features
from components.model import DEFAULT_CONTRIBUTIONS, FraudModel

__all__ = ["format_reasons", "reason_codes", "score_frame"]

_PYTHON_ROWS = 4


def format_reasons(
    names: list[str], values: np.ndarray, contributions: np.ndarray, n: int
) -> list[list[str]]:
    """The ``n`` features that pushed each score up most (positive contributions only).

    Each code reads ``feature=value (+contribution)``, contributions in log-odds. Shared by
    batch scoring and the model server, so both word reason codes alike. Equal contributions
    keep column order (both ways of ranking below are stable).

    Args:
        names: Feature names, in column order.
        values: Feature values, one row per transaction.
        contributions: The model's contributions, same shape as ``values``.
        n: Most codes per transaction.
    """
    if len(contributions) <= _PYTHON_ROWS:  # a request's few rows: no numpy call per step
        top = [
            heapq.nlargest(n, range(len(row)), key=row.__getitem__)
            for row in contributions.tolist()
        ]
        top_values = [[r[c] for c in cols] for r, cols in zip(values.tolist(), top, strict=True)]
        top_contributions = [
            [r[c] for c in cols] for r, cols in zip(contributions.tolist(), top, strict=True)
        ]
    else:
        order = np.argsort(-contributions, axis=1, kind="stable")[:, :n]
        top = order.tolist()
        # Python floats format as the numpy scalars do, without a numpy call per code
        top_values = np.take_along_axis(np.asarray(values), order, axis=1).tolist()
        top_contributions = np.take_along_axis(contributions, order, axis=1).tolist()
    return [
        [f"{names[c]}={v:.4g} (+{k:.2f})" for c, v, k in zip(cols, vs, ks, strict=True) if k > 0]
        for cols, vs, ks in zip(top, top_values, top_contributions, strict=True)
    ]


def reason_codes(
    model: FraudModel, features: pd.DataFrame, n: int = 3, method: str = DEFAULT_CONTRIBUTIONS
) -> list[list[str]]:
    """Reason codes (:func:`format_reasons`) from the model's own per-prediction contributions.

    Args:
        model: The model.
        features: Feature frame with the model's columns.
        n: Most codes per transaction.
        method: XGBoost contributions, ``approx`` or ``exact``
            (:data:`components.model.CONTRIBUTION_METHODS`).
    """
    contributions = model.contributions(features, method)
    values = features[model.feature_names].to_numpy()
    return format_reasons(model.feature_names, values, contributions, n)


def score_frame(
    bundle: Bundle,
    frame: pd.DataFrame,
    reasons: int = 0,
    contributions: str = DEFAULT_CONTRIBUTIONS,
) -> pd.DataFrame:
    """Score validated transactions, computing features point-in-time from the frame itself.

    Args:
        bundle: A verified bundle.
        frame: Canonical, typed transactions (history and rows to score alike).
        reasons: How many reason codes per row (0: none).
        contributions: How XGBoost contributions are computed, ``approx`` or ``exact``.

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
        codes = reason_codes(model, features, reasons, contributions)
        for i in range(reasons):
            out[f"reason_{i + 1}"] = [c[i] if i < len(c) else "" for c in codes]
    return out
