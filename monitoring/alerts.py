"""Alerts: suspicious transactions, drift and performance events, by email and webhook.

Pure logic first (the :class:`Alert` value, :func:`suspicious_transactions_alert`, the
renderers), then thin I/O: :class:`EmailChannel` (``smtplib``), :class:`WebhookChannel`
(``httpx``) and :func:`send_alert`, which records the alert in the audit log *before* delivering
it, retries each channel (``tenacity``), logs failures, never raises for a failing channel and
records the delivery outcome in the audit log too. Configuration comes from environment
variables (a Kubernetes Secret in the cluster), read only in ``from_env``/:func:`channels_from_env`,
never at import. See ``docs/alerts.md``.
"""

from __future__ import annotations

import email.policy
import html
import json
import logging
import math
import os
import re
import smtplib
import ssl
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
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

log = logging.getLogger(__name__)

KINDS = ("suspicious_transactions", "drift", "performance", "retrain", "canary")
"""The alert kinds fraudops raises itself (others are accepted: lowercase ``snake_case``)."""

SEVERITIES = ("info", "warning", "critical")

PAYLOAD_KEYS = (
    "id",
    "kind",
    "severity",
    "title",
    "summary",
    "model",
    "version",
    "created_at",
    "details",
)
"""The keys of the webhook payload (:meth:`Alert.to_dict`), in order."""

ALERT_EVENT = "alert"
"""Audit-log event written before delivery: the alert itself."""

DELIVERY_EVENT = "alert_delivery"
"""Audit-log event written after delivery: the outcome per channel."""

USER_AGENT = "fraudops-alerts/1"
SECURITY_MODES = ("starttls", "ssl", "none")
DEFAULT_SMTP_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_MAX_ERROR_CHARS = 500


class AlertConfigError(ValueError):
    """A channel's configuration (environment or arguments) is missing or invalid."""


class DeliveryError(RuntimeError):
    """A channel could not deliver an alert (retried)."""


class PermanentDeliveryError(DeliveryError):
    """A delivery failure that a retry cannot fix, or would duplicate (not retried)."""


# --------------------------------------------------------------------------------------------
# The alert


