"""The other versions' traffic in this server's online state, read from the inference log.

Each model version runs in its own server with its own online state (the customer and
terminal windows). During a canary rollout the stable and the canary each score only their
share of the transactions. On its own, each would count only that share: at 25% canary
traffic, a customer's one-day count on the canary would be a quarter of the truth, and after a
rollback the stable would lack the canary's share for as long as its windows reach back.

Every version logs every transaction to the inference log (the server's own writer, or the
KServe logger and the log sink in a cluster). So at start a server replays the log of every
version of its model since the bundle's snapshot (:meth:`LogFollower.replay`), and while it
serves, it reads the batches the *other* versions write (:meth:`LogFollower.poll`, every
``--follow_log_seconds``) and adds their transactions to its state. A transaction scored by
one version counts in the other's windows once its batch is written (the writers flush every
5 s) and the next poll has read it. Its own version's batches are skipped: its traffic is
already in the state.

The same reads bring the late labels (``fraudops labels ingest`` stores each label file with
the transaction's terminal and time, see :mod:`components.label_files`): at start every label
file of the state's time span, then each new one. A fraud label turns that transaction's
terminal row to 1, so terminal fraud rates count the frauds reported since the bundle was
trained, as training counts every label older than the label delay.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.inference_log import PREFIX, TX, batch_keys
from components.label_files import PREFIX as LABEL_PREFIX
from components.label_files import label_file_keys, read_label_file
from components.store import (
    ChecksumMismatchError,
    ObjectNotFoundError,
    ObjectStore,
    StoreError,
    StoreUnavailableError,
)

__all__ = [
    "COLUMNS",
    "LABEL_COLUMNS",
    "LABEL_OUTCOMES",
    "FollowLoop",
    "LogFollower",
    "Logged",
    "check_follow_interval",
    "label_columns",
]

log = logging.getLogger("fraudops.serving")

COLUMNS = ("transaction_id", "timestamp", "customer_id", "terminal_id", "amount")
"""The logged transaction fields the online state needs."""
IDS = ("transaction_id", "customer_id", "terminal_id")
LABEL_COLUMNS = ("transaction_id", "terminal_id", "timestamp", "is_fraud")
"""What the online state needs of a label: its transaction, that transaction's terminal and
time."""
LABEL_OUTCOMES = ("changed", "unchanged", "not_found", "unplaced")
"""What became of a late label (``fraudops_online_state_labels_total``)."""
MAX_INTERVAL = 3_600.0
MAX_WARNINGS = 5
"""Batches (and label files) left out that are named one by one in the log, per read."""
LIST_MARGIN = timedelta(hours=1)
"""How far before the newest batch read in a partition the next poll lists from."""
MAX_ATTEMPTS = 12
"""Reads of a batch the store fails to give (not when it is down) before it is left out."""


def check_follow_interval(seconds: float) -> str | None:
    """What is wrong with ``--follow_log_seconds`` (``None``: fine; 0 means off)."""
    if seconds == 0 or (math.isfinite(seconds) and 0.1 <= seconds <= MAX_INTERVAL):
        return None
    return (
        "--follow_log_seconds must be 0 (do not read the other versions' traffic) or between "
        f"0.1 and {MAX_INTERVAL:g} seconds, got {seconds}"
    )


@dataclass(frozen=True)
class Logged:
    """Transactions read from the inference log.

    Attributes:
        rows: ``transaction_id``, ``timestamp`` (UTC), ``customer_id``, ``terminal_id``,
            ``amount``: once each, oldest first, only those after the snapshot.
        batches: Batches read (not counting those skipped).
        records: Records in them.
        unreadable: Records left out: an id, timestamp or amount missing or unreadable.
        skipped: Batches and label files left out (see :meth:`LogFollower._fetch`).
        labels: ``transaction_id``, ``terminal_id``, ``timestamp`` (UTC), ``is_fraud`` (0/1):
            the labels of the
            label files read, in the order they were ingested (a later label wins).
        label_files: Label files read.
        unplaced: Labels left out: the terminal or time of their transaction is unknown.
    """

    rows: pd.DataFrame
    batches: int
    records: int
    unreadable: int
    skipped: list[str] = field(default_factory=list)
    labels: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LABEL_COLUMNS))
    label_files: int = 0
    unplaced: int = 0


def _earlier(key: str, partition: str, margin: timedelta) -> str | None:
    """A cursor ``margin`` before the time in a batch's name (``HHMMSSffffff-<id>.parquet``);
    None (list the whole partition) for a name of another form or a time before midnight."""
    stamp = key[len(partition) :][:12]
    try:
        at = datetime.strptime(stamp, "%H%M%S%f")
    except ValueError:
        return None
    since_midnight = timedelta(
        hours=at.hour, minutes=at.minute, seconds=at.second, microseconds=at.microsecond
    )
    if since_midnight < margin:
        return None
    return f"{partition}{datetime.min + (since_midnight - margin):%H%M%S%f}"


def label_columns(
    labels: pd.DataFrame,
) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Labels read by :class:`LogFollower` as the arguments of ``OnlineState.set_labels``:
    terminal ids, epoch milliseconds (as the scoring path counts them), labels, transaction
    ids."""
    time_ms = (labels["timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    return (
        labels["terminal_id"].astype(str).tolist(),
        time_ms.to_numpy(np.int64),
        labels["is_fraud"].to_numpy(np.float64),
        labels["transaction_id"].astype(str).tolist(),
    )


class LogFollower:
    """Reads the inference log of one model for the online state, each batch once.

    Args:
        store: The store holding the inference log.
        model: The model's name.
        version: The version this server serves (its batches are not polled).
        after: The end of the bundle's snapshot: transactions at or before it are in the
            state already (the snapshot may hold logged traffic a retraining learned from).
    """

    def __init__(
        self, store: ObjectStore, model: str, version: str, after: pd.Timestamp | None
    ) -> None:
        self.store = store
        self.model = model
        self.version = version
        self.after = after
        self.seen: set[str] = set()
        self.attempts: dict[str, int] = {}
        self.cursors: dict[str, str] = {}
        """Per date partition: list only the keys after this one (see :meth:`_advance`)."""
        self.label_error: str | None = None
        """Why the label files cannot be listed (None: they can)."""

    def replay(self, since: datetime) -> Logged:
        """Every version's transactions logged from ``since`` (e.g. a restart's history), and
        the labels ingested since.

        Raises:
            StoreError: the store cannot be listed, or is unavailable.
        """
        batches = batch_keys(self.store, self.model, None, since, None)
        return self._read(batches, self._label_keys(since=since))

    def poll(self, now: datetime | None = None) -> Logged:
        """The other versions' transactions in batches not read before.

        Lists the date partitions of today and yesterday only (a batch written just after
        midnight may still hold yesterday's records), each from a cursor: the batches named up
        to :data:`LIST_MARGIN` before the newest one read there (see :meth:`_advance`).

        Raises:
            StoreError: the store cannot be listed, or is unavailable; no batch counts as read,
                the next poll reads them.
        """
        listed, labels = self._recent_keys(now)
        batches = [k for keys in listed.values() for k in keys]
        # keys no longer listed (older partitions, before a cursor) are never listed again;
        # label files read before stay read while they cannot be listed
        kept = labels
        if self.label_error is not None:
            kept = [k for k in self.seen if k.startswith(f"{LABEL_PREFIX}/{self.model}/")]
        self.seen.intersection_update(batches + kept)
        logged = self._read(
            [k for k in batches if k not in self.seen], [k for k in labels if k not in self.seen]
        )
        self._advance(listed)
        return logged

    def skip_existing(self, now: datetime | None = None) -> None:
        """Count the batches and label files already written as read (a server that does not
        replay)."""
        listed, labels = self._recent_keys(now)
        self.seen.update(labels, *listed.values())
        self._advance(listed)

    def _recent_keys(self, now: datetime | None) -> tuple[dict[str, list[str]], list[str]]:
        """The other versions' batches (per date partition, from its cursor) and the label
        files of today and yesterday."""
        now = now or datetime.now(UTC)
        days = [f"{d:%Y-%m-%d}" for d in (now - timedelta(days=1), now)]
        labels = self._label_keys(days=days)
        root = f"{PREFIX}/{self.model}/"
        listed: dict[str, list[str]] = {}
        for folder in self.store.list(root, recursive=False):
            if not folder.endswith("/") or folder == f"{root}{self.version}/":
                continue
            for day in days:
                partition = f"{folder}date={day}/"
                keys = self.store.list(partition, start_after=self.cursors.get(partition))
                listed[partition] = [k for k in keys if k.endswith(".parquet")]
        return listed, labels

    def _advance(self, listed: dict[str, list[str]]) -> None:
        """Move each partition's cursor to :data:`LIST_MARGIN` before its newest batch read,
        or before its oldest batch still to be tried again, never backwards.

        Batches are named by the time of their first record, so a writer's batches list in
        the order it wrote them; the margin still finds a batch named earlier than one
        already read (records a writer held for a while, or another writer's clock).
        """
        cursors = {}
        for partition, keys in listed.items():
            cursor = self.cursors.get(partition)
            if keys:
                pending = [k for k in keys if k not in self.seen]
                anchor = min(pending) if pending else max(keys)
                earlier = _earlier(anchor, partition, LIST_MARGIN)
                cursor = earlier if cursor is None or earlier is None else max(cursor, earlier)
            if cursor is not None:
                cursors[partition] = cursor
        self.cursors = cursors  # partitions no longer listed (yesterday's) are dropped

    def _label_keys(self, **where: Any) -> list[str]:
        """The label files (:func:`label_file_keys`); none while they cannot be listed (e.g.
        the credentials may not read ``labels/``), so the transactions are still followed."""
        try:
            keys = label_file_keys(self.store, self.model, **where)
        except StoreUnavailableError:
            raise
        except StoreError as e:
            if str(e) != self.label_error:
                log.warning(
                    "cannot list the label files (%s); the online state gets no late labels "
                    "until it can",
                    e,
                )
            self.label_error = str(e)
            return []
        self.label_error = None
        return keys

    def _read(self, batches: list[str], label_files: list[str]) -> Logged:
        """The transactions of these batches and the labels of these label files.

        Each object is read on its own (see :meth:`_fetch`): one that cannot be used is left
        out, the others are read.
        """
        frames, skipped, later = self._fetch(batches, self._batch)
        label_frames, label_skipped, labels_later = self._fetch(label_files, self._label_file)
        # only now, the store having answered for every key, do they count as read
        keys, retry = batches + label_files, later + labels_later
        self.seen.update(set(keys).difference(retry))
        for key in set(keys).intersection(self.attempts).difference(retry):
            del self.attempts[key]
        read = len(batches) - len(skipped) - len(later)
        labels_read = len(label_files) - len(label_skipped) - len(labels_later)
        skipped += label_skipped
        labels, unplaced = self._placed(label_frames)
        if not frames:
            empty = pd.DataFrame(columns=list(COLUMNS))
            return Logged(empty, read, 0, 0, skipped, labels, labels_read, unplaced)
        rows = pd.concat(frames, ignore_index=True)
        records = len(rows)
        rows["timestamp"] = pd.to_datetime(
            rows["timestamp"], utc=True, format="ISO8601", errors="coerce"
        )
        readable = rows.notna().all(axis=1)
        rows = rows[readable]
        for name in IDS:
            rows[name] = rows[name].astype(str)
        if self.after is not None:
            rows = rows[rows["timestamp"] > self.after]
        # one transaction logged twice (two versions scored it, or a client retried); the same
        # id at another time or for another customer is another transaction
        rows = rows.drop_duplicates(["transaction_id", "customer_id", "timestamp"])
        rows = rows.sort_values("timestamp", kind="stable")
        return Logged(
            rows.reset_index(drop=True),
            read,
            records,
            records - int(readable.sum()),
            skipped,
            labels,
            labels_read,
            unplaced,
        )

    def _fetch(
        self, keys: list[str], read: Callable[[str], pd.DataFrame]
    ) -> tuple[list[pd.DataFrame], list[str], list[str]]:
        """``read`` each key: the frames, the keys left out, the keys to try again later.

        An object whose content cannot be used (not Parquet, failing its sha256, a column
        missing or of another type, deleted since it was listed) is left out once, with a
        warning. An object the store fails to give (permission, an S3 error) is tried again at
        the next reads, and left out after :data:`MAX_ATTEMPTS`. A store that is unavailable
        stops the read (raises :class:`StoreUnavailableError`).
        """
        frames, skipped, later = [], [], []
        for key in keys:
            try:
                frames.append(read(key))
            except StoreUnavailableError:
                raise
            except StoreError as e:
                if isinstance(e, ChecksumMismatchError | ObjectNotFoundError):
                    skipped.append(key)
                    self._left_out(key, e, len(skipped))
                    continue
                self.attempts[key] = attempt = self.attempts.get(key, 0) + 1
                if attempt < MAX_ATTEMPTS:
                    later.append(key)
                    if attempt == 1:
                        log.warning("%s: %s; trying again", key, e)
                else:
                    skipped.append(key)
                    self._left_out(key, f"{e}, {attempt} attempts", len(skipped))
            except Exception as e:  # the content: not Parquet, columns, types
                skipped.append(key)
                self._left_out(key, e, len(skipped))
        if len(skipped) > MAX_WARNINGS:
            log.warning("... and %d more left out", len(skipped) - MAX_WARNINGS)
        return frames, skipped, later

    @staticmethod
    def _placed(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, int]:
        """The labels (0 or 1) with a terminal and a time, in file order, and how many were
        left out."""
        if not frames:
            return pd.DataFrame(columns=list(LABEL_COLUMNS)), 0
        labels = pd.concat(frames, ignore_index=True)
        placed = (
            labels["terminal_id"].notna()
            & labels["timestamp"].notna()
            & labels["is_fraud"].isin([0, 1])
        )
        labels = labels[placed].reset_index(drop=True)
        labels["terminal_id"] = labels["terminal_id"].astype(str)
        return labels, int((~placed).sum())

    @staticmethod
    def _left_out(key: str, reason: object, count: int) -> None:
        if count <= MAX_WARNINGS:
            log.warning("%s cannot be read (%s); left out", key, reason)

    def _batch(self, key: str) -> pd.DataFrame:
        """One batch's transaction fields, typed alike whatever wrote them (ids as text,
        amounts as float, timestamps as text; missing values stay missing)."""
        table = pq.read_table(io.BytesIO(self.store.get_bytes(key)))
        missing = [TX + c for c in COLUMNS if TX + c not in table.column_names]
        if missing:
            raise ValueError(f"no column {', '.join(missing)}")
        table = table.select([TX + c for c in COLUMNS])
        for name in IDS:  # in Arrow: integer ids with gaps would become floats in pandas
            at = table.column_names.index(TX + name)
            table = table.set_column(at, TX + name, table.column(at).cast(pa.string()))
        frame = table.to_pandas()
        frame.columns = list(COLUMNS)
        if frame["timestamp"].dtype != object:  # e.g. written as Arrow timestamps
            frame["timestamp"] = frame["timestamp"].astype(str)
        frame["amount"] = pd.to_numeric(frame["amount"], errors="coerce")
        return frame

    def _label_file(self, key: str) -> pd.DataFrame:
        """One label file's labels (:func:`read_label_file`)."""
        return read_label_file(self.store.get_bytes(key))[list(LABEL_COLUMNS)]


class FollowLoop:
    """A daemon thread: :meth:`LogFollower.poll` every ``interval`` seconds, what it read
    (transactions, labels) handed to ``add`` (which must be safe to call from this thread),
    until :meth:`stop`.

    A poll that fails (the store is down) is logged, counted and tried again next time:
    nothing is lost, the batches stay in the store until a poll reads them.

    Args:
        follower: What to poll.
        add: Takes what a poll read, when it read transactions or labels.
        interval: Seconds between polls (see :func:`check_follow_interval`).
        on_poll: Called after each poll with ``(logged, error)`` (metrics).
    """

    def __init__(
        self,
        follower: LogFollower,
        add: Callable[[Logged], Any],
        interval: float,
        on_poll: Callable[[Logged | None, Exception | None], Any] | None = None,
    ) -> None:
        problem = check_follow_interval(interval) if interval else "the interval must be positive"
        if problem:
            raise ValueError(problem)
        self.follower = follower
        self.add = add
        self.interval = interval
        self.on_poll = on_poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fraudops-follow", daemon=True)

    def start(self) -> FollowLoop:
        """Start polling (returns ``self``)."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """No more polls; waits ``timeout`` s at most for one under way."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        last = None
        while not self._stop.wait(self.interval):
            try:
                logged = self.follower.poll()
            except Exception as e:  # the store is down or cannot be listed: next poll
                reason = f"{type(e).__name__}: {e}"
                if reason != last:
                    log.warning(
                        "cannot read the other versions' inference log (%s); the online state "
                        "lacks their traffic until a poll succeeds (every %g s)",
                        reason,
                        self.interval,
                    )
                last = reason
                if self.on_poll is not None:
                    self.on_poll(None, e)
                continue
            if last is not None:
                log.info("reading the other versions' inference log again")
                last = None
            if len(logged.rows) or len(logged.labels):
                try:
                    self.add(logged)
                except Exception:  # e.g. at shutdown; the next batches still arrive
                    log.exception(
                        "cannot queue %d followed transaction(s) and %d label(s)",
                        len(logged.rows),
                        len(logged.labels),
                    )
            if logged.unplaced:
                log.warning(
                    "labels: %d label(s) without the terminal and time of their transaction "
                    "left out of the online state (they still count for realised performance)",
                    logged.unplaced,
                )
            if logged.unreadable:
                log.warning(
                    "inference log: %d record(s) of other versions without a readable id, "
                    "timestamp or amount left out",
                    logged.unreadable,
                )
            if self.on_poll is not None:
                self.on_poll(logged, None)
