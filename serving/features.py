"""Model features at request time, from the online state, with the training code.

:class:`OnlineFeatures` computes exactly what ``components.features.compute_features`` computes
for transactions scored after the history in the state: it calls the same array-level cores,
:func:`~components.features.build.numeric_features` and
:func:`~components.features.build.windowed_features`, on the request's arrays and the rows of
its customers and terminals (the request's own transactions are history for its later ones,
never for themselves or for rows at the same instant). Only the glue differs from the batch
path: calendar fields come from epoch milliseconds and the one-hot columns from a dict lookup,
because a pandas round trip costs milliseconds per request. A test scores the same
transactions through both paths and compares every feature (training/serving skew is a bug).
"""

from __future__ import annotations

import numpy as np

from components.features import FeatureSpec
from components.features.build import numeric_features, windowed_features
from components.features.windows import MS_PER_DAY
from serving.state import History, OnlineState
from serving.transactions import TransactionBatch

__all__ = ["OnlineFeatures", "entity_codes"]

MS_PER_HOUR = 3_600_000
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday is 0 as in pandas' dayofweek
_SMALL = 8


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
        """Features of ``batch`` given its entities' rows.

        Args:
            batch: Validated transactions.
            history: Rows of the batch's distinct customers and terminals (from the state).
            q_cust: Each transaction's customer as a position in the ids asked for.
            q_term: Each transaction's terminal, likewise.

        Returns:
            float32 matrix, one row per transaction, columns in the model's order.
        """
        return self.add_windows(self.stateless(batch), batch, history, q_cust, q_term)

    def stateless(self, batch: TransactionBatch) -> np.ndarray:
        """The matrix with the features of each transaction alone (numbers, one-hot
        categories); the windowed columns 0 until :meth:`add_windows`. Values beyond float32
        are infinite (the scorer refuses them before the state changes)."""
        spec = self.spec
        ms = batch.time_ms
        columns = numeric_features(
            batch.amount, (ms // MS_PER_HOUR) % 24, (ms // MS_PER_DAY + EPOCH_WEEKDAY) % 7,
            batch.numeric, spec,
        )  # fmt: skip
        matrix = np.zeros((len(batch), len(self.names)), dtype=np.float32)
        self._fill(matrix, columns)
        self._one_hot(batch, matrix)
        return matrix

    def add_windows(
        self,
        matrix: np.ndarray,
        batch: TransactionBatch,
        history: History,
        q_cust: np.ndarray,
        q_term: np.ndarray,
    ) -> np.ndarray:
        """Fill the windowed columns of :meth:`stateless`'s ``matrix`` (in place) from the
        entities' rows; returns it."""
        ms, amount = batch.time_ms, batch.amount
        presumed = np.zeros(len(batch))  # genuine until a fraud label arrives (serving.state)
        columns = windowed_features(
            self.spec,
            history.customers.plus(q_cust, ms, amount),
            history.terminals.plus(q_term, ms, presumed),
            q_cust,
            q_term,
            ms,
            amount,
        )
        self._fill(matrix, columns)
        return matrix

    def _fill(self, matrix: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        index = self.index
        with np.errstate(over="ignore"):  # beyond float32: inf, refused by the scorer
            for name, values in columns.items():
                i = index.get(name)
                if i is not None:
                    matrix[:, i] = values

    def _one_hot(self, batch: TransactionBatch, matrix: np.ndarray) -> None:
        """The one-hot category columns (as ``stateless_features``; absent field: all 0)."""
        for field, columns, other in self._vocab:
            values = batch.categorical.get(field)
            if values is None:
                continue
            get = columns.get
            cols = [-1 if v is None else get(v, other) for v in values]
            if len(cols) <= _SMALL:  # a request's few rows: numpy calls cost more than a loop
                for row, col in enumerate(cols):
                    if col >= 0:
                        matrix[row, col] = 1.0
                continue
            at = np.array(cols, np.int64)
            rows = np.flatnonzero(at >= 0)
            matrix[rows, at[rows]] = 1.0
