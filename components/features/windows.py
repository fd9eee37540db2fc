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

__all__ = [
    "EntityRows",
    "KeyedHistory",
    "previous_time_gap_ms",
    "window_bounds",
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
        keys = keys[order]
        cumsums = {name: _cumsum0(v[order]) for name, v in values.items()}
        return cls(keys, cumsums, span), order


def _cumsum0(values: np.ndarray) -> np.ndarray:
    """Cumulative sums with a leading 0; NaN counts as 0 (as :func:`numpy.nan_to_num`)."""
    column = values.astype(np.float64)
    if not np.isfinite(column).all():  # rare: skip nan_to_num's cost on clean columns
        column = np.nan_to_num(column)
    out = np.empty(len(column) + 1)
    out[0] = 0.0
    np.cumsum(column, out=out[1:])
    return out


def window_bounds(
    history: KeyedHistory, query_keys: np.ndarray, offsets_ms: list[int]
) -> list[np.ndarray]:
    """For each offset, per query, the first history position at or after ``key - offset``.

    A window ``[key - a, key - b)`` holds the rows ``lo:max(hi, lo)``, ``lo`` being the bounds
    of offset ``a`` and ``hi`` those of ``b``; sums over it are ``cumsum[hi] - cumsum[lo]``. A
    few queries take one :func:`numpy.searchsorted` for every edge (per-call overhead dominates
    them); many take one per edge (no edges-by-queries needle matrix).

    Returns:
        One int array per offset, ``len(query_keys)`` long.
    """
    if len(query_keys) > 64:
        return [np.searchsorted(history.keys, query_keys - o, side="left") for o in offsets_ms]
    offsets = np.asarray(offsets_ms, dtype=np.int64)
    needles = query_keys[np.newaxis, :] - offsets[:, np.newaxis]
    bounds = np.searchsorted(history.keys, needles.ravel(), side="left")
    return list(bounds.reshape(len(offsets), len(query_keys)))


def previous_time_gap_ms(
    history: KeyedHistory, query_keys: np.ndarray, before: np.ndarray | None = None
) -> np.ndarray:
    """Milliseconds since the latest history row of the same group strictly before each query.

    Args:
        history: Sorted history.
        query_keys: Keys of the queries.
        before: ``searchsorted(history.keys, query_keys)`` when the caller has it already.

    Returns:
        Float array; NaN where the group has no earlier row.
    """
    hi = np.searchsorted(history.keys, query_keys, side="left") if before is None else before
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
