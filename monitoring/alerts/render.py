"""Rendering alerts as email (text and HTML) and as the webhook's JSON payload."""

from __future__ import annotations

import email.policy
import html
import json
import logging
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from monitoring.alerts.model import (
    Alert,
)

log = logging.getLogger("monitoring.alerts")


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
