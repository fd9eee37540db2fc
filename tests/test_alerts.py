"""Alerts: real email to an SMTP server and real webhooks to an HTTP server, on 127.0.0.1 only."""

from __future__ import annotations

import email
import email.policy
import ipaddress
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from components.audit import read_audit
from components.inference_log import make_record, read_records, write_batch
from components.store import LocalStore, open_store
from monitoring.alerts import (
    PAYLOAD_KEYS,
    Alert,
    AlertConfigError,
    EmailChannel,
    RetryPolicy,
    WebhookChannel,
    channels_from_env,
    email_subject,
    render_html,
    render_text,
    send_alert,
    suspicious_transactions_alert,
    undelivered_alerts,
)

LOOPBACK = "127.0.0.1"
USER, PASSWORD = "alerts-bot", "s3cret-for-tests"
FAST = RetryPolicy(attempts=3, wait=0.01, max_wait=0.05)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

# The loopback servers allow AUTH without TLS on purpose (login tests with security=none).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


# --------------------------------------------------------------------------------------------
# Fixtures: inference-log records, a store, an SMTP server, an HTTP server


def _records() -> list[dict[str, Any]]:
    scored = [
        ("tx-001", 0.12, "pass", []),
        ("tx-002", 0.973, "alert", ["amount_high", "new_terminal"]),
        ("tx-003", 0.51, "pass", []),
        ("tx-004", 0.88, "alert", ["velocity_1h"]),
        ("tx-005", 0.91, "alert", ["terminal_fraud_rate"]),
    ]
    return [
        make_record(
            model="fraud-xgb",
            version="v7",
            transaction={"transaction_id": tx, "amount": 100.0 + i, "customer_id": "c1"},
            score=score,
            decision=decision,
            reasons=reasons,
            time=T0 + timedelta(minutes=i),
        )
        for i, (tx, score, decision, reasons) in enumerate(scored)
    ]


@pytest.fixture
def alert() -> Alert:
    made = suspicious_transactions_alert(_records())
    assert made is not None
    return made


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return open_store(str(tmp_path / "store"))


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated: bool | None
    tls: bool


