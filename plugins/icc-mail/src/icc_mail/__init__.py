"""icc-mail: ``send_mail()`` queues a mail on icc's ``mail`` queue; the ``mail`` consumer delivers it by SMTP.

Configuration lives in ``[tool.icc.mail]`` (``dsn``, ``sender``, ``timeout``); see docs/mail.md.
"""

from __future__ import annotations

from icc_mail.config import MailConfig, parse_config
from icc_mail.delivery import deliver
from icc_mail.dsn import SmtpDsn, parse_dsn
from icc_mail.errors import MailError, TemporaryDeliveryError
from icc_mail.message import Mail
from icc_mail.send import MESSAGE_NAME, QUEUE, send_mail

__all__ = [
    "MESSAGE_NAME",
    "QUEUE",
    "Mail",
    "MailConfig",
    "MailError",
    "SmtpDsn",
    "TemporaryDeliveryError",
    "deliver",
    "parse_config",
    "parse_dsn",
    "send_mail",
]