@dataclass(frozen=True)
class Alert:
    """One alert: what happened, how bad, and the evidence.

    Attributes:
        kind: What it is about: ``suspicious_transactions``, ``drift``, ``performance``,
            ``retrain``, ``canary``, ... (lowercase ``snake_case``).
        severity: ``info``, ``warning`` or ``critical``.
        title: One line (the email subject).
        summary: A few sentences of plain text.
        details: JSON-serialisable evidence. Lists of dicts render as tables (e.g.
            ``transactions`` with id, score, reasons; ``columns`` for drift), other values as
            key/value rows.
        model: Model name, when the alert is about one.
        version: Model version, when the alert is about one.
        created_at: When the alert was raised (timezone-aware; default now, UTC).
        id: Unique id; the same across retries, so receivers can deduplicate.
    """

    kind: str
    severity: str
    title: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    version: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if not _KIND_RE.match(self.kind):
            raise ValueError(f"alert kind must be lowercase snake_case, got {self.kind!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert severity must be one of {SEVERITIES}, got {self.severity!r}")
        if not self.title.strip():
            raise ValueError("alert title must not be empty")
        if self.created_at.tzinfo is None:
            raise ValueError("alert created_at must be timezone-aware")
        try:
            json.dumps(self.details, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"alert details must be JSON-serialisable: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """The webhook payload and audit-log form (keys :data:`PAYLOAD_KEYS`)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "summary": self.summary,
            "model": self.model,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """The alert back from :meth:`to_dict` (e.g. read from the audit log)."""
        return cls(
            kind=data["kind"],
            severity=data["severity"],
            title=data["title"],
            summary=data.get("summary", ""),
            details=dict(data.get("details") or {}),
            model=data.get("model"),
            version=data.get("version"),
            created_at=datetime.fromisoformat(data["created_at"]),
            id=data["id"],
        )


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number


def _joined(values: Iterable[Any]) -> str | None:
    unique = sorted({str(v) for v in values if v is not None})
    return ", ".join(unique) if unique else None


def suspicious_transactions_alert(
    records: Iterable[Mapping[str, Any]],
    max_items: int = 50,
    *,
    severity: str = "warning",
    positive: str = "alert",
) -> Alert | None:
    """Batch the positive decisions of inference-log records into one alert.

    Args:
        records: Inference-log records (``components.inference_log`` format: ``transaction``,
            ``score``, ``decision``, ``reasons``, ``model``, ``version``, ``time``).
        max_items: At most this many transactions are listed, highest score first; the count
            covers them all.
        severity: Severity of the alert.
        positive: The decision value that flags a transaction.

    Returns:
        An alert of kind ``suspicious_transactions`` whose details hold ``count``, ``shown``,
        ``max_score``, ``first_seen``, ``last_seen`` and ``transactions`` (``id``, ``score``,
        ``reasons``, ``amount``, ``time``, ``version``), or None when nothing was flagged.
    """
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    flagged = [r for r in records if r.get("decision") == positive]
    if not flagged:
        return None
    flagged.sort(key=lambda r: float(r["score"]), reverse=True)
    transactions = []
    for record in flagged[:max_items]:
        tx = record.get("transaction") or {}
        transactions.append(
            {
                "id": str(tx.get("transaction_id") or record.get("id")),
                "score": _number(record["score"]),
                "reasons": [str(reason) for reason in (record.get("reasons") or [])],
                "amount": _number(tx.get("amount")),
                "time": _iso(record.get("time")),
                "version": None if record.get("version") is None else str(record["version"]),
            }
        )
    times = sorted(t for t in (_iso(r.get("time")) for r in flagged) if t)
    model = _joined(r.get("model") for r in flagged)
    version = _joined(r.get("version") for r in flagged)
    count, shown, top = len(flagged), len(transactions), float(flagged[0]["score"])
    by = " ".join(part for part in (model, version) if part) or "the model"
    plural = "s" if count != 1 else ""
    summary = (
        f"{count} transaction{plural} scored by {by} were flagged (decision={positive})"
        + (f" between {times[0]} and {times[-1]}" if times else "")
        + f"; highest score {top:.4f}."
        + (f" The {shown} highest scores are listed." if shown < count else "")
    )
    return Alert(
        kind="suspicious_transactions",
        severity=severity,
        title=f"{count} suspicious transaction{plural} flagged by {by}",
        summary=summary,
        details={
            "count": count,
            "shown": shown,
            "max_score": _number(top),
            "first_seen": times[0] if times else None,
            "last_seen": times[-1] if times else None,
            "transactions": transactions,
        },
        model=model,
        version=version,
    )


# --------------------------------------------------------------------------------------------
# Rendering


def _is_table(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, ".4g") if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _heading(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _overview(alert: Alert) -> list[tuple[str, str]]:
    rows = [
        ("Kind", alert.kind),
        ("Severity", alert.severity),
        ("Model", alert.model or ""),
        ("Version", alert.version or ""),
        ("Created", alert.created_at.isoformat()),
        ("Alert id", alert.id),
    ]
    rows += [(_heading(k), _cell(v)) for k, v in alert.details.items() if not _is_table(v)]
    return [(label, value) for label, value in rows if value != ""]


def email_subject(alert: Alert, prefix: str = "[fraudops]") -> str:
    """``<prefix> [SEVERITY] <title>`` on one line."""
    subject = f"{prefix} [{alert.severity.upper()}] {alert.title}".strip()
    return " ".join(subject.split())


def render_text(alert: Alert, max_cell: int = 60) -> str:
    """The plain-text body: title, summary, overview and one aligned table per list of rows."""
    lines = [f"[{alert.severity.upper()}] {alert.title}", "", alert.summary, ""]
    overview = _overview(alert)
    width = max(len(label) for label, _ in overview)
    lines += [f"{label:<{width}}  {value}" for label, value in overview]
    for key, value in alert.details.items():
        if not _is_table(value):
            continue
        columns = _columns(value)
        cells = [[_cell(row.get(c))[:max_cell] for c in columns] for row in value]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        lines += ["", f"{_heading(key)} ({len(value)}):"]
        lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
        ]
    return "\n".join(lines) + "\n"


_COLORS = {"info": "#1f6feb", "warning": "#b76e00", "critical": "#c62828"}
_TABLE = 'style="border-collapse:collapse;font-size:13px" border="1" cellpadding="4"'


def render_html(alert: Alert) -> str:
    """A simple HTML body: title, summary, overview table and one table per list of rows."""
    esc = html.escape
    parts = [
        '<!DOCTYPE html>\n<html><body style="font-family:Arial,Helvetica,sans-serif">',
        f'<h2 style="color:{_COLORS[alert.severity]}">[{esc(alert.severity.upper())}] '
        f"{esc(alert.title)}</h2>",
        f"<p>{esc(alert.summary)}</p>",
        f"<table {_TABLE}>",
        *(f"<tr><th align='left'>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _overview(alert)),
        "</table>",
    ]
    for key, value in alert.details.items():
        if not _is_table(value):
            continue
        columns = _columns(value)
        parts.append(f"<h3>{esc(_heading(key))} ({len(value)})</h3>")
        parts.append(f"<table {_TABLE}>")
        parts.append("<tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>")
        for row in value:
            cells = "".join(f"<td>{esc(_cell(row.get(c)))}</td>" for c in columns)
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


_EMAIL_POLICY = email.policy.default.clone(max_line_length=998)
"""Headers on one line (SMTP's limit): the default 78 folds a long subject before its first
word, which some parsers (Python's own) read back with a leading space."""


def build_email(
    alert: Alert, sender: str, recipients: Sequence[str], subject_prefix: str = "[fraudops]"
) -> EmailMessage:
    """The email for ``alert``: plain text plus an HTML alternative.

    The Message-ID derives from the alert id, so a message re-sent by a retry is recognisable
    as the same message.
    """
    domain = sender.rpartition("@")[2] or "fraudops.local"
    message = EmailMessage(policy=_EMAIL_POLICY)
    message["Subject"] = email_subject(alert, subject_prefix)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<{alert.id}.{alert.kind}@{domain}>"
    message["X-Fraudops-Alert-Id"] = alert.id
    message["X-Fraudops-Alert-Kind"] = alert.kind
    message["X-Fraudops-Alert-Severity"] = alert.severity
    message.set_content(render_text(alert))
    message.add_alternative(render_html(alert), subtype="html")
    return message


# --------------------------------------------------------------------------------------------
# Channels


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


# --------------------------------------------------------------------------------------------
# Delivery


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
