"""Settings and errors of the local canary gateway."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serving.source import BundleSource, parse_model_uri

__all__ = ["GatewayConfig", "RolloutError"]


@dataclass(frozen=True)
class GatewayConfig:
    """Settings of a local gateway.

    Attributes:
        model_uri: ``<store>#<name>[:<version|alias>]``: the model, the store its versions
            come from and the stable version (an alias is resolved once, at start).
        host: Address the gateway binds to (admin endpoints included: keep it on loopback).
        port: Its port.
        server_args: Extra arguments for every model server it launches.
        log_dir: Where the model servers' logs go (default: a new temporary folder).
        ready_timeout: Seconds a launched model server may take to become ready.
        drain_timeout: Seconds to wait for a leaving backend's requests.
        stop_timeout: Seconds a model server may take to exit after SIGTERM.
        backend_timeout: Seconds a backend may take to answer one request.
        max_body_bytes: Largest request body the gateway buffers (it must, to retry).
        stats_window: Requests per backend kept for windowed statistics.
        access_logging: Uvicorn's per-request access log.
        seed: Seed of the routing choice (None: random).
    """

    model_uri: str
    host: str = "127.0.0.1"
    port: int = 8080
    server_args: tuple[str, ...] = ()
    log_dir: Path | None = None
    ready_timeout: float = 120.0
    drain_timeout: float = 60.0
    stop_timeout: float = 30.0
    backend_timeout: float = 30.0
    max_body_bytes: int = 64 * 1024 * 1024
    stats_window: int = 100_000
    access_logging: bool = True
    seed: int | None = None

    def source(self) -> BundleSource:
        """The parsed ``model_uri``.

        Raises:
            ValueError: not a model in a store.
        """
        if "#" not in self.model_uri:
            raise ValueError(
                f"--model_uri {self.model_uri!r}: the gateway launches model servers for "
                "versions of a model in a store: give <store uri>#<name>[:<version|alias>], "
                "e.g. .fraudops/store#fraud-detector:champion"
            )
        return parse_model_uri(self.model_uri)


class RolloutError(Exception):
    """A rollout operation refused or failed; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
