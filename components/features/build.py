"""Compute model features for transactions, point-in-time.

:func:`compute_features` is the one definition used by training, batch scoring and the model
server. Windowed features of a transaction only see rows strictly before it; terminal fraud
rates only see labels older than the label delay.

The arithmetic is in two array-level cores, :func:`numeric_features` (the transaction alone,
numpy) and :func:`windowed_features` (its customer's and terminal's history, through the
compiled kernel of :mod:`components.features.windows`). The batch path here
feeds them columns of a DataFrame; the model server (``serving/features.py``) feeds them one
request's arrays and the rows of its online state, so both compute the same values.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import pandas as pd

from components.features.spec import FeatureSpec
from components.features.windows import MS_PER_DAY, EntityRows, window_values
from components.schema import LABEL

__all__ = [
    "compute_features",
    "numeric_features",
    "overflowing",
    "stateless_features",
    "windowed_features",
]


def overflowing(names: list[str], matrix: np.ndarray, limit: int = 5) -> list[tuple[int, str]]:
    """``(row, feature)`` of up to ``limit`` values that are infinite as float32, the type the
    models read (e.g. an amount over a minute positive balance): no model can score them.

    Args:
        names: The matrix's columns.
        matrix: Feature values, one row per transaction (float32 or float64).
        limit: Most pairs returned.
    """
    if matrix.dtype != np.float32:
        with np.errstate(over="ignore"):
            matrix = matrix.astype(np.float32)
    infinite = np.isinf(matrix)
    if not infinite.any():
        return []
    rows, columns = np.nonzero(infinite)
    return [(int(r), names[c]) for r, c in zip(rows[:limit], columns[:limit], strict=True)]


def numeric_features(
    amount: np.ndarray,
    hour: np.ndarray,
    day_of_week: np.ndarray,
    numeric: Mapping[str, np.ndarray],
    spec: FeatureSpec,
) -> dict[str, np.ndarray]:
    """The stateless numeric features: every feature but the one-hot categories and windows.

    Args:
        amount: Transaction amounts (float64).
        hour: Hour of the day in UTC, integers 0..23.
        day_of_week: Monday 0 to Sunday 6, integers.
        numeric: ``account_balance``, ``account_age_days`` and the spec's ``extra_numeric``
            columns (float64, NaN where missing).
        spec: Which features.

    Returns:
        Feature name -> values.
    """
    balance = numeric["account_balance"]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # see overflowing()
        out = {
            "amount": amount,
            "log_amount": np.log1p(amount),
            "hour": hour.astype(np.float64),
            "day_of_week": day_of_week.astype(np.float64),
            "is_weekend": (day_of_week >= 5).astype(np.float64),
            "is_night": _night_table(tuple(spec.night_hours))[hour],
            "account_balance": balance,
            "account_age_days": numeric["account_age_days"],
            "amount_to_balance": np.where(
                balance > 0, amount / np.where(balance > 0, balance, 1), np.nan
            ),
        }
    for name in spec.extra_numeric:
        out[name] = numeric[name]
    return out


@functools.lru_cache(maxsize=8)
def _night_table(night_hours: tuple[int, ...]) -> np.ndarray:
    """``is_night`` per hour 0..23 (a lookup is cheaper than :func:`numpy.isin` per call)."""
    table = np.isin(np.arange(24), night_hours).astype(np.float64)
    table.flags.writeable = False
    return table


def stateless_features(frame: pd.DataFrame, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Features that depend on the transaction alone."""
    n = len(frame)
    ts = frame["timestamp"]

    def numeric(name: str) -> np.ndarray:
        if name in frame.columns:
            return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        return np.full(n, np.nan)

    out = numeric_features(
        frame["amount"].to_numpy(dtype=np.float64),
        ts.dt.hour.to_numpy(),
        ts.dt.dayofweek.to_numpy(),
        {
            name: numeric(name)
            for name in ("account_balance", "account_age_days", *spec.extra_numeric)
        },
        spec,
    )
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
    with np.errstate(over="ignore"):  # beyond float32: inf, refused before scoring (overflowing)
        for i, name in enumerate(names):
            matrix[:, i] = features[name]
    return pd.DataFrame(matrix, columns=names, index=frame.index)


