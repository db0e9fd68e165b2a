"""A real SMTP server (aiosmtpd) on 127.0.0.1, and a throwaway TLS certificate made with the openssl CLI.

The server's handler turns certain recipients and headers into SMTP errors, so the tests can provoke each
kind of failure with a real conversation: ``perm...@`` recipients get 550, ``temp...@`` get 450, a message
with ``X-Test-Reply: 554`` (or 451) is refused at DATA.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER = "mailer"
PASSWORD = "p@ss:wörd/#?%"  # every character a DSN must percent-encode


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.content)
        assert isinstance(parsed, EmailMessage)
        return parsed


class Collector:
    """aiosmtpd handler: keeps what it accepts, refuses on request."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("perm"):
            return "550 5.1.1 no such user"
        if address.startswith("temp"):
            return "450 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        if b"X-Test-Reply: 554" in content:
            return "554 5.6.0 message refused"
        if b"X-Test-Reply: 451" in content:
            return "451 4.3.0 try again later"
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), content))
        return "250 2.0.0 queued"


@dataclass(frozen=True)
class Authenticator:
    user: str
    password: str

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user.encode()
            and auth_data.password == self.password.encode()
        )
        return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    controller: Controller
    handler: Collector

    @property
    def port(self) -> int:
        port: int = self.controller.port
        return port

    @property
    def received(self) -> list[Received]:
        return self.handler.received


StartServer = Callable[..., Server]


@pytest.fixture
def start_smtp() -> Iterator[StartServer]:
    """Start an aiosmtpd server: ``start_smtp(port=None, auth=False, **controller_kwargs)``; stopped after the test.

    ``auth=True`` requires AUTH with ``USER``/``PASSWORD`` (the ``credentials`` fixture), over plain text unless
    ``auth_require_tls=True`` is passed too.
    """
    started: list[Controller] = []

    def start(
        port: int | None = None, *, auth: bool = False, password: str = PASSWORD, **kwargs: Any
    ) -> Server:
        if auth:  # AUTH PLAIN/LOGIN with USER and ``password``, required before MAIL
            kwargs.update(authenticator=Authenticator(USER, password), auth_required=True)
            kwargs.setdefault("auth_require_tls", False)
        handler = Collector()
        controller = Controller(handler, hostname="127.0.0.1", port=port or free_port(), **kwargs)
        controller.start()
        started.append(controller)
        return Server(controller, handler)

    yield start
    for controller in started:
        controller.stop()


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    def userinfo(self) -> str:
        """``user:password@``, percent-encoded for a DSN."""
        return f"{quote(self.user, safe='')}:{quote(self.password, safe='')}@"


@pytest.fixture
def credentials() -> Credentials:
    return Credentials(USER, PASSWORD)


@pytest.fixture
def unused_port() -> int:
    """A port nothing listens on (a mail server that is down)."""
    return free_port()


@pytest.fixture
def smtp_server(start_smtp: StartServer) -> Server:
    return start_smtp()


@dataclass(frozen=True)
class Cert:
    certfile: Path
    keyfile: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate for 127.0.0.1; clients trust it through the dsn's ``cafile=`` option."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed: cannot make a test certificate for TLS tests")
    directory = tmp_path_factory.mktemp("tls")
    cert = Cert(directory / "cert.pem", directory / "key.pem")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(cert.keyfile), "-out", str(cert.certfile),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert
