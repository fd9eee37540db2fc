"""Online feature state: the recent transactions of every customer and terminal.

The windowed features of a transaction need the customer's and the terminal's transactions of
the last ``spec.history_days`` days. :class:`OnlineState` is the interface the model server
uses; :class:`InMemoryOnlineState` keeps per-entity numpy arrays in this process (one replica).
Several replicas of a version share one state in Redis:
:class:`serving.redis_state.RedisOnlineState` keeps the same rows there (a test compares).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import pandas as pd

from components.features.windows import MS_PER_DAY, EntityRows
from components.schema import LABEL

__all__ = [
    "EntityRows",
    "History",
    "InMemoryOnlineState",
    "LabelsSet",
    "OnlineState",
    "StateUnavailable",
    "read_score_append",
]

R = TypeVar("R")


class StateUnavailable(RuntimeError):
    """A shared online state cannot be read or written now (the server answers 503 with
    this message: what is wrong and what to do).

    Attributes:
        lost: The store is up but lost the state (e.g. Redis restarted without persistence):
            it must be seeded again.
    """

    def __init__(self, message: str, lost: bool = False) -> None:
        super().__init__(message)
        self.lost = lost


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

    thread_safe: bool
    """Whether any thread may call its methods at once (a state in Redis); else only the
    thread that scores may change it (the in-memory one)."""

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
        transaction_ids: Sequence[str] | None = None,
    ) -> int:  # pragma: no cover - protocol
        """Add scored transactions (label None: presumed genuine, 0) to their entities' rows;
        a transaction already there (same id, customer and time: a retry) is not added again.
        Returns how many were not added for that reason."""
        ...

    async def score_and_add_async(
        self,
        customers: Sequence[str],
        terminals: Sequence[str],
        customer_ids: Sequence[str],
        terminal_ids: Sequence[str],
        time_ms: np.ndarray,
        amount: np.ndarray,
        transaction_ids: Sequence[str] | None,
        score: Callable[[History], R],
    ) -> tuple[R, int]:  # pragma: no cover - protocol
        """One request's step: the history of the (distinct) ``customers`` and ``terminals``
        goes to ``score``, then the transactions are added as :meth:`append` adds them.
        When ``score`` raises, the state is left as it was and the error goes on. A remote
        state awaits its round trip, so the server takes other requests meanwhile.

        Returns:
            What ``score`` returned, and how many transactions were there already.
        """
        ...

    def set_labels(
        self,
        terminal_ids: Sequence[str],
        time_ms: np.ndarray,
        labels: np.ndarray,
        transaction_ids: Sequence[str] | None = None,
    ) -> LabelsSet:  # pragma: no cover - protocol
        """Put late labels (0 or 1) on the terminal rows of these transactions."""
        ...

    def stats(self) -> dict[str, int]:  # pragma: no cover - protocol
        """Sizes for metrics: ``customers``, ``terminals``, ``customer_rows``, ``terminal_rows``."""
        ...


def read_score_append(
    state: OnlineState,
    customers: Sequence[str],
    terminals: Sequence[str],
    customer_ids: Sequence[str],
    terminal_ids: Sequence[str],
    time_ms: np.ndarray,
    amount: np.ndarray,
    transaction_ids: Sequence[str] | None,
    score: Callable[[History], R],
) -> tuple[R, int]:
    """:meth:`OnlineState.score_and_add_async` as three steps (read, score, append): exact for a
    state that one thread changes, as :class:`InMemoryOnlineState`."""
    result = score(state.history_for(customers, terminals))
    repeated = state.append(
        customer_ids, terminal_ids, time_ms, amount, transaction_ids=transaction_ids
    )
    return result, repeated


def frame_columns(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """What a state keeps of a frame of transactions (a snapshot, a replayed log) besides the
    entity ids and the amounts.

    Returns:
        The times in epoch ms (int64), the labels (float64, NaN where not known: all of them
        without an ``is_fraud`` column) and the transaction ids as text (None without them).
    """
    ts = pd.to_datetime(frame["timestamp"], utc=True)
    times = ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy(np.int64)
    labels = (
        pd.to_numeric(frame[LABEL], errors="coerce").to_numpy(np.float64)
        if LABEL in frame.columns
        else np.full(len(frame), np.nan)
    )
    ids = frame["transaction_id"].astype(str).tolist() if "transaction_id" in frame else None
    return times, labels, ids


NO_ID = -1
"""The id hash of a row whose transaction id is not known (``hash`` of a str is never -1)."""


def id_hashes(transaction_ids: Sequence[str] | None, n: int) -> list[int]:
    """The hashes the state keeps of transaction ids (:data:`NO_ID` for each when None).

    Python's ``hash`` of a string: 64 bits, salted per process, which is enough for a state
    that lives in one process and compares ids only among one entity's rows at one instant.
    """
    return [NO_ID] * n if transaction_ids is None else list(map(hash, transaction_ids))


class _Series:
    """Rows of one entity sorted by time: compact C arrays that grow in place (the time, the
    value, and a hash of the transaction id)."""

    __slots__ = ("ids", "time", "value")

    def __init__(self) -> None:
        self.time = array("q")
        self.value = array("d")
        self.ids = array("q")

    def holds(self, time: int, id_hash: int) -> bool:
        """Whether the transaction with this id hash is a row at ``time`` already."""
        if id_hash == NO_ID:
            return False
        start, end = bisect_left(self.time, time), bisect_right(self.time, time)
        return id_hash in self.ids[start:end]


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

    def add(
        self,
        entity: str,
        time: int,
        value: float,
        floor_ms: int,
        id_hash: int = NO_ID,
        once: bool = True,
    ) -> bool:
        """Add a row, unless ``once`` and its transaction is a row there already; True when
        added."""
        s = self.series.get(entity)
        if s is None:
            s = self.series[entity] = _Series()
        if not s.time or time > s.time[-1]:
            s.time.append(time)
            s.value.append(value)
            s.ids.append(id_hash)
        elif once and s.holds(time, id_hash):  # a retried transaction: counted once
            return False
        else:  # a late arrival, or another row at the same instant: keep the rows sorted
            i = bisect_right(s.time, time)
            s.time.insert(i, time)
            s.value.insert(i, value)
            s.ids.insert(i, id_hash)
        self.rows += 1
        if s.time[0] < floor_ms - self.slack_ms:
            self._cut(entity, s, floor_ms)
        return True

    def add_many(
        self,
        ids: Sequence[str],
        times: list[int],
        values: list[float],
        floor_ms: int,
        id_hashes: list[int],
        once: bool = True,
    ) -> list[int]:
        """:meth:`add` for each row; an entity's next row (the common case) is added inline.

        Returns:
            The positions of the rows not added (``once``: their transaction was a row).
        """
        get = self.series.get
        keep_from = floor_ms - self.slack_ms
        added = 0
        held: list[int] = []
        for at, (entity, time, value, id_hash) in enumerate(
            zip(ids, times, values, id_hashes, strict=True)
        ):
            s = get(entity)
            # a series is never empty; appending at its end leaves nothing to cut
            if s is not None and time > s.time[-1] and s.time[0] >= keep_from:
                s.time.append(time)
                s.value.append(value)
                s.ids.append(id_hash)
                added += 1
            elif not self.add(entity, time, value, floor_ms, id_hash, once):
                held.append(at)
        self.rows += added
        return held

    def extend_sorted(
        self, entity: str, time: np.ndarray, value: np.ndarray, id_hash: np.ndarray
    ) -> None:
        """Bulk-add rows sorted by time, all after the entity's last row (seeding; the frame's
        rows are distinct transactions, so none is taken for a retry)."""
        s = self.series.get(entity)
        if s is None:
            s = self.series[entity] = _Series()
        elif s.time and time[0] <= s.time[-1]:
            for t, v, h in zip(time.tolist(), value.tolist(), id_hash.tolist(), strict=True):
                self.add(entity, t, v, -(2**62), h, once=False)
            return
        s.time.frombytes(np.ascontiguousarray(time, np.int64).tobytes())
        s.value.frombytes(np.ascontiguousarray(value, np.float64).tobytes())
        s.ids.frombytes(np.ascontiguousarray(id_hash, np.int64).tobytes())
        self.rows += len(time)

    def set_value(self, entity: str, time: int, value: float, id_hash: int = NO_ID) -> bool | None:
        """Give the row of a transaction this value; True: changed, False: it had it already,
        None: no row of ``entity`` at ``time``.

        The row is the one with that id hash; failing that (rows whose id is not known), the
        first row at that time that differs, unless one there has the value already.
        """
        s = self.series.get(entity)
        if s is None:
            return None
        start, end = bisect_left(s.time, time), bisect_right(s.time, time)
        if start == end:
            return None
        ids = s.ids[start:end]
        if id_hash != NO_ID:
            if id_hash in ids:
                at = start + ids.index(id_hash)
                if s.value[at] == value:
                    return False
                s.value[at] = value
                return True
            # its transaction is not here, unless among rows whose id is not known
            unknown = [start + i for i, h in enumerate(ids) if h == NO_ID]
        else:
            unknown = list(range(start, end))
        if not unknown:
            return None
        if any(s.value[i] == value for i in unknown):
            return False
        s.value[next(i for i in unknown if s.value[i] != value)] = value
        return True

    def _cut(self, entity: str, s: _Series, floor_ms: int) -> None:
        k = bisect_left(s.time, floor_ms)
        if k >= len(s.time):
            del self.series[entity]
        else:
            del s.time[:k]
            del s.value[:k]
            del s.ids[:k]
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

    Each entity's rows live in three compact C arrays (``array.array``: 8 bytes a value,
    appends in place): time, value, and a hash of the transaction id, which makes a retried
    transaction count once and lets a late label find its own row. A request reads times and
    values as numpy arrays without a Python loop over rows.

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

    thread_safe = False

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
        transaction_ids: Sequence[str] | None = None,
    ) -> int:
        n = len(customer_ids)
        if n == 0:
            return 0
        times = np.asarray(time_ms, dtype=np.int64).tolist()
        amounts = np.asarray(amount, dtype=np.float64).tolist()
        labels = [0.0] * n if label is None else np.asarray(label, np.float64).tolist()
        hashes = id_hashes(transaction_ids, n)
        self.watermark_ms = max(self.watermark_ms, max(times))
        floor = self.floor_ms
        # the customer's rows tell a retry (same id, customer and time); its terminal row is
        # then left out too, whatever terminal it names
        held = self.customers.add_many(customer_ids, times, amounts, floor, hashes)
        terminals = terminal_ids
        if held:
            keep = sorted(set(range(n)).difference(held))
            terminals = [terminal_ids[i] for i in keep]
            times, labels, hashes = ([c[i] for i in keep] for c in (times, labels, hashes))
        self.terminals.add_many(terminals, times, labels, floor, hashes, once=False)
        self.customers.prune(floor, self.sweep_per_append)
        self.terminals.prune(floor, self.sweep_per_append)
        return len(held)

    async def score_and_add_async(self, *step: Any) -> tuple[Any, int]:
        """Read, score, append: exact here, as one thread changes this state; nothing to wait
        for, so requests never interleave."""
        return read_score_append(self, *step)

    def set_labels(
        self,
        terminal_ids: Sequence[str],
        time_ms: np.ndarray,
        labels: np.ndarray,
        transaction_ids: Sequence[str] | None = None,
    ) -> LabelsSet:
        """Put late labels on terminal rows (see :meth:`_Table.set_value`).

        A transaction scored here was presumed genuine (0): a fraud label turns its row to 1,
        and a later label saying genuine turns it back, so the terminal fraud rates count the
        frauds reported since the bundle was trained, as training counts every label.
        """
        outcomes = [
            self.terminals.set_value(t, time, label, id_hash)
            for t, time, label, id_hash in zip(
                terminal_ids,
                np.asarray(time_ms, np.int64).tolist(),
                np.asarray(labels, np.float64).tolist(),
                id_hashes(transaction_ids, len(terminal_ids)),
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
        known (blank labels stay unknown); ``transaction_id`` when known. Returns the number
        of rows read.
        """
        if frame.empty:
            return 0
        times, labels, transaction_ids = frame_columns(frame)
        hashes = np.array(id_hashes(transaction_ids, len(frame)), np.int64)
        self.watermark_ms = max(self.watermark_ms, int(times.max()))
        for table, ids, values in (
            (self.customers, frame["customer_id"], frame["amount"].to_numpy(np.float64)),
            (self.terminals, frame["terminal_id"], labels),
        ):
            codes, uniques = pd.factorize(ids.astype(str))
            order = np.lexsort((times, codes))
            bounds = np.flatnonzero(np.diff(codes[order])) + 1
            for rows in np.split(order, bounds):
                entity = str(uniques[codes[rows[0]]])
                table.extend_sorted(entity, times[rows], values[rows], hashes[rows])
        floor = self.floor_ms
        for table in (self.customers, self.terminals):
            table.prune(floor, len(table.series))
        return len(frame)
