"""Long-running local processes (the gateway, model servers) for the demo and the CLI."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from components.lifetime import child_env

__all__ = ["LocalProcess", "ProcessFailedError", "free_port", "start_redis_server"]


class ProcessFailedError(RuntimeError):
    """A local process exited or did not become ready; the message ends with its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (bound and released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalProcess:
    """``python <argv>``, its output in a log file, ready when a URL answers 200.

    Args:
        argv: Python's arguments, e.g. ``["-m", "serving.gateway", "--port", "8080"]``.
        ready_url: GET URL that answers 200 once the process serves.
        log: File receiving stdout and stderr.
        env: Extra environment variables.
        cwd: Working directory (default: this process').
    """

    def __init__(
        self,
        argv: Sequence[str],
        ready_url: str,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.ready_url = ready_url
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=cwd,
            env={**child_env(), **(env or {}), "PYTHONUNBUFFERED": "1"},  # dies with us
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll ``ready_url`` until it answers 200.

        Raises:
            ProcessFailedError: the process exited, or was not ready within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ProcessFailedError(
                    f"{self.describe()} exited with code {self.proc.returncode}; "
                    f"its log ({self.log}) ends with:\n{self.tail()}"
                )
            try:
                if httpx.get(self.ready_url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ProcessFailedError(
            f"{self.describe()} was not ready after {timeout:.0f} s; its log ({self.log}) "
            f"ends with:\n{self.tail()}"
        )

    def describe(self) -> str:
        """The command line, for messages."""
        return " ".join(self.proc.args[1:])  # type: ignore[index]

    def tail(self, chars: int = 4000) -> str:
        """The end of the process' log."""
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the servers flush their inference logs), SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        return self.proc.returncode


def start_redis_server(port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A ``redis-server`` on 127.0.0.1 without persistence, for tests and benchmarks.

    Args:
        port: The port (default: a free one).

    Returns:
        The process (terminate it when done) and its URL, ``redis://127.0.0.1:<port>/0``.

    Raises:
        FileNotFoundError: no ``redis-server`` on the PATH (``apt-get install redis-server``).
        ProcessFailedError: it did not answer ``PING`` within 10 s.
    """
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError(
            "redis-server is not installed: `apt-get install redis-server` (make test does)"
        )
    port = port or free_port()
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_env(),  # dies with us
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return process, url
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise ProcessFailedError(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
    finally:
        client.close()