@dataclass
class Mailbox:
    """An aiosmtpd handler and authenticator that keeps what arrives."""

    messages: list[Received] = field(default_factory=list)
    logins: list[tuple[str, str, str, bool]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.messages.append(
            Received(
                envelope.mail_from, list(envelope.rcpt_tos), message, session.authenticated, tls
            )
        )
        return "250 Message accepted for delivery"

    def authenticator(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.logins.append((mechanism, login, password, tls))
        return AuthResult(success=(login, password) == (USER, PASSWORD), handled=False)


class LoopbackController(Controller):
    """aiosmtpd's Controller on a free port chosen by the OS (``port=0``)."""

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class SmtpServer:
    port: int
    mailbox: Mailbox


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    """A starter of loopback SMTP servers: ``smtp_server(auth=True, tls_context=...)``."""
    started: list[Controller] = []

    def start(*, auth: bool = False, **smtp_kwargs: Any) -> SmtpServer:
        mailbox = Mailbox()
        if auth:
            smtp_kwargs.setdefault("auth_require_tls", False)
            smtp_kwargs["authenticator"] = mailbox.authenticator
        controller = LoopbackController(mailbox, hostname=LOOPBACK, port=0, **smtp_kwargs)
        controller.start()
        started.append(controller)
        return SmtpServer(controller.port, mailbox)

    yield start
    for controller in started:
        controller.stop()


@dataclass
class Hook:
    """What a loopback webhook server received, and the statuses it will answer with."""

    url: str
    statuses: list[int]
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def webhook_server() -> Iterator[Callable[..., Hook]]:
    """A starter of loopback HTTP servers: ``webhook_server(statuses=[500, 200])``."""
    servers: list[ThreadingHTTPServer] = []

    def start(statuses: list[int] | None = None, path: str = "/hooks/fraudops") -> Hook:
        hook = Hook(url="", statuses=list(statuses or []))

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                status = hook.statuses.pop(0) if hook.statuses else 200
                reply = b"ok" if status < 300 else b"boom"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        hook.url = f"http://{LOOPBACK}:{server.server_address[1]}{path}"
        return hook

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key), generated here."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fraudops test SMTP")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, False, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def server_tls(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    return context


def _email(port: int, **kwargs: Any) -> EmailChannel:
    defaults: dict[str, Any] = {
        "host": LOOPBACK,
        "port": port,
        "security": "none",
        "sender": "fraudops@example.test",
        "recipients": ("fraud-team@example.test", "oncall@example.test"),
        "timeout": 5.0,
    }
    return EmailChannel(**{**defaults, **kwargs})


def _text_and_html(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    assert text is not None and page is not None
    return text.get_content(), page.get_content()


# --------------------------------------------------------------------------------------------
# Pure logic


def test_suspicious_transactions_alert_batches_positive_decisions(alert: Alert) -> None:
    assert alert.kind == "suspicious_transactions"
    assert (alert.model, alert.version, alert.severity) == ("fraud-xgb", "v7", "warning")
    assert alert.title == "3 suspicious transactions flagged by fraud-xgb v7"
    details = alert.details
    assert (details["count"], details["shown"], details["max_score"]) == (3, 3, 0.973)
    assert [t["id"] for t in details["transactions"]] == ["tx-002", "tx-005", "tx-004"]
    assert details["transactions"][0] == {
        "id": "tx-002",
        "score": 0.973,
        "reasons": ["amount_high", "new_terminal"],
        "amount": 101.0,
        "time": (T0 + timedelta(minutes=1)).isoformat(),
        "version": "v7",
    }
    assert details["first_seen"] == (T0 + timedelta(minutes=1)).isoformat()
    assert details["last_seen"] == (T0 + timedelta(minutes=4)).isoformat()
    assert "3 transactions scored by fraud-xgb v7 were flagged" in alert.summary


def test_suspicious_transactions_alert_caps_the_list_and_none_when_nothing_flagged() -> None:
    top = suspicious_transactions_alert(_records(), max_items=2, severity="critical")
    assert top is not None and top.severity == "critical"
    assert (top.details["count"], top.details["shown"]) == (3, 2)
    assert [t["id"] for t in top.details["transactions"]] == ["tx-002", "tx-005"]
    assert "The 2 highest scores are listed." in top.summary
    assert suspicious_transactions_alert([r for r in _records() if r["decision"] == "pass"]) is None
    assert suspicious_transactions_alert([]) is None
    with pytest.raises(ValueError, match="max_items"):
        suspicious_transactions_alert(_records(), max_items=0)


def test_suspicious_transactions_alert_from_the_stored_inference_log(store: LocalStore) -> None:
    write_batch(store, _records())
    made = suspicious_transactions_alert(read_records(store, "fraud-xgb"))
    assert made is not None
    assert [t["id"] for t in made.details["transactions"]] == ["tx-002", "tx-005", "tx-004"]
    assert made.details["transactions"][0]["reasons"] == ["amount_high", "new_terminal"]
    json.dumps(made.to_dict(), allow_nan=False)  # numpy values were converted


def test_alert_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="severity"):
        Alert(kind="drift", severity="urgent", title="t", summary="s")
    with pytest.raises(ValueError, match="snake_case"):
        Alert(kind="Drift Alert", severity="info", title="t", summary="s")
    with pytest.raises(ValueError, match="JSON-serialisable"):
        Alert(kind="drift", severity="info", title="t", summary="s", details={"x": object()})
    with pytest.raises(ValueError, match="timezone-aware"):
        Alert(
            kind="drift", severity="info", title="t", summary="s", created_at=datetime(2024, 1, 1)
        )


def test_payload_schema_is_stable_and_round_trips(alert: Alert) -> None:
    payload = alert.to_dict()
    assert tuple(payload) == PAYLOAD_KEYS
    assert json.loads(json.dumps(payload)) == payload
    assert payload["created_at"] == alert.created_at.isoformat()
    assert Alert.from_dict(payload) == alert


def test_text_and_html_render_tables_and_escape() -> None:
    drift = Alert(
        kind="drift",
        severity="critical",
        title="Data drift on fraud-xgb v7 <share 0.5>",
        summary="3 of 6 columns drifted.",
        details={
            "drift_share": 0.5,
            "columns": [
                {"column": "amount", "stattest": "wasserstein", "score": 0.31, "drifted": True},
                {"column": "<script>", "stattest": "psi", "score": 0.01, "drifted": False},
            ],
        },
        model="fraud-xgb",
        version="v7",
    )
    text = render_text(drift)
    assert text.startswith("[CRITICAL] Data drift on fraud-xgb v7 <share 0.5>")
    assert "Columns (2):" in text
    assert "amount    wasserstein  0.31   yes" in text
    assert "Drift share  0.5" in text
    page = render_html(drift)
    assert "<th>column</th><th>stattest</th><th>score</th><th>drifted</th>" in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "&lt;share 0.5&gt;" in page
    assert email_subject(drift) == "[fraudops] [CRITICAL] Data drift on fraud-xgb v7 <share 0.5>"
    one_line = Alert(kind="retrain", severity="info", title="a\r\nBcc: x@y", summary="")
    assert "\n" not in email_subject(one_line)


# --------------------------------------------------------------------------------------------
# Configuration


def test_channels_from_env_reads_only_the_mapping_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDOPS_SMTP_HOST", "smtp.example.test")
    assert channels_from_env({}) == []
    env = {
        "FRAUDOPS_SMTP_HOST": "smtp.example.test",
        "FRAUDOPS_SMTP_SECURITY": "SSL",
        "FRAUDOPS_SMTP_USER": USER,
        "FRAUDOPS_SMTP_PASSWORD": PASSWORD,
        "FRAUDOPS_ALERT_FROM": "fraudops@example.test",
        "FRAUDOPS_ALERT_TO": " a@example.test, b@example.test ,",
        "FRAUDOPS_ALERT_WEBHOOK_URL": "https://hooks.example.test/T000/secret-path?key=abc",
        "FRAUDOPS_ALERT_WEBHOOK_TOKEN": "tok-123",
        "FRAUDOPS_ALERT_WEBHOOK_TIMEOUT": "2.5",
    }
    mail, hook = channels_from_env(env)
    assert isinstance(mail, EmailChannel) and isinstance(hook, WebhookChannel)
    assert (mail.security, mail.port, mail.user) == ("ssl", 465, USER)
    assert mail.recipients == ("a@example.test", "b@example.test")
    assert mail.target == "smtps://smtp.example.test:465 -> a@example.test, b@example.test"
    assert (hook.token, hook.timeout, hook.target) == ("tok-123", 2.5, "https://hooks.example.test")
    for secret in (PASSWORD, "tok-123", "secret-path", "key=abc"):
        assert secret not in repr(mail) + repr(hook) + mail.target + hook.target
    starttls = EmailChannel.from_env(
        {**env, "FRAUDOPS_SMTP_SECURITY": "", "FRAUDOPS_SMTP_PORT": ""}
    )
    assert (starttls.security, starttls.port) == ("starttls", 587)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"FRAUDOPS_ALERT_TO": ""}, "FRAUDOPS_ALERT_TO"),
        ({"FRAUDOPS_ALERT_FROM": ""}, "FRAUDOPS_ALERT_FROM"),
        ({"FRAUDOPS_SMTP_SECURITY": "tls"}, "security must be one of"),
        ({"FRAUDOPS_SMTP_PORT": "smtp"}, "FRAUDOPS_SMTP_PORT must be an integer"),
        ({"FRAUDOPS_SMTP_PASSWORD": ""}, "user and password must be set together"),
        ({"FRAUDOPS_ALERT_TO": "not-an-address"}, "not an email address"),
        ({"FRAUDOPS_ALERT_WEBHOOK_URL": "ftp://x/y"}, "webhook URL must be"),
        ({"FRAUDOPS_ALERT_WEBHOOK_TIMEOUT": "0"}, "must be > 0"),
    ],
)
def test_half_configured_channels_fail_loudly(change: dict[str, str], match: str) -> None:
    env = {
        "FRAUDOPS_SMTP_HOST": "smtp.example.test",
        "FRAUDOPS_SMTP_USER": USER,
        "FRAUDOPS_SMTP_PASSWORD": PASSWORD,
        "FRAUDOPS_ALERT_FROM": "fraudops@example.test",
        "FRAUDOPS_ALERT_TO": "a@example.test",
        "FRAUDOPS_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook",
    }
    with pytest.raises(AlertConfigError, match=match):
        channels_from_env({**env, **change})


