"""Replay transactions through a model server or the gateway, as a client would send them."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd

from components.schema import CONTEXT_FIELDS, FIELDS, LABEL_FIELDS

__all__ = ["ReplayStats", "replay", "to_instances", "v2_inputs"]

NUMERIC = {f.name for f in FIELDS if f.kind == "float"}
SENT_FIELDS = [f.name for f in FIELDS if f.name not in LABEL_FIELDS]


def to_instances(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """V1 transaction objects from canonical rows (labels dropped, missing context left out)."""
    columns = [c for c in SENT_FIELDS if c in frame.columns]
    out = frame[columns].copy()
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).dt.strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
    for name in columns:
        if name not in NUMERIC and name != "timestamp":
            out[name] = out[name].astype(object).where(out[name].notna(), None)
            out[name] = out[name].map(lambda v: v if v is None else str(v))
    records = out.to_dict(orient="records")
    optional = set(CONTEXT_FIELDS)
    return [
        {k: v for k, v in r.items() if not (k in optional and (v is None or v != v))}
        for r in records
    ]


def v2_inputs(instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open Inference Protocol input tensors, one per field, for V1 transaction objects."""
    names = [n for n in SENT_FIELDS if any(n in i for i in instances)]
    tensors = []
    for name in names:
        numeric = name in NUMERIC
        values = [i.get(name) for i in instances]
        if not numeric:
            values = ["" if v is None else v for v in values]
        tensors.append(
            {
                "name": name,
                "shape": [len(values)],
                "datatype": "FP64" if numeric else "BYTES",
                "data": values,
            }
        )
    return tensors


@dataclass
class ReplayStats:
    """What a replay sent and what came back."""

    transactions: int = 0
    requests: int = 0
    failed_requests: int = 0
    alerts: int = 0
    by_version: Counter = field(default_factory=Counter)
    by_protocol: Counter = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every request succeeded."""
        return self.failed_requests == 0


def replay(
    url: str,
    model: str,
    frame: pd.DataFrame,
    *,
    batch_size: int = 25,
    v2_every: int = 5,
    rate: float | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    timeout: float = 30.0,
) -> ReplayStats:
    """Send ``frame``'s transactions in time order, in batches, over V1 (and every n-th over V2).

    Args:
        url: Base URL of a model server or the gateway.
        model: Served model name.
        frame: Canonical transactions (labels are not sent).
        batch_size: Transactions per request.
        v2_every: Every n-th request goes over V2 (0: V1 only).
        rate: Requests per second at most (None: as fast as the server answers).
        stop: Stop early when set.
        progress: Called with the number of transactions of each answered request.
        timeout: Per-request timeout, seconds.

    Returns:
        Counts of requests, failures (non-2xx or transport errors) and alerts, per version.
    """
    stats = ReplayStats()
    frame = frame.sort_values("timestamp", kind="stable")
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=timeout) as client:
        for i, begin in enumerate(range(0, len(frame), batch_size)):
            if stop is not None and stop.is_set():
                break
            if rate:
                wait = started + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            instances = to_instances(frame.iloc[begin : begin + batch_size])
            protocol = "v2" if v2_every and i % v2_every == v2_every - 1 else "v1"
            try:
                version, alerts = _send(client, model, instances, protocol)
            except (httpx.HTTPError, ValueError) as e:
                stats.failed_requests += 1
                if len(stats.first_errors) < 5:
                    stats.first_errors.append(f"{protocol} request {i}: {e}")
                continue
            finally:
                stats.requests += 1
                stats.by_protocol[protocol] += 1
            stats.transactions += len(instances)
            stats.alerts += alerts
            stats.by_version[version] += len(instances)
            if progress:
                progress(len(instances))
    stats.seconds = time.perf_counter() - started
    return stats


def _send(
    client: httpx.Client, model: str, instances: list[dict[str, Any]], protocol: str
) -> tuple[str, int]:
    """One request; returns the version that answered and the number of alerts."""
    if protocol == "v1":
        response = client.post(f"/v1/models/{model}:predict", json={"instances": instances})
    else:
        response = client.post(f"/v2/models/{model}/infer", json={"inputs": v2_inputs(instances)})
    if response.status_code != 200:
        raise ValueError(f"HTTP {response.status_code}: {response.text[:300]}")
    body = response.json()
    if protocol == "v1":
        decisions = [p["decision"] for p in body["predictions"]]
    else:
        outputs = {o["name"]: o for o in body["outputs"]}
        decisions = outputs["decision"]["data"]
    version = response.headers.get("x-fraudops-version") or body.get("model_version") or "?"
    return version, sum(d == "alert" for d in decisions)
