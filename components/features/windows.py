"""Point-in-time window aggregates over sorted (group, time) keys.

The one kernel behind every windowed feature, batch and online (:func:`window_values`,
compiled with numba): the rows of each table (customers, terminals) are sorted by a composite
key ``group * span + time`` so that a window ``[t - w, t)`` of one group is a contiguous slice
found by binary search, and sums over it are differences of cumulative sums. "Strictly
before" is exact: rows at the very same time (the row itself included) are never in the
window. One compiled call does it all, so a request's single transaction costs microseconds
(not one numpy call per window edge) and a million-row training frame a second or two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.jit import kernel

__all__ = ["EntityRows", "compile_kernels", "window_values"]

MS_PER_DAY = 86_400_000
RADIX_FROM = 4096
"""From this many unsorted keys on, sort by radix (a merge sort's log factor costs more)."""
SORT_QUERIES_FROM = 256
"""From this many queries on, they are visited in key order (binary searches with ascending
needles stay in cache; sorting a handful costs more than it saves)."""


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


@kernel
def _sorted_sums(group, time_ms, columns, epoch, span):
    """Keys ``group * span + (time - epoch)`` in ascending (stable) order, and per row of
    ``columns`` the cumulative sums in that order with a leading 0, NaN counted as 0 and
    infinities as the largest float (as :func:`numpy.nan_to_num`), added one after the other
    as :func:`numpy.cumsum` does."""
    n, c = group.shape[0], columns.shape[0]
    keys = np.empty(n, np.int64)
    for i in range(n):
        keys[i] = group[i] * span + (time_ms[i] - epoch)
    order = _stable_order(keys)
    top = np.finfo(np.float64).max
    sorted_keys = np.empty(n, np.int64)
    sums = np.empty((c, n + 1))
    sums[:, 0] = 0.0
    for i in range(n):
        o = order[i]
        sorted_keys[i] = keys[o]
        for j in range(c):
            v = columns[j, o]
            if np.isnan(v):
                v = 0.0
            elif np.isinf(v):
                v = top if v > 0 else -top
            sums[j, i + 1] = sums[j, i] + v
    return sorted_keys, sums


@kernel
def _radix_order(keys):
    """Stable ``argsort`` of non-negative keys: least significant digit first, 11 bits a
    pass (about 10x faster than numpy's stable sort for the millions of training rows)."""
    n = keys.shape[0]
    if n and keys.min() < 0:
        return np.argsort(keys, kind="mergesort")
    k, idx = keys.copy(), np.arange(n)
    k2, idx2 = np.empty_like(k), np.empty_like(idx)
    top = k.max() if n else 0
    shift = 0
    while (top >> shift) > 0:
        starts = np.zeros(2049, np.int64)
        for i in range(n):
            starts[((k[i] >> shift) & 2047) + 1] += 1
        for b in range(2048):
            starts[b + 1] += starts[b]
        for i in range(n):
            d = (k[i] >> shift) & 2047
            j = starts[d]
            starts[d] = j + 1
            k2[j] = k[i]
            idx2[j] = idx[i]
        k, k2 = k2, k
        idx, idx2 = idx2, idx
        shift += 11
    return idx


@kernel
def _stable_order(keys):
    """``argsort(keys, kind="stable")``, fast when the keys are sorted but for a tail (the
    server's rows: each entity's history in time order, then the request's own rows): the
    tail is sorted on its own and merged in, earlier rows first among equal keys."""
    n = keys.shape[0]
    p = 1
    while p < n and keys[p - 1] <= keys[p]:
        p += 1
    if p >= n:
        return np.arange(n)
    if n - p > n // 2:
        return _radix_order(keys) if n >= RADIX_FROM else np.argsort(keys, kind="mergesort")
    tail = p + np.argsort(keys[p:], kind="mergesort")
    order = np.empty(n, np.int64)
    i, j, k = 0, 0, 0
    while i < p and j < tail.shape[0]:
        if keys[tail[j]] < keys[i]:
            order[k] = tail[j]
            j += 1
        else:
            order[k] = i
            i += 1
        k += 1
    while i < p:
        order[k] = i
        i += 1
        k += 1
    while j < tail.shape[0]:
        order[k] = tail[j]
        j += 1
        k += 1
    return order


@kernel
def _visit_order(keys):
    if keys.shape[0] < SORT_QUERIES_FROM:
        return np.arange(keys.shape[0])
    return _stable_order(keys)


@kernel
def _customer_windows(keys, sums, span, query_keys, amount, windows_ms):
    k, n = windows_ms.shape[0], query_keys.shape[0]
    out = np.empty((3 * k + 2, n))
    for i in _visit_order(query_keys):
        q = query_keys[i]
        before = np.searchsorted(keys, q)
        mean = np.nan
        for j in range(k):
            lo = np.searchsorted(keys, q - windows_ms[j])
            hi = max(before, lo)
            count = hi - lo
            total = sums[0, hi] - sums[0, lo]
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


@kernel
def _terminal_windows(keys, sums, query_keys, windows_ms, delay_ms):
    k, n = windows_ms.shape[0], query_keys.shape[0]
    out = np.empty((2 * k, n))
    for i in _visit_order(query_keys):
        q = query_keys[i]
        seen = np.searchsorted(keys, q)
        known = np.searchsorted(keys, q - delay_ms)
        for j in range(k):
            lo = np.searchsorted(keys, q - windows_ms[j])
            out[2 * j, i] = max(seen, lo) - lo
            lo = np.searchsorted(keys, q - windows_ms[j] - delay_ms)
            hi = max(known, lo)
            frauds = sums[0, hi] - sums[0, lo]
            labelled = sums[1, hi] - sums[1, lo]
            out[2 * j + 1, i] = frauds / max(labelled, 1.0) if labelled > 0 else 0.0
    return out


@kernel
def window_values(
    customers_group,
    customers_ms,
    customers_amount,
    terminals_group,
    terminals_ms,
    terminals_label,
    query_customer,
    query_terminal,
    query_ms,
    amount,
    customer_windows_ms,
    terminal_windows_ms,
    delay_ms,
    longest_ms,
):
    """The customer and terminal window features of transactions (the queries).

    Args:
        customers_group, customers_ms, customers_amount: Customer rows (int64 entity code,
            int64 time, float64 amount), the queries' own transactions included: each is
            history for the later ones, never for itself or same-time rows.
        terminals_group, terminals_ms, terminals_label: Terminal rows (label: 1 fraud,
            0 genuine, NaN unknown: out of the fraud-rate denominators).
        query_customer, query_terminal: Each query's customer and terminal code.
        query_ms: Each query's time (same origin as the rows' times).
        amount: Each query's amount.
        customer_windows_ms: Customer window lengths, ascending.
        terminal_windows_ms: Terminal window lengths.
        delay_ms: The label delay: label windows are ``[t - w - delay, t - delay)``.
        longest_ms: At least the longest window plus the delay.

    Returns:
        ``(customer, terminal)`` float64 matrices, one row per feature, one column per query.
        Customer rows, per window: count, sum and mean of the amounts in ``[t - w, t)``
        (mean NaN when empty); then the seconds since the customer's previous transaction
        (NaN if none) and the amount over the last (longest) window's mean (NaN unless > 0).
        Terminal rows, per window: the count of transactions in ``[t - w, t)`` and the fraud
        rate among the labelled ones in the label window (0 when none is labelled).

    Raises:
        OverflowError: too many entities for the time span (split the data by period).
    """
    big = np.iinfo(np.int64).max
    epoch, latest = big, -big
    for times in (customers_ms, terminals_ms):
        if times.shape[0]:
            epoch = min(epoch, times.min())
            latest = max(latest, times.max())
    if epoch == big:
        epoch, latest = 0, 0
    span = latest - epoch + longest_ms + 1
    groups = 1
    for codes in (customers_group, terminals_group, query_customer, query_terminal):
        if codes.shape[0]:
            groups = max(groups, codes.max() + 1)
    if groups > big // span:
        raise OverflowError("too many entities for the time span; split the data by period")
    c_keys, c_sums = _sorted_sums(
        customers_group, customers_ms, customers_amount.reshape(1, -1), epoch, span
    )
    n = terminals_label.shape[0]
    labels = np.empty((2, n))
    for i in range(n):
        unknown = np.isnan(terminals_label[i])
        labels[0, i] = 0.0 if unknown else terminals_label[i]
        labels[1, i] = 0.0 if unknown else 1.0
    t_keys, t_sums = _sorted_sums(terminals_group, terminals_ms, labels, epoch, span)
    q_ms = query_ms - epoch
    customer = _customer_windows(
        c_keys, c_sums, span, query_customer * span + q_ms, amount, customer_windows_ms
    )
    terminal = _terminal_windows(
        t_keys, t_sums, query_terminal * span + q_ms, terminal_windows_ms, delay_ms
    )
    return customer, terminal


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the kernel now, e.g. before a server says it is
    ready, rather than in its first request."""
    one, ms = np.zeros(1, np.int64), np.ones(1, np.int64)
    window_values(
        one, one, np.ones(1), one, one, np.zeros(1), one, one, one, np.ones(1), ms, ms, 1, 3
    )