# --------------------------------------------------------------------------------------------
# Email over loopback SMTP


def test_email_arrives_with_subject_recipients_and_transactions(
    smtp_server: Callable[..., SmtpServer], alert: Alert, store: LocalStore
) -> None:
    server = smtp_server()
    result = send_alert(alert, [_email(server.port)], store, retry=FAST)

    assert result.delivered and result.channels[0].attempts == 1
    (received,) = server.mailbox.messages
    assert received.mail_from == "fraudops@example.test"
    assert received.rcpt_tos == ["fraud-team@example.test", "oncall@example.test"]
    message = received.message
    assert message["Subject"] == (
        "[fraudops] [WARNING] 3 suspicious transactions flagged by fraud-xgb v7"
    )
    assert message["To"] == "fraud-team@example.test, oncall@example.test"
    assert message["X-Fraudops-Alert-Id"] == alert.id
    assert message["Message-ID"] == f"<{alert.id}.suspicious_transactions@example.test>"
    text, page = _text_and_html(message)
    for tx_id, score in (("tx-002", "0.973"), ("tx-005", "0.91"), ("tx-004", "0.88")):
        assert tx_id in text and score in text
        assert f"<td>{tx_id}</td><td>{score}</td>" in page
    assert "amount_high, new_terminal" in text
    assert "tx-001" not in text  # a pass decision is not listed
    assert received.authenticated is None and not received.tls


