"""Model-server processes the local gateway launches and stops.

Each backend is ``python -m serving --model_uri <store>#<name>:<version>`` on a free loopback
port, its output in a log file. It is ready when ``/v2/health/ready`` answers 200 (KServe's
server answers only after the bundle is loaded); it is stopped with SIGTERM, on which it
finishes its requests and flushes its inference log, and killed only when it does not exit in
time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from components.lifetime import child_env

__all__ = ["LaunchError", "ModelServerProcess", "free_port"]

log = logging.getLogger("fraudops.gateway")

READY_PATH = "/v2/health/ready"


class LaunchError(Exception):
    """A model server exited or did not become ready; the message ends with its log.

    Attributes:
        status: The HTTP status the admin API answers with: 502 (exited) or 504 (not ready in
            time).
        log_tail: The end of the server's log.
    """

    def __init__(self, message: str, status: int, log_tail: str) -> None:
        super().__init__(message)
        self.status = status
        self.log_tail = log_tail


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (bound and released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ModelServerProcess:
    """One ``python -m serving`` process (started by the constructor).

    Args:
        model_uri: ``<store>#<name>:<version>``.
        log_file: Receives the server's stdout and stderr.
        server_args: Further arguments for the server (e.g. ``--reasons_for alerts``).
        host: The loopback address it binds to.
    """

    def __init__(
        self,
        model_uri: str,
        log_file: Path,
        server_args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.model_uri = model_uri
        self.log_file = log_file
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        command = [
            sys.executable,
            "-m",
            "serving",
            *server_args,  # ours come last: argparse keeps the last value of an option
            "--model_uri",
            model_uri,
            "--host",
            host,
            "--http_port",
            str(self.port),
            "--grpc_port",
            str(free_port(host)),
            "--load_retry_seconds",  # a bundle that cannot load fails the launch, with its log
            "0",
        ]
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self._out = log_file.open("wb")
        self.proc = subprocess.Popen(
            command,
            env={**child_env(), "PYTHONUNBUFFERED": "1"},  # the server dies with us
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        log.info("started %s (pid %d, log %s)", " ".join(command[1:]), self.pid, log_file)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, None while it runs."""
        return self.proc.poll()

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log."""
        if not self._out.closed:
            self._out.flush()
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError as e:
            return f"(log {self.log_file} unreadable: {e})"

    async def wait_ready(self, client: httpx.AsyncClient, timeout: float) -> None:
        """Poll the server's readiness until it answers 200.

        Args:
            client: HTTP client for the polls.
            timeout: Seconds to wait at most.

        Raises:
            LaunchError: it exited (status 502) or was not ready in time (504).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            code = self.returncode
            if code is not None:
                raise LaunchError(
                    f"the model server for {self.model_uri} exited with code {code} before "
                    f"it was ready; its log ({self.log_file}) ends with:\n{self.log_tail()}",
                    502,
                    self.log_tail(),
                )
            try:
                response = await client.get(self.url + READY_PATH, timeout=2.0)
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if loop.time() >= deadline:
                raise LaunchError(
                    f"the model server for {self.model_uri} was not ready after {timeout:g} s; "
                    f"its log ({self.log_file}) ends with:\n{self.log_tail()}",
                    504,
                    self.log_tail(),
                )
            await asyncio.sleep(0.1)

    async def stop(self, timeout: float) -> int:
        """SIGTERM (the server flushes its inference log), SIGKILL after ``timeout``.

        Returns:
            The exit code (negative: killed by that signal).
        """
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %g s after SIGTERM: killing it", self.url, timeout)
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)
        self._out.close()
        code = self.proc.returncode
        log.info(
            "stopped the model server for %s (pid %d): exit code %s", self.model_uri, self.pid, code
        )
        return code
