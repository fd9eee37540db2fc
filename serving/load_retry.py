"""Load the model in the background, and keep trying while it cannot be loaded.

A bundle that fails to load is often a matter of time: the object store is not up yet, the
version is still being uploaded, a Secret is being fixed. Exiting would leave the reason in
the log of a container in ``CrashLoopBackOff``, restarted at ever longer intervals; a store
that stalls would keep the server from even answering its liveness probe. So ``python -m
serving`` (``--load_retry_seconds`` > 0) starts the HTTP server at once and loads here:
``/v2/health/live`` answers 200 from the start, ``/v2/health/ready`` and every request about
the model answer 503 with the reason (:mod:`serving.http`) until a load succeeds, and a failed
load is tried again every interval (an attempt also includes the store client's own retries).
A bundle that fails its checksum stays unready, with the file named in every 503, until
someone repairs it.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

from kserve.errors import ModelMissingError

__all__ = ["MIN_INTERVAL", "LoadRetry", "check_interval"]

log = logging.getLogger("fraudops.serving")

MIN_INTERVAL = 0.1
MAX_INTERVAL = 86_400.0
QUIET_EVERY = 10
"""The same reason as the attempt before is logged again every this many attempts only."""


def check_interval(seconds: float) -> str | None:
    """What is wrong with ``--load_retry_seconds`` (``None``: fine; 0 means no retries)."""
    if seconds == 0:
        return None
    if not math.isfinite(seconds) or not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        return (
            f"--load_retry_seconds must be 0 (exit when the bundle cannot load) or between "
            f"{MIN_INTERVAL:g} and {MAX_INTERVAL:g} seconds, got {seconds}"
        )
    return None


class LoadRetry:
    """A daemon thread: ``model.load_bundle()`` at once, then every ``interval`` seconds
    until it works, the model is closed or :meth:`stop` is called.

    Args:
        model: The model (a ``FraudDetector``: ``load_bundle()``, ``closed``, ``name``).
        interval: Seconds between attempts (see :func:`check_interval`).
    """

    def __init__(self, model: Any, interval: float) -> None:
        problem = check_interval(interval) if interval else "the interval must be positive"
        if problem:
            raise ValueError(problem)
        self.model = model
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fraudops-load", daemon=True)

    def start(self) -> LoadRetry:
        """Start loading (returns ``self``)."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """No more attempts. Waits ``timeout`` s at most: an attempt under way may wait
        minutes on a store, and the model cleans up after a load that ends once it is closed.
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        model, last, attempt = self.model, None, 0
        while not self._stop.is_set() and not model.closed:
            attempt += 1
            try:
                model.load_bundle()
            except Exception as e:  # whatever the cause, the server stays up and says why
                if self._stop.is_set() or model.closed:
                    return
                reason = str(e) if isinstance(e, ModelMissingError) else repr(e)
                if attempt == 1:
                    log.error(
                        "model not ready: %s\nserving %s unready (503 with this reason); "
                        "retrying every %g s (--load_retry_seconds)",
                        reason,
                        model.name,
                        self.interval,
                    )
                elif reason != last or attempt % QUIET_EVERY == 0:
                    log.warning(
                        "model %s still not ready after %d attempt(s), next in %g s: %s",
                        model.name,
                        attempt,
                        self.interval,
                        reason,
                    )
                last = reason
                self._stop.wait(self.interval)
                continue
            log.info("model %s is ready (attempt %d)", model.name, attempt)
            return
