"""The audit log: every register, promote, rollback, drift decision, retrain and alert.

Each event is its own immutable object (``audit/<date>/<time>-<event>-<id>.json``), so the log is
append-only on any object store, including S3 which has no append.
"""

from __future__ import annotations

import getpass
import os
import uuid
from datetime import UTC, datetime
from typing import Any

from components.store import ObjectStore

__all__ = ["read_audit", "record_event"]

PREFIX = "audit"


def _actor() -> str:
    return os.environ.get("FRAUDOPS_ACTOR") or f"{getpass.getuser()}@{os.uname().nodename}"


def record_event(
    store: ObjectStore,
    event: str,
    inputs: dict[str, Any],
    outcome: dict[str, Any],
    actor: str | None = None,
) -> str:
    """Append one event to the audit log and return its key.

    Args:
        store: Where the log lives.
        event: What happened (``register``, ``promote``, ``rollback``, ``drift_decision``, ...).
        inputs: What the decision was based on (versions, metrics, thresholds).
        outcome: What was decided or done.
        actor: Who or what acted (default: ``$FRAUDOPS_ACTOR`` or user@host).
    """
    now = datetime.now(UTC)
    key = f"{PREFIX}/{now:%Y-%m-%d}/{now:%H%M%S%f}-{event}-{uuid.uuid4().hex[:8]}.json"
    store.put_json(
        key,
        {
            "time": now.isoformat(),
            "event": event,
            "actor": actor or _actor(),
            "inputs": inputs,
            "outcome": outcome,
        },
    )
    return key


def read_audit(store: ObjectStore, event: str | None = None) -> list[dict[str, Any]]:
    """All audit events (optionally of one kind), oldest first."""
    keys = [k for k in store.list(f"{PREFIX}/") if k.endswith(".json")]
    if event:
        keys = [k for k in keys if f"-{event}-" in k.rsplit("/", 1)[-1]]
    return [store.get_json(k) for k in sorted(keys)]
