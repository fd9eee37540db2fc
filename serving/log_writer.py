"""Write inference-log records to the store in the background, without losing any.

The request path only hands over a small entry (the request's transactions, scores, decisions,
reasons) with :meth:`InferenceLogWriter.submit`. A background thread takes the waiting entries
every ``flush_interval`` seconds, or as soon as ``flush_records`` records wait, and has them
built (as columns, ``components.inference_log.record_columns``; as records only for a retry
or to find a bad record) and written (``write_batch``: one object per model, version and date)
either in a helper process (``process=True``, the server's default: building and encoding
records costs CPU, and in this process it would hold the GIL the request path needs) or in
the thread itself.

The buffer is bounded (``max_records``). When it is full, ``submit`` blocks the caller for up to
``block_seconds`` (back-pressure: the store is slower than the traffic), and if there is still no
room the entry is dropped and counted (``fraudops_inference_log_dropped_total``, reason
``buffer_full``); nothing is ever lost silently. A failed write is retried with back-off; the
records stay in the buffer (and count against its bound) meanwhile, and a batch that was partly
written is retried only for the part that was not. A record that can never be written (e.g. a
model name that is not a valid key) is dropped alone and counted (``invalid_record``).
:meth:`close` writes everything that is left: on a graceful shutdown, records in = records
stored.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from components.inference_log import block_records, write_batch
from components.store import InvalidKeyError, ObjectStore

__all__ = ["InferenceLogWriter", "LogEntry", "write_entries"]

log = logging.getLogger("fraudops.serving.log")
_PERMANENT = (InvalidKeyError, ValueError, TypeError, KeyError)
CHUNK_RECORDS = 2_000
"""Most records handed to one write (one pickling for the helper process)."""


def _chunks(
    entries: list[LogEntry], records: list[dict[str, Any]], limit: int
) -> list[tuple[list[LogEntry], list[dict[str, Any]]]]:
    chunks: list[tuple[list[LogEntry], list[dict[str, Any]]]] = []
    for i in range(0, len(records), limit):
        chunks.append(([], records[i : i + limit]))
    current: list[LogEntry] = []
    size = 0
    for entry in entries:
        if current and size + entry.count > limit:
            chunks.append((current, []))
            current, size = [], 0
        current.append(entry)
        size += entry.count
    if current:
        chunks.append((current, []))
    return chunks


@dataclass(slots=True)  # no __dict__: one object for the garbage collector to look at
class LogEntry:
    """Records of one request, built off the request path (in another process if need be).

    Attributes:
        count: How many records it gives.
        build: A module-level function returning the records (picklable by reference), or
            None when ``columns`` gives them.
        args: Its arguments (picklable: lists, numpy arrays, dataclasses of them).
        columns: Optionally, a module-level function returning the records as one block of
            flat columns (``components.inference_log.record_columns``: one model, version and
            time), from ``args``. Writing uses it (no dict per record); the records are made
            from the block only to retry a failed write or to single out a bad record.
    """

    count: int
    build: Callable[..., list[dict[str, Any]]] | None = None
    args: tuple = ()
    columns: Callable[..., dict[str, list[Any]]] | None = None

    def records(self) -> list[dict[str, Any]]:
        if self.build is None:
            return block_records(self.block())
        return self.build(*self.args)

    def block(self) -> dict[str, list[Any]]:
        assert self.columns is not None
        return self.columns(*self.args)


def prebuilt(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``LogEntry`` builder for records that are already built."""
    return records


@dataclass
class WriteResult:
    """What one write attempt did: ``written`` and ``invalid`` records, and the ``leftover``
    records a transient failure kept from being written (to retry), with its ``error``."""

    written: int
    invalid: int
    leftover: list[dict[str, Any]]
    error: str = ""


@dataclass
class _Group:
    """What goes into one Parquet batch: built records, and entries written as blocks."""

    records: list[dict[str, Any]] = field(default_factory=list)
    entries: list[LogEntry] = field(default_factory=list)
    blocks: list[dict[str, list[Any]]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.records) + sum(e.count for e in self.entries)

    def all_records(self) -> list[dict[str, Any]]:
        return self.records + [r for e in self.entries for r in e.records()]


