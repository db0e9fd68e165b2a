"""icc-mail: ``send_mail()`` queues a mail on icc's ``mail`` queue; the ``mail`` consumer delivers it by SMTP.

Configuration lives in ``[tool.icc.mail]`` (``dsn``, ``sender``, ``timeout``); see docs/mail.md. Names are
re-exported lazily: icc imports this package whenever it loads its plugins, and smtplib, ssl and the e-mail
package are only needed by the consumer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from icc_mail.errors import MailError, TemporaryDeliveryError
from icc_mail.send import MESSAGE_NAME, QUEUE, send_mail

if TYPE_CHECKING:
    from icc_mail.config import MailConfig, parse_config
    from icc_mail.delivery import deliver
    from icc_mail.dsn import SmtpDsn, parse_dsn
    from icc_mail.message import Mail

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

_LAZY = {
    "Mail": "icc_mail.message",
    "MailConfig": "icc_mail.config",
    "parse_config": "icc_mail.config",
    "SmtpDsn": "icc_mail.dsn",
    "parse_dsn": "icc_mail.dsn",
    "deliver": "icc_mail.delivery",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'icc_mail' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
