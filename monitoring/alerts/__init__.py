"""Alerts: suspicious transactions, drift and performance events, by email and webhook.

Pure logic first (the :class:`Alert` value, :func:`suspicious_transactions_alert`, the
renderers), then thin I/O: :class:`EmailChannel` (``smtplib``), :class:`WebhookChannel`
(``httpx``) and :func:`send_alert`, which records the alert in the audit log *before* delivering
it, retries each channel (``tenacity``), logs failures, never raises for a failing channel and
records the delivery outcome in the audit log too. Configuration comes from environment
variables (a Kubernetes Secret in the cluster), read only in ``from_env``/:func:`channels_from_env`,
never at import. See ``docs/alerts.md``.
"""

from components.retry import RetryPolicy
from monitoring.alerts.channels import (
    AlertChannel,
    EmailChannel,
    WebhookChannel,
    channels_from_env,
)
from monitoring.alerts.delivery import (
    DEFAULT_RETRY,
    AlertResult,
    ChannelResult,
    send_alert,
    undelivered_alerts,
)
from monitoring.alerts.model import (
    ALERT_EVENT,
    DELIVERY_EVENT,
    KINDS,
    PAYLOAD_KEYS,
    SEVERITIES,
    Alert,
    AlertConfigError,
    DeliveryError,
    PermanentDeliveryError,
    suspicious_transactions_alert,
)
from monitoring.alerts.render import (
    build_email,
    email_subject,
    render_html,
    render_text,
)

__all__ = [
    "ALERT_EVENT",
    "DEFAULT_RETRY",
    "DELIVERY_EVENT",
    "KINDS",
    "PAYLOAD_KEYS",
    "SEVERITIES",
    "Alert",
    "AlertChannel",
    "AlertConfigError",
    "AlertResult",
    "ChannelResult",
    "DeliveryError",
    "EmailChannel",
    "PermanentDeliveryError",
    "RetryPolicy",
    "WebhookChannel",
    "build_email",
    "channels_from_env",
    "email_subject",
    "render_html",
    "render_text",
    "send_alert",
    "suspicious_transactions_alert",
    "undelivered_alerts",
]
