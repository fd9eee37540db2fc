"""Prometheus metrics of the model server and the log sink.

They live in a registry passed in (the default ``prometheus_client`` registry in the server, so
KServe's own ``/metrics`` endpoint on the HTTP port exposes them next to KServe's
``request_*_seconds`` histograms). Nothing is registered at import time.

=========================================================  =====================================
``fraudops_serving_requests_total``                        requests by model, version, protocol,
                                                           HTTP status code
``fraudops_serving_request_duration_seconds``              whole-request latency (histogram) by
                                                           model, version, protocol
``fraudops_serving_transactions_total``                    scored transactions
``fraudops_serving_alerts_total``                          transactions at or above the threshold
                                                           (alert rate = rate(alerts) /
                                                           rate(transactions))
``fraudops_serving_score``                                 score distribution (histogram)
``fraudops_serving_errors_total``                          refused or failed requests by kind
``fraudops_model_ready``                                   1 once the bundle is loaded, 0 while
                                                           its load fails (retried)
``fraudops_model_load_failures_total``                     failed load attempts
``fraudops_online_state_entities``/``_rows``               online state size by kind
``fraudops_online_state_followed_total``                   transactions of other versions added
                                                           to the state (from their log)
``fraudops_online_state_follow_failures_total``            polls of that log that failed, and
                                                           failed writes of what they read
                                                           into a state in Redis
``fraudops_online_state_labels_total``                     late labels by outcome: changed,
                                                           unchanged, not_found, unplaced
``fraudops_online_state_repeated_total``                   transactions the state held already
                                                           (retries), not counted again
``fraudops_inference_log_queued``                          records waiting for the store
``fraudops_inference_log_written_total``                   records written
``fraudops_inference_log_dropped_total``                   records dropped, by reason
``fraudops_inference_log_write_errors_total``              failed writes (retried)
``fraudops_inference_log_flush_seconds``                   time per batch write (histogram)
``fraudops_log_sink_events_total``                         sink: CloudEvents by type and outcome
``fraudops_log_sink_pending``                              sink: events waiting for their pair
=========================================================  =====================================
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["ArrayHistogram", "ServingMetrics"]

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
SCORE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0)


class ArrayHistogram(Collector):
    """A labelled histogram fed with whole numpy arrays (one call per request, not per value).

    ``prometheus_client.Histogram.observe`` costs about a microsecond per value; a request of
    1,000 transactions would spend a millisecond there. This collector bins an array with one
    ``searchsorted`` and exposes the usual ``_bucket``/``_sum``/``_count`` series at scrape time.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...],
        registry: CollectorRegistry | None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._series: dict[tuple[str, ...], list] = {}
        if registry is not None:
            registry.register(self)

    def observe(self, labels: tuple[str, ...], values: np.ndarray) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [np.zeros(len(self.bounds) + 1, np.int64), 0.0]
        # bucket i counts values <= bound i (Prometheus' "le"); the last one is +Inf
        index = np.searchsorted(self.bounds, values, side="left")
        series[0] += np.bincount(index, minlength=len(self.bounds) + 1)
        series[1] += float(np.sum(values))

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (counts, total) in list(self._series.items()):
            cumulative = np.cumsum(counts)
            buckets = [
                (floatToGoString(b), float(c))
                for b, c in zip(self.bounds, cumulative, strict=False)
            ]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric(list(labels), buckets, total)
        yield family

    def describe(self) -> Iterable[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


class ServingMetrics:
    """Every metric of the server and the sink, in one registry (default: the global one)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        kw = {"registry": registry}
        self.requests = Counter(
            "fraudops_serving_requests",
            "Scoring requests by model, version, protocol and HTTP status code.",
            ("model", "version", "protocol", "code"),
            **kw,
        )
        self.latency = Histogram(
            "fraudops_serving_request_duration_seconds",
            "Whole-request latency inside the server (decode, validate, score, encode).",
            ("model", "version", "protocol"),
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.transactions = Counter(
            "fraudops_serving_transactions",
            "Scored transactions.",
            ("model", "version", "protocol"),
            **kw,
        )
        self.alerts = Counter(
            "fraudops_serving_alerts",
            "Transactions whose score reached the bundle's threshold (decision 'alert').",
            ("model", "version"),
            **kw,
        )
        self.scores = ArrayHistogram(
            "fraudops_serving_score",
            "Distribution of fraud scores.",
            ("model", "version"),
            SCORE_BUCKETS,
            registry,
        )
        self.errors = Counter(
            "fraudops_serving_errors",
            "Refused or failed scoring requests by kind (invalid_input, empty_batch, "
            "payload_too_large, unsupported_media_type, model_not_found, not_ready, internal).",
            ("model", "protocol", "kind"),
            **kw,
        )
        self.model_ready = Gauge(
            "fraudops_model_ready",
            "1 once the model's bundle is loaded and it scores; 0 while its load fails "
            "(the server stays up unready and retries, see --load_retry_seconds).",
            ("model",),
            **kw,
        )
        self.load_failures = Counter(
            "fraudops_model_load_failures",
            "Failed attempts to load the model's bundle (fetch, checksum or deserialisation).",
            ("model",),
            **kw,
        )
        self.state_entities = Gauge(
            "fraudops_online_state_entities",
            "Customers and terminals in the online feature state.",
            ("model", "kind"),
            **kw,
        )
        self.state_rows = Gauge(
            "fraudops_online_state_rows",
            "Transactions kept in the online feature state, per kind of entity.",
            ("model", "kind"),
            **kw,
        )
        self.state_followed = Counter(
            "fraudops_online_state_followed",
            "Transactions scored by other versions of the model, read from their inference "
            "log and added to the online state (see --follow_log_seconds).",
            ("model",),
            **kw,
        )
        self.state_follow_failures = Counter(
            "fraudops_online_state_follow_failures",
            "Polls of the other versions' inference log that failed, and failed attempts to "
            "write what they read into a state in Redis (both retried).",
            ("model",),
            **kw,
        )
        self.state_labels = Counter(
            "fraudops_online_state_labels",
            "Late labels read for the online state (terminal fraud rates), by outcome: changed "
            "a row, unchanged (the row had it), not_found (no such transaction in the state), "
            "unplaced (the label lacks its transaction's terminal or time).",
            ("model", "outcome"),
            **kw,
        )
        self.state_repeated = Counter(
            "fraudops_online_state_repeated",
            "Transactions the online state held already (the same transaction_id, customer "
            "and timestamp: a retry, or one scored by two versions), not counted again.",
            ("model",),
            **kw,
        )
        self.log_queued = Gauge(
            "fraudops_inference_log_queued",
            "Inference-log records waiting to be written to the store.",
            **kw,
        )
        self.log_written = Counter(
            "fraudops_inference_log_written", "Inference-log records written to the store.", **kw
        )
        self.log_dropped = Counter(
            "fraudops_inference_log_dropped",
            "Inference-log records dropped, by reason (buffer_full, store_unavailable, "
            "invalid_record, closed).",
            ("reason",),
            **kw,
        )
        self.log_write_errors = Counter(
            "fraudops_inference_log_write_errors",
            "Failed batch writes to the store (the records are retried).",
            **kw,
        )
        self.log_flush_seconds = Histogram(
            "fraudops_inference_log_flush_seconds",
            "Time to write one batch of records to the store.",
            **kw,
        )
        self.sink_events = Counter(
            "fraudops_log_sink_events",
            "CloudEvents received by the log sink, by type and outcome (paired, waiting, "
            "invalid, expired, evicted, duplicate).",
            ("type", "outcome"),
            **kw,
        )
        self.sink_pending = Gauge(
            "fraudops_log_sink_pending",
            "CloudEvents waiting for their request or response.",
            **kw,
        )
