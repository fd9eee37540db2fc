"""Online feature state: the recent transactions of every customer and terminal.

The windowed features of a transaction need the customer's and the terminal's transactions of
the last ``spec.history_days`` days. :class:`OnlineState` is the interface the model server
uses; :class:`InMemoryOnlineState` keeps per-entity numpy arrays in this process (one replica).
Several replicas need one shared state: implement the same methods over a shared store
(e.g. Redis: one sorted set or packed array per customer and terminal, ``history_for`` as one
pipelined ``MGET``/``ZRANGEBYSCORE`` round trip, ``append`` as one pipelined write,
``set_labels`` as a small script per terminal).

The state holds raw rows, not features: ``(time_ms, amount)`` per customer and
``(time_ms, label)`` per terminal. A scored transaction is presumed genuine (label 0) until a
fraud label says otherwise, as in training, where every transaction older than the label delay
counts as labelled (a chargeback feed reports only fraud); ``set_labels`` puts the late labels
on (see :mod:`serving.log_follow`). NaN means "not known at all" and leaves a row out of the
fraud-rate denominators. Features are computed from the rows by
:mod:`serving.features` with the training kernel.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from components.features.windows import MS_PER_DAY, EntityRows
from components.schema import LABEL

__all__ = ["EntityRows", "History", "InMemoryOnlineState", "LabelsSet", "OnlineState"]


@dataclass(frozen=True)
class History:
    """What :meth:`OnlineState.history_for` returns: customer rows and terminal rows."""

    customers: EntityRows
    terminals: EntityRows


@dataclass(frozen=True)
class LabelsSet:
    """What :meth:`OnlineState.set_labels` did with each label.

    Attributes:
        changed: A row of that terminal at that time now carries the label.
        unchanged: A row there carried it already (e.g. the bundle's snapshot knew it).
        not_found: No row of that terminal at that time: older than the state keeps, or not
            scored (yet) by any version of the model.
    """

    changed: int = 0
    unchanged: int = 0
    not_found: int = 0


@runtime_checkable
class OnlineState(Protocol):
    """The history behind the windowed features; shared by all replicas when it is remote."""

    def history_for(
        self, customer_ids: Sequence[str], terminal_ids: Sequence[str]
    ) -> History:  # pragma: no cover - protocol
        """Rows of these (distinct) customers and terminals; groups index into the lists."""
        ...

    def append(
        self,
        customer_ids: Sequence[str],
        terminal_ids: Sequence[str],
        time_ms: np.ndarray,
        amount: np.ndarray,
        label: np.ndarray | None = None,
    ) -> None:  # pragma: no cover - protocol
        """Add scored transactions (label None: presumed genuine, 0) to their entities' rows."""
        ...

    def set_labels(
        self, terminal_ids: Sequence[str], time_ms: np.ndarray, labels: np.ndarray
    ) -> LabelsSet:  # pragma: no cover - protocol
        """Put late labels (0 or 1) on the terminal rows of these transactions."""
        ...

    def stats(self) -> dict[str, int]:  # pragma: no cover - protocol
        """Sizes for metrics: ``customers``, ``terminals``, ``customer_rows``, ``terminal_rows``."""
        ...


class _Series:
    """Rows of one entity sorted by time: compact C arrays that grow in place."""

    __slots__ = ("time", "value")

    def __init__(self) -> None:
        self.time = array("q")
        self.value = array("d")


class _Table:
    """Rows per entity id, pruned to a retention window.

    An entity's rows older than the floor are cut once its oldest row is ``slack_ms`` older
    than the floor: a cut per entity every ``slack_ms`` of traffic rather than on nearly
    every append (the rows kept meanwhile are outside every window the features read).
    """

    def __init__(self, slack_ms: int = 0) -> None:
        self.slack_ms = slack_ms
        self.series: dict[str, _Series] = {}
        self.rows = 0
        self._sweep: list[str] = []

    def gather(self, ids: Sequence[str]) -> EntityRows:
        # one C-level join of the series' buffers into new bytes, viewed by numpy once: numpy
        # must never export the series' own buffers (appends resize them)
        get = self.series.get
        found = [get(entity) for entity in ids]
        present = [s for s in found if s is not None]
        if not present:
            return EntityRows.empty()
        lengths = [0 if s is None else len(s.time) for s in found]
        group = np.repeat(np.arange(len(ids), dtype=np.int64), lengths)
        times = b"".join([s.time for s in present])
        values = b"".join([s.value for s in present])
        return EntityRows(group, np.frombuffer(times, np.int64), np.frombuffer(values, np.float64))

    def add(self, entity: str, time: int, value: float, floor_ms: int) -> None:
        s = self.series.get(entity)
        if s is None:
            s = self.series[entity] = _Series()
        if not s.time or time >= s.time[-1]:
            s.time.append(time)
            s.value.append(value)
        else:  # a late arrival: keep the rows sorted
            i = bisect_right(s.time, time)
            s.time.insert(i, time)
            s.value.insert(i, value)
        self.rows += 1
        if s.time[0] < floor_ms - self.slack_ms:
            self._cut(entity, s, floor_ms)

    def add_many(
        self, ids: Sequence[str], times: list[int], values: list[float], floor_ms: int
    ) -> None:
        """:meth:`add` for each row; an entity's next row (the common case) is added inline."""
        get = self.series.get
        keep_from = floor_ms - self.slack_ms
        added = 0
        for entity, time, value in zip(ids, times, values, strict=True):
            s = get(entity)
            # a series is never empty; appending at its end leaves nothing to cut
            if s is not None and time >= s.time[-1] and s.time[0] >= keep_from:
                s.time.append(time)
                s.value.append(value)
                added += 1
            else:
                self.add(entity, time, value, floor_ms)
        self.rows += added

    def extend_sorted(self, entity: str, time: np.ndarray, value: np.ndarray) -> None:
        """Bulk-add rows sorted by time, all after the entity's last row (seeding)."""
        s = self.series.get(entity)
        if s is None:
            s = self.series[entity] = _Series()
        elif s.time and time[0] < s.time[-1]:
            for t, v in zip(time.tolist(), value.tolist(), strict=True):
                self.add(entity, t, v, -(2**62))
            return
        s.time.frombytes(np.ascontiguousarray(time, np.int64).tobytes())
        s.value.frombytes(np.ascontiguousarray(value, np.float64).tobytes())
        self.rows += len(time)

    def set_value(self, entity: str, time: int, value: float) -> bool | None:
        """Give a row of ``entity`` at ``time`` this value; True: changed, False: a row there
        had it already, None: no row there. Of several rows at one time the first that
        differs is changed, so each label marks one transaction, and once."""
        s = self.series.get(entity)
        if s is None:
            return None
        start, end = bisect_left(s.time, time), bisect_right(s.time, time)
        if start == end:
            return None
        rows = s.value[start:end]
        if value in rows:
            return False
        s.value[start + next(i for i, v in enumerate(rows) if v != value)] = value
        return True

    def _cut(self, entity: str, s: _Series, floor_ms: int) -> None:
        k = bisect_left(s.time, floor_ms)
        if k >= len(s.time):
            del self.series[entity]
        else:
            del s.time[:k]
            del s.value[:k]
        self.rows -= k

    def prune(self, floor_ms: int, budget: int) -> None:
        """Check up to ``budget`` entities (round robin) and cut those due (see the class)."""
        if not self._sweep:
            self._sweep = list(self.series)
        for _ in range(min(budget, len(self._sweep))):
            entity = self._sweep.pop()
            s = self.series.get(entity)
            if s is not None and s.time[0] < floor_ms - self.slack_ms:
                self._cut(entity, s, floor_ms)


class InMemoryOnlineState:
    """Per-customer and per-terminal arrays in this process, with bounded memory.

    Each entity's rows live in two compact C arrays (``array.array``: 8 bytes a value, appends
    in place); a request reads them as numpy arrays without a Python loop over rows.

    Rows older than ``retention_days`` before the latest transaction seen (the watermark) are
    dropped: when an append touches their entity, and for a few other entities per append (a
    round-robin sweep), so idle entities are eventually removed too. An entity is cut once
    its oldest row is a sixteenth of the retention past it (about 2 days for the server's 31):
    cuts are rare, and an entity holds at most a sixteenth of the retention more.

    Args:
        retention_days: How much history to keep; at least the feature spec's
            ``history_days`` (the server uses ``history_days + 1`` for late arrivals).
        sweep_per_append: Idle entities checked per append.
    """

    def __init__(self, retention_days: float, sweep_per_append: int = 8) -> None:
        self.retention_ms = int(retention_days * MS_PER_DAY)
        self.watermark_ms = 0
        self.sweep_per_append = sweep_per_append
        self.customers = _Table(self.retention_ms // 16)
        self.terminals = _Table(self.retention_ms // 16)

    @property
    def floor_ms(self) -> int:
        return self.watermark_ms - self.retention_ms

    def history_for(self, customer_ids: Sequence[str], terminal_ids: Sequence[str]) -> History:
        return History(self.customers.gather(customer_ids), self.terminals.gather(terminal_ids))

    def append(
        self,
        customer_ids: Sequence[str],
        terminal_ids: Sequence[str],
        time_ms: np.ndarray,
        amount: np.ndarray,
        label: np.ndarray | None = None,
    ) -> None:
        n = len(customer_ids)
        if n == 0:
            return
        times = np.asarray(time_ms, dtype=np.int64).tolist()
        amounts = np.asarray(amount, dtype=np.float64).tolist()
        labels = [0.0] * n if label is None else np.asarray(label, np.float64).tolist()
        self.watermark_ms = max(self.watermark_ms, max(times))
        floor = self.floor_ms
        self.customers.add_many(customer_ids, times, amounts, floor)
        self.terminals.add_many(terminal_ids, times, labels, floor)
        self.customers.prune(floor, self.sweep_per_append)
        self.terminals.prune(floor, self.sweep_per_append)

    def set_labels(
        self, terminal_ids: Sequence[str], time_ms: np.ndarray, labels: np.ndarray
    ) -> LabelsSet:
        """Put late labels on terminal rows (see :meth:`_Table.set_value`).

        A transaction scored here was presumed genuine (0): a fraud label turns its row to 1,
        and a later label saying genuine turns it back, so the terminal fraud rates count the
        frauds reported since the bundle was trained, as training counts every label.
        """
        outcomes = [
            self.terminals.set_value(t, time, float(label))
            for t, time, label in zip(
                terminal_ids,
                np.asarray(time_ms, np.int64).tolist(),
                np.asarray(labels, np.float64).tolist(),
                strict=True,
            )
        ]
        return LabelsSet(
            changed=outcomes.count(True),
            unchanged=outcomes.count(False),
            not_found=outcomes.count(None),
        )

    def stats(self) -> dict[str, int]:
        return {
            "customers": len(self.customers.series),
            "terminals": len(self.terminals.series),
            "customer_rows": self.customers.rows,
            "terminal_rows": self.terminals.rows,
        }

    def load_frame(self, frame: pd.DataFrame) -> int:
        """Add transactions from a frame (e.g. the bundle's ``online/snapshot.parquet``).

        Needs ``timestamp``, ``customer_id``, ``terminal_id``, ``amount``; ``is_fraud`` when
        known (blank labels stay unknown). Returns the number of rows read.
        """
        if frame.empty:
            return 0
        ts = pd.to_datetime(frame["timestamp"], utc=True)
        time_ms = (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
        labels = (
            pd.to_numeric(frame[LABEL], errors="coerce").to_numpy(np.float64)
            if LABEL in frame.columns
            else None
        )
        times = time_ms.to_numpy(np.int64)
        if labels is None:
            labels = np.full(len(frame), np.nan)
        self.watermark_ms = max(self.watermark_ms, int(times.max()))
        for table, ids, values in (
            (self.customers, frame["customer_id"], frame["amount"].to_numpy(np.float64)),
            (self.terminals, frame["terminal_id"], labels),
        ):
            codes, uniques = pd.factorize(ids.astype(str))
            order = np.lexsort((times, codes))
            bounds = np.flatnonzero(np.diff(codes[order])) + 1
            for rows in np.split(order, bounds):
                table.extend_sorted(str(uniques[codes[rows[0]]]), times[rows], values[rows])
        floor = self.floor_ms
        for table in (self.customers, self.terminals):
            table.prune(floor, len(table.series))
        return len(frame)
