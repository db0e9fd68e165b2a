"""The handler against a real SMTP server (aiosmtpd): delivery, TLS, AUTH, and which failures retry."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from icc import ConfigError, UnrecoverableMessageError
from icc_mail import MailConfig, TemporaryDeliveryError, deliver, parse_dsn

if TYPE_CHECKING:
    from conftest import Cert, Credentials, Server, StartServer

SENDER = "Shop <shop@example.org>"


def payload(**fields: Any) -> dict[str, Any]:
    return {"to": ["jane@example.org"], "subject": "Grüße", "text": "Hallo Jürgen ✓", **fields}


def config(dsn: str, sender: str | None = SENDER) -> MailConfig:
    return MailConfig(dsn=parse_dsn(dsn), sender=sender, timeout=5)


def test_handler_delivers_to_the_server(smtp_server: Server) -> None:
    deliver(
        payload(cc="carol@example.org", bcc=["hidden@example.org"], headers={"X-Order": "42"}),
        config(f"smtp://127.0.0.1:{smtp_server.port}"),
    )
    [got] = smtp_server.received
    assert got.mail_from == "shop@example.org"
    assert got.rcpt_tos == ["jane@example.org", "carol@example.org", "hidden@example.org"]
    message = got.message
    assert message["Subject"] == "Grüße"
    assert message["From"] == SENDER
    assert message["To"] == "jane@example.org"
    assert message["Cc"] == "carol@example.org"
    assert message["X-Order"] == "42"
    assert "Bcc" not in message
    assert b"hidden" not in got.content
    body = message.get_body(("plain",))
    assert body is not None
    assert body.get_content().rstrip() == "Hallo Jürgen ✓"


def test_sender_of_the_mail_wins_over_the_configured_one(smtp_server: Server) -> None:
    deliver(payload(sender="other@example.org"), config(f"smtp://127.0.0.1:{smtp_server.port}"))
    assert smtp_server.received[0].mail_from == "other@example.org"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_auth_with_user_and_percent_encoded_password(
    start_smtp: StartServer, credentials: Credentials
) -> None:
    server = start_smtp(auth=True)
    deliver(payload(), config(f"smtp://{credentials.userinfo()}127.0.0.1:{server.port}"))
    assert len(server.received) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_auth_with_an_ascii_password(start_smtp: StartServer, credentials: Credentials) -> None:
    server = start_smtp(auth=True, password="plain-ascii")
    deliver(payload(), config(f"smtp://{credentials.user}:plain-ascii@127.0.0.1:{server.port}"))
    assert len(server.received) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_wrong_password_535_is_permanent(start_smtp: StartServer, credentials: Credentials) -> None:
    server = start_smtp(auth=True)
    with pytest.raises(UnrecoverableMessageError, match="535"):
        deliver(payload(), config(f"smtp://{credentials.user}:wrong@127.0.0.1:{server.port}"))
    assert server.received == []


def test_starttls_and_auth_with_the_test_ca(
    start_smtp: StartServer, cert: Cert, credentials: Credentials
) -> None:
    server = start_smtp(
        auth=True, auth_require_tls=True, tls_context=cert.server_context(), require_starttls=True
    )
    userinfo = credentials.userinfo()
    deliver(
        payload(), config(f"smtp://{userinfo}127.0.0.1:{server.port}?starttls=true&cafile={cert.certfile}")
    )
    assert len(server.received) == 1


def test_smtps_with_the_test_ca(start_smtp: StartServer, cert: Cert) -> None:
    server = start_smtp(ssl_context=cert.server_context())
    deliver(payload(), config(f"smtps://127.0.0.1:{server.port}?cafile={cert.certfile}"))
    assert len(server.received) == 1


def test_smtps_with_verify_false_accepts_an_unknown_certificate(start_smtp: StartServer, cert: Cert) -> None:
    server = start_smtp(ssl_context=cert.server_context())
    deliver(payload(), config(f"smtps://127.0.0.1:{server.port}?verify=false"))
    assert len(server.received) == 1


def test_untrusted_certificate_is_retried_not_dropped(start_smtp: StartServer, cert: Cert) -> None:
    server = start_smtp(ssl_context=cert.server_context())
    with pytest.raises(TemporaryDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        deliver(payload(), config(f"smtps://127.0.0.1:{server.port}"))


def test_starttls_the_server_does_not_offer_is_permanent(smtp_server: Server) -> None:
    with pytest.raises(UnrecoverableMessageError, match="STARTTLS"):
        deliver(payload(), config(f"smtp://127.0.0.1:{smtp_server.port}?starttls=true"))


def test_recipient_refused_with_5xx_is_permanent(smtp_server: Server) -> None:
    with pytest.raises(UnrecoverableMessageError, match="550"):
        deliver(payload(to=["perm@example.org"]), config(f"smtp://127.0.0.1:{smtp_server.port}"))


def test_recipient_refused_with_4xx_is_retried(smtp_server: Server) -> None:
    with pytest.raises(TemporaryDeliveryError, match="450"):
        deliver(payload(to=["temp@example.org"]), config(f"smtp://127.0.0.1:{smtp_server.port}"))


def test_some_recipients_refused_still_delivers_to_the_others(smtp_server: Server) -> None:
    deliver(
        payload(to=["jane@example.org", "perm@example.org"]), config(f"smtp://127.0.0.1:{smtp_server.port}")
    )
    assert smtp_server.received[0].rcpt_tos == ["jane@example.org"]


def test_data_refused_with_554_is_permanent_and_451_is_retried(smtp_server: Server) -> None:
    dsn = f"smtp://127.0.0.1:{smtp_server.port}"
    with pytest.raises(UnrecoverableMessageError, match="554"):
        deliver(payload(headers={"X-Test-Reply": "554"}), config(dsn))
    with pytest.raises(TemporaryDeliveryError, match="451"):
        deliver(payload(headers={"X-Test-Reply": "451"}), config(dsn))
    assert smtp_server.received == []


def test_server_down_is_retried(unused_port: int) -> None:
    with pytest.raises(TemporaryDeliveryError, match="ConnectionRefused"):
        deliver(payload(), config(f"smtp://127.0.0.1:{unused_port}"))


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts the TCP connection but never says hello."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_server_that_never_answers_times_out_and_is_retried(silent_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(TemporaryDeliveryError, match="timed out"):
        deliver(payload(), config(f"smtp://127.0.0.1:{silent_port}?timeout=0.3"))
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "bad", [{"subject": "x"}, {"to": 42}, {"to": "a@example.org", "text": ["x"]}, "not a mapping", None]
)
def test_malformed_payload_is_unrecoverable(bad: object, smtp_server: Server) -> None:
    with pytest.raises(UnrecoverableMessageError, match="malformed mail payload"):
        deliver(bad, config(f"smtp://127.0.0.1:{smtp_server.port}"))


def test_missing_dsn_or_sender_is_a_retryable_config_error() -> None:
    with pytest.raises(ConfigError, match=r"mail\.dsn is not configured"):
        deliver(payload(), MailConfig(sender=SENDER))
    with pytest.raises(ConfigError, match=r"mail\.sender is not configured"):
        deliver(payload(), config("smtp://127.0.0.1:25", sender=None))
    assert not issubclass(ConfigError, UnrecoverableMessageError)
