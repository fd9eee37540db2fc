"""The alert: what happened, how bad, and the batched suspicious-transactions alert."""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("monitoring.alerts")


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

    user_error = True  # the message says what to fix: no traceback (cli_errors)


class DeliveryError(RuntimeError):
    """A channel could not deliver an alert (retried)."""


class PermanentDeliveryError(DeliveryError):
    """A delivery failure that a retry cannot fix, or would duplicate (not retried)."""


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
