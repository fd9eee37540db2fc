"""Shared fixtures: small generated data sets, made once per test session."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.generator import GeneratorConfig, drift_period, generate_transactions
from fraudops import local_processes

SMALL = GeneratorConfig(n_customers=300, n_terminals=600, n_days=30, seed=11)


@pytest.fixture(scope="session")
def small_config() -> GeneratorConfig:
    return SMALL


@pytest.fixture(scope="session")
def small_frame() -> pd.DataFrame:
    """About 18k transactions over 30 days; treat as read-only (copy before changing)."""
    return generate_transactions(SMALL)


@pytest.fixture(scope="session")
def drifted_frame() -> pd.DataFrame:
    return generate_transactions(drift_period(SMALL, n_days=14))


def _creditcard_csv(path, n=200, seed=0) -> pd.DataFrame:
    """Write a file in the public credit-card layout: Time, V1..V28, Amount, Class."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"Time": np.sort(rng.integers(0, 172_800, n)).astype(float)})
    for i in range(1, 29):
        frame[f"V{i}"] = rng.normal(size=n)
    frame["Amount"] = rng.gamma(2, 40, n).round(2)
    frame["Class"] = (rng.random(n) < 0.02).astype(int)
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture
def creditcard_csv():
    """A writer of credit-card-layout CSV files: ``creditcard_csv(path, n=200)``."""
    return _creditcard_csv


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3-protocol server (moto's server mode) on 127.0.0.1, shared by the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_env(moto_endpoint: str) -> dict[str, str]:
    """KServe-style S3 variables pointing at the loopback moto server."""
    return {
        "S3_ENDPOINT": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_REGION": "us-east-1",
    }


def start_redis_server(port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A real ``redis-server`` on 127.0.0.1 without persistence (Debian's package, installed
    by ``make test``); skips the test with the reason when there is none."""
    try:
        return local_processes.start_redis_server(port)
    except FileNotFoundError as e:
        pytest.skip(f"{e}; or set REDIS_URL to a Redis to test against")


@pytest.fixture
def own_redis() -> Iterator[tuple[subprocess.Popen, str]]:
    """A ``redis-server`` for this test alone, to stop (SIGSTOP) or restart: its process and
    URL. Continued and terminated afterwards."""
    process, url = start_redis_server()
    yield process, url
    process.send_signal(signal.SIGCONT)
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis for the session: REDIS_URL when set, else a ``redis-server`` started on
    loopback. Tests clear only their own model's keys."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    process, url = start_redis_server()
    yield url
    process.terminate()
    process.wait(10)


def run_training_steps(folder: Path, data: Path, store: str, seed: int = 42) -> dict:
    """Run every pipeline step in-process (no kfp) and register ``fraud`` into ``store``."""
    from pipelines.inprocess import run_steps_in_process

    return run_steps_in_process(
        folder,
        data,
        store,
        "fraud",
        train={"seed": seed},
        threshold_policy="alert_budget:20",
        card_precision_k=50,
    )


@pytest.fixture(scope="session")
def training_steps():
    """``training_steps(folder, data_file, store_uri, seed=42)``: train and register in-process."""
    return run_training_steps


@pytest.fixture
def webhook_receiver(monkeypatch):
    """A loopback HTTP server collecting JSON POSTs; FRAUDOPS_ALERT_WEBHOOK_URL points at it."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("FRAUDOPS_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    yield received
    server.shutdown()
