"""Batch scoring with a model bundle: scores, decisions and reason codes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.bundle import Bundle
from components.compiled_trees import compile_kernels as compile_tree_kernels
from components.features import compute_features
from components.features.build import overflowing
from components.features.windows import compile_kernels as compile_window_kernels
from components.jit import kernel
from components.model import DEFAULT_CONTRIBUTIONS, FraudModel

__all__ = ["compile_kernels", "format_reasons", "reason_codes", "score_frame"]


def format_reasons(
    names: list[str], values: np.ndarray, contributions: np.ndarray, n: int
) -> list[list[str]]:
    """The ``n`` features that pushed each score up most (positive contributions only).

    Each code reads ``feature=value (+contribution)``, contributions in log-odds. Shared by
    batch scoring and the model server, so both word reason codes alike. Equal contributions
    keep column order (as a stable sort would).

    Args:
        names: Feature names, in column order.
        values: Feature values, one row per transaction.
        contributions: The model's contributions, same shape as ``values``.
        n: Most codes per transaction.
    """
    if n <= 0:
        return [[] for _ in range(len(contributions))]
    top, top_values, top_contributions = _top_positive(
        np.ascontiguousarray(contributions, dtype=np.float64),
        np.ascontiguousarray(values, dtype=np.float64),
        n,
    )
    # Python floats format as the numpy scalars do, without a numpy call per code
    return [
        [f"{names[c]}={v:.4g} (+{k:.2f})" for c, v, k in zip(cols, vs, ks, strict=True) if c >= 0]
        for cols, vs, ks in zip(
            top.tolist(), top_values.tolist(), top_contributions.tolist(), strict=True
        )
    ]


@kernel
def _top_positive(contributions, values, n):
    """Per row, the columns of the ``n`` largest positive contributions, largest first (the
    leftmost of equals first; -1 where fewer are positive), with their values and
    contributions."""
    rows, width = contributions.shape
    top = np.full((rows, n), -1, np.int64)
    top_values = np.zeros((rows, n))
    top_contributions = np.zeros((rows, n))
    for i in range(rows):
        row, kept = contributions[i], top[i]
        count = 0
        for c in range(width):
            v = row[c]
            if not v > 0 or (count == n and v <= row[kept[n - 1]]):
                continue
            at = min(count, n - 1)
            while at > 0 and v > row[kept[at - 1]]:  # after its equals: they came first
                kept[at] = kept[at - 1]
                at -= 1
            kept[at] = c
            count = min(count + 1, n)
        for k in range(count):
            top_values[i, k] = values[i, kept[k]]
            top_contributions[i, k] = row[kept[k]]
    return top, top_values, top_contributions


def compile_kernels() -> None:
    """Compile (or load from numba's cache) every kernel scoring uses: the window features,
    the tree walks and the reason-code ranking (e.g. while building an image, and before a
    server is ready, so that no request waits for a compiler)."""
    compile_window_kernels()
    compile_tree_kernels()
    _top_positive(np.zeros((1, 1)), np.zeros((1, 1)), 1)


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
    too_large = overflowing(model.feature_names, features[model.feature_names].to_numpy())
    if too_large:
        ids = frame["transaction_id"].to_numpy()
        listed = ", ".join(f"{ids[row]!r} ({name})" for row, name in too_large)
        raise ValueError(
            f"cannot score: feature values overflow the model's float32 input for {listed}; "
            "a number of these transactions is implausibly large (e.g. an amount over a minute "
            "account_balance): correct or remove them"
        )
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
