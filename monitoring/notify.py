"""Send an alert to every channel configured in the environment; never fail the calling job."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from components.store import ObjectStore
from monitoring.alerts import Alert, AlertConfigError, channels_from_env, send_alert

__all__ = ["notify"]

log = logging.getLogger(__name__)


def notify(
    store: ObjectStore, alert: Alert, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Record the alert in the audit log and deliver it to the configured channels.

    A channel that is configured wrongly is reported, not raised: the job that found the
    problem must finish, and the alert is in the audit log either way.

    Returns:
        Per channel, the delivery outcome (empty when no channel is configured).
    """
    try:
        channels = channels_from_env(os.environ if env is None else env)
    except AlertConfigError as e:
        log.error("alert channels misconfigured (%s); the alert is only in the audit log", e)
        channels = []
    result = send_alert(alert, channels, store)
    return {c.channel: c.to_dict() for c in result.channels}
