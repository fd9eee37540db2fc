"""Stand-ins for the rollout tests, each a real HTTP server on 127.0.0.1.

None of these is the real thing: :class:`FakeGateway` implements the admin API contract of the
local gateway (``serving/gateway.py``) so the controller can be tested on its own;
:class:`FakeKubeAPI` answers the few Kubernetes API calls the cluster target makes (no cluster
runs here), applying JSON merge patches as the API server does; :class:`FakePrometheus` answers
``/api/v1/query`` in the Prometheus API's shape (no Prometheus runs here).
:class:`SimulatedTraffic` is the clients: on a simulated clock, it sends requests through the
current split and writes the inference-log records the model servers would write.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from components.inference_log import make_record, write_batch
from components.store import ObjectStore

Reply = tuple[int, Any]
THRESHOLD = 0.2  # the simulated models' decision threshold


class LoopbackJSONServer:
    """A threaded HTTP server on 127.0.0.1 whose replies come from ``handle``.

    ``handle(method, path, query, headers, body)`` returns ``(status, document)``; every
    request is kept in ``requests`` as ``(method, path, query, content_type, body)``.
    """

    def __init__(self, handle: Callable[[str, str, dict, dict, Any], Reply]) -> None:
        self.handle = handle
        self.requests: list[tuple[str, str, dict, str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                content_type = self.headers.get("Content-Type", "")
                owner.requests.append((self.command, url.path, query, content_type, body))
                status, doc = owner.handle(self.command, url.path, query, dict(self.headers), body)
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeGateway:
    """The local gateway's admin API (``/rollout``), as documented, in memory. Not the gateway.

    Requests the simulated clients send are recorded with :meth:`record`, so that
    ``/rollout/stats`` counts them per version.
    """

    def __init__(self, model: str, stable: str) -> None:
        self.model = model
        self.stable = {"version": stable, "url": "http://127.0.0.1:9/stable"}
        self.canary: dict[str, Any] | None = None
        self.updated_at = "2026-11-28T00:00:00+00:00"
        self.sent: list[tuple[float, str, int, float]] = []  # time, version, status, latency
        self.lock = threading.Lock()
        self.server = LoopbackJSONServer(self._handle)
        self.url = self.server.url

    @property
    def posts(self) -> list[tuple[str, Any]]:
        """Every POST as (path, body), in order."""
        return [
            (path, body) for method, path, _, _, body in self.server.requests if method == "POST"
        ]

    def split(self) -> tuple[str, str | None, int]:
        """(stable version, canary version, canary percent) now."""
        with self.lock:
            if self.canary is None:
                return self.stable["version"], None, 0
            return self.stable["version"], self.canary["version"], self.canary["percent"]

    def record(self, time: float, version: str, status: int, latency_ms: float) -> None:
        with self.lock:
            self.sent.append((time, version, status, latency_ms))

    def document(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "stable": dict(self.stable),
            "canary": dict(self.canary) if self.canary else None,
            "updated_at": self.updated_at,
        }

    def _stats(self, version: str | None, since: float) -> dict[str, Any] | None:
        if version is None:
            return None
        rows = [r for r in self.sent if r[1] == version and r[0] >= since]
        latency = np.array([r[3] for r in rows if r[2] < 500]) if rows else np.empty(0)
        return {
            "version": version,
            "requests": len(rows),
            "errors_5xx": sum(1 for r in rows if r[2] >= 500),
            "errors_connection": 0,
            "client_errors_4xx": sum(1 for r in rows if 400 <= r[2] < 500),
            "latency_ms_p50": float(np.quantile(latency, 0.5)) if len(latency) else None,
            "latency_ms_p99": float(np.quantile(latency, 0.99)) if len(latency) else None,
        }

    def _handle(self, method: str, path: str, query: dict, headers: dict, body: Any) -> Reply:
        with self.lock:
            if (method, path) == ("GET", "/rollout"):
                return 200, self.document()
            if (method, path) == ("GET", "/rollout/stats"):
                since = float(query["since"])
                canary = self.canary["version"] if self.canary else None
                return 200, {
                    "stable": self._stats(self.stable["version"], since),
                    "canary": self._stats(canary, since),
                    "retried_on_stable": 0,
                    "now": max((r[0] for r in self.sent), default=since),
                }
            if (method, path) == ("POST", "/rollout/canary"):
                if self.canary is not None:
                    return 409, {"error": f"canary {self.canary['version']} exists"}
                self.canary = {
                    "version": body["version"],
                    "url": body.get("url", "http://127.0.0.1:9/canary"),
                    "percent": body["percent"],
                }
                return 200, self.document()
            if method == "POST" and path in (
                "/rollout/traffic",
                "/rollout/promote",
                "/rollout/rollback",
            ):
                if self.canary is None:
                    return 409, {"error": "no canary"}
                if path == "/rollout/traffic":
                    self.canary["percent"] = body["percent"]
                elif path == "/rollout/promote":
                    self.stable = {"version": self.canary["version"], "url": self.canary["url"]}
                    self.canary = None
                else:
                    self.canary = None
                return 200, self.document()
            return 404, {"error": f"no route {method} {path}"}

    def close(self) -> None:
        self.server.close()


class SimulatedTraffic:
    """Clients at ``rate`` requests/s through the current split, on a simulated clock.

    Pass :meth:`clock` and :meth:`sleep` to ``run_rollout``: each sleep sends the requests of
    that period through ``split()``, writes the inference-log records the model servers
    would write, and tells ``record`` (the fake gateway) about each request.

    Args:
        store: Where the inference log goes.
        model: Model name.
        split: ``() -> (stable, canary or None, canary percent)``.
        behaviour: Per version: ``good`` (beta(1, 15) scores, ~3.5% alerts), ``alerts``
            (flags almost everything) or ``errors`` (answers 500, logs nothing).
        rate: Requests per simulated second.
        record: Called with (time, version, status, latency ms) per request.
    """

    def __init__(
        self,
        store: ObjectStore,
        model: str,
        split: Callable[[], tuple[str, str | None, int]],
        behaviour: dict[str, str] | None = None,
        rate: float = 100.0,
        record: Callable[[float, str, int, float], None] | None = None,
        t0: float = 1_800_000_000.0,
        seed: int = 0,
    ) -> None:
        self.store = store
        self.model = model
        self.split = split
        self.behaviour = behaviour or {}
        self.rate = rate
        self.record = record
        self.now = t0
        self.rng = np.random.default_rng(seed)
        self.sleeps: list[float] = []
        self.count = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        n = round(seconds * self.rate)
        stable, canary, percent = self.split()
        to_canary = self.rng.random(n) < percent / 100
        records = []
        for i in range(n):
            at = self.now + i / self.rate
            version = canary if to_canary[i] and canary else stable
            kind = self.behaviour.get(version, "good")
            latency = float(self.rng.lognormal(1.0, 0.3))
            if kind == "errors":
                if self.record:
                    self.record(at, version, 500, latency)
                continue
            score = float(self.rng.beta(8, 2) if kind == "alerts" else self.rng.beta(1, 15))
            self.count += 1
            records.append(
                make_record(
                    model=self.model,
                    version=version,
                    transaction={"transaction_id": f"t{self.count}", "amount": 25.0},
                    score=score,
                    decision="alert" if score >= THRESHOLD else "pass",
                    latency_ms=latency,
                    time=datetime.fromtimestamp(at, UTC),
                )
            )
            if self.record:
                self.record(at, version, 200, latency)
        if records:
            write_batch(self.store, records)
        self.now += seconds


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the Kubernetes API server applies it to custom objects."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeKubeAPI:
    """The Kubernetes API for one InferenceService and KServe's ConfigMap. Not a cluster.

    GET and merge-PATCH of the InferenceService (409 on a stale ``resourceVersion``, 415 on
    any other patch type, ``generation`` bumped on spec changes), and GET of
    ``kserve/inferenceservice-config`` when ``cluster_default`` is set. With ``auto_ready``,
    every spec change is "reconciled" at once: a new Knative revision, ready. ``after_get`` is
    called with the object after each GET (to simulate a concurrent edit).
    """

    def __init__(
        self,
        isvc: dict[str, Any],
        cluster_default: str | None = None,
        auto_ready: bool = True,
    ) -> None:
        self.isvc = copy.deepcopy(isvc)
        self.isvc["metadata"].setdefault("resourceVersion", "1")
        self.isvc["metadata"].setdefault("generation", 1)
        self.cluster_default = cluster_default
        self.auto_ready = auto_ready
        self.revision = 1
        self.after_get: Callable[[dict[str, Any]], None] | None = None
        self.lock = threading.Lock()
        self.server = LoopbackJSONServer(self._handle)
        self.url = self.server.url
        meta = self.isvc["metadata"]
        self.path = (
            f"/apis/serving.kserve.io/v1beta1/namespaces/{meta['namespace']}/"
            f"inferenceservices/{meta['name']}"
        )

    @property
    def patches(self) -> list[tuple[str, str, Any]]:
        """Every PATCH as (path, content type, body), in order."""
        return [(p, ct, b) for m, p, _, ct, b in self.server.requests if m == "PATCH"]

    def _reconcile(self) -> None:
        meta, status = self.isvc["metadata"], self.isvc.setdefault("status", {})
        self.revision += 1
        name = f"{meta['name']}-predictor-{self.revision:05d}"
        predictor = status.setdefault("components", {}).setdefault("predictor", {})
        predictor["latestCreatedRevision"] = name
        if self.auto_ready:
            predictor["latestReadyRevision"] = name
            status["observedGeneration"] = meta["generation"]
            status["conditions"] = [{"type": "Ready", "status": "True"}]

    def _handle(self, method: str, path: str, query: dict, headers: dict, body: Any) -> Reply:
        with self.lock:
            if path == "/api/v1/namespaces/kserve/configmaps/inferenceservice-config":
                if self.cluster_default is None:
                    return 404, {"kind": "Status", "code": 404, "message": "not found"}
                deploy = json.dumps({"defaultDeploymentMode": self.cluster_default})
                return 200, {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
                    "data": {"deploy": deploy},
                }
            if path != self.path:
                return 404, {"kind": "Status", "code": 404, "message": f"{path} not found"}
            if method == "GET":
                served = copy.deepcopy(self.isvc)
                if self.after_get is not None:  # e.g. someone else edits it meanwhile
                    self.after_get(self.isvc)
                return 200, served
            if method != "PATCH":
                return 405, {"kind": "Status", "code": 405, "message": method}
            if headers.get("Content-Type") != "application/merge-patch+json":
                return 415, {"kind": "Status", "code": 415, "message": "unsupported patch"}
            meta = self.isvc["metadata"]
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != meta["resourceVersion"]:
                return 409, {
                    "kind": "Status",
                    "code": 409,
                    "reason": "Conflict",
                    "message": "the object has been modified; please apply your changes to "
                    "the latest version and try again",
                }
            before = copy.deepcopy(self.isvc.get("spec"))
            self.isvc = merge_patch(self.isvc, body)
            meta = self.isvc["metadata"]
            meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
            if self.isvc.get("spec") != before:
                meta["generation"] += 1
                self._reconcile()
            return 200, self.isvc

    def close(self) -> None:
        self.server.close()


class FakePrometheus:
    """``/api/v1/query`` in the Prometheus API's shape. Not Prometheus.

    ``answer(query) -> (status, document)`` decides each reply; :meth:`vector` and
    :meth:`error` build the usual documents.
    """

    def __init__(self, answer: Callable[[str], Reply]) -> None:
        self.answer = answer
        self.server = LoopbackJSONServer(self._handle)
        self.url = self.server.url

    @staticmethod
    def vector(*values: float | str, at: float = 1_800_000_000.0) -> Reply:
        result = [{"metric": {}, "value": [at, str(v)]} for v in values]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    @staticmethod
    def error(kind: str, message: str) -> Reply:
        return 400, {"status": "error", "errorType": kind, "error": message}

    @property
    def queries(self) -> list[dict]:
        return [q for _, _, q, _, _ in self.server.requests]

    def _handle(self, method: str, path: str, query: dict, headers: dict, body: Any) -> Reply:
        if path != "/api/v1/query":
            return 404, {"status": "error", "errorType": "not_found", "error": path}
        return self.answer(query["query"])

    def close(self) -> None:
        self.server.close()
