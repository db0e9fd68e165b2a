"""``send_mail``: what application code calls. It validates and dispatches; the ``mail`` consumer delivers.

Imports happen on the first call, so that loading the plugin (every ``icc`` command does) stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

MESSAGE_NAME = "mail.send"
QUEUE = "mail"


def send_mail(
    to: str | Sequence[str],
    subject: str,
    text: str,
    html: str | None = None,
    *,
    cc: str | Sequence[str] = (),
    bcc: str | Sequence[str] = (),
    reply_to: str | Sequence[str] | None = None,
    sender: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Queue a mail on the ``mail`` queue and return the message id.

    ``to``, ``cc``, ``bcc`` and ``reply_to`` take one address or a list (``"jane@example.org"`` or
    ``"Jane Doe <jane@example.org>"``); Bcc recipients get the mail but appear in no header. ``sender``
    defaults to ``[tool.icc.mail] sender``. ``html`` adds an HTML alternative to the ``text`` body.
    Raises :class:`icc_mail.MailError` (a :class:`ValueError`) for a bad address, a line break in the subject
    or a header (header injection), or a header that an argument sets.
    """
    from icc_mail.message import Mail

    mail = Mail.from_payload(
        {
            "to": to,
            "subject": subject,
            "text": text,
            "html": html,
            "cc": cc,
            "bcc": bcc,
            "reply_to": reply_to,
            "sender": sender,
            "headers": headers,
        }
    )
    from icc import dispatch

    message_id: int = dispatch(MESSAGE_NAME, mail.to_payload(), queue=QUEUE)
    return message_id
