"""Point-in-time window aggregates over sorted (group, time) keys.

The one kernel behind every windowed feature, batch and online: history rows are sorted by a
composite key ``group * span + time`` so that a window ``[t - w, t)`` of the same group is a
contiguous slice found with :func:`numpy.searchsorted`, and sums over it are differences of
cumulative sums. "Strictly before" is exact: rows at the very same time (the row itself
included) are never in the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["KeyedHistory", "window_count_sum"]

MS_PER_DAY = 86_400_000


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
        if len(group) and int(group.max()) + 1 > np.iinfo(np.int64).max // span:
            raise OverflowError("too many groups for the time span; split the data by period")
        keys = group.astype(np.int64) * span + time_ms.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        cumsums = {
            name: np.concatenate([[0.0], np.cumsum(np.nan_to_num(v[order].astype(np.float64)))])
            for name, v in values.items()
        }
        return cls(keys, cumsums, span), order


def window_count_sum(
    history: KeyedHistory,
    query_keys: np.ndarray,
    start_offset_ms: int,
    end_offset_ms: int,
    value: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Count (and sum ``value`` over) history rows in ``[key - start, key - end)`` per query.

    Args:
        history: Sorted history.
        query_keys: Keys of the queries (same group coding and span).
        start_offset_ms: Window start, this many ms before the query time.
        end_offset_ms: Window end (exclusive), this many ms before the query time; 0 means
            "strictly before the query time".
        value: Name of a cumulative sum in ``history`` to sum over the window, or None.

    Returns:
        Counts per query, and sums per query when ``value`` is given.
    """
    lo = np.searchsorted(history.keys, query_keys - start_offset_ms, side="left")
    hi = np.searchsorted(history.keys, query_keys - end_offset_ms, side="left")
    hi = np.maximum(hi, lo)
    count = hi - lo
    if value is None:
        return count, None
    cs = history.cumsums[value]
    return count, cs[hi] - cs[lo]


def previous_time_gap_ms(history: KeyedHistory, query_keys: np.ndarray) -> np.ndarray:
    """Milliseconds since the latest history row of the same group strictly before each query.

    Returns:
        Float array; NaN where the group has no earlier row.
    """
    hi = np.searchsorted(history.keys, query_keys, side="left")
    prev = np.maximum(hi - 1, 0)
    same_group = (hi > 0) & (
        history.keys[prev] // history.span == query_keys // history.span
        if len(history.keys)
        else np.zeros(len(query_keys), dtype=bool)
    )
    gap = np.full(len(query_keys), np.nan)
    if len(history.keys):
        gap[same_group] = (query_keys - history.keys[prev])[same_group]
    return gap
