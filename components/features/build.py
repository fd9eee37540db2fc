"""Compute model features for transactions, point-in-time.

:func:`compute_features` is the one definition used by training, batch scoring and the model
server. Windowed features of a transaction only see rows strictly before it; terminal fraud
rates only see labels older than the label delay.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.features.spec import FeatureSpec
from components.features.windows import (
    MS_PER_DAY,
    KeyedHistory,
    previous_time_gap_ms,
    window_count_sum,
)
from components.schema import LABEL

__all__ = ["compute_features", "stateless_features"]


def stateless_features(frame: pd.DataFrame, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Features that depend on the transaction alone."""
    n = len(frame)
    amount = frame["amount"].to_numpy(dtype=np.float64)
    ts = frame["timestamp"]
    hour = ts.dt.hour.to_numpy()
    dow = ts.dt.dayofweek.to_numpy()

    def numeric(name: str) -> np.ndarray:
        if name in frame.columns:
            return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        return np.full(n, np.nan)

    balance = numeric("account_balance")
    out: dict[str, np.ndarray] = {
        "amount": amount,
        "log_amount": np.log1p(amount),
        "hour": hour.astype(np.float64),
        "day_of_week": dow.astype(np.float64),
        "is_weekend": (dow >= 5).astype(np.float64),
        "is_night": np.isin(hour, spec.night_hours).astype(np.float64),
        "account_balance": balance,
        "account_age_days": numeric("account_age_days"),
        "amount_to_balance": np.where(
            balance > 0, amount / np.where(balance > 0, balance, 1), np.nan
        ),
    }
    for name, vocabulary in spec.vocabularies.items():
        if name in frame.columns:
            values = frame[name].astype(object).to_numpy()
            known = np.zeros(n, dtype=bool)
            for v in vocabulary:
                hit = values == v
                out[f"{name}={v}"] = hit.astype(np.float64)
                known |= hit
            present = pd.notna(values)
            out[f"{name}=other"] = (present & ~known).astype(np.float64)
        else:
            for v in (*vocabulary, "other"):
                out[f"{name}={v}"] = np.zeros(n)
    for name in spec.extra_numeric:
        out[name] = numeric(name)
    return out


