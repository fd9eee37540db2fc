"""The inference log: one record per scored transaction, shared by serving and monitoring.

Records carry the CloudEvents attributes KServe's logger sends (``id``, ``specversion``, ``type``,
``source``, ``time``) plus the model name and version, the transaction's fields, the score, the
decision, the reason codes and the latency. They are stored as newline-delimited JSON batches,
partitioned by date and model version::

    inference-log/<model>/<version>/date=YYYY-MM-DD/<HHMMSSffffff>-<batch id>.jsonl

Each batch is one immutable object written atomically, so a reader never sees half a batch. The
drift job, the canary analysis and label feedback all read this one format with
:func:`read_records`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from components.store import ObjectStore

__all__ = [
    "PREFIX",
    "REQUEST_TYPE",
    "RESPONSE_TYPE",
    "batch_key",
    "make_record",
    "read_records",
    "write_batch",
]

PREFIX = "inference-log"
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


def make_record(
    *,
    model: str,
    version: str,
    transaction: dict[str, Any],
    score: float,
    decision: str,
    reasons: list[str] | None = None,
    latency_ms: float | None = None,
    event_id: str | None = None,
    source: str = "fraudops-serving",
    protocol: str = "v1",
    time: datetime | None = None,
    features: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One inference-log record (a CloudEvents-shaped dict).

    Args:
        model: Model name.
        version: Bundle version that scored.
        transaction: The transaction's fields as received (JSON-serialisable).
        score: Fraud score.
        decision: ``alert`` or ``pass``.
        reasons: Reason codes.
        latency_ms: Server-side latency of the request, in milliseconds.
        event_id: The CloudEvent id (KServe's request id); a new one when None.
        source: CloudEvent source (the server's URL or name).
        protocol: ``v1`` or ``v2``.
        time: When it was scored (default now, UTC).
        features: Engineered features, when the writer has them (drift on features).
    """
    record = {
        "id": event_id or uuid.uuid4().hex,
        "specversion": "1.0",
        "type": RESPONSE_TYPE,
        "source": source,
        "time": (time or datetime.now(UTC)).isoformat(),
        "model": model,
        "version": version,
        "protocol": protocol,
        "transaction": transaction,
        "score": float(score),
        "decision": decision,
        "reasons": reasons or [],
        "latency_ms": latency_ms,
    }
    if features is not None:
        record["features"] = features
    return record


def batch_key(model: str, version: str, when: datetime | None = None) -> str:
    """The store key of a new batch for ``model``/``version`` written ``when``."""
    when = when or datetime.now(UTC)
    return (
        f"{PREFIX}/{model}/{version}/date={when:%Y-%m-%d}/"
        f"{when:%H%M%S%f}-{uuid.uuid4().hex[:8]}.jsonl"
    )


def write_batch(store: ObjectStore, records: Iterable[dict[str, Any]]) -> list[str]:
    """Write records as one batch object per (model, version, date); return the keys."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for record in records:
        day = record["time"][:10]
        groups.setdefault((record["model"], record["version"], day), []).append(record)
    keys = []
    for (model, version, day), group in groups.items():
        when = datetime.fromisoformat(group[0]["time"])
        key = batch_key(model, version, when)
        assert f"date={day}" in key
        body = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in group)
        store.put_bytes(key, body.encode(), content_type="application/x-ndjson")
        keys.append(key)
    return keys


def read_records(
    store: ObjectStore,
    model: str,
    version: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[dict[str, Any]]:
    """Records of ``model`` (one version or all) with ``start <= time < end``, oldest first."""
    prefix = f"{PREFIX}/{model}/" + (f"{version}/" if version else "")
    records: list[dict[str, Any]] = []
    for key in store.list(prefix):
        if not key.endswith(".jsonl"):
            continue
        day = key.split("date=")[-1][:10]
        if start and day < start.strftime("%Y-%m-%d"):
            continue
        if end and day > end.strftime("%Y-%m-%d"):
            continue
        for line in store.get_bytes(key).decode().splitlines():
            if not line:
                continue
            record = json.loads(line)
            when = datetime.fromisoformat(record["time"])
            if (start is None or when >= start) and (end is None or when < end):
                records.append(record)
    records.sort(key=lambda r: r["time"])
    return records
