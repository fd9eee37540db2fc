"""The local canary gateway's controller: backends, rollout operations, forwarding with retry.

:class:`Gateway` owns the routing table, the model-server processes and the statistics; the
HTTP layer (:mod:`serving.gateway_http`) only translates requests into calls of its methods.

Forwarding: a scoring request goes to the backend :class:`~serving.gateway_routing.Router`
picks. When the canary answers 5xx, fails to connect, drops the connection or times out, the
request is sent once more to the stable backend and the client gets the stable answer; the
canary failure is counted (stats and metrics) so that the analysis sees it while the client
does not. A 4xx is the client's mistake and passes through as it is. Retrying a scoring request
means the stable server scores that transaction too: its online feature state (and its
inference log) records it, and the canary's may have recorded it as well if the failure came
after scoring. Metadata and readiness requests always go to the stable backend.

Rollout operations (:meth:`Gateway.add_canary`, :meth:`~Gateway.set_traffic`,
:meth:`~Gateway.promote`, :meth:`~Gateway.rollback`) run one at a time. Promote and rollback
take the leaving backend out of the routing table first, wait for the requests already routed
to it (drain) and only then stop its process with SIGTERM, so that no request is dropped and its
inference log is flushed before they return.
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from components.bundle import BundleError, resolve
from components.store import StoreError
from serving.gateway_config import GatewayConfig, RolloutError
from serving.gateway_documents import backends_document, rollout_document, stats_document
from serving.gateway_metrics import GatewayMetrics
from serving.gateway_process import LaunchError, ModelServerProcess
from serving.gateway_proxy import Attempt, ProxyRequest, send
from serving.gateway_routing import CANARY, STABLE, Backend, Router, RoutingTable, check_backend_url
from serving.gateway_stats import BackendStats, EventTimes

__all__ = ["Forwarded", "Gateway"]

log = logging.getLogger("fraudops.gateway")


@dataclass(frozen=True)
class Forwarded:
    """The answer for the client and who gave it.

    Attributes:
        attempt: The attempt whose answer the client gets.
        backend: Who answered.
        role: ``stable`` or ``canary`` (the role when the request was routed).
        retried_from: The canary version whose failure was retried on stable, if any.
    """

    attempt: Attempt
    backend: Backend
    role: str
    retried_from: str | None = None


class Gateway:
    """The controller of one local gateway (see the module docstring).

    Args:
        config: Its settings.
        metrics: Its Prometheus metrics (default: new ones in their own registry).
    """

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics | None = None) -> None:
        self.config = config
        self.source = config.source()
        self.name: str = self.source.name  # type: ignore[assignment]
        self.metrics = metrics or GatewayMetrics(self.name)
        self.retries = EventTimes(config.stats_window)
        self.updated_at = datetime.now(UTC)
        self.backends: list[Backend] = []
        """Every backend this gateway routed to, oldest first."""
        self._router: Router | None = None
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._launched: list[ModelServerProcess] = []
        self._log_dir = config.log_dir
        self._seq = 0

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def router(self) -> Router:
        """The router (after :meth:`start`)."""
        if self._router is None:
            raise RuntimeError("the gateway is not started")
        return self._router

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client to the backends (after :meth:`start`)."""
        if self._client is None:
            raise RuntimeError("the gateway is not started")
        return self._client

    async def start(self) -> None:
        """Launch the stable model server and wait until it is ready.

        Raises:
            LaunchError: it exited or was not ready in time (the process is stopped).
            RolloutError: the stable version cannot be resolved.
        """
        c = self.config
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(c.backend_timeout, connect=5.0),
            limits=httpx.Limits(
                max_connections=256, max_keepalive_connections=64, keepalive_expiry=2.0
            ),
            trust_env=False,  # never send loopback traffic through an environment proxy
            follow_redirects=False,
        )
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="fraudops-gateway-"))
        version = await self._resolve(self.source.ref, "--model_uri")
        stable = await self._launch(version)
        self._router = Router(RoutingTable(stable), random.Random(c.seed))
        self.backends.append(stable)
        self._changed()
        log.info("gateway for %s: stable %s at %s", self.name, version, stable.url)

    async def close(self) -> None:
        """Stop every model server this gateway launched (SIGTERM) and close the client."""
        running = [p for p in self._launched if p.returncode is None]
        await asyncio.gather(*(p.stop(self.config.stop_timeout) for p in running))
        if self._client is not None:
            await self._client.aclose()

    # -- documents ---------------------------------------------------------------------

    def rollout(self) -> dict[str, Any]:
        """The ``GET /rollout`` document."""
        return rollout_document(self.name, self.router.table, self.updated_at)

    def stats(self, since: float | None = None) -> dict[str, Any]:
        """The ``GET /rollout/stats`` document for requests finished at or after ``since``."""
        return stats_document(self.router.table, self.retries, since, time.time())

    def backend_list(self) -> dict[str, Any]:
        """The ``GET /rollout/backends`` document: every backend, its role and its process."""
        return backends_document(self.name, self.router.table, self.backends)

    # -- rollout operations ------------------------------------------------------------

    async def add_canary(self, version: str, percent: int, url: str | None = None) -> dict:
        """Launch a model server for ``version`` (or attach the one at ``url``) as the canary.

        Args:
            version: A version or alias of the model (resolved in the store) when launching;
                the label of the attached backend otherwise.
            percent: Its first share of scoring requests.
            url: Base URL of an already-running backend to attach instead of launching one.

        Returns:
            The rollout document.

        Raises:
            RolloutError: 409 a canary exists; 422 bad input; 502/504 the server did not
                become ready (it is stopped: no canary is left behind).
        """
        _check_percent(percent)
        async with self._lock:
            self._no_canary_yet()
            stable = self.router.table.stable
            if url is None:
                version = await self._resolve(version)
            if version == stable.version:
                raise RolloutError(
                    422, f"version: {version} is the stable version; deploy another as canary"
                )
            if url is not None:
                try:
                    url = check_backend_url(url)
                except ValueError as e:
                    raise RolloutError(422, f"url: {e}") from e
                backend = Backend(version, url, BackendStats(self.config.stats_window))
            else:
                try:
                    backend = await self._launch(version)
                except LaunchError as e:
                    raise RolloutError(e.status, f"canary not deployed: {e}") from e
            self._set(RoutingTable(stable, backend, percent))
            self.backends.append(backend)
            log.info("canary %s at %s with %d%%", version, backend.url, percent)
            return self.rollout()

    async def set_traffic(self, percent: int) -> dict[str, Any]:
        """Give the canary ``percent`` of the scoring requests (409 without a canary)."""
        _check_percent(percent)
        async with self._lock:
            table = self._with_canary()
            self._set(RoutingTable(table.stable, table.canary, percent))
            log.info("canary %s now at %d%%", table.canary.version, percent)  # type: ignore[union-attr]
            return self.rollout()

    async def promote(self) -> dict[str, Any]:
        """The canary becomes the stable backend at 100%; the old stable is drained and stopped."""
        async with self._lock:
            table = self._with_canary()
            assert table.canary is not None
            self._set(RoutingTable(table.canary))
            log.info("promoted %s; retiring %s", table.canary.version, table.stable.version)
            await self._retire(table.stable)
            return self.rollout()

    async def rollback(self) -> dict[str, Any]:
        """The canary gets no more requests, is drained and stopped (or detached)."""
        async with self._lock:
            table = self._with_canary()
            assert table.canary is not None
            self._set(RoutingTable(table.stable))
            log.info("rolled back %s", table.canary.version)
            await self._retire(table.canary)
            return self.rollout()

    # -- forwarding --------------------------------------------------------------------

    async def forward(self, request: ProxyRequest, scoring: bool = True) -> Forwarded:
        """Send a client's request to a backend (scoring: by weight, with the canary retry).

        Args:
            request: The client's request.
            scoring: A scoring request (routed by weight, counted in the stats); otherwise it
                goes to the stable backend and is not counted.

        Returns:
            The answer for the client and who gave it.
        """
        router = self.router
        if scoring:
            backend, role, table = router.choose()
        else:
            table = router.table
            backend, role = table.stable, STABLE
            backend.enter()
        attempt = await self._attempt(backend, role, request, scoring)
        if role != CANARY or not attempt.outcome.failed:
            return Forwarded(attempt, backend, role)
        target = router.retry_target(backend, table)
        if target is None:
            return Forwarded(attempt, backend, role)
        self.retries.add(attempt.finished_at)
        self.metrics.retried(backend.version)
        retry = await self._attempt(target, STABLE, request, scoring)
        return Forwarded(retry, target, STABLE, retried_from=backend.version)

    async def _attempt(
        self,
        backend: Backend,
        role: str,
        request: ProxyRequest,
        scoring: bool,
    ) -> Attempt:
        """Send to a backend the request already counted in flight there; count the outcome."""
        gauge = self.metrics.in_flight.labels(self.name, backend.version)
        gauge.inc()
        try:
            attempt = await send(self.client, backend.url, request)
        finally:
            backend.leave()
            gauge.dec()
        if scoring:
            backend.stats.record(attempt.finished_at, attempt.seconds * 1000.0, attempt.outcome)
            self.metrics.observe(backend.version, role, attempt.outcome, attempt.seconds)
        return attempt

    # -- internals ---------------------------------------------------------------------

    async def _resolve(self, ref: str, field: str = "version") -> str:
        store = self.source.store()
        assert store is not None
        try:
            return await asyncio.to_thread(resolve, store, self.name, ref)
        except BundleError as e:
            raise RolloutError(422, f"{field}: {e}") from e
        except StoreError as e:
            raise RolloutError(502, f"the model store cannot be read: {e}") from e

    async def _launch(self, version: str) -> Backend:
        self._seq += 1
        assert self._log_dir is not None
        log_file = self._log_dir / f"{self.name}-{version}-{self._seq}.log"
        process = ModelServerProcess(
            f"{self.source.store_uri}#{self.name}:{version}",
            log_file,
            self.config.server_args,
        )
        self._launched.append(process)
        try:
            await process.wait_ready(self.client, self.config.ready_timeout)
        except BaseException:
            await process.stop(self.config.stop_timeout)
            raise
        return Backend(version, process.url, BackendStats(self.config.stats_window), process)

    async def _retire(self, backend: Backend) -> None:
        if not await backend.drain(self.config.drain_timeout):
            log.warning(
                "%s still had %d request(s) in flight after %g s; stopping it anyway",
                backend.version,
                backend.in_flight,
                self.config.drain_timeout,
            )
        if backend.process is not None:
            code = await backend.process.stop(self.config.stop_timeout)
            if code != 0:
                log.warning("the model server of %s exited with code %s", backend.version, code)

    def _no_canary_yet(self) -> None:
        canary = self.router.table.canary
        if canary is not None:
            raise RolloutError(
                409,
                f"a canary ({canary.version}) is already deployed: promote or roll it back "
                "before deploying another",
            )

    def _with_canary(self) -> RoutingTable:
        table = self.router.table
        if table.canary is None:
            raise RolloutError(409, "no canary is deployed: POST /rollout/canary first")
        return table

    def _set(self, table: RoutingTable) -> None:
        self.router.table = table  # one assignment: each request sees the old or the new table
        self.metrics.set_canary_percent(table.percent)
        self._changed()

    def _changed(self) -> None:
        self.updated_at = datetime.now(UTC)


def _check_percent(percent: int) -> None:
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise RolloutError(422, f"percent: must be an integer within 0..100, got {percent!r}")