def _ms(ts: pd.Series, epoch: pd.Timestamp) -> np.ndarray:
    return ((ts - epoch) // pd.Timedelta(milliseconds=1)).to_numpy(dtype=np.int64)


def _windowed(
    frame: pd.DataFrame, past: pd.DataFrame, spec: FeatureSpec, epoch: pd.Timestamp
) -> dict[str, np.ndarray]:
    q_ms, h_ms = _ms(frame["timestamp"], epoch), _ms(past["timestamp"], epoch)
    h_cust, q_cust = _codes(past["customer_id"], frame["customer_id"])
    h_term, q_term = _codes(past["terminal_id"], frame["terminal_id"])
    labels = (
        pd.to_numeric(past[LABEL], errors="coerce").to_numpy(dtype=np.float64)
        if LABEL in past.columns
        else np.full(len(past), np.nan)
    )
    return windowed_features(
        spec,
        EntityRows(h_cust, h_ms, past["amount"].to_numpy(dtype=np.float64)),
        EntityRows(h_term, h_ms, labels),
        q_cust,
        q_term,
        q_ms,
        frame["amount"].to_numpy(dtype=np.float64),
    )


def windowed_features(
    spec: FeatureSpec,
    customers: EntityRows,
    terminals: EntityRows,
    query_customer: np.ndarray,
    query_terminal: np.ndarray,
    query_ms: np.ndarray,
    amount: np.ndarray,
) -> dict[str, np.ndarray]:
    """The customer and terminal window features of transactions (the queries).

    Args:
        spec: Which windows, and the label delay.
        customers: Customer rows (value: amount), the queries' own transactions included:
            each is history for the later ones, never for itself or same-time rows.
        terminals: Terminal rows (value: fraud label, NaN while unknown), likewise.
        query_customer: Each query's customer, coded as ``customers.group``.
        query_terminal: Each query's terminal, coded as ``terminals.group``.
        query_ms: Each query's time (same origin as the rows' times).
        amount: Each query's amount.

    Returns:
        Feature name -> values, in the queries' order.

    Raises:
        OverflowError: too many entities for the time span (see :func:`window_values`).
    """
    c_windows, t_windows = spec.customer_windows_days, spec.terminal_windows_days
    delay = int(spec.label_delay_days * MS_PER_DAY)
    customer, terminal = window_values(
        customers.group,
        customers.time_ms,
        customers.value,
        terminals.group,
        terminals.time_ms,
        terminals.value,
        query_customer.astype(np.int64, copy=False),
        query_terminal.astype(np.int64, copy=False),
        query_ms.astype(np.int64, copy=False),
        amount.astype(np.float64, copy=False),
        np.array([w * MS_PER_DAY for w in c_windows], dtype=np.int64),
        np.array([w * MS_PER_DAY for w in t_windows], dtype=np.int64),
        delay,
        int((spec.history_days + 1) * MS_PER_DAY) + delay,
    )
    out: dict[str, np.ndarray] = {}
    for j, w in enumerate(c_windows):
        out[f"customer_count_{w}d"] = customer[3 * j]
        out[f"customer_sum_{w}d"] = customer[3 * j + 1]
        out[f"customer_mean_{w}d"] = customer[3 * j + 2]
    out["customer_seconds_since_previous"] = customer[-2]
    # the mean over the longest customer window is "the customer's usual amount"
    out["amount_vs_customer_mean"] = customer[-1]
    for j, w in enumerate(t_windows):
        out[f"terminal_count_{w}d"] = terminal[2 * j]
        out[f"terminal_fraud_rate_{w}d"] = terminal[2 * j + 1]
    return out


def _empty_windowed(n: int, spec: FeatureSpec) -> dict[str, np.ndarray]:
    names = [name for name in spec.feature_names() if name.startswith(("customer_", "terminal_"))]
    out = {name: np.zeros(n) for name in names}
    for name in ("customer_seconds_since_previous", "amount_vs_customer_mean"):
        out[name] = np.full(n, np.nan)
    for w in spec.customer_windows_days:
        out[f"customer_mean_{w}d"] = np.full(n, np.nan)
    return out