def _codes(history: pd.Series, query: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for ids, consistent between history and queries."""
    if history is query:
        codes, _ = pd.factorize(history)
        return codes, codes
    both = pd.concat([history.astype(object), query.astype(object)], ignore_index=True)
    codes, _ = pd.factorize(both.astype(str))
    return codes[: len(history)], codes[len(history) :]


def compute_features(
    frame: pd.DataFrame, spec: FeatureSpec, history: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Compute the model features of every row of ``frame``.

    Args:
        frame: Canonical transactions to describe (typed: UTC timestamps, float amounts).
        spec: Which features and windows.
        history: Earlier transactions (with labels where known) to use in addition to
            ``frame`` itself, e.g. the bundle's online-feature snapshot. Rows of ``frame`` are
            always part of the history of later rows of ``frame``.

    Returns:
        A float32 frame with ``spec.feature_names()`` as columns, on ``frame``'s index.
    """
    features = stateless_features(frame, spec)
    if history is None:
        past = frame
    else:  # the windows only need these columns: do not copy the rest
        needed = [
            c for c in ("timestamp", "customer_id", "terminal_id", "amount", LABEL) if c in history
        ]
        past = pd.concat(
            [history[needed], frame[[c for c in needed if c in frame]]], ignore_index=True
        )
    epoch = min(past["timestamp"].min(), frame["timestamp"].min()) if len(past) else None
    if epoch is None or pd.isna(epoch):
        windowed = _empty_windowed(len(frame), spec)
    else:
        windowed = _windowed(frame, past, spec, epoch)
    features.update(windowed)
    names = spec.feature_names()
    # column-major: each feature is written contiguously (and pandas keeps blocks that way)
    matrix = np.empty((len(frame), len(names)), dtype=np.float32, order="F")
    for i, name in enumerate(names):
        matrix[:, i] = features[name]
    return pd.DataFrame(matrix, columns=names, index=frame.index)


def _ms(ts: pd.Series, epoch: pd.Timestamp) -> np.ndarray:
    return ((ts - epoch) // pd.Timedelta(milliseconds=1)).to_numpy(dtype=np.int64)


def _windowed(
    frame: pd.DataFrame, past: pd.DataFrame, spec: FeatureSpec, epoch: pd.Timestamp
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    q_ms, h_ms = _ms(frame["timestamp"], epoch), _ms(past["timestamp"], epoch)
    longest = int((spec.history_days + 1) * MS_PER_DAY)
    span = int(max(q_ms.max(), h_ms.max())) + longest + 1

    h_cust, q_cust = _codes(past["customer_id"], frame["customer_id"])
    cust, _ = KeyedHistory.build(h_cust, h_ms, {"amount": past["amount"].to_numpy()}, span)
    # Binary searches are much faster with ascending needles: work in key order, then undo it.
    q_keys, unsort = _sorted_keys(q_cust, q_ms, span)
    mean = np.full(len(frame), np.nan)
    for w in spec.customer_windows_days:
        count, total = window_count_sum(cust, q_keys, w * MS_PER_DAY, 0, "amount")
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        out[f"customer_count_{w}d"] = count.astype(np.float64)
        out[f"customer_sum_{w}d"] = total
        out[f"customer_mean_{w}d"] = mean
    out["customer_seconds_since_previous"] = previous_time_gap_ms(cust, q_keys) / 1000.0
    # the mean over the longest customer window is "the customer's usual amount"
    amount = frame["amount"].to_numpy(dtype=np.float64)[np.argsort(unsort)]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["amount_vs_customer_mean"] = np.where(mean > 0, amount / mean, np.nan)

    labels = (
        pd.to_numeric(past[LABEL], errors="coerce").to_numpy(dtype=np.float64)
        if LABEL in past.columns
        else np.full(len(past), np.nan)
    )
    h_term, q_term = _codes(past["terminal_id"], frame["terminal_id"])
    term, _ = KeyedHistory.build(
        h_term,
        h_ms,
        {"fraud": np.nan_to_num(labels), "labelled": (~np.isnan(labels)).astype(np.float64)},
        span,
    )
    t_keys, t_unsort = _sorted_keys(q_term, q_ms, span)
    delay = int(spec.label_delay_days * MS_PER_DAY)
    for w in spec.terminal_windows_days:
        count, _ = window_count_sum(term, t_keys, w * MS_PER_DAY, 0)
        _, frauds = window_count_sum(term, t_keys, w * MS_PER_DAY + delay, delay, "fraud")
        _, labelled = window_count_sum(term, t_keys, w * MS_PER_DAY + delay, delay, "labelled")
        out[f"terminal_count_{w}d"] = count[t_unsort].astype(np.float64)
        rate = np.where(labelled > 0, frauds / np.maximum(labelled, 1), 0.0)
        out[f"terminal_fraud_rate_{w}d"] = rate[t_unsort]
    customer_names = [k for k in out if k.startswith(("customer_", "amount_vs"))]
    for name in customer_names:
        out[name] = out[name][unsort]
    return out


def _sorted_keys(
    codes: np.ndarray, time_ms: np.ndarray, span: int
) -> tuple[np.ndarray, np.ndarray]:
    """Query keys in ascending order, and the positions that restore the original order."""
    keys = codes.astype(np.int64) * span + time_ms
    order = np.argsort(keys, kind="stable")
    unsort = np.empty_like(order)
    unsort[order] = np.arange(len(order))
    return keys[order], unsort


def _empty_windowed(n: int, spec: FeatureSpec) -> dict[str, np.ndarray]:
    names = [name for name in spec.feature_names() if name.startswith(("customer_", "terminal_"))]
    out = {name: np.zeros(n) for name in names}
    for name in ("customer_seconds_since_previous", "amount_vs_customer_mean"):
        out[name] = np.full(n, np.nan)
    for w in spec.customer_windows_days:
        out[f"customer_mean_{w}d"] = np.full(n, np.nan)
    return out
