"""Model features at request time, from the online state, with the training kernel.

:class:`OnlineFeatures` computes exactly what ``components.features.compute_features`` computes
for transactions scored after the history in the state: the windowed features go through the
same :class:`~components.features.windows.KeyedHistory`, :func:`window_count_sum` and
:func:`previous_time_gap_ms` over the rows of the customers and terminals of the request plus the
request's own transactions (each one is history for the later ones, never for itself or for rows
at the same instant). The arithmetic around the kernel (means, ratios, one-hot encodings,
calendar features) mirrors ``components/features/build.py`` line for line, on numpy arrays
instead of a DataFrame, because a pandas round trip costs milliseconds per request. A test
scores the same transactions through both paths and compares every feature (training/serving
skew is a bug).
"""

from __future__ import annotations

import numpy as np

from components.features import FeatureSpec
from components.features.windows import (
    MS_PER_DAY,
    KeyedHistory,
    previous_time_gap_ms,
    window_count_sum,
)
from serving.state import History, OnlineState
from serving.transactions import TransactionBatch

__all__ = ["OnlineFeatures", "entity_codes"]

MS_PER_HOUR = 3_600_000
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday is 0 as in pandas' dayofweek


def entity_codes(ids: list[str]) -> tuple[np.ndarray, list[str]]:
    """Codes ``0..k-1`` per id (first-seen order) and the distinct ids."""
    index: dict[str, int] = {}
    setdefault = index.setdefault
    codes = np.fromiter((setdefault(i, len(index)) for i in ids), np.int64, len(ids))
    return codes, list(index)


