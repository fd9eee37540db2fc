"""Point-in-time window aggregates over sorted (group, time) keys.

The one kernel behind every windowed feature, batch and online: history rows are sorted by a
composite key ``group * span + time`` so that a window ``[t - w, t)`` of the same group is a
contiguous slice found by binary search, and sums over it are differences of cumulative sums
(compiled with numba: one request's few queries cost microseconds, not one numpy call per
window edge). "Strictly before" is exact: rows at the very same time (the row itself
included) are never in the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

__all__ = [
    "EntityRows",
    "KeyedHistory",
    "compile_kernels",
    "customer_window_values",
    "terminal_window_values",
]

MS_PER_DAY = 86_400_000
_INT64_MAX = int(np.iinfo(np.int64).max)


@dataclass(frozen=True)
class EntityRows:
    """History rows of several entities (customers or terminals), columnar and unsorted.

    Attributes:
        group: Integer code of each row's entity, ``>= 0`` (int64).
        time_ms: Time of each row in milliseconds, any fixed origin (int64).
        value: Amount (customers) or fraud label, NaN if unknown (terminals); float64.
    """

    group: np.ndarray
    time_ms: np.ndarray
    value: np.ndarray

    @classmethod
    def empty(cls) -> EntityRows:
        """No rows."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))

    def __len__(self) -> int:
        return len(self.group)

    def plus(self, group: np.ndarray, time_ms: np.ndarray, value: np.ndarray) -> EntityRows:
        """These rows followed by more (e.g. a request's own transactions)."""
        if not len(self):
            return EntityRows(group, time_ms, value)
        return EntityRows(
            np.concatenate([self.group, group]),
            np.concatenate([self.time_ms, time_ms]),
            np.concatenate([self.value, value]),
        )


@dataclass(frozen=True)
class KeyedHistory:
    """History rows sorted by ``(group, time)`` with cumulative sums of their values.

    Attributes:
        keys: ``group * span + time_ms``, ascending.
        cumsums: Per value column, cumulative sums with a leading 0 (length ``len(keys) + 1``).
        span: Key distance between two groups (larger than any time plus the longest window).
    """

    keys: np.ndarray
    cumsums: dict[str, np.ndarray]
    span: int

    @classmethod
    def build(
        cls, group: np.ndarray, time_ms: np.ndarray, values: dict[str, np.ndarray], span: int
    ) -> tuple[KeyedHistory, np.ndarray]:
        """Sort rows by key and accumulate their values.

        Args:
            group: Integer group code per row (customer, terminal), ``>= 0``.
            time_ms: Time per row in milliseconds, ``0 <= time_ms < span - longest window``.
            values: Value columns to sum (e.g. amount, is_fraud); NaN counts as 0.
            span: Key distance between groups.

        Returns:
            The history and the sort order (positions of the input rows, in key order).

        Raises:
            OverflowError: keys would not fit in 64-bit integers.
        """
        if len(group) and int(group.max()) + 1 > _INT64_MAX // span:
            raise OverflowError("too many groups for the time span; split the data by period")
        keys = group.astype(np.int64) * span + time_ms.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        columns = np.empty((len(values), len(keys)))
        for j, column in enumerate(values.values()):
            columns[j] = column
        keys, sums = _sorted_cumsums(keys, order, columns)
        return cls(keys, dict(zip(values, sums, strict=True)), span), order


