"""The KServe model: one ``predict`` for V1 and V2, online features, inference log, metrics.

KServe glue only; the logic is in :mod:`serving.transactions` (decode and validate),
:mod:`serving.scorer` (features, model, decision, reasons) and :mod:`serving.log_writer`.
Follows KServe's model contract: ``__init__(name, ...)``; ``load()`` (``load_bundle()``) fetches
and verifies the bundle, seeds the online state, sets ``self.ready`` and raises
``ModelMissingError`` when it cannot (``python -m serving`` loads in the background and retries,
see :mod:`serving.load_retry`); ``predict`` receives a dict (V1) or an ``InferRequest`` (V2)
and returns the matching response; unexpected failures become ``InferenceError`` (HTTP 500),
bad input ``InvalidInput`` subclasses (HTTP 4xx).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from kserve import Model
from kserve.errors import InferenceError, ModelMissingError, ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from components.bundle import Bundle
from components.inference_log import record_columns
from components.schema import LABEL
from components.store import ObjectStore, StoreError
from serving.errors import InvalidTransactions, ServingError, StateUnavailableError
from serving.http import current_request
from serving.load_retry import LoadRetry
from serving.log_follow import LABEL_OUTCOMES, FollowLoop, LogFollower, Logged, label_columns
from serving.log_writer import InferenceLogWriter, LogEntry
from serving.metrics import ServingMetrics
from serving.redis_state import RedisOnlineState
from serving.scorer import Scored, Scorer
from serving.source import BundleSource
from serving.state import InMemoryOnlineState, LabelsSet, OnlineState, StateUnavailable
from serving.transactions import TransactionBatch, TransactionSchema, from_instances, from_tensors

__all__ = ["FraudDetector", "ServingConfig"]

log = logging.getLogger("fraudops.serving")

_NO_FEATURES = np.zeros((0, 0), dtype=np.float32)
FOLLOW_CHUNK = 2_000
"""Other versions' transactions added to the state per event-loop turn (a few ms)."""
LABEL_CHUNK = 500
"""Late labels put on the state per event-loop turn: about 1.5 ms (2,000 take 7 ms: each is
a lookup in its terminal's rows)."""


@dataclass(frozen=True)
class ServingConfig:
    """Options of the model server (see ``python -m serving --help``).

    Attributes:
        max_batch: Most transactions per request.
        max_clock_skew_seconds: How far in the future a timestamp may be.
        n_reasons: Reason codes per transaction.
        reasons_for: ``all``, ``alerts`` or ``none``.
        contributions: Reason codes from XGBoost's ``approx`` (Saabas) or ``exact`` (tree
            SHAP) contributions.
        log_features: Put the engineered features into each inference-log record.
        replay_log: At start, add the transactions logged since the bundle's snapshot to the
            online state (so a restart does not forget them).
        follow_log_seconds: While serving, add the transactions the other versions of the
            model log to the online state, read every this many seconds (0: never; see
            :mod:`serving.log_follow`).
        log_source: CloudEvent ``source`` of the records this server writes.
        log_max_records, log_flush_records, log_flush_interval, log_block_seconds: See
            :class:`serving.log_writer.InferenceLogWriter`.
        state_slack_days: History kept beyond the spec's ``history_days`` (late arrivals).
        log_process: Build and write log records in a helper process (off the GIL).
        state_redis_url: Keep the online state in this Redis, shared by the replicas of the
            version (:mod:`serving.redis_state`); empty: in memory.
    """

    max_batch: int = 10_000
    max_clock_skew_seconds: float = 300.0
    n_reasons: int = 3
    reasons_for: str = "all"
    contributions: str = "approx"
    log_features: bool = False
    replay_log: bool = True
    follow_log_seconds: float = 5.0
    log_source: str = "fraudops-serving"
    log_max_records: int = 200_000
    log_flush_records: int = 20_000
    log_flush_interval: float = 5.0
    log_block_seconds: float = 0.05
    state_slack_days: float = 1.0
    log_process: bool = True
    state_redis_url: str = field(default="", repr=False)  # may hold a password


class _NotReady(ModelNotReady):
    """KServe's ``ModelNotReady`` with the ``reason`` its gRPC interceptor reads (KServe 0.21's
    own has none: gRPC clients got UNKNOWN and an AttributeError instead of UNAVAILABLE)."""

    def __init__(self, model_name: str, detail: str) -> None:
        super().__init__(model_name, detail)
        self.reason = self.error_msg


