"""``python -m serving.log_sink``: KServe logger CloudEvents -> inference-log records in the store.

In a cluster the InferenceService's logger (``spec.predictor.logger: {mode: all, url: ...}``)
POSTs every request and every successful response as separate binary-mode CloudEvents
(``ce-id``, ``ce-type`` = ``org.kubeflow.serving.inference.request``/``.response``,
``ce-source``, ``ce-specversion``, ``ce-time``, and the extensions ``ce-inferenceservicename``,
``ce-namespace``, ``ce-component``, ``ce-endpoint``, ``ce-metadata``). This sink pairs the two
events of a request by ``ce-id`` (in either order), decodes them with the model server's own
decoders and builds the records with the same function as the server
(:func:`serving.model.columns_for`, as records by ``components.inference_log.block_records``),
so both paths write identical records. Records go through the same bounded background writer
(:class:`serving.log_writer.InferenceLogWriter`), flushed on shutdown.

A request without a response (the model answered an error: the logger only sends responses
with status 200) or a response without a request expires after ``--pair_timeout`` seconds and
is counted (``fraudops_log_sink_events_total{outcome="expired"}``). Events of one request must
reach the same sink replica: run one replica (it is light), or shard by ``ce-id``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from cloudevents.http import from_http
from kserve.protocol.infer_type import InferRequest, InferResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from components.inference_log import REQUEST_TYPE, RESPONSE_TYPE, block_records
from components.schema import FIELDS
from components.store import ObjectStore
from serving.errors import ServingError
from serving.log_writer import InferenceLogWriter, LogEntry, prebuilt
from serving.metrics import ServingMetrics
from serving.scorer import Scored
from serving.transactions import TransactionBatch, TransactionSchema, from_instances, from_tensors

__all__ = ["EventPairer", "create_app", "decode_body", "main", "records_from_pair"]

log = logging.getLogger("fraudops.serving.sink")
_CANONICAL = {f.name for f in FIELDS}


class SinkError(ValueError):
    """An event the sink cannot use (answered with 400)."""


@dataclass
class Event:
    """One CloudEvent from the KServe logger."""

    id: str
    type: str
    source: str
    time: datetime | None
    content_type: str
    body: bytes
    service: str


def parse_event(headers: dict[str, str], body: bytes) -> Event:
    """A binary- or structured-mode CloudEvent as the KServe logger sends it.

    Raises:
        SinkError: required attributes are missing or the type is not an inference event.
    """
    try:
        event = from_http(headers, body, data_unmarshaller=lambda x: x)
    except Exception as e:
        raise SinkError(f"not a CloudEvent: {e}") from e
    kind = event["type"]
    if kind not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise SinkError(f"unexpected CloudEvent type {kind!r}; expected {REQUEST_TYPE}/.response")
    data = event.data
    if isinstance(data, str):
        data = data.encode()
    elif isinstance(data, dict | list):
        data = orjson.dumps(data)
    elif data is None:
        data = b""
    when = None
    raw_time = event.get("time")
    if raw_time:
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(str(raw_time))
    return Event(
        id=str(event["id"]),
        type=kind,
        source=str(event["source"]),
        time=when,
        content_type=str(event.get("datacontenttype") or headers.get("content-type") or ""),
        body=bytes(data),
        service=str(event.get("inferenceservicename") or ""),
    )


def _json_length(body: bytes) -> int:
    """Length of the JSON header of a V2 binary-extension body."""
    text = body.decode("latin-1")  # one char per byte: the index is a byte offset
    _, end = json.JSONDecoder().raw_decode(text)
    return end


def decode_body(body: bytes, kind: str) -> tuple[str, Any, dict]:
    """``("v1", dict)``, ``("v2", InferRequest)`` or ``("v2", InferResponse)`` of a body.

    The third item is the body's JSON (for V2 binary bodies, the JSON header).

    Raises:
        SinkError: neither V1 nor V2 JSON (or V2 binary extension).
    """
    try:
        parsed = orjson.loads(body)
        json_length = None
    except orjson.JSONDecodeError:
        try:
            json_length = _json_length(body)
            parsed = orjson.loads(body[:json_length])
        except (ValueError, orjson.JSONDecodeError) as e:
            raise SinkError(f"{kind} body is neither JSON nor a V2 binary body: {e}") from e
    if not isinstance(parsed, dict):
        raise SinkError(f"{kind} body is not a JSON object")
    try:
        length = json_length if json_length is not None else len(body)
        if kind == REQUEST_TYPE and "inputs" in parsed:
            return "v2", InferRequest.from_bytes(body, length, ""), parsed
        if kind == RESPONSE_TYPE and "outputs" in parsed:
            return "v2", InferResponse.from_bytes(body, length), parsed
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise SinkError(f"malformed V2 {kind.rsplit('.', 1)[-1]}: {e!r}") from e
    return "v1", parsed, parsed


def _lenient_schema(names: set[str]) -> TransactionSchema:
    extras = tuple(sorted(n for n in names if n not in _CANONICAL))
    return TransactionSchema(
        extra_numeric=extras, max_batch=sys.maxsize, max_clock_skew_seconds=float("inf")
    )


def _request_batch(protocol: str, payload: Any) -> TransactionBatch:
    if protocol == "v2":
        schema = _lenient_schema({t.name for t in payload.inputs})
        return from_tensors(payload.inputs, schema)
    instances = payload.get("instances") if isinstance(payload, dict) else None
    names = set().union(*(i for i in instances if isinstance(i, dict))) if instances else set()
    return from_instances(payload, _lenient_schema(names))


def _response_scores(
    protocol: str, payload: Any, parsed: dict
) -> tuple[str, str, list[str] | None, Scored]:
    ids: list[str] | None = None  # a V2 request may have asked for other outputs only
    if protocol == "v2":
        out = {o.name: o for o in payload.outputs}
        if "transaction_id" in out:
            ids = [_text(t) for t in out["transaction_id"].as_numpy().ravel().tolist()]
        score = np.asarray(out["score"].as_numpy(), dtype=np.float64).ravel()
        decisions = [_text(d) for d in out["decision"].as_numpy().ravel().tolist()]
        reasons: list[list[str]] = [[] for _ in score]
        if "reasons" in out:
            grid = out["reasons"].as_numpy().reshape(len(score), -1).tolist()
            reasons = [[_text(c) for c in row if _text(c)] for row in grid]
        model = parsed.get("model_name") or payload.model_name
        version = parsed.get("model_version") or ""
    else:
        predictions = payload["predictions"]
        ids = [p["transaction_id"] for p in predictions]
        score = np.array([p["score"] for p in predictions], dtype=np.float64)
        decisions = [p["decision"] for p in predictions]
        reasons = [list(p.get("reasons") or []) for p in predictions]
        model = payload.get("model_name", "")
        version = payload.get("model_version") or (
            predictions[0].get("model_version", "") if predictions else ""
        )
    if len(decisions) != len(score):
        raise SinkError(f"{len(score)} score(s) but {len(decisions)} decision(s)")
    unknown = sorted({repr(d) for d in decisions} - {"'alert'", "'pass'"})
    if unknown:
        raise SinkError(f"decision must be 'alert' or 'pass', got {', '.join(unknown[:3])}")
    for what, value in (("model_name", model), ("model_version", version)):
        if not isinstance(value, str):
            raise SinkError(f"{what} must be a string, got {type(value).__name__}")
    alert = np.array([d == "alert" for d in decisions], dtype=bool)
    scored = Scored(score, alert, reasons, np.zeros((len(score), 0), np.float32))
    return model, version, ids, scored


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def records_from_pair(request: Event, response: Event) -> list[dict[str, Any]]:
    """The inference-log records of one request/response pair.

    Raises:
        SinkError: a body cannot be decoded or the two do not match.
    """
    from serving.model import columns_for

    protocol, req, _ = decode_body(request.body, REQUEST_TYPE)
    _, res, parsed = decode_body(response.body, RESPONSE_TYPE)
    try:
        batch = _request_batch(protocol, req)
        model, version, ids, scored = _response_scores(protocol, res, parsed)
    except ServingError as e:
        raise SinkError(f"request {request.id}: {e}") from e
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise SinkError(f"response {response.id}: not a fraudops response ({e!r})") from e
    if len(scored.score) != len(batch) or (ids is not None and len(ids) != len(batch)):
        raise SinkError(
            f"{request.id}: the request has {len(batch)} transaction(s), the response "
            f"{len(scored.score)}"
        )
    pairs = zip(batch.transaction_id, ids or batch.transaction_id, strict=True)
    mismatch = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
    if mismatch is not None:
        raise SinkError(
            f"{request.id}: transaction {mismatch} is {batch.transaction_id[mismatch]!r} in the "
            f"request but {ids[mismatch]!r} in the response: not a pair"
        )
    model = model or response.service or request.service
    if not model or not version:
        raise SinkError(f"response {response.id}: no model name or model version in it")
    latency = None
    if request.time is not None and response.time is not None:
        latency = (response.time - request.time).total_seconds() * 1000.0
    block = columns_for(
        batch,
        scored,
        model,
        version,
        protocol,
        request.id,
        latency,
        response.source,
        response.time or datetime.now(UTC),
    )
    return block_records(block)


class EventPairer:
    """Request and response events waiting for each other, by ``ce-id``, with a time limit.

    At most ``max_pending`` events wait: beyond that the oldest is dropped and counted
    (``evicted``), so a flood of events that never pair cannot exhaust the sink's memory.
    """

    def __init__(
        self,
        timeout: float = 300.0,
        metrics: ServingMetrics | None = None,
        max_pending: int = 100_000,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.timeout = timeout
        self.metrics = metrics
        self.max_pending = max_pending
        self._pending: OrderedDict[tuple[str, str], tuple[float, Event]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, event: Event) -> tuple[Event, Event] | None:
        """Store ``event``; return ``(request, response)`` once both are here."""
        self.expire()
        other_type = RESPONSE_TYPE if event.type == REQUEST_TYPE else REQUEST_TYPE
        other = self._pending.pop((event.id, other_type), None)
        if other is None:
            key = (event.id, event.type)
            if key in self._pending:
                self._count(event.type, "duplicate")
            elif len(self._pending) >= self.max_pending:
                _, (_, oldest) = self._pending.popitem(last=False)
                self._count(oldest.type, "evicted")
                log.warning(
                    "log sink: %d events wait for their pair; dropped the oldest (%s %s)",
                    self.max_pending,
                    oldest.type,
                    oldest.id,
                )
            self._pending[key] = (time.monotonic(), event)
            self._count(event.type, "waiting")
            self._gauge()
            return None
        self._gauge()
        pair = (event, other[1]) if event.type == REQUEST_TYPE else (other[1], event)
        return pair

    def expire(self, now: float | None = None) -> int:
        """Drop (and count) events older than the timeout."""
        now = time.monotonic() if now is None else now
        dropped = 0
        while self._pending:
            arrived, event = next(iter(self._pending.values()))
            if now - arrived < self.timeout:
                break
            self._pending.popitem(last=False)
            self._count(event.type, "expired")
            log.warning("log sink: %s %s never got its pair; dropped", event.type, event.id)
            dropped += 1
        if dropped:
            self._gauge()
        return dropped

    def _count(self, kind: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.sink_events.labels(kind.rsplit(".", 1)[-1], outcome).inc()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.sink_pending.set(len(self._pending))


def create_app(
    store: ObjectStore,
    *,
    metrics: ServingMetrics | None = None,
    pair_timeout: float = 300.0,
    writer: InferenceLogWriter | None = None,
    max_pending: int = 100_000,
    max_body_bytes: int = 64 * 1024 * 1024,
) -> Starlette:
    """The sink's ASGI app: ``POST /`` (events), ``GET /healthz``, ``GET /metrics``.

    Args:
        store: Where the records go (unless ``writer`` is given).
        metrics: Prometheus metrics to update.
        pair_timeout: Seconds an event waits for its pair.
        writer: The log writer (default: one for ``store``).
        max_pending: Most events waiting for their pair (see :class:`EventPairer`).
        max_body_bytes: Largest event body; a larger one is answered 413 unread.
    """
    from prometheus_client import REGISTRY, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    writer = writer or InferenceLogWriter(store, metrics=metrics)
    pairer = EventPairer(pair_timeout, metrics, max_pending)

    def refuse(status: int, message: str) -> Response:
        if metrics is not None:
            metrics.sink_events.labels("unknown", "invalid").inc()
        return JSONResponse({"error": message}, status_code=status)

    async def receive(request: Request) -> Response:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return refuse(413, f"event body larger than {max_body_bytes:,} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            event = parse_event(headers, body)
            pair = pairer.add(event)
            if pair is None:
                return JSONResponse({"status": "waiting", "id": event.id}, status_code=202)
            records = records_from_pair(*pair)
        except SinkError as e:
            return refuse(400, str(e))
        writer.submit(LogEntry(len(records), prebuilt, (records,)))
        pairer._count(event.type, "paired")
        return JSONResponse({"status": "paired", "id": event.id, "records": len(records)})

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "pending": len(pairer), "queued": writer.queued})

    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        writer.start()
        try:
            yield
        finally:
            pairer.expire(now=float("inf"))  # nothing will pair any more: count them
            writer.close()

    app = Starlette(
        routes=[
            Route("/", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.pairer = pairer
    app.state.writer = writer
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sink with uvicorn until SIGTERM; queued records are written before exiting."""
    import uvicorn

    from components.store import StoreError, open_store

    parser = argparse.ArgumentParser(
        prog="python -m serving.log_sink",
        description="Receive KServe logger CloudEvents and write fraudops inference-log records.",
    )
    parser.add_argument("--store", required=True, help="Store URI (file://, path, s3://...).")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--pair_timeout", type=float, default=300.0, help="Seconds an event waits for its pair."
    )
    parser.add_argument("--flush_interval", type=float, default=5.0)
    parser.add_argument("--flush_records", type=int, default=20_000)
    parser.add_argument("--max_records", type=int, default=200_000)
    parser.add_argument(
        "--max_pending", type=int, default=100_000, help="Most events waiting for their pair."
    )
    parser.add_argument(
        "--max_body_bytes", type=int, default=64 * 1024 * 1024, help="Largest event body."
    )
    args = parser.parse_args(argv)
    for name in ("max_pending", "max_body_bytes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        store = open_store(args.store)
    except StoreError as e:
        log.error("%s", e)
        return 2
    metrics = ServingMetrics()
    writer = InferenceLogWriter(
        store,
        max_records=args.max_records,
        flush_records=args.flush_records,
        flush_interval=args.flush_interval,
        metrics=metrics,
    )
    app = create_app(
        store,
        metrics=metrics,
        pair_timeout=args.pair_timeout,
        writer=writer,
        max_pending=args.max_pending,
        max_body_bytes=args.max_body_bytes,
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT (lifespan: the writer flushes), then
    # re-raises the signal to the previous handler: make that one a no-op so we exit with 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