def write_entries(
    store: ObjectStore | str, entries: list[LogEntry], records: list[dict[str, Any]]
) -> WriteResult:
    """Build and write ``entries`` plus already built ``records``; never raises.

    One object per (model, version, date) group; a group that fails with a store error is
    left over for a retry (the groups before it stay written), a group that fails because of its
    content is written record by record and the bad records are counted as invalid.
    """
    store = _store(store)
    groups: dict[tuple[str, str, str], _Group] = {}
    records = list(records)
    for entry in entries:
        if entry.columns is None:
            records.extend(entry.records())
            continue
        block = entry.block()
        group = groups.setdefault(
            _key(block["model"][0], block["version"][0], block["time"][0]), _Group()
        )
        group.entries.append(entry)
        group.blocks.append(block)
    for record in records:
        key = _key(record.get("model"), record.get("version"), record["time"])
        groups.setdefault(key, _Group()).records.append(record)
    written = invalid = 0
    pending = list(groups.values())
    while pending:
        group = pending[0]
        try:
            write_batch(store, group.records, group.blocks)
            written += group.count
        except _PERMANENT:
            one_by_one = group.all_records()
            for i, record in enumerate(one_by_one):
                try:
                    write_batch(store, [record])
                    written += 1
                except _PERMANENT:
                    invalid += 1
                except Exception as e:  # the store went away meanwhile
                    rest = [r for g in pending[1:] for r in g.all_records()]
                    return WriteResult(written, invalid, one_by_one[i:] + rest, str(e))
        except Exception as e:  # the store is down or refuses: retry later
            leftover = [r for g in pending for r in g.all_records()]
            return WriteResult(written, invalid, leftover, str(e))
        pending.pop(0)
    return WriteResult(written, invalid, [])


def _key(model: object, version: object, time: object) -> tuple[str, str, str]:
    return (str(model), str(version), str(time)[:10])


_STORES: dict[str, ObjectStore] = {}


def _store(store: ObjectStore | str) -> ObjectStore:
    if not isinstance(store, str):
        return store
    if store not in _STORES:  # in the helper process: open once
        from components.store import open_store

        _STORES[store] = open_store(store)
    return _STORES[store]