class FraudDetector(Model):
    """Real-time fraud scoring of transactions with a model bundle.

    Args:
        name: Served model name (the path segment of ``/v1/models/<name>:predict``); name the
            InferenceService after the registered model.
        source: Where the bundle comes from.
        config: Server options.
        metrics: Prometheus metrics (None: not counted).
        log_store: Store for the inference log (None: no log from this server; in a cluster
            the KServe logger and :mod:`serving.log_sink` write it instead).
        state_log_store: Store whose inference log the online state reads (the replay at
            start, the other versions' traffic while serving). Default: ``log_store``.
        state: Online state to use (default: in memory, seeded from the bundle's snapshot).
        workdir: Where a bundle from a store is downloaded (default: a temporary folder).
    """

    def __init__(
        self,
        name: str,
        source: BundleSource,
        config: ServingConfig | None = None,
        metrics: ServingMetrics | None = None,
        log_store: ObjectStore | None = None,
        state: OnlineState | None = None,
        workdir: Path | None = None,
        state_log_store: ObjectStore | None = None,
    ) -> None:
        super().__init__(name)
        self.source = source
        self.config = config or ServingConfig()
        self.metrics = metrics
        self.log_store = log_store
        self.state_log_store = state_log_store or log_store
        self.workdir = workdir
        self.state = state
        self.scorer: Scorer | None = None
        self.schema = TransactionSchema()
        self.writer: InferenceLogWriter | None = None
        self.version = ""
        self.bundle: Bundle | None = None
        self._series: dict[str, tuple] = {}
        self._tmpdir: Path | None = None
        self.load_error: str | None = None
        self.load_attempts = 0
        self.background_loads = False
        self.retry_seconds: float | None = None
        self.on_ready: Callable[[], None] | None = None
        self._closed = False
        self._download: Path | None = None
        self._load_lock = threading.Lock()
        self._reseed_lock = threading.Lock()
        self._reseeding = False
        self._follow_loop: FollowLoop | None = None
        self._following_lock = threading.Lock()
        self._scored_elsewhere: deque = deque()  # kept by every scorer of this model
        self.event_loop: asyncio.AbstractEventLoop | None = None
        """The loop requests are scored on (set by ``python -m serving``): the other
        versions' transactions are added there as they arrive; without it, before the next
        request is scored (into a state in Redis: on the follow thread, either way)."""

    # -- lifecycle ------------------------------------------------------------------------

    def load(self) -> bool:
        """KServe's hook: load the bundle now (:meth:`load_bundle`).

        With :attr:`background_loads` (``python -m serving`` with ``--load_retry_seconds``),
        loads happen only in :class:`serving.load_retry.LoadRetry`: KServe also calls
        ``load()`` from inside a request for a model that is not ready (its ``get_model``, on
        the event loop, e.g. for a gRPC request), which must not block the server.

        Raises:
            ModelNotReady: loads are in the background and the model is not ready (the reason
                is in the message).
            ModelMissingError: see :meth:`load_bundle`.
        """
        if not self.background_loads:
            return self.load_bundle()
        if not self.ready:
            raise _NotReady(self.name, self.not_ready_reason())
        return True

    def load_bundle(self) -> bool:
        """Fetch and verify the bundle, seed the online state, start the log writer.

        One load at a time. A failure leaves nothing behind (no download, no state, no writer)
        and is kept in :attr:`load_error` (the reason a 503 gives) and counted; a load that
        finishes after :meth:`close` keeps nothing either. :attr:`on_ready`, when set, runs
        just before the model reports ready (``python -m serving``: the metric labels and a
        garbage collection, which must not pause requests already being scored).

        Raises:
            ModelMissingError: the bundle cannot be fetched, is incomplete or was tampered
                with (the message says which file and why), or the model was closed.
        """
        with self._load_lock:
            if self._closed:
                raise ModelMissingError(f"{self.name} was stopped; it is not loaded again")
            self.load_attempts += 1
            download = None
            if self.workdir is None and self.source.folder is None:  # removed by close()
                download = self._download = Path(tempfile.mkdtemp(prefix="fraudops-bundle-"))
            state = None
            try:
                bundle, scorer, state, schema, follower = self._prepare(download or self.workdir)
                self._start_writer()
            except Exception as e:
                if isinstance(state, RedisOnlineState) and state is not self.state:
                    state.close()
                if download is not None:
                    shutil.rmtree(download, ignore_errors=True)
                self._failed(e)
                raise
            finally:
                self._download = None
            replaced, self.state = self.state, state
            if isinstance(replaced, RedisOnlineState) and replaced is not state:
                replaced.close()
            if isinstance(state, RedisOnlineState):  # `fraudops state prune` keeps its rows
                state.start_heartbeat()
            self.bundle, self.scorer, self.schema = bundle, scorer, schema
            self.version = bundle.version
            if download is not None:
                if self._tmpdir is not None:  # loaded before: that download is not used now
                    shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = download
            if not self._closed:
                if self.metrics is not None:
                    self._state_gauges()
                    self.metrics.model_ready.labels(self.name).set(1)
                log.info(
                    "loaded %s %s (%s, threshold %.4f) from %s",
                    bundle.name,
                    bundle.version,
                    scorer.model.model_type,
                    scorer.threshold,
                    self.source.uri,
                )
                self.load_error = None
                if self.on_ready is not None:
                    self.on_ready()
                self.ready = True
                self._reseeding = False
                self._follow(follower)
                if self._scored_elsewhere and state is not None and state.thread_safe:
                    # queued before this load and not applied yet (Redis was failing): the
                    # follow thread hands over only what its next polls read
                    threading.Thread(
                        target=self._apply_followed_here, name="fraudops-follow", daemon=True
                    ).start()
        if self._closed:  # close() came while this load held the lock and left the rest to it
            self.close()
            raise ModelMissingError(f"{self.name} was stopped while it was loading")
        return True

    def _seed_again(self, reason: str) -> None:
        """The shared state lost its data: unready (503 with the reason) until a load in the
        background has seeded it again (one replica seeds, the others wait and replay)."""
        with self._reseed_lock:
            if self._reseeding or self._closed:
                return
            self._reseeding = True
        log.error("%s; loading the bundle again to seed it", reason)
        if self.metrics is not None:
            self.metrics.model_ready.labels(self.name).set(0)
        self.ready = False
        self.load_error = reason
        if isinstance(self.state, RedisOnlineState):
            self.state.close()  # its heartbeat too; a request still using it reconnects
        self.state = None  # the next load makes, seeds and follows a new one
        LoadRetry(self, self.retry_seconds or 5.0).start()

    def _failed(self, error: Exception) -> None:
        missing = isinstance(error, ModelMissingError)
        self.load_error = str(error) if missing else f"{type(error).__name__}: {error}"
        if self.metrics is not None:
            self.metrics.load_failures.labels(self.name).inc()
            self.metrics.model_ready.labels(self.name).set(0)

    def not_ready_reason(self) -> str:
        """Why the model does not score, for a 503 (empty when it is ready)."""
        if self.ready:
            return ""
        if self._closed:
            return "It was stopped (unloaded, or the server is shutting down): restart the server."
        if self._reseeding:
            return (
                f"Its online state is being seeded again (attempt {self.load_attempts}): "
                f"{self.load_error}"
            )
        if self.load_error is None:
            return "Its bundle is loading."
        retry = f", retried every {self.retry_seconds:g} s" if self.retry_seconds else ""
        return f"Its bundle failed to load (attempt {self.load_attempts}{retry}): {self.load_error}"

    def _prepare(
        self, workdir: Path | None
    ) -> tuple[Bundle, Scorer, OnlineState, TransactionSchema, LogFollower | None]:
        """The verified bundle, its scorer, the online state, the request schema and what
        reads the other versions' traffic into the state (None: nothing to read)."""
        config = self.config
        try:
            bundle = self.source.open(workdir)
            spec = bundle.spec()
            snapshot = bundle.folder / "online" / "snapshot.parquet"
            history = pd.read_parquet(snapshot) if snapshot.exists() else pd.DataFrame()
            # the model is deserialised only now, after every file matched the manifest
            scorer = Scorer(
                bundle, None, config.n_reasons, config.reasons_for, config.contributions
            )
        except (StoreError, OSError, ValueError, KeyError) as e:
            detail = str(e)
            for where in (self.source.uri, self.source.folder):  # said once is enough
                detail = detail.removeprefix(f"{where}: ")
            raise ModelMissingError(
                f"cannot load the model bundle from {self.source.uri}: {detail}"
            ) from e
        state = self.state  # given to the constructor, or kept from an earlier load
        follower = None
        if state is None:
            state, follower = self._seed(bundle, history)
        scorer.state = state
        scorer.scored_elsewhere = self._scored_elsewhere
        scorer.on_labels = self._labels_set
        scorer.on_repeated = self._repeated
        schema = TransactionSchema(
            extra_numeric=spec.extra_numeric,
            max_batch=config.max_batch,
            max_clock_skew_seconds=config.max_clock_skew_seconds,
        )
        return bundle, scorer, state, schema, follower

    def _seed(
        self, bundle: Bundle, history: pd.DataFrame
    ) -> tuple[OnlineState, LogFollower | None]:
        """A new online state for ``bundle``: seeded from its snapshot (in Redis: once, by
        the first replica of the version), then the inference log replayed into it."""
        config = self.config
        days = bundle.spec().history_days + config.state_slack_days
        follower = None
        if self.state_log_store is not None:
            after = pd.to_datetime(history["timestamp"], utc=True).max() if len(history) else None
            follower = LogFollower(self.state_log_store, self.name, bundle.version, after)
        fresh: InMemoryOnlineState | RedisOnlineState | None = None
        replayed = 0
        try:
            if config.state_redis_url:
                try:
                    fresh = RedisOnlineState(
                        config.state_redis_url, self.name, bundle.version, days
                    )
                except ValueError as e:
                    raise ModelMissingError(f"--state_redis_url: {e}") from e

                def replay() -> None:  # by the seeding replica before its mark, or by one
                    # that finds the state stale (below)
                    nonlocal replayed
                    replayed = self._replay(fresh, follower, days)

                seeded = fresh.seed(history, then=replay)
                # seeded before, and no replica kept it current since: the other versions'
                # traffic of that time is only in the log (each transaction is added once)
                stale = seeded is None and not fresh.is_served()
                fresh.mark_served()  # now, not once loaded: `fraudops state prune` keeps it
                if stale:
                    replay()
                elif seeded is None:  # the seeding replica replayed the log; follow it now
                    self._skip_logged(follower)
            else:
                fresh = InMemoryOnlineState(days)
                seeded = fresh.load_frame(history) if len(history) else 0
        except (StateUnavailable, ValueError, KeyError, TypeError) as e:
            if isinstance(fresh, RedisOnlineState):  # its connections, not left to the GC
                fresh.close()
            if isinstance(e, StateUnavailable):
                raise ModelMissingError(str(e)) from e
            raise ModelMissingError(
                f"the bundle's online/snapshot.parquet from {self.source.uri} cannot seed "
                f"the online state: {type(e).__name__}: {e}"
            ) from e
        if isinstance(fresh, InMemoryOnlineState):
            replayed = self._replay(fresh, follower, days)
        log.info(
            "online state%s: %d snapshot row(s)%s, %d replayed from the inference log",
            f" in Redis at {fresh.url}" if isinstance(fresh, RedisOnlineState) else "",
            seeded or 0,
            " (seeded already)" if seeded is None else "",
            replayed,
        )
        return fresh, follower

    @staticmethod
    def _skip_logged(follower: LogFollower | None) -> None:
        """Follow only what is logged from now on (what was logged before is in the state)."""
        if follower is None:
            return
        try:
            follower.skip_existing()
        except Exception as e:  # the follower's first poll then reads today's batches again
            log.warning("cannot list the inference log (%s: %s)", type(e).__name__, e)

    def _start_writer(self) -> None:
        if self.log_store is None or self.writer is not None:
            return
        config = self.config
        self.writer = InferenceLogWriter(
            self.log_store,
            max_records=config.log_max_records,
            flush_records=config.log_flush_records,
            flush_interval=config.log_flush_interval,
            block_seconds=config.log_block_seconds,
            metrics=self.metrics,
            process=config.log_process,
        ).start()

    def _replay(
        self,
        state: InMemoryOnlineState | RedisOnlineState,
        follower: LogFollower | None,
        days: float,
    ) -> int:
        """Add logged transactions newer than the snapshot (a restart keeps its history), then
        the late labels.

        Reads the records of this model (every version: a canary's traffic counts too) written
        in the last ``days`` days, keeps the transactions after the snapshot's end, once each,
        presumed genuine (label 0) as the server's own are. Then the labels ingested in those
        days go on their transactions' terminal rows. (In Redis, other replicas may have added
        them already: each is added once.)
        """
        if follower is None:
            return 0
        try:
            if not self.config.replay_log:
                follower.skip_existing()
                return 0
            logged = follower.replay(datetime.now(UTC) - timedelta(days=days))
        except Exception as e:  # the server starts from the snapshot rather than not at all
            log.warning(
                "cannot replay the inference log (%s: %s); starting from the snapshot",
                type(e).__name__,
                e,
            )
            return 0
        if logged.unreadable:  # a record this replay cannot place in time must not stop it
            log.warning(
                "inference log replay: %d record(s) without a readable id, timestamp or amount "
                "left out",
                logged.unreadable,
            )
        added = state.load_frame(logged.rows.assign(**{LABEL: 0.0})) if len(logged.rows) else 0
        if len(logged.labels) or logged.unplaced:
            done = state.set_labels(*label_columns(logged.labels))
            self._labels_set(done, logged.unplaced)
            log.info(
                "online state: %d late label(s) from %d label file(s): %d changed a row, %d "
                "were known, %d found no transaction in the state, %d lacked its terminal or "
                "time",
                len(logged.labels) + logged.unplaced,
                logged.label_files,
                done.changed,
                done.unchanged,
                done.not_found,
                logged.unplaced,
            )
        return added

    def _follow(self, follower: LogFollower | None) -> None:
        """Start reading the other versions' traffic into the state (see ``follow_log_seconds``).

        No follower (the state was kept from an earlier load, or given): a loop already
        running goes on feeding that state.
        """
        if follower is None or self.config.follow_log_seconds <= 0:
            return
        if self._follow_loop is not None:
            self._follow_loop.stop()
        if self.metrics is not None:  # exported from the start, at 0 (alerts use increase())
            self.metrics.state_followed.labels(self.name)
            self.metrics.state_follow_failures.labels(self.name)
            self.metrics.state_repeated.labels(self.name)
            for outcome in LABEL_OUTCOMES:
                self.metrics.state_labels.labels(self.name, outcome)
        self._follow_loop = FollowLoop(
            follower, self._add_followed, self.config.follow_log_seconds, self._polled
        ).start()

    def _add_followed(self, logged: Logged) -> None:
        """Queue a poll's transactions, then its labels, in chunks (the follow thread); the
        event loop applies them, or this thread for a state any thread may change."""
        scorer, rows = self.scorer, logged.rows
        if scorer is None:
            return
        if len(rows):
            time_ms = (rows["timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
                milliseconds=1
            )
            columns = (
                rows["customer_id"].astype(str).tolist(),
                rows["terminal_id"].astype(str).tolist(),
                time_ms.to_numpy(np.int64),
                rows["amount"].to_numpy(np.float64),
                rows["transaction_id"].astype(str).tolist(),
            )
            for start in range(0, len(rows), FOLLOW_CHUNK):
                scorer.add_scored_elsewhere(*(c[start : start + FOLLOW_CHUNK] for c in columns))
        if len(logged.labels):
            columns = label_columns(logged.labels)
            for start in range(0, len(logged.labels), LABEL_CHUNK):
                scorer.add_labels(*(c[start : start + LABEL_CHUNK] for c in columns))
        if scorer.state is not None and scorer.state.thread_safe:
            self._apply_followed_here()
            return
        loop = self.event_loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._apply_followed)

    def _apply_followed_here(self) -> None:
        """The queue into a thread-safe state (Redis) on the follow thread, so the event
        loop never waits for Redis on its behalf. A failure is tried again a second later
        (this thread polls no more meanwhile: the batches wait in the store) until the
        queue is in or the model closes; a load that replaces the scorer meanwhile takes
        the queue over (they share it), and it goes into the new scorer's state."""
        failing = False
        with self._following_lock:  # one thread at a time: a chunk is taken off once applied
            while not self._closed:
                scorer = self.scorer
                if scorer is None or scorer.state is None or not scorer.state.thread_safe:
                    return  # unloaded, or in memory now: the event loop applies it
                try:
                    scorer.apply_scored_elsewhere()
                    return
                except StateUnavailable as e:
                    if self.metrics is not None:
                        self.metrics.state_follow_failures.labels(self.name).inc()
                    if not failing:
                        log.warning(
                            "cannot add the other versions' transactions to the state (tried "
                            "again a second after each failure; no new poll meanwhile): %s",
                            e,
                        )
                    failing = True
                    if e.lost:
                        self._seed_again(str(e))
                        return
                    time.sleep(1.0)

    def _apply_followed(self) -> None:
        """On the event loop: one chunk into the state, the rest on later turns (requests
        are scored in between)."""
        scorer = self.scorer
        if scorer is None or self._closed:
            return
        try:
            scorer.apply_scored_elsewhere(limit=1)
        except StateUnavailable as e:  # kept queued: tried again in a second (and by requests)
            log.warning("cannot add the other versions' transactions to the state: %s", e)
            if e.lost:
                self._seed_again(str(e))
                return
            if self.event_loop is not None:
                self.event_loop.call_later(1.0, self._apply_followed)
            return
        if scorer.scored_elsewhere and self.event_loop is not None:
            self.event_loop.call_soon(self._apply_followed)

    def _polled(self, logged: Logged | None, error: Exception | None) -> None:
        if self.metrics is None:
            return
        if error is not None:
            self.metrics.state_follow_failures.labels(self.name).inc()
        elif logged is not None:
            if len(logged.rows):
                self.metrics.state_followed.labels(self.name).inc(len(logged.rows))
            if logged.unplaced:
                self.metrics.state_labels.labels(self.name, "unplaced").inc(logged.unplaced)

    def _repeated(self, count: int) -> None:
        """Count transactions the state held already (metrics)."""
        if self.metrics is not None:
            self.metrics.state_repeated.labels(self.name).inc(count)

    def _labels_set(self, done: LabelsSet, unplaced: int = 0) -> None:
        """Count what late labels did to the state (metrics)."""
        if self.metrics is None:
            return
        for outcome, count in (
            ("changed", done.changed),
            ("unchanged", done.unchanged),
            ("not_found", done.not_found),
            ("unplaced", unplaced),
        ):
            if count:
                self.metrics.state_labels.labels(self.name, outcome).inc(count)

    def _state_gauges(self) -> None:
        m, state = self.metrics, self.state
        assert m is not None and state is not None
        for kind, key, gauge in (
            ("customer", "customers", m.state_entities),
            ("terminal", "terminals", m.state_entities),
            ("customer", "customer_rows", m.state_rows),
            ("terminal", "terminal_rows", m.state_rows),
        ):
            gauge.labels(self.name, kind).set_function(lambda key=key: state.stats()[key])

    def stop(self) -> None:
        """Write the rest of the inference log (graceful shutdown)."""
        self.close()
        super().stop()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the model is not loaded again)."""
        return self._closed

    def close(self) -> None:
        """Flush and stop the inference-log writer, remove a downloaded bundle (idempotent).

        Does not wait for a load under way (it may wait minutes on a store): that load sees
        the model closed when it ends and calls ``close()`` again, which then releases what
        it made.
        """
        self._closed = True
        if self.metrics is not None:
            self.metrics.model_ready.labels(self.name).set(0)
        if not self._load_lock.acquire(blocking=False):
            download = self._download  # the load's own cleanup may never run: at exit, the
            if download is not None:  # interpreter does not wait for its daemon thread
                shutil.rmtree(download, ignore_errors=True)
            return
        try:
            self._release()
        finally:
            self._load_lock.release()

    def _release(self) -> None:
        self.ready = False
        if self._follow_loop is not None:
            self._follow_loop.stop()
            self._follow_loop = None
        if self.writer is not None:
            self.writer.close()
        if isinstance(self.state, RedisOnlineState):
            self.state.close()
        if self._tmpdir is not None:  # everything in it was read by load_bundle()
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # -- metadata (V2 GET /v2/models/<name>) ------------------------------------------------

    def get_input_types(self) -> list[dict[str, Any]]:
        if not self.ready:  # the inputs depend on the bundle (gRPC asks even then; REST: 503)
            raise _NotReady(self.name, self.not_ready_reason())
        return [
            {"name": name, "datatype": self.schema.datatype(name), "shape": [-1]}
            for name in self.schema.fields
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        outputs = [
            {"name": "transaction_id", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP64", "shape": [-1]},
            {"name": "decision", "datatype": "BYTES", "shape": [-1]},
        ]
        if self.config.n_reasons > 0:
            outputs.append(
                {"name": "reasons", "datatype": "BYTES", "shape": [-1, self.config.n_reasons]}
            )
        return outputs

    # -- scoring ---------------------------------------------------------------------------

    async def predict(
        self, payload: dict | InferRequest | bytes, headers: dict[str, str] | None = None
    ) -> dict | InferResponse:
        """Score V1 ``{"instances": [...]}`` or a V2 ``InferRequest``; same path for both.

        A coroutine, which KServe awaits: with the state in Redis it awaits the round trip,
        and the server takes other requests meanwhile; in memory it awaits nothing and runs
        through, one request at a time."""
        ctx = current_request()
        started = ctx.started if ctx is not None else time.perf_counter()
        if ctx is not None:
            ctx.reached_model = True
            ctx.version = self.version
        if self.scorer is None:
            raise InferenceError(f"model {self.name} is not loaded")
        v2 = isinstance(payload, InferRequest)
        protocol = "v2" if v2 else "v1"
        if v2:
            self._check_outputs(payload)
            batch = from_tensors(payload.inputs, self.schema)
        else:
            batch = from_instances(_json(payload), self.schema)
        answer = self._answer(payload, batch, protocol, headers, started)
        if isinstance(self.state, InMemoryOnlineState):
            return await answer  # nothing awaited inside: a cancellation cannot land there
        # a cancelled request (a gRPC deadline, a client gone) is still scored, added and
        # logged, as a request that was not awaited would be: a state that took its
        # transaction must have it in the log too (replays, retries counted once)
        return await asyncio.shield(answer)

    async def _answer(
        self,
        payload: dict | InferRequest | bytes,
        batch: TransactionBatch,
        protocol: str,
        headers: dict[str, str] | None,
        started: float,
    ) -> dict | InferResponse:
        """Score ``batch``, add it to the state, log it, and build the response."""
        try:
            scored = await self.scorer.score_async(
                batch, 1 if self.event_loop is not None else None
            )
        except ServingError:
            raise
        except StateUnavailable as e:  # not the client's fault, nor a bug: 503 with the reason
            if e.lost:
                self._seed_again(str(e))
            raise StateUnavailableError(self.name, str(e)) from e
        except Exception as e:
            raise InferenceError(f"scoring failed: {type(e).__name__}: {e}") from e
        request_id = _request_id(headers, payload)
        response = (
            self._v2_response(payload, batch, scored, request_id)
            if protocol == "v2"
            else self._v1_response(batch, scored)
        )
        latency_ms = (time.perf_counter() - started) * 1000.0
        self._observe(protocol, scored)
        if self.writer is not None:
            self._log(batch, scored, protocol, request_id, latency_ms)
        return response

    def _check_outputs(self, request: InferRequest) -> None:
        if not request.request_outputs:
            return
        known = {o["name"] for o in self.get_output_types()}
        unknown = [o.name for o in request.request_outputs if o.name not in known]
        if unknown:
            raise InvalidTransactions(
                [f"unknown requested output(s) {unknown}; outputs: {sorted(known)}"]
            )

    def _v1_response(self, batch: TransactionBatch, scored: Scored) -> dict[str, Any]:
        version = self.version
        return {
            "model_name": self.name,
            "model_version": version,
            "predictions": [
                {
                    "transaction_id": tid,
                    "score": score,
                    "decision": decision,
                    "model_version": version,
                    "reasons": reasons,
                }
                for tid, score, decision, reasons in zip(
                    batch.transaction_id,
                    scored.score.tolist(),
                    scored.decisions,
                    scored.reasons,
                    strict=True,
                )
            ],
        }

    def _v2_response(
        self, request: InferRequest, batch: TransactionBatch, scored: Scored, request_id: str
    ) -> InferResponse:
        n = len(batch)
        outputs = [
            InferOutput("transaction_id", [n], "BYTES", np.array(batch.transaction_id, object)),
            InferOutput("score", [n], "FP64", scored.score),
            InferOutput("decision", [n], "BYTES", np.array(scored.decisions, object)),
        ]
        k = self.config.n_reasons
        if k > 0:
            pad = [""] * k
            grid = np.array([codes + pad[len(codes) :] for codes in scored.reasons], object)
            outputs.append(InferOutput("reasons", [n, k], "BYTES", grid))
        if request.from_grpc:  # KServe's to_grpc() tests ``if output.data``: lists only
            for output in outputs:
                output.data = output.data.ravel().tolist()
        return InferResponse(
            response_id=request.id or request_id,
            model_name=self.name,
            model_version=self.version,
            infer_outputs=outputs,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )

    def _observe(self, protocol: str, scored: Scored) -> None:
        m = self.metrics
        if m is None:
            return
        series = self._series.get(protocol)
        if series is None:  # resolve the labelled series once
            series = self._series[protocol] = (
                m.transactions.labels(self.name, self.version, protocol),
                m.alerts.labels(self.name, self.version),
            )
        series[0].inc(len(scored.score))
        alerts = int(np.count_nonzero(scored.alert))
        if alerts:
            series[1].inc(alerts)
        m.scores.observe((self.name, self.version), scored.score)

    def _log(
        self,
        batch: TransactionBatch,
        scored: Scored,
        protocol: str,
        request_id: str,
        latency_ms: float,
    ) -> None:
        names = None
        if self.config.log_features:
            names = self.scorer.features.names  # type: ignore[union-attr]
        args = (
            batch,
            scored,
            self.name,
            self.version,
            protocol,
            request_id,
            latency_ms,
            self.config.log_source,
            datetime.now(UTC),
            names,
        )
        assert self.writer is not None
        try:  # bytes, not objects, wait for the writer (see pack_request)
            entry = LogEntry(len(batch), args=pack_request(*args), columns=packed_columns)
        except TypeError:  # text JSON cannot hold (a lone surrogate from a lenient parser)
            if names is None:  # the entry is pickled for the writer: leave the matrix out
                scored = Scored(scored.score, scored.alert, scored.reasons, _NO_FEATURES)
                args = (batch, scored, *args[2:])
            entry = LogEntry(len(batch), args=args, columns=columns_for)
        self.writer.submit(entry)


def pack_request(
    batch: TransactionBatch,
    scored: Scored,
    name: str,
    version: str,
    protocol: str,
    request_id: str,
    latency_ms: float | None,
    source: str,
    when: datetime,
    feature_names: list[str] | None = None,
) -> tuple[bytes, bytes | None]:
    """The arguments of :func:`columns_for` as bytes, for the inference log.

    A request's log entry waits in the server process for seconds before it is written. As
    Python objects (a batch and its scores: some 16 lists, dicts and dataclasses for one
    transaction) 12,000 waiting entries kept the garbage collector busy (collections of 1 ms,
    full ones of 50-90 ms) and took 12 us an entry to pickle for the writer process, holding
    the GIL. As bytes the collector does not look at them and pickling copies them. Packing
    takes a few microseconds: one JSON document (``orjson``; floats round-trip through their
    shortest representation, and the only non-finite values, missing optional numbers, are
    NaN, written ``null``) and, when features are logged, the feature matrix's raw float32
    bytes (features can be infinite). :func:`packed_columns` unpacks them, exactly.
    """
    document = orjson.dumps(
        [
            batch.transaction_id,
            batch.customer_id,
            batch.terminal_id,
            batch.time_ms,
            batch.timestamp,
            batch.numeric,
            batch.categorical,
            batch.present,
            scored.score,
            scored.alert,
            scored.reasons,
            name,
            version,
            protocol,
            request_id,
            latency_ms,
            source,
            when.isoformat(),
            feature_names,
        ],
        default=_array_list,
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    if feature_names is None:
        return document, None
    return document, np.ascontiguousarray(scored.features, dtype=np.float32).tobytes()


def packed_columns(document: bytes, features: bytes | None = None) -> dict[str, list[Any]]:
    """:func:`columns_for` of a request packed by :func:`pack_request`."""
    (
        transaction_id,
        customer_id,
        terminal_id,
        time_ms,
        timestamp,
        numeric,
        categorical,
        present,
        score,
        alert,
        reasons,
        *context,  # name, version, protocol, request id, latency, source: as they were
        when,
        feature_names,
    ) = orjson.loads(document)
    batch = TransactionBatch(
        transaction_id,
        customer_id,
        terminal_id,
        np.asarray(time_ms, dtype=np.int64),
        timestamp,
        {k: np.asarray(v, dtype=np.float64) for k, v in numeric.items()},  # null -> NaN
        categorical,
        tuple(present),
    )
    matrix = _NO_FEATURES
    if features is not None:
        matrix = np.frombuffer(features, dtype=np.float32).reshape(len(transaction_id), -1)
    scored = Scored(
        np.asarray(score, dtype=np.float64), np.asarray(alert, dtype=bool), reasons, matrix
    )
    return columns_for(batch, scored, *context, datetime.fromisoformat(when), feature_names)


def _array_list(value: object) -> list:
    if isinstance(value, np.ndarray):  # orjson writes C-contiguous arrays only
        return value.tolist()
    raise TypeError(f"cannot pack {type(value).__name__} for the inference log")


def columns_for(
    batch: TransactionBatch,
    scored: Scored,
    name: str,
    version: str,
    protocol: str,
    request_id: str,
    latency_ms: float | None,
    source: str,
    when: datetime,
    feature_names: list[str] | None = None,
) -> dict[str, list[Any]]:
    """Inference-log records of one request as one block of flat columns (``record_columns``;
    ``block_records`` gives them as records). Shared with :mod:`serving.log_sink`.

    A request of one transaction gives one record with the request id as its CloudEvent id;
    a batch gives ``<request id>-<i>`` per transaction.
    """
    n = len(batch)
    features = None
    if feature_names is not None:
        features = {
            f: [None if v != v else v for v in scored.features[:, j].tolist()]
            for j, f in enumerate(feature_names)
        }
    return record_columns(
        model=name,
        version=version,
        transactions=batch.columns(),
        score=scored.score.tolist(),
        decision=scored.decisions,
        reasons=scored.reasons,
        event_ids=[request_id] if n == 1 else [f"{request_id}-{i}" for i in range(n)],
        time=when.isoformat(),
        latency_ms=latency_ms,
        source=source,
        protocol=protocol,
        features=features,
    )


def _request_id(headers: dict[str, str] | None, payload: object) -> str:
    if headers:
        for key in ("ce-id", "x-request-id"):
            value = headers.get(key)
            if value:
                return value
    if isinstance(payload, InferRequest) and payload.id:
        return str(payload.id)
    return uuid.uuid4().hex


def _json(payload: object) -> object:
    """A V1 body as parsed JSON (KServe passes bytes through for some content types)."""
    if isinstance(payload, bytes | bytearray):
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            raise InvalidTransactions([f"the body is not valid JSON: {e}"]) from e
    return payload
