"""The local rollout target: the gateway's admin API (``/rollout``), over HTTP.

The gateway (``serving/gateway.py``) sits in front of a stable and a canary model server and
splits requests by weight. This module is only its client, so monitoring never imports serving:

=============================  ==========================================================
``GET /rollout``               ``{"model", "stable": {"version", "url"}, "canary": null |
                               {"version", "url", "percent"}, "updated_at"}``
``POST /rollout/canary``       ``{"version", "percent"}`` (the gateway starts a server) or
                               ``{"version", "url", "percent"}``; 409 if a canary exists
``POST /rollout/traffic``      ``{"percent"}``; 409 without a canary
``POST /rollout/promote``      409 without a canary
``POST /rollout/rollback``     409 without a canary
``GET /rollout/stats?since=``  per-version requests, errors and latency since a Unix time
=============================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from monitoring.rollout_base import (
    Backend,
    CanaryExistsError,
    NoCanaryError,
    TargetState,
    TargetUnavailableError,
)

__all__ = ["LocalGatewayTarget", "state_from_document"]


def state_from_document(doc: dict[str, Any], target: str) -> TargetState:
    """Turn the gateway's ``GET /rollout`` document into a :class:`TargetState`."""
    canary = doc.get("canary")
    percent = int(canary["percent"]) if canary else 0
    return TargetState(
        target=target,
        model=doc.get("model"),
        stable=Backend(doc["stable"]["version"], doc["stable"].get("url"), 100 - percent),
        canary=Backend(canary["version"], canary.get("url"), percent) if canary else None,
        updated_at=doc.get("updated_at"),
        details={"mode": "local gateway"},
    )


class LocalGatewayTarget:
    """The local gateway as a rollout target.

    Args:
        url: The gateway's base URL (``http://127.0.0.1:8080``).
        timeout: Seconds per request; starting a canary waits for its model server, so that
            call gets ``start_timeout``.
        start_timeout: Seconds for ``POST /rollout/canary``.
        client: An httpx client to use (default: a new one per call).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        start_timeout: float = 180.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.start_timeout = start_timeout
        self._client = client
        self.description = f"gateway {self.url}"

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        client = self._client or httpx.Client()
        try:
            response = client.request(
                method,
                self.url + path,
                json=body,
                params=params,
                timeout=timeout or self.timeout,
            )
        except httpx.HTTPError as e:
            raise TargetUnavailableError(
                f"cannot reach the gateway at {self.url} ({type(e).__name__}: {e}); is it "
                "running? Start it with `python -m serving.gateway --model_uri "
                "<store>#<model>:champion --port <port>`, or pass its URL with --gateway"
            ) from e
        finally:
            if self._client is None:
                client.close()
        if response.status_code == 409:
            message = _message(response)
            if path == "/rollout/canary":
                raise CanaryExistsError(
                    f"the gateway already has a canary ({message}); finish that rollout first: "
                    "`fraudops rollout promote` or `fraudops rollout rollback`"
                )
            raise NoCanaryError(
                f"the gateway has no canary ({message}); start one with "
                "`fraudops rollout start --version V`"
            )
        if response.status_code >= 400:
            raise TargetUnavailableError(
                f"the gateway answered {method} {path} with {response.status_code}: "
                f"{_message(response)}"
            )
        return response.json()

    def _state(self, doc: dict[str, Any]) -> TargetState:
        return state_from_document(doc, self.description)

    def state(self) -> TargetState:
        """``GET /rollout``."""
        return self._state(self._request("GET", "/rollout"))

    def start(self, version: str, percent: int, url: str | None = None) -> TargetState:
        """``POST /rollout/canary``: the gateway starts a model server for ``version`` (or
        attaches the one running at ``url``) and gives it ``percent`` of the traffic."""
        body: dict[str, Any] = {"version": version, "percent": int(percent)}
        if url:
            body["url"] = url
        doc = self._request("POST", "/rollout/canary", body, timeout=self.start_timeout)
        return self._state(doc)

    def wait_ready(
        self, timeout: float, sleep: Callable[[float], None], clock: Callable[[], float]
    ) -> bool:
        """The gateway answers ``POST /rollout/canary`` once the canary serves: ready."""
        return self.state().canary is not None

    def set_traffic(self, percent: int) -> TargetState:
        """``POST /rollout/traffic``."""
        return self._state(self._request("POST", "/rollout/traffic", {"percent": int(percent)}))

    def promote(self) -> TargetState:
        """``POST /rollout/promote``."""
        return self._state(self._request("POST", "/rollout/promote"))

    def rollback(self) -> TargetState:
        """``POST /rollout/rollback``."""
        return self._state(self._request("POST", "/rollout/rollback"))

    def stats(self, since: float) -> dict[str, Any]:
        """``GET /rollout/stats?since=``: per-version counts and latency since ``since``."""
        return self._request("GET", "/rollout/stats", params={"since": f"{since:.3f}"})


def _message(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(doc, dict):
        return str(doc.get("error") or doc.get("detail") or doc.get("message") or doc)
    return str(doc)
