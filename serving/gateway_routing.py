"""Weighted routing between a stable and a canary backend (pure logic, no framework).

The routing state is one immutable :class:`RoutingTable` (stable, canary, canary percent).
Changing weights, promoting or rolling back replaces the whole table in one assignment, so a
request sees either the old table or the new one, never a mix. Everything runs on the gateway's
single event loop: :meth:`Router.choose` picks a backend *and* counts the request as in flight
on it without awaiting in between, so :meth:`Backend.drain` (wait until a backend that left the
table has finished its last request) can never miss a request that was routed to it.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from serving.gateway_stats import BackendStats

if TYPE_CHECKING:
    from serving.gateway_process import ModelServerProcess

__all__ = ["CANARY", "STABLE", "Backend", "Router", "RoutingTable", "check_backend_url"]

STABLE = "stable"
CANARY = "canary"


@dataclass(eq=False)
class Backend:
    """One model server behind the gateway.

    Attributes:
        version: The model version it serves.
        url: Its base URL, e.g. ``http://127.0.0.1:43121``.
        stats: Its request statistics.
        process: The model-server process the gateway launched; None for a backend that was
            attached by URL (the gateway neither starts nor stops it).
        in_flight: Requests routed to it and not finished yet.
        closing: Set once it was drained: no request may be sent to it any more.
    """

    version: str
    url: str
    stats: BackendStats = field(default_factory=BackendStats)
    process: ModelServerProcess | None = None
    in_flight: int = 0
    closing: bool = False
    _idle: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def enter(self) -> None:
        """Count one more request in flight."""
        self.in_flight += 1
        self._idle.clear()

    def try_enter(self) -> bool:
        """Count one more request in flight unless the backend is closing; True if counted."""
        if self.closing:
            return False
        self.enter()
        return True

    def leave(self) -> None:
        """A request finished (answered, failed or cancelled)."""
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.in_flight = 0
            self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight, then mark the backend closing.

        Call it only after the backend left the routing table (nothing new is routed to it).

        Args:
            timeout: Seconds to wait at most.

        Returns:
            True if every request finished, False if some were still running at the timeout
            (the backend is marked closing anyway).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while self.in_flight > 0:
                await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
            return True
        except TimeoutError:
            return False
        finally:
            self.closing = True


@dataclass(frozen=True)
class RoutingTable:
    """Where requests go: the stable backend and, during a rollout, a canary with a share.

    Attributes:
        stable: Serves every request the canary does not.
        canary: The canary, or None.
        percent: The canary's share of scoring requests, 0..100.
    """

    stable: Backend
    canary: Backend | None = None
    percent: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.percent, bool) or not isinstance(self.percent, int):
            raise TypeError(f"percent must be an int, got {self.percent!r}")
        if not 0 <= self.percent <= 100:
            raise ValueError(f"percent must be within 0..100, got {self.percent}")
        if self.canary is None and self.percent:
            raise ValueError("percent must be 0 without a canary")
        if self.canary is self.stable:
            raise ValueError("the canary and the stable backend must differ")


class Router:
    """Picks the backend of each request by the canary's weight.

    Args:
        table: The first routing table.
        rng: Random source (seed it for reproducible routing).
    """

    def __init__(self, table: RoutingTable, rng: random.Random | None = None) -> None:
        self.table = table
        self._rng = rng or random.Random()

    def choose(self) -> tuple[Backend, str, RoutingTable]:
        """Pick a backend for one request and count it in flight there.

        Returns:
            The backend, its role (``stable`` or ``canary``) and the table it came from.
        """
        table = self.table
        canary = table.canary
        if (
            canary is not None
            and table.percent > 0
            and self._rng.random() * 100.0 < table.percent
            and canary.try_enter()
        ):
            return canary, CANARY, table
        table.stable.enter()
        return table.stable, STABLE, table

    def retry_target(self, failed: Backend, routed: RoutingTable) -> Backend | None:
        """Where to retry a request that failed on the canary, counted in flight there.

        The current stable backend; if that is the failed one (it was promoted while the
        request ran), the stable backend of the table the request was routed with, unless it
        was drained already.

        Args:
            failed: The backend that failed.
            routed: The table the request was routed with.

        Returns:
            The backend to retry on, or None when there is none.
        """
        for candidate in (self.table.stable, routed.stable):
            if candidate is not failed and candidate.try_enter():
                return candidate
        return None


def check_backend_url(url: str) -> str:
    """Validate the base URL of a running backend; returns it without a trailing slash.

    Raises:
        ValueError: not ``http(s)://host[:port][/prefix]``, or it has a query or fragment.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{url!r} is not a backend URL: give http://host:port of a running model server"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: a backend URL has no query or fragment")
    try:
        parts.port  # noqa: B018 - raises on an invalid port
    except ValueError as e:
        raise ValueError(f"{url!r}: {e}") from e
    return url.strip().rstrip("/")
