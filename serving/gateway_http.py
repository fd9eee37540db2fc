"""The local canary gateway's HTTP face (FastAPI): the InferenceService's paths and /rollout.

Model paths (for the gateway's one model name; another name gets KServe's 404):

- ``POST /v1/models/<name>:predict``, ``POST /v2/models/<name>[/versions/<v>]/infer``: scoring,
  routed by weight, retried on stable when the canary fails (:mod:`serving.gateway_control`);
- ``GET /v1/models/<name>``, ``GET /v2/models/<name>``, ``GET /v2/models/<name>/ready``,
  ``GET /v2/health/ready``: forwarded to the stable backend;
- ``GET /v2/health/live``: the gateway itself.

Every forwarded answer is the backend's status, headers and body unchanged, plus
``x-fraudops-version`` (the version that answered), ``x-fraudops-backend`` (``stable`` or
``canary``) and, after a retry, ``x-fraudops-retried-from`` (the canary version that failed).

Admin API (JSON; in a cluster the Kubernetes API plays this part, see docs/rollout-local.md):
``GET /rollout``, ``POST /rollout/canary``, ``POST /rollout/traffic``, ``POST /rollout/promote``,
``POST /rollout/rollback``, ``GET /rollout/stats?since=``, ``GET /rollout/backends``; and
``GET /metrics`` (Prometheus). Errors read ``{"error": "..."}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.gateway_config import GatewayConfig, RolloutError
from serving.gateway_control import Forwarded, Gateway
from serving.gateway_process import LaunchError
from serving.gateway_proxy import ProxyRequest
from serving.gateway_routing import check_backend_url
from serving.gateway_stats import Outcome

__all__ = ["CanaryBody", "TrafficBody", "create_gateway_app"]

log = logging.getLogger("fraudops.gateway")

Percent = Annotated[
    int, Field(strict=True, ge=0, le=100, description="Share of scoring requests, 0..100.")
]


class CanaryBody(BaseModel):
    """``POST /rollout/canary``: launch a server for ``version``, or attach the one at ``url``."""

    model_config = ConfigDict(extra="forbid")

    version: Annotated[
        str,
        Field(
            min_length=1,
            max_length=128,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
            description="A version or alias of the model (launch), or the attached backend's "
            "version label.",
        ),
    ]
    percent: Percent
    url: Annotated[str | None, Field(description="Base URL of a running backend to attach.")] = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_backend_url(value)


class TrafficBody(BaseModel):
    """``POST /rollout/traffic``: the canary's new share."""

    model_config = ConfigDict(extra="forbid")

    percent: Percent


