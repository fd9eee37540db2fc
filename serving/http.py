"""HTTP glue around KServe's FastAPI app: content types, size limits, error format, metrics.

:class:`ScoringMiddleware` (pure ASGI, on the scoring routes only: ``POST
/v1/models/<name>:predict`` and ``POST /v2/models/<name>[/versions/<v>]/infer``):

- refuses a content type the protocol cannot read with **415** (KServe would hand a
  ``text/plain`` body to the model as bytes) and treats a missing one as JSON;
- refuses bodies over ``max_body_bytes`` with **413** before anything parses them;
- answers every error in KServe's format ``{"error": "..."}``: request-decoding failures inside
  KServe that would otherwise surface as a 500 (e.g. a malformed binary V2 header) become 400;
- counts requests, latency and errors by kind (:mod:`serving.metrics`).
- hands plain-JSON scoring requests for the models in ``direct`` to
  :mod:`serving.direct_routes`, which answers them as KServe's routes would without FastAPI's
  per-request cost; everything else goes on to KServe's routes.

On every path (not only the scoring routes) it also answers for a model in ``served`` that is
not ready (its bundle failed to load; the server retries, see :mod:`serving.load_retry`): any
``/v1/models/<name>...`` or ``/v2/models/<name>...`` request gets KServe's **503**
``Model with name <name> is not ready.`` followed by the reason, and ``/v2/health/ready``
answers 503 too (the Open Inference Protocol's server readiness means every model is ready;
KServe's own endpoint answers 200 whatever the models' state, so a readiness probe on it
would send traffic to a server that cannot score). Those requests never reach KServe's
routes, whose ``get_model`` would call ``load()`` inside the request.

:func:`install` also registers handlers for :mod:`serving.errors` (413, 415, 400) and for
FastAPI's body validation (a V2 body that is not JSON or not an inference request: 400 instead
of FastAPI's 422 ``{"detail": ...}``) and for HTTP errors raised by FastAPI itself (e.g. a body
it cannot parse, an unknown path), so that every error reads ``{"error": "..."}``.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from kserve.errors import ModelNotReady
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import direct_routes
from serving.errors import ServingError, StateUnavailableError
from serving.metrics import ServingMetrics

log = logging.getLogger("fraudops.serving")

__all__ = ["RequestContext", "ScoringMiddleware", "current_request", "install"]

_V1 = re.compile(r"^/v1/models/([^/:]+):predict$")
_V2 = re.compile(r"^/v2/models/([^/]+)(?:/versions/[^/]+)?/infer$")
_MODEL_PATH = re.compile(r"^/v[12]/models/([^/:]+)")
SERVER_READY_PATH = "/v2/health/ready"
JSON_TYPES = frozenset({"application/json", "application/cloudevents+json"})
V2_BINARY = "application/octet-stream"


@dataclass
class RequestContext:
    """What the middleware and the model share about the request being served.

    Attributes:
        protocol: ``v1`` or ``v2``.
        model: Model name from the path.
        started: ``time.perf_counter()`` when the request arrived.
        version: Set by the model: the bundle version that scored.
        error_kind: Set by whoever refused the request (metric label).
        reached_model: Set by the model when its ``predict`` started.
    """

    protocol: str
    model: str
    started: float
    version: str = ""
    error_kind: str = ""
    reached_model: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


_CONTEXT: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "fraudops_request", default=None
)


def current_request() -> RequestContext | None:
    """The scoring request being served in this task, if any."""
    return _CONTEXT.get()


def _error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


_STATUS_KIND = {
    400: "invalid_input",
    404: "model_not_found",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    503: "not_ready",
}


class ScoringMiddleware:
    """Pure ASGI middleware for the scoring routes (see the module docstring).

    Args:
        app: The wrapped ASGI app.
        metrics: Where to count.
        versions: Model name -> bundle version, for metric labels of refused requests.
        max_body_bytes: Largest request body accepted.
        direct: Model name -> model whose plain-JSON requests :mod:`serving.direct_routes`
            answers instead of KServe's routes.
        handlers: The app's exception handlers, for those direct answers.
        served: Model name -> model (``ready``, ``not_ready_reason()``) whose readiness the
            middleware answers for while it is not ready (see the module docstring).
    """

    def __init__(
        self,
        app: Callable,
        metrics: ServingMetrics,
        versions: dict[str, str],
        max_body_bytes: int = 64 * 1024 * 1024,
        direct: dict[str, Any] | None = None,
        handlers: dict[Any, Callable] | None = None,
        served: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.served = served or {}
        self.metrics = metrics
        self.versions = versions
        self.max_body_bytes = max_body_bytes
        self.direct = direct or {}
        self.handlers = handlers if handlers is not None else {}
        self._series: dict[tuple, tuple] = {}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        match, protocol = None, "v1"
        if scope["method"] == "POST":
            match = _V1.match(path)
            if match is None:
                match, protocol = _V2.match(path), "v2"
        if match is None:  # not a scoring request
            not_ready = self._not_ready(path) if self.served else None
            if not_ready is None:
                await self.app(scope, receive, send)
            else:
                await _respond(send, 503, not_ready)
            return
        ctx = RequestContext(protocol, match.group(1), time.perf_counter())
        status = [0]

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = self._check_headers(scope, protocol)
            served = self.served.get(ctx.model)
            if refusal is None and served is not None and not served.ready:
                refusal = (503, "not_ready", _not_ready_message(ctx.model, served))
            if refusal is None:
                body, refusal = await self._read_body(receive)
            if refusal is not None:
                code, kind, message = refusal
                ctx.error_kind = kind
                await _respond(send_wrapper, code, message)
            else:
                replayed = False

                async def replay() -> dict:
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                token = _CONTEXT.set(ctx)
                try:
                    model = self.direct.get(ctx.model)
                    if not (
                        model is not None
                        and direct_routes.takes(scope)
                        and await direct_routes.serve(
                            model, protocol, scope, body, send_wrapper, self.handlers
                        )
                    ):
                        await self.app(scope, replay, send_wrapper)
                except Exception as e:
                    if status[0]:
                        raise  # the response started: nothing sensible to add
                    code, kind = (500, "internal") if ctx.reached_model else (400, "invalid_input")
                    ctx.error_kind = kind
                    prefix = "internal error" if code == 500 else "could not decode the request"
                    await _respond(send_wrapper, code, f"{prefix}: {type(e).__name__}: {e}")
                finally:
                    _CONTEXT.reset(token)
        finally:
            self._count(ctx, status[0] or 500)

    def _not_ready(self, path: str) -> str | None:
        """The 503 message for a request about a served model that is not ready, if any."""
        if path == SERVER_READY_PATH:
            waiting = [name for name, model in self.served.items() if not model.ready]
            if not waiting:
                return None
            return "Server is not ready: " + " ".join(
                _not_ready_message(name, self.served[name]) for name in waiting
            )
        match = _MODEL_PATH.match(path)
        model = self.served.get(match.group(1)) if match is not None else None
        if model is None or model.ready:
            return None
        return _not_ready_message(match.group(1), model)

    def _check_headers(self, scope: dict, protocol: str) -> tuple[int, str, str] | None:
        headers = scope["headers"]
        content_type = None
        length = None
        binary = False
        for key, value in headers:
            if key == b"content-type":
                content_type = value.decode("latin-1")
            elif key == b"content-length":
                length = value
            elif key == b"inference-header-content-length":
                binary = True
        if content_type is None or not content_type.strip():
            if not (protocol == "v2" and binary):
                # no content type: read as JSON (tritonclient's binary requests send none)
                scope["headers"] = [
                    *(h for h in headers if h[0] != b"content-type"),
                    (b"content-type", b"application/json"),
                ]
        else:
            base = content_type.split(";", 1)[0].strip().lower()
            ok = base in JSON_TYPES or (protocol == "v2" and base == V2_BINARY)
            if not ok:
                accepted = "application/json" + (
                    " or application/octet-stream (binary tensor extension)"
                    if protocol == "v2"
                    else ""
                )
                return (
                    415,
                    "unsupported_media_type",
                    f"unsupported content type {content_type!r}: a {protocol.upper()} scoring "
                    f"request must be {accepted}",
                )
            if base == "application/json" and content_type.strip().lower() != base:
                # KServe compares the header verbatim; drop parameters such as charset=utf-8
                scope["headers"] = [
                    *(h for h in headers if h[0] != b"content-type"),
                    (b"content-type", b"application/json"),
                ]
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return 400, "invalid_input", f"invalid Content-Length {length!r}"
            if size > self.max_body_bytes:
                return self._too_large(size)
        return None

    def _too_large(self, size: int | None) -> tuple[int, str, str]:
        what = f"{size:,} bytes" if size is not None else "the body"
        return (
            413,
            "payload_too_large",
            f"request body too large: {what}, the limit is {self.max_body_bytes:,} bytes "
            "(server option --max_body_bytes); split the batch",
        )

    async def _read_body(self, receive: Callable) -> tuple[bytes, tuple[int, str, str] | None]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", self._too_large(None)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return body, None

    def _count(self, ctx: RequestContext, code: int) -> None:
        m = self.metrics
        # label only served models: names from arbitrary paths would grow the series forever
        model = ctx.model if ctx.model in self.versions else "unknown"
        version = ctx.version or self.versions.get(model, "unknown")
        key = (model, version, ctx.protocol, code)
        series = self._series.get(key)
        if series is None:  # label lookups cost microseconds: resolve each series once
            series = self._series[key] = (
                m.requests.labels(model, version, ctx.protocol, str(code)),
                m.latency.labels(model, version, ctx.protocol),
            )
        series[0].inc()
        series[1].observe(time.perf_counter() - ctx.started)
        if code >= 400:
            kind = ctx.error_kind or _STATUS_KIND.get(code, "internal" if code >= 500 else "other")
            m.errors.labels(model, ctx.protocol, kind).inc()


def _not_ready_message(name: str, model: Any) -> str:
    # KServe's own message, then the model's reason (e.g. the file that failed its check)
    return str(ModelNotReady(name, model.not_ready_reason() or None))


async def _respond(send: Callable, status: int, message: str) -> None:
    body = _error_body(message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _serving_error(request: Request, exc: ServingError) -> ORJSONResponse:
    ctx = current_request()
    if ctx is not None:
        ctx.error_kind = exc.kind
    return ORJSONResponse(status_code=exc.status, content={"error": str(exc)})


_QUIET_SECONDS = 10.0
_last_state_warning = [0.0]


async def _state_unavailable(request: Request, exc: StateUnavailableError) -> ORJSONResponse:
    """503 with the reason; logged once every few seconds, not with a traceback a request."""
    ctx = current_request()
    if ctx is not None:
        ctx.error_kind = exc.kind
    now = time.monotonic()
    if now - _last_state_warning[0] >= _QUIET_SECONDS:
        _last_state_warning[0] = now
        log.warning("answering 503: %s (logged once every %g s)", exc, _QUIET_SECONDS)
    return ORJSONResponse(status_code=503, content={"error": str(exc)})


async def _http_error(request: Request, exc: StarletteHTTPException) -> ORJSONResponse:
    ctx = current_request()
    if ctx is not None and exc.status_code < 500:
        ctx.error_kind = _STATUS_KIND.get(exc.status_code, "invalid_input")
    return ORJSONResponse(
        status_code=exc.status_code, content={"error": str(exc.detail)}, headers=exc.headers
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> ORJSONResponse:
    problems = []
    for err in exc.errors()[:10]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "InferenceRequest")]
        if err.get("type") == "bytes_type":
            continue  # FastAPI also tried the raw-bytes alternative of the body
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "")
            # FastAPI's parser gives the character; pydantic's (serving.direct_routes) has the
            # line and column in its message
            at = f" at character {loc[-1]}" if loc else ""
            problems.append(f"the body is not valid JSON ({detail}{at})")
            continue
        where = ".".join(loc)
        problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    ctx = current_request()
    if ctx is not None:
        ctx.error_kind = "invalid_input"
    text = "; ".join(problems) or "the body is not a valid inference request"
    return ORJSONResponse(status_code=400, content={"error": f"invalid request: {text}"})


def install(
    app: FastAPI,
    metrics: ServingMetrics,
    versions: dict[str, str],
    max_body_bytes: int,
    direct: dict[str, Any] | None = None,
    served: dict[str, Any] | None = None,
) -> None:
    """Add the middleware and the error handlers to KServe's app (before the server starts).

    Args:
        app: KServe's FastAPI app.
        metrics: Where the middleware counts.
        versions: Model name -> bundle version, for metric labels.
        max_body_bytes: Largest request body accepted.
        direct: Models whose plain-JSON scoring requests skip FastAPI's route
            (:mod:`serving.direct_routes`); ``None``: KServe's routes answer everything.
        served: Models whose readiness the middleware answers for while they are not ready.
    """
    app.add_middleware(
        ScoringMiddleware,
        metrics=metrics,
        versions=versions,
        max_body_bytes=max_body_bytes,
        direct=direct,
        handlers=app.exception_handlers,  # the dict itself: KServe adds its handlers later
        served=served,
    )
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(StateUnavailableError, _state_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
