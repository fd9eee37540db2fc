"""Real processes for the gateway and rollout tests: the gateway, failing backends, clients."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from serving_helpers import ROOT, ServerProcess, free_port, later_transactions
from serving_helpers import instance as to_instance
from serving_helpers import tensors as to_tensors

from components.bundle import fetch_bundle, register_bundle
from components.store import LocalStore
from fraudops.local_processes import LocalProcess

MODEL = "fraud"
V1 = f"/v1/models/{MODEL}:predict"
V2 = f"/v2/models/{MODEL}/infer"


class GatewayProcess(ServerProcess):
    """``python -m serving.gateway --port <free port> <args>`` (stop, output: ServerProcess)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        argv = ["-m", "serving.gateway", "--port", str(self.http_port), *args]
        LocalProcess.__init__(self, argv, self.url + "/v2/health/ready", log, cwd=ROOT)


class FailingBackend:
    """A real HTTP server on loopback that answers every request with ``mode``.

    ``500`` and ``400`` answer that status with a JSON error; ``close`` reads the request and
    closes the connection without an answer.
    """

    def __init__(self, mode: str) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _fail(self) -> None:
                outer.hits += 1
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if mode == "close":
                    self.close_connection = True
                    return
                body = json.dumps({"error": f"failing backend ({mode})"}).encode()
                self.send_response(int(mode))
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _fail

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def register_copy(store: LocalStore, version: str, dest: Path) -> str:
    """Register the bundle of ``version`` once more (a new version with the same model)."""
    bundle = fetch_bundle(store, MODEL, version, dest)
    skip = {"name", "version", "created_at", "code_version", "files"}
    provenance = {k: v for k, v in bundle.manifest.items() if k not in skip}
    return register_bundle(store, MODEL, bundle.folder, {**provenance, "parent_version": version})


class Traffic:
    """Client threads scoring one transaction per request through the gateway until stopped.

    Every ``results`` entry is ``(sent_at, status or error text, x-fraudops-version,
    x-fraudops-retried-from, transaction id)``.
    """

    def __init__(
        self, url: str, rows: list[dict], threads: int = 1, per_second: float | None = None
    ) -> None:
        self.url = url
        self.rows = rows
        self.results: list[tuple[float, int | str, str, str, str]] = []
        self._next = 0
        # at most `per_second` requests a second in all: the rows then last a known time,
        # however fast this machine is (None: as fast as the gateway answers)
        self._gap = 0.0 if per_second is None else 1.0 / per_second
        self._due = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _take(self) -> tuple[int, dict] | None:
        with self._lock:
            if self._stop.is_set() or self._next >= len(self.rows):
                return None
            i = self._next
            self._next += 1
            due = self._due = max(self._due + self._gap, time.monotonic())
        if self._gap:
            self._stop.wait(max(0.0, due - time.monotonic()))
        return i, self.rows[i]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while (taken := self._take()) is not None:
                i, row = taken
                sent = time.time()
                try:
                    if i % 4 == 0:  # every fourth over V2
                        r = client.post(V2, json={"inputs": to_tensors([row])})
                    else:
                        r = client.post(V1, json={"instances": [row]})
                    outcome: int | str = r.status_code
                    version = r.headers.get("x-fraudops-version", "")
                    retried = r.headers.get("x-fraudops-retried-from", "")
                except httpx.HTTPError as e:
                    outcome, version, retried = f"{type(e).__name__}: {e}", "", ""
                with self._lock:
                    self.results.append((sent, outcome, version, retried, row["transaction_id"]))

    def wait_for(self, n: int, timeout: float = 120.0) -> None:
        """Block until ``n`` requests finished (polling the client's own results)."""
        deadline = time.monotonic() + timeout
        while len(self.results) < n:
            assert time.monotonic() < deadline, f"only {len(self.results)} of {n} requests done"
            if not any(t.is_alive() for t in self._threads):  # they may have just finished
                assert len(self.results) >= n, "the client threads ended early"
                return
            time.sleep(0.02)

    def stop(self) -> list[tuple[float, int | str, str, str, str]]:
        self._stop.set()
        for t in self._threads:
            t.join(120)
        return list(self.results)

    @staticmethod
    def failures(results) -> list:
        return [r for r in results if r[1] != 200]


def rows_after_training(n: int, seed: int, days: int = 2) -> list[dict]:
    """Transactions right after the training data, with ids unique to this call."""
    tag = uuid.uuid4().hex[:6]
    frame = later_transactions(n, seed=seed, days=days)
    rows = [to_instance(r) for r in frame.to_dict("records")]
    return [{**row, "transaction_id": f"{tag}-{row['transaction_id']}"} for row in rows]
