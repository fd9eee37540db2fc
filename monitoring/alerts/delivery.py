"""Delivery: audit log first, every channel with retries, the outcome recorded; never raises."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from components.audit import read_audit, record_event
from components.retry import RetryPolicy
from components.store import ObjectStore
from monitoring.alerts.channels import (
    AlertChannel,
)
from monitoring.alerts.model import (
    _MAX_ERROR_CHARS,
    ALERT_EVENT,
    DELIVERY_EVENT,
    Alert,
    PermanentDeliveryError,
)

log = logging.getLogger("monitoring.alerts")


DEFAULT_RETRY = RetryPolicy(attempts=3, wait=1.0, max_wait=30.0)


@dataclass(frozen=True)
class ChannelResult:
    """The outcome of delivering one alert to one channel.

    Attributes:
        channel: The channel's name.
        target: Where it went (no secrets).
        status: ``delivered`` or ``failed``.
        attempts: How many attempts were made.
        error: The last error (``Type: message``) when failed.
        seconds: Time spent, including waits between attempts.
    """

    channel: str
    target: str
    status: str
    attempts: int
    error: str | None = None
    seconds: float = 0.0

    @property
    def delivered(self) -> bool:
        """Whether the channel accepted the alert."""
        return self.status == "delivered"

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as recorded in the audit log."""
        return {
            "channel": self.channel,
            "target": self.target,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class AlertResult:
    """What :func:`send_alert` did.

    Attributes:
        alert: The alert.
        channels: One result per channel, in the order given.
        audit_key: Audit-log key of the ``alert`` event (None if the store failed).
        delivery_audit_key: Audit-log key of the ``alert_delivery`` event (None if it failed).
    """

    alert: Alert
    channels: tuple[ChannelResult, ...]
    audit_key: str | None
    delivery_audit_key: str | None

    @property
    def delivered(self) -> bool:
        """True when there was at least one channel and every channel delivered."""
        return bool(self.channels) and all(c.delivered for c in self.channels)

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the channels that failed."""
        return tuple(c.channel for c in self.channels if not c.delivered)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]


def _deliver(channel: AlertChannel, alert: Alert, retry: RetryPolicy) -> ChannelResult:
    attempts = 0
    started = time.monotonic()

    def attempt() -> None:
        nonlocal attempts
        attempts += 1
        channel.send(alert)

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "alert %s: %s (%s) attempt %d/%d failed: %s; retrying",
            alert.id,
            channel.name,
            channel.target,
            state.attempt_number,
            retry.attempts,
            _describe(error) if error else "?",
        )

    retrying = Retrying(
        stop=stop_after_attempt(retry.attempts),
        wait=wait_exponential(multiplier=retry.wait, max=retry.max_wait),
        retry=retry_if_exception(lambda e: not isinstance(e, PermanentDeliveryError)),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        retrying(attempt)
    except Exception as e:  # a failing channel never crashes the job
        error = _describe(e)
        log.error(
            "alert %s (%s) NOT delivered by %s (%s) after %d attempt(s): %s",
            alert.id,
            alert.kind,
            channel.name,
            channel.target,
            attempts,
            error,
        )
        return ChannelResult(
            channel.name, channel.target, "failed", attempts, error, time.monotonic() - started
        )
    log.info(
        "alert %s (%s) delivered by %s (%s)", alert.id, alert.kind, channel.name, channel.target
    )
    return ChannelResult(
        channel.name, channel.target, "delivered", attempts, None, time.monotonic() - started
    )


def send_alert(
    alert: Alert,
    channels: Sequence[AlertChannel],
    store: ObjectStore,
    retry: RetryPolicy = DEFAULT_RETRY,
    actor: str | None = None,
) -> AlertResult:
    """Record an alert in the audit log, deliver it to every channel, record the outcome.

    The alert is appended to the audit log (event ``alert``) *before* any delivery, so it is
    kept even when every channel fails. Each channel is tried up to ``retry.attempts`` times
    (except :class:`PermanentDeliveryError`); failures are logged and reported in the result,
    never raised. The outcome per channel is appended as an ``alert_delivery`` event. If the
    store itself fails, that is logged (with the whole alert) and delivery still goes ahead.

    Args:
        alert: What to send.
        channels: Where to send it (e.g. :func:`channels_from_env`); may be empty.
        store: The store holding the audit log.
        retry: Attempts and backoff per channel.
        actor: Who raised it (default as in ``components.audit.record_event``).

    Returns:
        The result per channel and the audit-log keys.
    """
    payload = alert.to_dict()
    names = [c.name for c in channels]
    audit_key = None
    try:
        audit_key = record_event(
            store, ALERT_EVENT, {"channels": names}, {"alert": payload}, actor=actor
        )
    except Exception as e:
        log.error(
            "alert %s could not be recorded in the audit log (%s); alert: %s",
            alert.id,
            _describe(e),
            json.dumps(payload),
        )
    if not channels:
        log.warning("alert %s (%s): no alert channels configured", alert.id, alert.kind)
    results = tuple(_deliver(channel, alert, retry) for channel in channels)
    delivered = bool(results) and all(r.delivered for r in results)
    delivery_key = None
    try:
        delivery_key = record_event(
            store,
            DELIVERY_EVENT,
            {"alert_id": alert.id, "kind": alert.kind, "alert_event": audit_key},
            {"delivered": delivered, "channels": [r.to_dict() for r in results]},
            actor=actor,
        )
    except Exception as e:
        log.error(
            "delivery outcome of alert %s could not be recorded in the audit log: %s",
            alert.id,
            _describe(e),
        )
    return AlertResult(alert, results, audit_key, delivery_key)


def undelivered_alerts(store: ObjectStore) -> list[Alert]:
    """Alerts in the audit log that no channel set has fully delivered yet, oldest first.

    An alert counts as delivered once any ``alert_delivery`` event for its id says
    ``delivered``; pass the rest to :func:`send_alert` again to re-send them (same id).
    """
    delivered = {
        event["inputs"].get("alert_id")
        for event in read_audit(store, DELIVERY_EVENT)
        if event.get("outcome", {}).get("delivered")
    }
    pending: dict[str, Alert] = {}
    for event in read_audit(store, ALERT_EVENT):
        payload = event.get("outcome", {}).get("alert")
        if payload and payload["id"] not in delivered and payload["id"] not in pending:
            pending[payload["id"]] = Alert.from_dict(payload)
    return list(pending.values())