def _quiet_child() -> None:
    # Ctrl-C reaches the whole process group: the parent decides when the writer stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class InferenceLogWriter:
    """A bounded buffer of log entries and a thread that has them written to the store.

    Args:
        store: Where the records go (``inference-log/<model>/<version>/date=.../``).
        max_records: Most records waiting in memory.
        flush_records: Write as soon as this many records wait.
        flush_interval: Write at least this often (seconds) while records wait.
        block_seconds: How long ``submit`` may wait for room before dropping.
        metrics: Optional :class:`serving.metrics.ServingMetrics`.
        process: Build and write in a helper process (the store is reopened there from its
            URI, with the same environment); otherwise in the writer thread.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        max_records: int = 200_000,
        flush_records: int = 20_000,
        flush_interval: float = 5.0,
        block_seconds: float = 0.05,
        metrics: Any = None,
        process: bool = False,
    ) -> None:
        self.store = store
        self.max_records = max_records
        self.flush_records = min(flush_records, max_records)
        self.flush_interval = flush_interval
        self.block_seconds = block_seconds
        self.metrics = metrics
        self.process = process
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[LogEntry] = []
        self._pending_records = 0
        self._retry: list[dict[str, Any]] = []  # built records whose write failed
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0

    # -- request side ---------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Records waiting to be written (including failed writes awaiting a retry)."""
        return self._pending_records + len(self._retry)

    def submit(self, entry: LogEntry) -> bool:
        """Queue one request's records; False (and counted) if they had to be dropped."""
        with self._cond:
            if self._closing:
                self._drop(entry.count, "closed")
                return False
            if self.queued + entry.count > self.max_records:
                self._cond.notify_all()
                deadline = time.monotonic() + self.block_seconds
                while self.queued + entry.count > self.max_records and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._cond.wait(left):
                        break
                if self.queued + entry.count > self.max_records:
                    self._drop(entry.count, "buffer_full")
                    return False
            self._pending.append(entry)
            self._pending_records += entry.count
            if self._pending_records >= self.flush_records:
                self._cond.notify_all()
            self._gauge()
            return True

    def _drop(self, count: int, reason: str) -> None:
        if not count:
            return
        self.dropped += count
        log.error("inference log: dropped %d record(s) (%s)", count, reason)
        if self.metrics is not None:
            self.metrics.log_dropped.labels(reason=reason).inc(count)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.log_queued.set(self.queued)

    # -- background side ------------------------------------------------------------------

    def start(self) -> InferenceLogWriter:
        """Start the background thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
            self._thread.start()
        return self

    def _attempt(self, entries: list[LogEntry], records: list[dict[str, Any]]) -> WriteResult:
        if not self.process:
            return write_entries(self.store, entries, records)
        for _ in range(2):
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, initializer=_quiet_child)
            try:
                return self._pool.submit(write_entries, self.store.uri, entries, records).result()
            except BrokenProcessPool:
                log.warning("inference log: the writer process died; starting a new one")
                self._pool = None
        log.warning("inference log: no writer process; writing in this process")
        return write_entries(self.store, entries, records)

    def flush(self) -> bool:
        """Write everything waiting now; True if nothing is left for a retry.

        Work goes out in chunks of at most ``CHUNK_RECORDS`` records, so that handing one
        chunk to the helper process (pickling holds the GIL) never stalls requests for long.
        """
        with self._write_lock:
            with self._cond:
                entries, self._pending = self._pending, []
                self._pending_records = 0
                records, self._retry = self._retry, []
            chunks = _chunks(entries, records, CHUNK_RECORDS)
            ok = True
            for i, (chunk_entries, chunk_records) in enumerate(chunks):
                started = time.perf_counter()
                result = self._attempt(chunk_entries, chunk_records)
                self.written += result.written
                self._drop(result.invalid, "invalid_record")
                if self.metrics is not None:
                    self.metrics.log_written.inc(result.written)
                if result.leftover:
                    ok = False
                    log.warning(
                        "inference log: %d record(s) not written yet: %s",
                        len(result.leftover),
                        result.error,
                    )
                    rest = chunks[i + 1 :]
                    with self._cond:  # back in line, in order, for the next attempt
                        self._retry = (
                            result.leftover + [r for _, rs in rest for r in rs] + self._retry
                        )
                        later = [e for es, _ in rest for e in es]
                        self._pending = later + self._pending
                        self._pending_records += sum(e.count for e in later)
                    if self.metrics is not None:
                        self.metrics.log_write_errors.inc()
                    break
                if self.metrics is not None:
                    self.metrics.log_flush_seconds.observe(time.perf_counter() - started)
            with self._cond:
                self._gauge()
                self._cond.notify_all()  # room for blocked submitters
            return ok

    def _run(self) -> None:
        backoff = self.flush_interval
        while True:
            with self._cond:
                if not self._closing and self._pending_records < self.flush_records:
                    self._cond.wait(backoff)
                if self._closing:
                    return
            ok = self.flush()
            backoff = self.flush_interval if ok else min(backoff * 2, 60.0)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread and write what is left, retrying until ``timeout``.

        Records that still cannot be written are counted as dropped (reason
        ``store_unavailable``) and logged.
        """
        with self._cond:
            if self._closing and self._thread is None and self._pool is None:
                return
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        deadline = time.monotonic() + timeout
        delay = 0.2
        while not self.flush():
            if time.monotonic() + delay > deadline:
                with self._cond:  # the failed chunk's records and the chunks after it
                    lost = len(self._retry) + self._pending_records
                    self._retry, self._pending, self._pending_records = [], [], 0
                self._drop(lost, "store_unavailable")
                break
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._gauge()
        log.info(
            "inference log closed: %d record(s) written, %d dropped", self.written, self.dropped
        )