def test_email_logs_in_with_the_configured_user_and_password(
    smtp_server: Callable[..., SmtpServer], alert: Alert, store: LocalStore
) -> None:
    server = smtp_server(auth=True, auth_required=True)
    env = {
        "FRAUDOPS_SMTP_HOST": LOOPBACK,
        "FRAUDOPS_SMTP_PORT": str(server.port),
        "FRAUDOPS_SMTP_SECURITY": "none",
        "FRAUDOPS_SMTP_USER": USER,
        "FRAUDOPS_SMTP_PASSWORD": PASSWORD,
        "FRAUDOPS_ALERT_FROM": "fraudops@example.test",
        "FRAUDOPS_ALERT_TO": "fraud-team@example.test",
    }
    result = send_alert(alert, channels_from_env(env), store, retry=FAST)

    assert result.delivered
    assert [(login, password) for _, login, password, _ in server.mailbox.logins] == [
        (USER, PASSWORD)
    ]
    (received,) = server.mailbox.messages
    assert received.authenticated is True


def test_wrong_password_is_a_failed_delivery_retried_not_a_crash(
    smtp_server: Callable[..., SmtpServer],
    alert: Alert,
    store: LocalStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One mechanism, so that one attempt is one login (smtplib tries every mechanism offered).
    server = smtp_server(auth=True, auth_required=True, auth_exclude_mechanism=["LOGIN"])
    channel = _email(server.port, user=USER, password="wrong")
    with caplog.at_level(logging.WARNING, logger="monitoring.alerts"):
        result = send_alert(alert, [channel], store, retry=FAST)

    (outcome,) = result.channels
    assert not result.delivered and result.failed == ("email",)
    assert (outcome.status, outcome.attempts) == ("failed", 3)
    assert "SMTPAuthenticationError" in (outcome.error or "")
    assert len(server.mailbox.logins) == 3 and server.mailbox.messages == []
    assert "wrong" not in (outcome.error or "")
    assert sum("retrying" in r.message for r in caplog.records) == 2
    assert any(r.levelno == logging.ERROR and "NOT delivered" in r.message for r in caplog.records)
    (delivery,) = read_audit(store, "alert_delivery")
    assert delivery["outcome"]["channels"][0]["status"] == "failed"
    assert delivery["outcome"]["channels"][0]["attempts"] == 3


def test_email_starttls_with_a_verified_certificate_then_login(
    smtp_server: Callable[..., SmtpServer],
    server_tls: ssl.SSLContext,
    tls_files: tuple[Path, Path],
    alert: Alert,
    store: LocalStore,
) -> None:
    # Default aiosmtpd policy: AUTH only after STARTTLS, and MAIL refused before it.
    server = smtp_server(
        auth=True, auth_require_tls=True, tls_context=server_tls, require_starttls=True
    )
    channel = _email(
        server.port, security="starttls", user=USER, password=PASSWORD, ca_file=str(tls_files[0])
    )
    result = send_alert(alert, [channel], store, retry=FAST)

    assert result.delivered, result.channels
    assert [(login, tls) for _, login, _, tls in server.mailbox.logins] == [(USER, True)]
    (received,) = server.mailbox.messages
    assert received.tls and received.authenticated is True


def test_email_implicit_ssl(
    smtp_server: Callable[..., SmtpServer],
    server_tls: ssl.SSLContext,
    tls_files: tuple[Path, Path],
    alert: Alert,
    store: LocalStore,
) -> None:
    # aiosmtpd only counts STARTTLS as TLS for AUTH; this connection is TLS from the first byte.
    server = smtp_server(auth=True, auth_require_tls=False, ssl_context=server_tls)
    channel = _email(
        server.port, security="ssl", user=USER, password=PASSWORD, ca_file=str(tls_files[0])
    )
    result = send_alert(alert, [channel], store, retry=FAST)

    assert result.delivered, result.channels
    (received,) = server.mailbox.messages
    assert received.tls and received.authenticated is True


def test_email_refuses_an_untrusted_certificate_before_sending_credentials(
    smtp_server: Callable[..., SmtpServer],
    server_tls: ssl.SSLContext,
    alert: Alert,
    store: LocalStore,
) -> None:
    server = smtp_server(auth=True, auth_require_tls=True, tls_context=server_tls)
    channel = _email(server.port, security="starttls", user=USER, password=PASSWORD)
    result = send_alert(alert, [channel], store, retry=RetryPolicy(attempts=2, wait=0))

    (outcome,) = result.channels
    assert (outcome.status, outcome.attempts) == ("failed", 2)
    assert "CERTIFICATE_VERIFY_FAILED" in (outcome.error or "")
    assert server.mailbox.logins == [] and server.mailbox.messages == []


# --------------------------------------------------------------------------------------------
# Webhook over loopback HTTP


def test_webhook_posts_the_json_payload_with_the_bearer_token(
    webhook_server: Callable[..., Hook], alert: Alert, store: LocalStore
) -> None:
    hook = webhook_server()
    channel = WebhookChannel.from_env(
        {"FRAUDOPS_ALERT_WEBHOOK_URL": hook.url, "FRAUDOPS_ALERT_WEBHOOK_TOKEN": "tok-123"}
    )
    result = send_alert(alert, [channel], store, retry=FAST)

    assert result.delivered
    (request,) = hook.requests
    assert request["path"] == "/hooks/fraudops"
    assert request["headers"]["Authorization"] == "Bearer tok-123"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Idempotency-Key"] == alert.id
    payload = json.loads(request["body"])
    assert tuple(payload) == PAYLOAD_KEYS
    assert payload == alert.to_dict()
    assert [t["id"] for t in payload["details"]["transactions"]] == ["tx-002", "tx-005", "tx-004"]
    assert payload["details"]["transactions"][0]["score"] == 0.973


def test_webhook_500_twice_then_200_is_delivered_after_retries(
    webhook_server: Callable[..., Hook], alert: Alert, store: LocalStore
) -> None:
    hook = webhook_server(statuses=[500, 500, 200])
    result = send_alert(alert, [WebhookChannel(hook.url)], store, retry=FAST)

    (outcome,) = result.channels
    assert (outcome.status, outcome.attempts, outcome.error) == ("delivered", 3, None)
    assert len(hook.requests) == 3
    assert {r["headers"]["Idempotency-Key"] for r in hook.requests} == {alert.id}
    assert "Authorization" not in hook.requests[0]["headers"]
    (delivery,) = read_audit(store, "alert_delivery")
    assert delivery["outcome"]["delivered"] is True
    assert delivery["outcome"]["channels"][0]["attempts"] == 3


def test_unreachable_webhook_fails_after_all_attempts_and_the_alert_stays_in_the_audit_log(
    closed_port: int, alert: Alert, store: LocalStore
) -> None:
    channel = WebhookChannel(f"http://{LOOPBACK}:{closed_port}/hooks/secret-token", timeout=2.0)
    result = send_alert(alert, [channel], store, retry=FAST)

    (outcome,) = result.channels
    assert (outcome.status, outcome.attempts) == ("failed", 3)
    assert "ConnectError" in (outcome.error or "")
    assert "secret-token" not in (outcome.error or "") + outcome.target
    (recorded,) = read_audit(store, "alert")
    assert recorded["outcome"]["alert"] == alert.to_dict()
    assert recorded["inputs"]["channels"] == ["webhook"]
    (delivery,) = read_audit(store, "alert_delivery")
    assert delivery["inputs"]["alert_id"] == alert.id
    assert delivery["outcome"]["delivered"] is False
    assert delivery["outcome"]["channels"][0]["status"] == "failed"
    assert undelivered_alerts(store) == [alert]


def test_one_failing_channel_does_not_stop_the_others(
    closed_port: int,
    webhook_server: Callable[..., Hook],
    smtp_server: Callable[..., SmtpServer],
    alert: Alert,
    store: LocalStore,
) -> None:
    hook, server = webhook_server(statuses=[404, 404]), smtp_server()
    channels = [
        WebhookChannel(hook.url, name="broken-hook"),
        _email(closed_port, name="dead-smtp"),
        _email(server.port),
    ]
    result = send_alert(alert, channels, store, retry=RetryPolicy(attempts=2, wait=0))

    assert [(c.channel, c.status, c.attempts) for c in result.channels] == [
        ("broken-hook", "failed", 2),
        ("dead-smtp", "failed", 2),
        ("email", "delivered", 1),
    ]
    assert "HTTP 404" in (result.channels[0].error or "")
    assert "ConnectionRefusedError" in (result.channels[1].error or "")
    assert len(server.mailbox.messages) == 1
    assert result.failed == ("broken-hook", "dead-smtp") and not result.delivered


def test_resending_an_undelivered_alert_marks_it_delivered(
    closed_port: int, webhook_server: Callable[..., Hook], alert: Alert, store: LocalStore
) -> None:
    send_alert(
        alert,
        [WebhookChannel(f"http://{LOOPBACK}:{closed_port}/")],
        store,
        retry=RetryPolicy(attempts=1),
    )
    hook = webhook_server()
    for pending in undelivered_alerts(store):
        assert send_alert(pending, [WebhookChannel(hook.url)], store, retry=FAST).delivered
    assert undelivered_alerts(store) == []
    assert json.loads(hook.requests[0]["body"])["id"] == alert.id


def test_no_channels_and_a_broken_store_never_raise(
    tmp_path: Path,
    webhook_server: Callable[..., Hook],
    alert: Alert,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenStore(LocalStore):
        def put_json(self, key: str, obj: Any, **kwargs: Any) -> Any:
            raise OSError("disk full")

    empty = send_alert(alert, [], open_store(str(tmp_path / "ok")), retry=FAST)
    assert not empty.delivered and empty.channels == () and empty.audit_key is not None

    hook = webhook_server()
    with caplog.at_level(logging.ERROR, logger="monitoring.alerts"):
        result = send_alert(alert, [WebhookChannel(hook.url)], BrokenStore(tmp_path / "x"))
    assert result.delivered and len(hook.requests) == 1
    assert result.audit_key is None and result.delivery_audit_key is None
    assert any(alert.id in r.message and "disk full" in r.message for r in caplog.records)
