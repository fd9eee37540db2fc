"""Per-backend request statistics of the local canary gateway (pure logic, no framework).

Every scoring request a backend finishes is one event: when it finished (wall-clock seconds),
how long it took and its :class:`Outcome`. :class:`BackendStats` keeps exact all-time counters
and the most recent ``capacity`` events in fixed numpy ring buffers, so that the canary
analysis can ask for the requests, errors and latency percentiles *since* a given time (the
start of a rollout step). A window reaching further back than the last ``capacity`` events
only sees those events.

Latency percentiles are over the requests the backend answered properly (status below 500):
a canary that fails fast must not look fast.
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

__all__ = ["BackendStats", "EventTimes", "Outcome", "classify"]


class Outcome(enum.IntEnum):
    """What became of one request sent to one backend."""

    OK = 0
    """Any status below 400."""
    CLIENT_ERROR = 1
    """4xx: the client's mistake, passed through and never retried."""
    SERVER_ERROR = 2
    """5xx from the backend."""
    CONNECTION_ERROR = 3
    """Refused, reset or closed without an answer."""
    TIMEOUT = 4
    """No complete answer within the gateway's backend timeout."""

    @property
    def failed(self) -> bool:
        """A server-side failure (5xx, connection, timeout): retried when the canary failed."""
        return self >= Outcome.SERVER_ERROR

    @property
    def label(self) -> str:
        """The Prometheus label value: ``ok``, ``client_error``, ``server_error``, ..."""
        return self.name.lower()


def classify(status: int) -> Outcome:
    """The outcome of an HTTP answer with this status code."""
    if status >= 500:
        return Outcome.SERVER_ERROR
    if status >= 400:
        return Outcome.CLIENT_ERROR
    return Outcome.OK


class EventTimes:
    """The times of the last ``capacity`` events of one kind (e.g. retries), countable by time.

    Args:
        capacity: How many of the most recent events are kept.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.total = 0
        """Events ever added (exact)."""
        self._times = np.zeros(capacity, dtype=np.float64)

    def add(self, when: float) -> None:
        """Record one event at wall-clock time ``when`` (seconds)."""
        self._times[self.total % self.capacity] = when
        self.total += 1

    def times(self) -> np.ndarray:
        """The kept event times (not ordered)."""
        return self._times[: min(self.total, self.capacity)]

    def count(self, since: float | None = None) -> int:
        """Events at or after ``since`` (all events when None)."""
        if since is None:
            return self.total
        return int(np.count_nonzero(self.times() >= since))


class BackendStats:
    """Requests, errors by kind and latency of one backend (see the module docstring).

    Args:
        capacity: How many of the most recent requests are kept for windowed questions.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._times = EventTimes(capacity)
        self._latency_ms = np.zeros(capacity, dtype=np.float64)
        self._outcome = np.zeros(capacity, dtype=np.int8)
        self._totals = np.zeros(len(Outcome), dtype=np.int64)

    @property
    def requests(self) -> int:
        """Requests ever finished (exact)."""
        return self._times.total

    def record(self, finished_at: float, latency_ms: float, outcome: Outcome) -> None:
        """Count one finished request.

        Args:
            finished_at: Wall-clock time (``time.time()``) when the answer or the failure came.
            latency_ms: Time from sending to the end of the answer or the failure.
            outcome: What became of it.
        """
        i = self._times.total % self._times.capacity
        self._latency_ms[i] = latency_ms
        self._outcome[i] = outcome
        self._totals[outcome] += 1
        self._times.add(finished_at)

    def summary(self, version: str, since: float | None = None) -> dict[str, Any]:
        """The stats document of ``GET /rollout/stats`` for requests finished at or after ``since``.

        Args:
            version: The backend's model version (copied into the document).
            since: Wall-clock seconds; None counts every request since the backend joined
                (latency from the kept window).

        Returns:
            ``version``, ``requests``, ``errors_5xx``, ``errors_connection`` (connection
            failures and timeouts), ``client_errors_4xx``, ``latency_ms_p50`` and
            ``latency_ms_p99`` (None without answered requests).
        """
        n = min(self._times.total, self._times.capacity)
        outcome = self._outcome[:n]
        latency = self._latency_ms[:n]
        if since is None:
            counts = self._totals
        else:
            recent = self._times.times() >= since
            outcome = outcome[recent]
            latency = latency[recent]
            counts = np.bincount(outcome, minlength=len(Outcome))
        answered = latency[outcome < Outcome.SERVER_ERROR]
        p50, p99 = (
            (round(float(v), 3) for v in np.percentile(answered, [50, 99]))
            if len(answered)
            else (None, None)
        )
        return {
            "version": version,
            "requests": int(counts.sum()),
            "errors_5xx": int(counts[Outcome.SERVER_ERROR]),
            "errors_connection": int(counts[Outcome.CONNECTION_ERROR] + counts[Outcome.TIMEOUT]),
            "client_errors_4xx": int(counts[Outcome.CLIENT_ERROR]),
            "latency_ms_p50": p50,
            "latency_ms_p99": p99,
        }
