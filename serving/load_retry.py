"""Keep loading a model whose bundle could not be loaded, while the server runs unready.

A bundle that fails to load at start-up is often a matter of time: the object store is not up
yet, the version is still being uploaded, a Secret is being fixed. Exiting would leave the
reason in the log of a container in ``CrashLoopBackOff`` and restart it at ever longer
intervals. Instead ``python -m serving`` (``--load_retry_seconds`` > 0) starts the server with
the model unready: ``/v2/health/live`` answers 200, ``/v2/health/ready`` and every request
about the model answer 503 with the reason (:mod:`serving.http`), and :class:`LoadRetry` tries
again every interval until the load succeeds or the server stops. A bundle that fails its
checksum stays unready, with the file named in every 503, until someone repairs it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kserve.errors import ModelMissingError

__all__ = ["LoadRetry"]

log = logging.getLogger("fraudops.serving")


class LoadRetry:
    """A daemon thread that calls ``model.load()`` every ``interval`` seconds until it works.

    Args:
        model: The unready model (``load()`` raises ``ModelMissingError`` while it cannot).
        interval: Seconds between attempts.
        on_ready: Called once, in the thread, after the load that succeeded.
    """

    def __init__(self, model: Any, interval: float, on_ready: Callable[[], None]) -> None:
        if interval <= 0:
            raise ValueError(f"the retry interval must be positive, got {interval}")
        self.model = model
        self.interval = interval
        self.on_ready = on_ready
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fraudops-load-retry", daemon=True)

    def start(self) -> LoadRetry:
        """Start retrying (returns ``self``)."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """No more attempts; waits up to ``timeout`` s for an attempt under way to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        model = self.model
        while not self._stop.wait(self.interval):
            try:
                model.load()
            except ModelMissingError as e:
                log.warning(
                    "model %s still not ready after %d attempt(s), next in %g s: %s",
                    model.name,
                    model.load_attempts,
                    self.interval,
                    e,
                )
                continue
            except Exception:  # an unexpected failure must not end the retries silently
                log.exception("model %s: unexpected error while loading; retrying", model.name)
                continue
            log.info("model %s is ready after %d attempt(s)", model.name, model.load_attempts)
            self.on_ready()
            return