class OnlineFeatures:
    """The feature matrix of validated transactions, in the model's column order.

    Args:
        spec: The bundle's feature spec.
        names: The model's input columns (``FraudModel.feature_names``), all in ``spec``.
    """

    def __init__(self, spec: FeatureSpec, names: list[str]) -> None:
        known = set(spec.feature_names())
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"the model expects features the spec does not define: {missing}")
        self.spec = spec
        self.names = list(names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self._vocab = []
        for field, values in spec.vocabularies.items():
            columns = {v: self.index.get(f"{field}={v}", -1) for v in values}
            self._vocab.append((field, columns, self.index.get(f"{field}=other", -1)))
        self._night = np.isin(np.arange(24), spec.night_hours).astype(np.float64)
        self._longest = int((spec.history_days + 1) * MS_PER_DAY)
        self._delay = int(spec.label_delay_days * MS_PER_DAY)

    def compute(self, batch: TransactionBatch, state: OnlineState) -> np.ndarray:
        """Features of ``batch`` given the history in ``state`` (which is not changed)."""
        q_cust, customers = entity_codes(batch.customer_id)
        q_term, terminals = entity_codes(batch.terminal_id)
        history = state.history_for(customers, terminals)
        return self.from_history(batch, history, q_cust, q_term)

    def from_history(
        self,
        batch: TransactionBatch,
        history: History,
        q_cust: np.ndarray,
        q_term: np.ndarray,
    ) -> np.ndarray:
        n = len(batch)
        matrix = np.zeros((n, len(self.names)), dtype=np.float32)
        columns = self._stateless(batch)
        columns.update(self._windowed(batch, history, q_cust, q_term))
        for name, values in columns.items():
            i = self.index.get(name)
            if i is not None:
                matrix[:, i] = values
        self._one_hot(batch, matrix)
        return matrix

    # -- mirrors components.features.build.stateless_features -------------------------------

    def _stateless(self, batch: TransactionBatch) -> dict[str, np.ndarray]:
        spec = self.spec
        amount = batch.numeric["amount"]
        ms = batch.time_ms
        hour = (ms // MS_PER_HOUR) % 24
        dow = (ms // MS_PER_DAY + EPOCH_WEEKDAY) % 7
        balance = batch.numeric["account_balance"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {
                "amount": amount,
                "log_amount": np.log1p(amount),
                "hour": hour.astype(np.float64),
                "day_of_week": dow.astype(np.float64),
                "is_weekend": (dow >= 5).astype(np.float64),
                "is_night": self._night[hour],
                "account_balance": balance,
                "account_age_days": batch.numeric["account_age_days"],
                "amount_to_balance": np.where(
                    balance > 0, amount / np.where(balance > 0, balance, 1), np.nan
                ),
            }
        for name in spec.extra_numeric:
            out[name] = batch.numeric[name]
        return out

    def _one_hot(self, batch: TransactionBatch, matrix: np.ndarray) -> None:
        for field, columns, other in self._vocab:
            values = batch.categorical.get(field)
            if values is None:
                continue  # absent: every column of the field stays 0
            for row, value in enumerate(values):
                if value is None:
                    continue
                col = columns.get(value, other)
                if col >= 0:
                    matrix[row, col] = 1.0

    # -- mirrors components.features.build._windowed ----------------------------------------

    def _windowed(
        self,
        batch: TransactionBatch,
        history: History,
        q_cust: np.ndarray,
        q_term: np.ndarray,
    ) -> dict[str, np.ndarray]:
        spec = self.spec
        n = len(batch)
        q_ms = batch.time_ms
        amount = batch.numeric["amount"]
        hc, ht = history.customers, history.terminals
        # the request's own transactions are history for its later transactions
        c_group = np.concatenate([hc.group, q_cust]) if len(hc) else q_cust
        c_ms = np.concatenate([hc.time_ms, q_ms]) if len(hc) else q_ms
        c_amount = np.concatenate([hc.value, amount]) if len(hc) else amount
        unknown = np.full(n, np.nan)
        t_group = np.concatenate([ht.group, q_term]) if len(ht) else q_term
        t_ms = np.concatenate([ht.time_ms, q_ms]) if len(ht) else q_ms
        t_label = np.concatenate([ht.value, unknown]) if len(ht) else unknown

        epoch = int(min(c_ms.min(), t_ms.min()))
        q_rel, c_rel, t_rel = q_ms - epoch, c_ms - epoch, t_ms - epoch
        span = int(max(c_rel.max(), t_rel.max())) + self._longest + 1

        out: dict[str, np.ndarray] = {}
        cust, _ = KeyedHistory.build(c_group, c_rel, {"amount": c_amount}, span)
        q_keys = q_cust * span + q_rel
        mean = np.full(n, np.nan)
        for w in spec.customer_windows_days:
            count, total = window_count_sum(cust, q_keys, w * MS_PER_DAY, 0, "amount")
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            out[f"customer_count_{w}d"] = count.astype(np.float64)
            out[f"customer_sum_{w}d"] = total
            out[f"customer_mean_{w}d"] = mean
        out["customer_seconds_since_previous"] = previous_time_gap_ms(cust, q_keys) / 1000.0
        with np.errstate(invalid="ignore", divide="ignore"):
            out["amount_vs_customer_mean"] = np.where(mean > 0, amount / mean, np.nan)

        unknown_label = np.isnan(t_label)
        term, _ = KeyedHistory.build(
            t_group,
            t_rel,
            {"fraud": np.where(unknown_label, 0.0, t_label), "labelled": 1.0 - unknown_label},
            span,
        )
        t_keys = q_term * span + q_rel
        delay = self._delay
        for w in spec.terminal_windows_days:
            count, _ = window_count_sum(term, t_keys, w * MS_PER_DAY, 0)
            _, frauds = window_count_sum(term, t_keys, w * MS_PER_DAY + delay, delay, "fraud")
            _, labelled = window_count_sum(term, t_keys, w * MS_PER_DAY + delay, delay, "labelled")
            out[f"terminal_count_{w}d"] = count.astype(np.float64)
            out[f"terminal_fraud_rate_{w}d"] = np.where(
                labelled > 0, frauds / np.maximum(labelled, 1), 0.0
            )
        return out
