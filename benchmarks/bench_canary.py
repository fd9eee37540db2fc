"""Canary analysis: judging one rollout step over 200k logged transactions per version."""

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.harness import Figure, timed

PER_VERSION = 300_000  # logged per version over 90 minutes; the step window holds two thirds
BATCH = 10_000
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
WINDOW = (T0 + timedelta(minutes=15), T0 + timedelta(minutes=75))
MODEL = "fraud"


def _prepare(root: Path) -> str:
    """Log 300k scored transactions per version (v1 stable, v2 canary) and 100k labels."""
    from components.inference_log import TX, batch_key
    from components.store import open_store

    store = open_store(str(root / "store"))
    rng = np.random.default_rng(7)
    seconds = 90 * 60
    for version, shape in (("v1", 15.0), ("v2", 14.0)):
        offsets = np.sort(rng.uniform(0, seconds, PER_VERSION))
        scores = rng.beta(1.0, shape, PER_VERSION)
        frame = pd.DataFrame(
            {
                "id": [f"e{version}{i}" for i in range(PER_VERSION)],
                "specversion": "1.0",
                "type": "org.kubeflow.serving.inference.response",
                "source": "bench",
                "time": pd.Timestamp(T0) + pd.to_timedelta(offsets, unit="s"),
                "model": MODEL,
                "version": version,
                "protocol": "v1",
                "score": scores,
                "decision": np.where(scores >= 0.2, "alert", "pass"),
                "latency_ms": rng.lognormal(1.2, 0.4, PER_VERSION),
                TX + "transaction_id": [f"{version}-{i}" for i in range(PER_VERSION)],
                TX + "amount": rng.gamma(2.0, 40.0, PER_VERSION).round(2),
                TX + "customer_id": rng.integers(0, 5_000, PER_VERSION).astype(str),
                TX + "terminal_id": rng.integers(0, 10_000, PER_VERSION).astype(str),
            }
        )
        for start in range(0, PER_VERSION, BATCH):  # one object per flush, as the servers write
            chunk = frame.iloc[start : start + BATCH]
            key = batch_key(MODEL, version, chunk["time"].iloc[0].to_pydatetime(warn=False))
            store.put_bytes(key, chunk.to_parquet(index=False))
    labelled = rng.choice(PER_VERSION, 50_000, replace=False)
    labels = pd.DataFrame(
        {
            "transaction_id": [f"{v}-{i}" for v in ("v1", "v2") for i in labelled],
            "is_fraud": (rng.random(100_000) < 0.02).astype(np.int8),
            "label_time": pd.Timestamp(T0),
        }
    )
    store.put_bytes(f"labels/{MODEL}/2026-11-21/000000-bench.parquet", labels.to_parquet())
    return store.uri


def _step(store_uri: str):
    """What the controller does after a window: labels, both versions' logs, the analysis."""
    from components.store import open_store
    from monitoring.canary import CanaryThresholds, VersionMetrics, analyse, read_windows
    from monitoring.labels import load_labels

    store = open_store(store_uri)
    metrics = {
        role: VersionMetrics(requests=200_000, errors_5xx=0, errors_connection=0, source="bench")
        for role in ("stable", "canary")
    }
    labels = load_labels(store, MODEL)
    stable, canary = read_windows(store, MODEL, "v1", "v2", *WINDOW, metrics, labels)
    return analyse(stable, canary, CanaryThresholds(min_labelled=100, min_labelled_frauds=5))


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        store_uri = _prepare(Path(tmp))
        seconds, verdict = timed(lambda: _step(store_uri), repeats=3)
        from components.store import open_store
        from monitoring.canary import analyse, read_windows
        from monitoring.labels import load_labels

        store = open_store(store_uri)
        stable, canary = read_windows(
            store, MODEL, "v1", "v2", *WINDOW, labels=load_labels(store, MODEL)
        )
        started = time.perf_counter()
        for _ in range(3):
            analyse(stable, canary)
        analyse_seconds = (time.perf_counter() - started) / 3
    rows = f"{stable.transactions:,} stable + {canary.transactions:,} canary"
    return [
        Figure(
            "one rollout step: labels + both windows from the log + analysis",
            seconds,
            "s",
            "<= 2 s",
            seconds <= 2,
            f"{rows} transactions in the window (of {2 * PER_VERSION:,} logged in "
            f"{2 * PER_VERSION // BATCH} Parquet batches), 100k labels; verdict "
            f"{verdict.status}; best of 3",
        ),
        Figure(
            "the analysis alone (9 checks)",
            analyse_seconds,
            "s",
            "<= 0.5 s",
            analyse_seconds <= 0.5,
            f"{rows} transactions, mean of 3",
        ),
    ]
