"""Request counts, errors and latency per version over a step window, for the canary analysis.

Three sources, one protocol (:class:`MetricsSource`):

- :class:`GatewayMetrics`: the local gateway's ``GET /rollout/stats?since=`` (it counts every
  request it forwards, including connection failures no model server ever sees).
- :class:`PrometheusMetrics`: the Prometheus HTTP API (``/api/v1/query``) over the model
  server's own metrics (``serving/metrics.py``): ``fraudops_serving_requests_total`` by
  ``code`` and ``fraudops_serving_request_duration_seconds``, filtered by model and version.
- :class:`LogOnlyMetrics`: nothing but the inference log, for a cluster without Prometheus:
  latency comes from the logged ``latency_ms`` and errors are unknown (the error checks are
  skipped, and say so).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import httpx

from monitoring.canary import VersionMetrics
from monitoring.rollout_base import RolloutError
from monitoring.rollout_local import LocalGatewayTarget

__all__ = [
    "GatewayMetrics",
    "LogOnlyMetrics",
    "MetricsError",
    "MetricsSource",
    "PrometheusMetrics",
    "promql_queries",
]

REQUESTS = "fraudops_serving_requests_total"
DURATION = "fraudops_serving_request_duration_seconds_bucket"


class MetricsError(RolloutError):
    """The metrics source could not be read or answered something unusable."""


class MetricsSource(Protocol):
    """Per-version request numbers over a window."""

    description: str

    def collect(
        self, model: str, stable_version: str, canary_version: str, start: float, end: float
    ) -> dict[str, VersionMetrics]:
        """``{"stable": ..., "canary": ...}`` for the window ``[start, end]`` (Unix seconds)."""
        ...


class LogOnlyMetrics:
    """No request metrics: latency from the inference log, errors unknown.

    Args:
        why: Said in every check that is skipped for lack of metrics.
    """

    def __init__(self, why: str = "no Prometheus configured (--prometheus-url): errors unknown"):
        self.description = f"inference log only ({why})"

    def collect(
        self, model: str, stable_version: str, canary_version: str, start: float, end: float
    ) -> dict[str, VersionMetrics]:
        return {
            "stable": VersionMetrics(source=self.description),
            "canary": VersionMetrics(source=self.description),
        }


def _version_metrics(doc: dict[str, Any] | None, source: str) -> VersionMetrics:
    if not doc:
        return VersionMetrics(requests=0, errors_5xx=0, errors_connection=0, source=source)

    def number(key: str) -> float | None:
        value = doc.get(key)
        return None if value is None else float(value)

    return VersionMetrics(
        requests=int(doc.get("requests") or 0),
        errors_5xx=int(doc.get("errors_5xx") or 0),
        errors_connection=int(doc.get("errors_connection") or 0),
        client_errors_4xx=int(doc.get("client_errors_4xx") or 0),
        latency_p50_ms=number("latency_ms_p50"),
        latency_p99_ms=number("latency_ms_p99"),
        source=source,
    )


class GatewayMetrics:
    """The local gateway's ``/rollout/stats``.

    Args:
        gateway: The gateway's URL, or its target (whose client is reused).
    """

    def __init__(self, gateway: str | LocalGatewayTarget) -> None:
        if isinstance(gateway, str):
            gateway = LocalGatewayTarget(gateway)
        self.gateway = gateway
        self.description = f"gateway stats {gateway.url}/rollout/stats"
        self.last: dict[str, Any] = {}

    def collect(
        self, model: str, stable_version: str, canary_version: str, start: float, end: float
    ) -> dict[str, VersionMetrics]:
        """Counts since ``start`` (the gateway counts up to now, which is ``end``).

        Raises:
            MetricsError: the gateway serves other versions than the rollout expects.
        """
        doc = self.gateway.stats(start)
        self.last = doc
        for role, expected in (("stable", stable_version), ("canary", canary_version)):
            seen = (doc.get(role) or {}).get("version")
            if seen is not None and seen != expected:
                raise MetricsError(
                    f"the gateway's {role} is {seen}, the rollout expects {expected}: the split "
                    "was changed by someone else; check `fraudops rollout status`"
                )
        out = {
            "stable": _version_metrics(doc.get("stable"), self.description),
            "canary": _version_metrics(doc.get("canary"), self.description),
        }
        return out


def _selector(labels: dict[str, str], extra: str = "") -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"')

    parts = [f'{k}="{escape(v)}"' for k, v in labels.items()]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}"


def promql_queries(
    model: str, version: str, window_seconds: float, matchers: dict[str, str] | None = None
) -> dict[str, str]:
    """The PromQL for one version's numbers over the last ``window_seconds``.

    Args:
        model: The ``model`` label (the model name).
        version: The ``version`` label (the bundle version).
        window_seconds: Range of ``increase``/``rate`` (rounded up to whole seconds).
        matchers: More label matchers, e.g. ``{"namespace": "fraudops"}``.

    Returns:
        ``requests``, ``errors_5xx``, ``client_errors_4xx``, ``latency_p50_ms`` and
        ``latency_p99_ms`` queries.
    """
    labels = {"model": model, "version": version, **(matchers or {})}
    window = f"[{max(1, math.ceil(window_seconds))}s]"
    selector = _selector(labels)

    def quantile(q: float) -> str:
        return f"1000 * histogram_quantile({q}, sum by (le) (rate({DURATION}{selector}{window})))"

    server_errors = _selector(labels, 'code=~"5.."')
    client_errors = _selector(labels, 'code=~"4.."')
    return {
        "requests": f"sum(increase({REQUESTS}{selector}{window}))",
        "errors_5xx": f"sum(increase({REQUESTS}{server_errors}{window}))",
        "client_errors_4xx": f"sum(increase({REQUESTS}{client_errors}{window}))",
        "latency_p50_ms": quantile(0.5),
        "latency_p99_ms": quantile(0.99),
    }


class PrometheusMetrics:
    """The Prometheus HTTP API over the model server's metrics.

    Args:
        url: Prometheus' base URL (``http://prometheus-operated.monitoring:9090``).
        matchers: Extra label matchers for every query (``{"namespace": "fraudops"}``).
        timeout: Seconds per query.
        client: An httpx client to use (default: a new one per collection).

    Counts are ``increase`` over the window (Prometheus extrapolates, so they are rounded);
    latency quantiles come from the histogram buckets. Requests that never reached a model
    server (a crashing canary pod) are not in these metrics: Knative keeps traffic away from a
    revision that is not ready, and the window then shows too few canary requests.
    """

    def __init__(
        self,
        url: str,
        matchers: dict[str, str] | None = None,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.matchers = matchers or {}
        self.timeout = timeout
        self._client = client
        self.description = f"Prometheus {self.url}"

    def query(self, client: httpx.Client, promql: str, at: float) -> float | None:
        """One instant query; its single value (None when there is no data or NaN).

        Raises:
            MetricsError: Prometheus is unreachable or rejected the query.
        """
        try:
            response = client.get(
                f"{self.url}/api/v1/query",
                params={"query": promql, "time": f"{at:.3f}"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as e:
            raise MetricsError(
                f"cannot reach Prometheus at {self.url} ({type(e).__name__}: {e}); check "
                "--prometheus-url (e.g. `kubectl -n monitoring port-forward "
                "svc/prometheus-operated 9090`), or leave it out to judge from the inference "
                "log only"
            ) from e
        try:
            doc = response.json()
        except ValueError as e:
            raise MetricsError(
                f"{self.url}/api/v1/query answered {response.status_code} with no JSON: "
                f"{response.text[:200]!r}; is --prometheus-url the Prometheus server?"
            ) from e
        if doc.get("status") != "success":
            raise MetricsError(
                f"Prometheus rejected {promql!r}: {doc.get('errorType')}: {doc.get('error')}"
            )
        data = doc.get("data") or {}
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            raw = result[1]
        elif kind == "vector":
            if not result:
                return None
            if len(result) > 1:
                raise MetricsError(
                    f"{promql!r} returned {len(result)} series, expected one; narrow it with "
                    "matchers (e.g. the namespace)"
                )
            raw = result[0]["value"][1]
        else:
            raise MetricsError(f"{promql!r}: unexpected result type {kind!r}")
        value = float(raw)
        return None if math.isnan(value) else value

    def collect(
        self, model: str, stable_version: str, canary_version: str, start: float, end: float
    ) -> dict[str, VersionMetrics]:
        """Query both versions' numbers over ``[start, end]``, evaluated at ``end``."""
        client = self._client or httpx.Client()
        try:
            out = {}
            for role, version in (("stable", stable_version), ("canary", canary_version)):
                values = {
                    name: self.query(client, promql, end)
                    for name, promql in promql_queries(
                        model, version, end - start, self.matchers
                    ).items()
                }
                out[role] = VersionMetrics(
                    requests=round(values["requests"] or 0),
                    errors_5xx=round(values["errors_5xx"] or 0),
                    errors_connection=None,
                    client_errors_4xx=round(values["client_errors_4xx"] or 0),
                    latency_p50_ms=values["latency_p50_ms"],
                    latency_p99_ms=values["latency_p99_ms"],
                    source=self.description,
                )
            return out
        finally:
            if self._client is None:
                client.close()
