"""Alert channels: email (SMTP with STARTTLS/SSL and login) and webhook (JSON POST)."""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from monitoring.alerts.model import (
    DEFAULT_SMTP_PORTS,
    SECURITY_MODES,
    USER_AGENT,
    Alert,
    AlertConfigError,
    DeliveryError,
    PermanentDeliveryError,
)
from monitoring.alerts.render import (
    build_email,
)

log = logging.getLogger("monitoring.alerts")


class AlertChannel(Protocol):
    """Something that delivers an alert once, raising on failure (:func:`send_alert` retries)."""

    @property
    def name(self) -> str:
        """Short name used in results, logs and the audit log."""
        ...

    @property
    def target(self) -> str:
        """Where alerts go, without secrets (safe to log)."""
        ...

    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` once; raise on failure."""
        ...


def _get(env: Mapping[str, str], key: str) -> str | None:
    value = env.get(key, "").strip()
    return value or None


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = _get(env, key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise AlertConfigError(f"{key} must be a number, got {raw!r}") from None
    if not value > 0:
        raise AlertConfigError(f"{key} must be > 0, got {raw!r}")
    return value


@dataclass(frozen=True)
class EmailChannel:
    """Alerts by email over SMTP (``smtplib``).

    Attributes:
        host: SMTP server.
        sender: The From address.
        recipients: The To addresses.
        port: SMTP port (default by ``security``: 587 starttls, 465 ssl, 25 none).
        security: ``starttls`` (upgrade a plain connection), ``ssl`` (TLS from the first byte)
            or ``none``. The server certificate is verified in both TLS modes.
        user: Login user; no login when None.
        password: Login password (never shown in ``repr``).
        ca_file: A CA bundle to verify the server with (a private CA); default system CAs.
        timeout: Socket timeout in seconds.
        subject_prefix: Put before ``[SEVERITY] title`` in the subject.
        name: Channel name in results and the audit log.
    """

    host: str
    sender: str
    recipients: tuple[str, ...]
    port: int | None = None
    security: str = "starttls"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    timeout: float = 10.0
    subject_prefix: str = "[fraudops]"
    name: str = "email"

    def __post_init__(self) -> None:
        if isinstance(self.recipients, str):
            object.__setattr__(self, "recipients", (self.recipients,))
        object.__setattr__(self, "recipients", tuple(self.recipients))
        if not self.host:
            raise AlertConfigError("EmailChannel needs a host")
        if self.security not in SECURITY_MODES:
            raise AlertConfigError(
                f"SMTP security must be one of {SECURITY_MODES}, got {self.security!r}"
            )
        if self.port is None:
            object.__setattr__(self, "port", DEFAULT_SMTP_PORTS[self.security])
        if not self.recipients:
            raise AlertConfigError("EmailChannel needs at least one recipient")
        for address in (self.sender, *self.recipients):
            if "@" not in address or any(c.isspace() for c in address):
                raise AlertConfigError(f"not an email address: {address!r}")
        if (self.user is None) != (self.password is None):
            raise AlertConfigError("SMTP user and password must be set together")
        if self.user and self.security == "none":
            log.warning(
                "SMTP login to %s:%s without TLS (security=none): credentials travel in clear",
                self.host,
                self.port,
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EmailChannel:
        """Build from ``FRAUDOPS_SMTP_*`` and ``FRAUDOPS_ALERT_FROM``/``_TO`` variables.

        Args:
            env: The variables (default ``os.environ``, read now).

        Raises:
            AlertConfigError: A required variable is missing or a value is invalid.
        """
        env = os.environ if env is None else env
        host = _get(env, "FRAUDOPS_SMTP_HOST")
        sender = _get(env, "FRAUDOPS_ALERT_FROM")
        to = [a.strip() for a in (_get(env, "FRAUDOPS_ALERT_TO") or "").split(",") if a.strip()]
        missing = [
            key
            for key, value in (
                ("FRAUDOPS_SMTP_HOST", host),
                ("FRAUDOPS_ALERT_FROM", sender),
                ("FRAUDOPS_ALERT_TO", to),
            )
            if not value
        ]
        if missing:
            raise AlertConfigError(f"email alerts need {', '.join(missing)}")
        security = (_get(env, "FRAUDOPS_SMTP_SECURITY") or "starttls").lower()
        raw_port = _get(env, "FRAUDOPS_SMTP_PORT")
        try:
            port = None if raw_port is None else int(raw_port)
        except ValueError:
            raise AlertConfigError(f"FRAUDOPS_SMTP_PORT must be an integer: {raw_port!r}") from None
        return cls(
            host=str(host),
            sender=str(sender),
            recipients=tuple(to),
            port=port,
            security=security,
            user=_get(env, "FRAUDOPS_SMTP_USER"),
            password=env.get("FRAUDOPS_SMTP_PASSWORD") or None,
            ca_file=_get(env, "FRAUDOPS_SMTP_CA_FILE"),
            timeout=_float(env, "FRAUDOPS_SMTP_TIMEOUT", 10.0),
        )

    @property
    def target(self) -> str:
        """``smtp://host:port -> recipients`` (no credentials)."""
        scheme = "smtps" if self.security == "ssl" else "smtp"
        return f"{scheme}://{self.host}:{self.port} -> {', '.join(self.recipients)}"

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def send(self, alert: Alert) -> None:
        """Send one email; raise on failure (``smtplib`` errors, or refused recipients)."""
        message = build_email(alert, self.sender, self.recipients, self.subject_prefix)
        port = int(self.port or DEFAULT_SMTP_PORTS[self.security])
        if self.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, port, timeout=self.timeout, context=self._tls_context()
            )
        else:
            smtp = smtplib.SMTP(self.host, port, timeout=self.timeout)
        with smtp:
            if self.security == "starttls":
                smtp.starttls(context=self._tls_context())
            if self.user is not None and self.password is not None:
                smtp.login(self.user, self.password)
            refused = smtp.send_message(message, self.sender, list(self.recipients))
        if refused:
            # Some recipients got it: a retry would send it to them twice.
            raise PermanentDeliveryError(f"SMTP server refused recipients: {refused}")


@dataclass(frozen=True)
class WebhookChannel:
    """Alerts as a JSON POST (the :meth:`Alert.to_dict` payload) to a URL (``httpx``).

    Any 2xx response is a delivery; anything else (including redirects, which are not followed)
    is a failure. The URL's path and query are treated as secret (chat webhooks embed tokens in
    them): logs, errors and the audit log only show ``scheme://host:port``.

    Attributes:
        url: Where to POST (``http`` or ``https``).
        token: Optional bearer token (``Authorization: Bearer ...``; never shown in ``repr``).
        timeout: Request timeout in seconds.
        name: Channel name in results and the audit log.
    """

    url: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    name: str = "webhook"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AlertConfigError(f"webhook URL must be http(s)://host/..., got {self.target!r}")

    def __repr__(self) -> str:
        return f"WebhookChannel(target={self.target!r}, name={self.name!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookChannel:
        """Build from ``FRAUDOPS_ALERT_WEBHOOK_URL``, ``_TOKEN`` and ``_TIMEOUT``.

        Args:
            env: The variables (default ``os.environ``, read now).

        Raises:
            AlertConfigError: The URL is missing or invalid.
        """
        env = os.environ if env is None else env
        url = _get(env, "FRAUDOPS_ALERT_WEBHOOK_URL")
        if url is None:
            raise AlertConfigError("webhook alerts need FRAUDOPS_ALERT_WEBHOOK_URL")
        return cls(
            url=url,
            token=_get(env, "FRAUDOPS_ALERT_WEBHOOK_TOKEN"),
            timeout=_float(env, "FRAUDOPS_ALERT_WEBHOOK_TIMEOUT", 10.0),
        )

    @property
    def target(self) -> str:
        """``scheme://host:port`` of the URL (path and query hidden)."""
        parts = urlsplit(self.url)
        try:
            port = parts.port
        except ValueError:
            port = None
        host = parts.hostname or "?"
        return f"{parts.scheme}://{host}" + (f":{port}" if port else "")

    def send(self, alert: Alert) -> None:
        """POST the payload once; raise :class:`DeliveryError` unless the answer is 2xx."""
        headers = {"User-Agent": USER_AGENT, "Idempotency-Key": alert.id}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = httpx.post(
                self.url, json=alert.to_dict(), headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as e:
            detail = str(e).replace(self.url, self.target)
            raise DeliveryError(f"POST {self.target}: {type(e).__name__}: {detail}") from None
        if not response.is_success:
            body = response.text[:200].strip()
            raise DeliveryError(
                f"POST {self.target} returned HTTP {response.status_code}"
                + (f": {body}" if body else "")
            )


def channels_from_env(env: Mapping[str, str] | None = None) -> list[AlertChannel]:
    """The channels configured in ``env``: email when ``FRAUDOPS_SMTP_HOST`` is set, webhook
    when ``FRAUDOPS_ALERT_WEBHOOK_URL`` is set; possibly none.

    Args:
        env: The variables (default ``os.environ``, read now).

    Raises:
        AlertConfigError: A channel is half configured (better to fail at start than to
            drop alerts silently).
    """
    env = os.environ if env is None else env
    channels: list[AlertChannel] = []
    if _get(env, "FRAUDOPS_SMTP_HOST"):
        channels.append(EmailChannel.from_env(env))
    if _get(env, "FRAUDOPS_ALERT_WEBHOOK_URL"):
        channels.append(WebhookChannel.from_env(env))
    return channels
