"""Reference profiles for drift: quantile bins per numeric column, shares per category.

A profile is computed once on the training data and stored in the bundle, so the drift job can
judge a whole window of live traffic with one pass (population stability index per column)
instead of comparing against the raw reference data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["build_profile", "population_stability_index"]

EPS = 1e-4


def build_profile(frame: pd.DataFrame, columns: list[str], bins: int = 20) -> dict[str, Any]:
    """Profile ``columns`` of ``frame``.

    Numeric columns get up to ``bins`` quantile bins (edges and the reference share per bin,
    plus the share of missing values); other columns get the share of each value.
    """
    profile: dict[str, Any] = {"rows": len(frame), "columns": {}}
    for name in columns:
        values = frame[name]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            numbers = values.to_numpy(dtype=np.float64)
            finite = numbers[np.isfinite(numbers)]
            edges = (
                np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)))
                if len(finite)
                else np.array([0.0])
            )
            inner = edges[1:-1]
            shares = _bin_shares(numbers, inner)
            profile["columns"][name] = {
                "kind": "numeric",
                "edges": inner.tolist(),
                "shares": shares,
            }
        else:
            counts = values.astype(str).value_counts(normalize=True, dropna=False)
            profile["columns"][name] = {"kind": "categorical", "shares": counts.to_dict()}
    return profile


def _bin_shares(numbers: np.ndarray, inner_edges: np.ndarray) -> list[float]:
    """Share of values per bin (``len(inner_edges) + 1`` bins) and, last, the missing share."""
    missing = ~np.isfinite(numbers)
    idx = np.searchsorted(inner_edges, numbers[~missing], side="right")
    counts = np.bincount(idx, minlength=len(inner_edges) + 1).astype(np.float64)
    n = max(len(numbers), 1)
    return [*(counts / n).tolist(), float(missing.sum() / n)]


def population_stability_index(column_profile: dict[str, Any], values: pd.Series) -> float:
    """PSI of ``values`` against a column profile (0: same; > 0.2 is usually called drift)."""
    if column_profile["kind"] == "numeric":
        ref = np.asarray(column_profile["shares"])
        cur = np.asarray(
            _bin_shares(values.to_numpy(dtype=np.float64), np.asarray(column_profile["edges"]))
        )
    else:
        ref_map = column_profile["shares"]
        counts = values.value_counts(normalize=True, dropna=False)  # no per-row str() copies
        cur_map: dict[str, float] = {}
        for key, share in counts.items():
            cur_map[str(key)] = cur_map.get(str(key), 0.0) + float(share)
        keys = sorted(set(ref_map) | set(cur_map))
        ref = np.array([ref_map.get(k, 0.0) for k in keys])
        cur = np.array([cur_map.get(k, 0.0) for k in keys])
    ref = np.clip(ref, EPS, None)
    cur = np.clip(cur, EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))
