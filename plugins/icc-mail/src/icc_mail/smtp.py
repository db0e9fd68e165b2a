"""SMTP delivery per ``mail.dsn``, and the line between permanent and temporary failures.

A 5xx reply is permanent: :class:`icc.UnrecoverableMessageError`, the message goes to failed at once. A 4xx
reply, a refused or dropped connection, a timeout or a TLS handshake failure may pass:
:class:`TemporaryDeliveryError`, the queue retries with backoff.
"""

from __future__ import annotations

import base64
import logging
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage

from icc.errors import UnrecoverableMessageError

from icc_mail.dsn import SmtpDsn
from icc_mail.errors import TemporaryDeliveryError

log = logging.getLogger("icc_mail")
DEFAULT_TIMEOUT = 30.0


def tls_context(dsn: SmtpDsn) -> ssl.SSLContext:
    """Verify the server against the system CAs, or ``cafile``; ``verify=false`` turns checking off."""
    context = ssl.create_default_context(cafile=dsn.cafile)
    if not dsn.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def send(
    message: EmailMessage,
    envelope_from: str,
    recipients: Sequence[str],
    dsn: SmtpDsn,
    *,
    timeout: float | None = None,
) -> dict[str, tuple[int, bytes]]:
    """Deliver ``message``; returns the recipients the server refused while accepting others."""
    seconds = dsn.timeout or timeout or DEFAULT_TIMEOUT
    where = f"{dsn.host}:{dsn.port}"
    try:
        context = tls_context(dsn) if dsn.implicit_tls or dsn.starttls else None
    except (OSError, ssl.SSLError) as exc:
        raise UnrecoverableMessageError(f"mail.dsn cafile {dsn.cafile!r} cannot be used: {exc}") from exc
    try:
        client: smtplib.SMTP
        if dsn.implicit_tls:
            client = smtplib.SMTP_SSL(dsn.host, dsn.port, timeout=seconds, context=context)
        else:
            client = smtplib.SMTP(dsn.host, dsn.port, timeout=seconds)
        try:
            client.ehlo()
            if dsn.starttls:
                client.starttls(context=context)
                client.ehlo()
            if dsn.username is not None:
                _login(client, dsn.username, dsn.password or "")
            refused = client.send_message(message, from_addr=envelope_from, to_addrs=list(recipients))
        finally:
            _quit_quietly(client)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {addr: code for addr, (code, _) in exc.recipients.items()}
        detail = ", ".join(f"{addr}: {code} {_text(msg)}" for addr, (code, msg) in exc.recipients.items())
        if all(code >= 500 for code in codes.values()):
            raise UnrecoverableMessageError(f"{where} refused every recipient: {detail}") from exc
        raise TemporaryDeliveryError(f"{where} refused recipients for now: {detail}") from exc
    except smtplib.SMTPResponseException as exc:
        # sender refused, data refused, authentication failed, HELO refused, greeting refused
        what = f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)} ({type(exc).__name__})"
        if exc.smtp_code >= 500:
            raise UnrecoverableMessageError(what) from exc
        raise TemporaryDeliveryError(what) from exc
    except smtplib.SMTPNotSupportedError as exc:
        # STARTTLS, AUTH or SMTPUTF8 that the server does not offer: fix mail.dsn, then `icc failed retry`.
        raise UnrecoverableMessageError(f"{where} does not support what mail.dsn asks for: {exc}") from exc
    except smtplib.SMTPServerDisconnected as exc:
        raise TemporaryDeliveryError(f"{where} closed the connection: {exc}") from exc
    except (OSError, smtplib.SMTPException) as exc:  # refused, unreachable, timeout, TLS handshake
        raise TemporaryDeliveryError(f"cannot deliver through {where}: {type(exc).__name__}: {exc}") from exc
    if refused:
        log.warning("mail %s: %s refused %s", message["Message-ID"], where, sorted(refused))
    return refused


def _login(client: smtplib.SMTP, user: str, password: str) -> None:
    if (user + password).isascii():
        client.login(user, password)
        return
    # smtplib encodes credentials as ASCII; SASL PLAIN (RFC 4616) carries UTF-8, so send it ourselves.
    client.ehlo_or_helo_if_needed()
    if "PLAIN" not in client.esmtp_features.get("auth", "").upper().split():
        raise smtplib.SMTPNotSupportedError(
            "non-ASCII user or password need AUTH PLAIN, which the server lacks"
        )
    token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode("ascii")
    code, reply = client.docmd("AUTH", "PLAIN " + token)
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, reply)


def _quit_quietly(client: smtplib.SMTP) -> None:
    # Once the server has accepted the message a failing QUIT must not make the queue send it again, and on
    # the error path it must not hide the error that matters.
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
