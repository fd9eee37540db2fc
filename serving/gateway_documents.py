"""The JSON documents of the gateway's admin API, built from its state (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from serving.gateway_routing import CANARY, STABLE, Backend, RoutingTable
from serving.gateway_stats import EventTimes

__all__ = ["backends_document", "rollout_document", "stats_document"]


def rollout_document(model: str, table: RoutingTable, updated_at: datetime) -> dict[str, Any]:
    """``GET /rollout``: ``{"model", "stable": {"version", "url"}, "canary": null |
    {"version", "url", "percent"}, "updated_at"}``."""
    canary = None
    if table.canary is not None:
        canary = {
            "version": table.canary.version,
            "url": table.canary.url,
            "percent": table.percent,
        }
    return {
        "model": model,
        "stable": {"version": table.stable.version, "url": table.stable.url},
        "canary": canary,
        "updated_at": updated_at.isoformat(),
    }


def stats_document(
    table: RoutingTable, retries: EventTimes, since: float | None, now: float
) -> dict[str, Any]:
    """``GET /rollout/stats``: the current stable and canary backends' numbers since ``since``.

    Args:
        table: The routing table (whose backends are reported).
        retries: When canary failures were retried on stable.
        since: Count requests finished at or after this Unix time (None: all).
        now: The current Unix time (reported, for the next window's ``since``).
    """
    canary = table.canary
    return {
        "stable": table.stable.stats.summary(table.stable.version, since),
        "canary": canary.stats.summary(canary.version, since) if canary else None,
        "retried_on_stable": retries.count(since),
        "now": now,
    }


def backends_document(
    model: str, table: RoutingTable, backends: Iterable[Backend]
) -> dict[str, Any]:
    """``GET /rollout/backends``: every backend, its role (stable, canary, retired), process,
    exit code, log file and request count."""
    out = []
    for b in backends:
        role = STABLE if b is table.stable else CANARY if b is table.canary else "retired"
        process = b.process
        out.append(
            {
                "version": b.version,
                "url": b.url,
                "role": role,
                "in_flight": b.in_flight,
                "launched": process is not None,
                "pid": process.pid if process else None,
                "running": process.returncode is None if process else None,
                "exit_code": process.returncode if process else None,
                "log": str(process.log_file) if process else None,
                "requests": b.stats.requests,
            }
        )
    return {"model": model, "backends": out}