def create_gateway_app(config: GatewayConfig, gateway: Gateway | None = None) -> FastAPI:
    """The gateway's ASGI app; its lifespan launches the stable server and stops every server.

    Args:
        config: The gateway's settings.
        gateway: The controller (default: a new one for ``config``).

    Returns:
        The FastAPI app (serve it with uvicorn, lifespan on).
    """
    gw = gateway or Gateway(config)
    app = FastAPI(
        title="fraudops local canary gateway",
        description=__doc__,
        redoc_url=None,
    )
    app.add_middleware(_Lifespan, gateway=gw)
    app.state.gateway = gw
    _add_model_routes(app, gw, config.max_body_bytes)
    _add_admin_routes(app, gw)
    app.add_exception_handler(RolloutError, _rollout_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app


class _Lifespan:
    """ASGI lifespan of the gateway: start launches the stable server, shutdown stops them all.

    Handled here rather than by a lifespan context manager so that a stable server that does
    not start is reported in one clear line (with its log), not as a traceback.
    """

    def __init__(self, app: Callable, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.gateway.start()
                except (LaunchError, RolloutError) as e:
                    await self.gateway.close()
                    text = f"the gateway cannot start: {e}"
                    await send({"type": "lifespan.startup.failed", "message": text})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


# -- model paths --------------------------------------------------------------------------


def _add_model_routes(app: FastAPI, gw: Gateway, max_body_bytes: int) -> None:
    name = gw.name

    async def proxy(request: Request, model: str, scoring: bool) -> Response:
        if model != name:
            return _error(404, f"Model with name {model} does not exist.")
        body = await _read_body(request, max_body_bytes) if scoring else b""
        if body is None:
            return _error(
                413,
                f"request body too large: the gateway buffers at most {max_body_bytes:,} "
                "bytes (option --max_body_bytes); split the batch",
            )
        scope = request.scope
        forwarded = await gw.forward(
            ProxyRequest(
                scope["method"],
                scope["path"],
                scope["query_string"],
                tuple(scope["headers"]),
                body,
            ),
            scoring=scoring,
        )
        return _answer(forwarded)

    async def v1_predict(request: Request, model: str) -> Response:
        return await proxy(request, model, True)

    async def v2_infer(request: Request, model: str) -> Response:
        return await proxy(request, model, True)

    async def v2_infer_version(request: Request, model: str, version: str) -> Response:
        return await proxy(request, model, True)

    async def metadata(request: Request, model: str) -> Response:
        return await proxy(request, model, False)

    async def ready(request: Request) -> Response:
        return await proxy(request, name, False)

    async def live() -> dict[str, bool]:
        return {"live": True}

    doc = {"include_in_schema": True, "tags": ["inference (forwarded)"]}
    app.add_api_route("/v1/models/{model}:predict", v1_predict, methods=["POST"], **doc)
    app.add_api_route("/v2/models/{model}/infer", v2_infer, methods=["POST"], **doc)
    app.add_api_route(
        "/v2/models/{model}/versions/{version}/infer", v2_infer_version, methods=["POST"], **doc
    )
    app.add_api_route("/v1/models/{model}", metadata, methods=["GET"], **doc)
    app.add_api_route("/v2/models/{model}", metadata, methods=["GET"], **doc)
    app.add_api_route("/v2/models/{model}/ready", metadata, methods=["GET"], **doc)
    app.add_api_route("/v2/health/ready", ready, methods=["GET"], **doc)
    app.add_api_route("/v2/health/live", live, methods=["GET"], tags=["gateway"])


async def _read_body(request: Request, limit: int) -> bytes | None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(forwarded: Forwarded) -> Response:
    attempt = forwarded.attempt
    backend = forwarded.backend
    tags = [
        (b"x-fraudops-version", backend.version.encode()),
        (b"x-fraudops-backend", forwarded.role.encode()),
    ]
    if forwarded.retried_from:
        tags.append((b"x-fraudops-retried-from", forwarded.retried_from.encode()))
    if attempt.status is None:  # no answer from the backend: the gateway's own error
        status = 504 if attempt.outcome is Outcome.TIMEOUT else 502
        response = _error(
            status,
            f"the {forwarded.role} backend {backend.version} ({backend.url}) did not "
            f"answer: {attempt.error}",
        )
        response.raw_headers.extend(tags)
        return response
    response = Response(status_code=attempt.status)
    headers = [(b"content-length", str(len(attempt.body)).encode())]
    response.body = attempt.body
    response.raw_headers = [*headers, *attempt.headers, *tags]
    return response


# -- admin --------------------------------------------------------------------------------


def _add_admin_routes(app: FastAPI, gw: Gateway) -> None:
    tags = ["rollout (admin)"]

    @app.get("/rollout", tags=tags)
    async def rollout() -> dict[str, Any]:
        """The model, the stable backend, the canary and its share."""
        return gw.rollout()

    @app.post("/rollout/canary", tags=tags)
    async def canary(body: CanaryBody) -> dict[str, Any]:
        """Deploy a canary: launch a model server for a version, or attach a running one."""
        return await gw.add_canary(body.version, body.percent, body.url)

    @app.post("/rollout/traffic", tags=tags)
    async def traffic(body: TrafficBody) -> dict[str, Any]:
        """Set the canary's share of scoring requests."""
        return await gw.set_traffic(body.percent)

    @app.post("/rollout/promote", tags=tags)
    async def promote() -> dict[str, Any]:
        """The canary becomes stable at 100%; the old stable is drained and stopped."""
        return await gw.promote()

    @app.post("/rollout/rollback", tags=tags)
    async def rollback() -> dict[str, Any]:
        """The canary gets no more traffic, is drained and stopped."""
        return await gw.rollback()

    @app.get("/rollout/stats", tags=tags)
    async def stats(
        since: Annotated[
            float | None,
            Query(allow_inf_nan=False, description="Unix seconds: count requests finished since"),
        ] = None,
    ) -> dict[str, Any]:
        """Requests, errors and latency per backend since a time, and retries on stable."""
        return gw.stats(since)

    @app.get("/rollout/backends", tags=tags)
    async def backends() -> dict[str, Any]:
        """Every backend the gateway routed to: role, process, exit code, log file."""
        return gw.backend_list()

    @app.get("/metrics", tags=["gateway"])
    async def metrics() -> Response:
        """Prometheus metrics of the gateway."""
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# -- errors -------------------------------------------------------------------------------


def _error(status: int, message: str) -> Response:
    body = orjson.dumps({"error": message})
    return Response(body, status_code=status, media_type="application/json")


async def _rollout_error(request: Request, exc: RolloutError) -> Response:
    return _error(exc.status, str(exc))


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    response = _error(exc.status_code, str(exc.detail))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    problems = []
    status = 422
    for err in exc.errors()[:10]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query")]
        kind = err.get("type")
        if kind == "json_invalid":
            status = 400
            detail = (err.get("ctx") or {}).get("error", "")
            problems.append(f"the body is not valid JSON ({detail})")
            continue
        if kind == "model_attributes_type":
            status = 400
            problems.append("the body must be a JSON object sent as content-type: application/json")
            continue
        where = ".".join(loc) or "body"
        message = str(err.get("msg", "invalid"))
        if kind == "missing":
            problems.append(f"{where}: required")
        else:
            problems.append(f"{where}: {message} (got {err.get('input')!r})")
    text = "; ".join(problems) or "invalid request"
    return _error(status, f"invalid request: {text}")