@numba.njit(cache=True, nogil=True)
def _sorted_cumsums(
    keys: np.ndarray, order: np.ndarray, columns: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``keys[order]`` and, per row of ``columns``, cumulative sums in that order with a
    leading 0, NaN counted as 0 and infinities as the largest float (as
    :func:`numpy.nan_to_num`), added one after the other as :func:`numpy.cumsum` does."""
    n, c = order.shape[0], columns.shape[0]
    top = np.finfo(np.float64).max
    out_keys = np.empty(n, np.int64)
    sums = np.empty((c, n + 1))
    sums[:, 0] = 0.0
    for i in range(n):
        o = order[i]
        out_keys[i] = keys[o]
        for j in range(c):
            v = columns[j, o]
            if np.isnan(v):
                v = 0.0
            elif np.isinf(v):
                v = top if v > 0 else -top
            sums[j, i + 1] = sums[j, i] + v
    return out_keys, sums


@numba.njit(cache=True, nogil=True)
def customer_window_values(
    keys: np.ndarray,
    amount_sums: np.ndarray,
    span: int,
    query_keys: np.ndarray,
    amount: np.ndarray,
    windows_ms: np.ndarray,
) -> np.ndarray:
    """The customer window features of each query, one row per feature.

    Per window ``[t - w, t)`` (ascending ``windows_ms``): count, sum and mean of the amounts
    (mean NaN when empty); then the seconds since the customer's previous transaction (NaN
    if none) and the amount over the longest window's mean (NaN unless that mean is > 0).

    Args:
        keys: Sorted history keys (:attr:`KeyedHistory.keys`).
        amount_sums: Cumulative sums of the amounts with a leading 0.
        span: :attr:`KeyedHistory.span`.
        query_keys: ``group * span + time`` of each query.
        amount: Each query's amount.
        windows_ms: Window lengths.

    Returns:
        float64 ``(3 * windows + 2, queries)``.
    """
    k, n = windows_ms.shape[0], query_keys.shape[0]
    out = np.empty((3 * k + 2, n))
    for i in range(n):
        q = query_keys[i]
        before = np.searchsorted(keys, q)
        mean = np.nan
        for j in range(k):
            lo = np.searchsorted(keys, q - windows_ms[j])
            hi = max(before, lo)
            count = hi - lo
            total = amount_sums[hi] - amount_sums[lo]
            mean = total / max(count, 1) if count > 0 else np.nan
            out[3 * j, i] = count
            out[3 * j + 1, i] = total
            out[3 * j + 2, i] = mean
        gap = np.nan
        if before > 0 and keys[before - 1] // span == q // span:
            gap = np.float64(q - keys[before - 1])
        out[3 * k, i] = gap / 1000.0
        out[3 * k + 1, i] = amount[i] / mean if mean > 0 else np.nan
    return out


@numba.njit(cache=True, nogil=True)
def terminal_window_values(
    keys: np.ndarray,
    fraud_sums: np.ndarray,
    labelled_sums: np.ndarray,
    query_keys: np.ndarray,
    windows_ms: np.ndarray,
    delay_ms: int,
) -> np.ndarray:
    """The terminal window features of each query, one row per feature.

    Per window: the count of transactions in ``[t - w, t)``, and the fraud rate among the
    labelled ones in ``[t - w - delay, t - delay)`` (0 when none is labelled).

    Args:
        keys: Sorted history keys.
        fraud_sums: Cumulative sums of the fraud labels (unknown as 0), leading 0.
        labelled_sums: Cumulative counts of known labels, leading 0.
        query_keys: ``group * span + time`` of each query.
        windows_ms: Window lengths.
        delay_ms: The label delay.

    Returns:
        float64 ``(2 * windows, queries)``.
    """
    k, n = windows_ms.shape[0], query_keys.shape[0]
    out = np.empty((2 * k, n))
    for i in range(n):
        q = query_keys[i]
        seen = np.searchsorted(keys, q)
        known = np.searchsorted(keys, q - delay_ms)
        for j in range(k):
            lo = np.searchsorted(keys, q - windows_ms[j])
            out[2 * j, i] = max(seen, lo) - lo
            lo = np.searchsorted(keys, q - windows_ms[j] - delay_ms)
            hi = max(known, lo)
            frauds = fraud_sums[hi] - fraud_sums[lo]
            labelled = labelled_sums[hi] - labelled_sums[lo]
            out[2 * j + 1, i] = frauds / max(labelled, 1.0) if labelled > 0 else 0.0
    return out


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the kernels of this module now, e.g. before a server
    says it is ready, rather than in its first request."""
    none, one = np.zeros(0, np.int64), np.zeros(1)
    KeyedHistory.build(none, none, {"value": np.zeros(0)}, 1)
    customer_window_values(none, one, 1, none, np.zeros(0), np.ones(1, np.int64))
    terminal_window_values(none, one, one, none, np.ones(1, np.int64), 1)
