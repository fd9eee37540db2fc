"""Prometheus metrics of the local canary gateway (served on its own ``/metrics``).

=================================================  ============================================
``fraudops_gateway_requests_total``                scoring requests sent to a backend, by
                                                   model, version, role (stable, canary) and
                                                   outcome (ok, client_error, server_error,
                                                   connection_error, timeout); a request retried
                                                   on stable counts once per backend
``fraudops_gateway_request_duration_seconds``      time per backend attempt (histogram), by
                                                   model, version, role
``fraudops_gateway_retries_total``                 canary failures retried on stable, by model
                                                   and the canary's version
``fraudops_gateway_canary_percent``                the canary's current share of scoring
                                                   requests (0 without a canary)
``fraudops_gateway_in_flight``                     requests in flight, by model and version
=================================================  ============================================

Each gateway has its own registry (nothing is registered at import time).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from serving.gateway_stats import Outcome
from serving.metrics import LATENCY_BUCKETS

__all__ = ["GatewayMetrics"]


class GatewayMetrics:
    """The gateway's metrics for one model, in ``registry`` (default: a new one).

    Args:
        model: The model name (a label on every series).
        registry: Where the metrics are registered.
    """

    def __init__(self, model: str, registry: CollectorRegistry | None = None) -> None:
        self.model = model
        self.registry = registry if registry is not None else CollectorRegistry()
        kw = {"registry": self.registry}
        self.requests = Counter(
            "fraudops_gateway_requests",
            "Scoring requests sent to a backend, by version, role and outcome.",
            ("model", "version", "role", "outcome"),
            **kw,
        )
        self.latency = Histogram(
            "fraudops_gateway_request_duration_seconds",
            "Time of one backend attempt, from sending the request to the end of the answer.",
            ("model", "version", "role"),
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.retries = Counter(
            "fraudops_gateway_retries",
            "Requests that failed on the canary (5xx, connection, timeout) and were retried on "
            "the stable backend, by the canary's version.",
            ("model", "version"),
            **kw,
        )
        self.canary_percent = Gauge(
            "fraudops_gateway_canary_percent",
            "The canary's share of scoring requests in percent (0 without a canary).",
            ("model",),
            **kw,
        )
        self.in_flight = Gauge(
            "fraudops_gateway_in_flight",
            "Requests in flight to a backend, by version.",
            ("model", "version"),
            **kw,
        )
        self.canary_percent.labels(model).set(0)

    def observe(self, version: str, role: str, outcome: Outcome, seconds: float) -> None:
        """Count one backend attempt."""
        self.requests.labels(self.model, version, role, outcome.label).inc()
        self.latency.labels(self.model, version, role).observe(seconds)

    def retried(self, canary_version: str) -> None:
        """Count one canary failure retried on stable."""
        self.retries.labels(self.model, canary_version).inc()

    def set_canary_percent(self, percent: int) -> None:
        """Publish the canary's share."""
        self.canary_percent.labels(self.model).set(percent)
