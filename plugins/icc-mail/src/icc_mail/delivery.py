"""The ``mail.send`` handler's work: payload -> :class:`EmailMessage` -> SMTP, with icc's failure semantics.

A payload that can never become a mail raises :class:`icc.UnrecoverableMessageError` (to failed at once).
A missing ``dsn`` or ``sender`` is a configuration problem that fixing the config cures, so it raises a
retryable :class:`icc.ConfigError` and the message waits in the queue.
"""

from __future__ import annotations

from icc.errors import ConfigError, UnrecoverableMessageError

from icc_mail.addresses import check_address
from icc_mail.config import MailConfig
from icc_mail.errors import MailError
from icc_mail.message import Mail
from icc_mail.smtp import send


def deliver(payload: object, config: MailConfig) -> None:
    """Build the mail in ``payload`` and deliver it through ``config.dsn``."""
    try:
        mail = Mail.from_payload(payload)
    except MailError as exc:
        raise UnrecoverableMessageError(f"malformed mail payload: {exc}") from exc
    if config.dsn is None:
        raise ConfigError(
            "mail.dsn is not configured: set dsn = 'smtp://host:25' in [tool.icc.mail] (or [icc.mail] in "
            "icc.toml); the message stays queued and is retried"
        )
    sender = mail.sender or config.sender
    if sender is None:
        raise ConfigError(
            "the mail has no sender and mail.sender is not configured: set sender = 'noreply@example.org' in "
            "[tool.icc.mail]; the message stays queued and is retried"
        )
    message = mail.build(sender)
    send(message, check_address(sender, "sender"), mail.recipients(), config.dsn, timeout=config.timeout)
