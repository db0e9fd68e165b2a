"""A mail as the queue carries it (a JSON payload) and as SMTP carries it (an :class:`EmailMessage`).

``send_mail`` and the handler validate through the same :meth:`Mail.from_payload`, so a payload written by
hand is held to the same rules as one from ``send_mail``. Addresses and header values may not contain line
breaks: that is how header injection works.
"""

from __future__ import annotations

import email.policy
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

from icc_mail.addresses import check_address, encodable, no_line_breaks
from icc_mail.errors import MailError

# 7bit: non-ASCII bodies go out quoted-printable or base64, which every server accepts (no 8BITMIME needed).
POLICY = email.policy.SMTP.clone(cte_type="7bit")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII without ':' (RFC 5322 field-name)
# Headers send_mail sets from its own arguments or from the body: given in ``headers`` they would clash.
RESERVED_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "subject", "reply-to", "date", "message-id", "mime-version"}
)
PAYLOAD_KEYS = frozenset(
    {"to", "cc", "bcc", "reply_to", "sender", "subject", "text", "html", "headers", "uid", "date"}
)


def _addresses(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or isinstance(value, bytes):
        raise MailError(f"{what} must be an address or a list of addresses, not {type(value).__name__}")
    for i, item in enumerate(value):
        check_address(item, f"{what}[{i}]")
    return list(value)


def _text(value: object, what: str, *, header: bool) -> str:
    if not isinstance(value, str):
        raise MailError(f"{what} must be a string, not {type(value).__name__}")
    if header:
        no_line_breaks(value, what)
    else:
        encodable(value, what)
    return value


def _headers(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MailError(f"headers must be a mapping of header name to value, not {type(value).__name__}")
    result: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise MailError(f"header name {name!r} is not valid: printable ASCII without spaces or ':'")
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or lowered.startswith("content-"):
            raise MailError(
                f"header {name!r} is set by send_mail itself; use its arguments (to, cc, bcc, reply_to, "
                "sender, subject, text, html) instead"
            )
        if any(existing.lower() == lowered for existing in result):
            raise MailError(f"header {name!r} is given twice")
        result[name] = _text(text, f"header {name!r}", header=True)
    return result


@dataclass(frozen=True)
class Mail:
    """One validated mail; ``sender`` None means the configured ``mail.sender``."""

    to: list[str]
    subject: str
    text: str
    html: str | None = None
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    reply_to: list[str] = field(default_factory=list)
    sender: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Fixed when the mail is dispatched, so every delivery attempt sends the same Message-ID and Date
    # (a receiver can drop the duplicate an at-least-once retry may cause).
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    date: str = field(default_factory=lambda: formatdate(localtime=True))

    @classmethod
    def from_payload(cls, payload: object) -> Mail:
        """Validate a queue payload; :class:`MailError` says what is wrong with it."""
        if not isinstance(payload, Mapping):
            raise MailError(f"a mail payload is a JSON object, not {type(payload).__name__}")
        unknown = sorted(set(payload) - PAYLOAD_KEYS)
        if unknown:
            raise MailError(f"mail payload has unknown keys {unknown}; known: {sorted(PAYLOAD_KEYS)}")
        if "to" not in payload:
            raise MailError("mail payload has no 'to': give at least one recipient")
        to = _addresses(payload["to"], "to")
        cc = _addresses(payload.get("cc"), "cc")
        bcc = _addresses(payload.get("bcc"), "bcc")
        if not (to or cc or bcc):
            raise MailError("a mail needs at least one recipient in to, cc or bcc")
        sender = payload.get("sender")
        if sender is not None:
            check_address(sender, "sender")
        html = payload.get("html")
        extra: dict[str, Any] = {}
        if payload.get("uid") is not None:
            uid = _text(payload["uid"], "uid", header=True)
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", uid):
                raise MailError(f"uid {uid!r} must be 1-64 letters, digits, '.', '_' or '-'")
            extra["uid"] = uid
        if payload.get("date") is not None:
            date = _text(payload["date"], "date", header=True)
            try:
                parsedate_to_datetime(date)
            except (TypeError, ValueError):
                raise MailError(f"date {date!r} is not an RFC 5322 date") from None
            extra["date"] = date
        return cls(
            to=to,
            subject=_text(payload.get("subject", ""), "subject", header=True),
            text=_text(payload.get("text", ""), "text", header=False),
            html=None if html is None else _text(html, "html", header=False),
            cc=cc,
            bcc=bcc,
            reply_to=_addresses(payload.get("reply_to"), "reply_to"),
            sender=sender,
            headers=_headers(payload.get("headers")),
            **extra,
        )

    def to_payload(self) -> dict[str, Any]:
        """The JSON object the queue carries."""
        payload: dict[str, Any] = {"to": self.to, "subject": self.subject, "text": self.text}
        optional: dict[str, Any] = {
            "html": self.html,
            "cc": self.cc,
            "bcc": self.bcc,
            "reply_to": self.reply_to,
            "sender": self.sender,
            "headers": self.headers,
        }
        payload.update({k: v for k, v in optional.items() if v is not None and v != [] and v != {}})
        payload["uid"] = self.uid
        payload["date"] = self.date
        return payload

    def recipients(self) -> list[str]:
        """The envelope recipients (RCPT TO): To, Cc and Bcc, bare addresses, each once."""
        seen: dict[str, None] = {}
        for i, value in enumerate([*self.to, *self.cc, *self.bcc]):
            seen.setdefault(check_address(value, f"recipient {i}"), None)
        return list(seen)

    def build(self, default_sender: str | None) -> EmailMessage:
        """The message as it goes out. Bcc recipients are envelope-only: never a header."""
        sender = self.sender or default_sender
        if not sender:
            raise MailError(
                "the mail has no sender: pass sender=... to send_mail or set [tool.icc.mail] sender"
            )
        sender_addr = check_address(sender, "sender")
        msg = EmailMessage(policy=POLICY)
        msg["Subject"] = self.subject
        msg["From"] = sender
        if self.to:
            msg["To"] = ", ".join(self.to)
        if self.cc:
            msg["Cc"] = ", ".join(self.cc)
        if self.reply_to:
            msg["Reply-To"] = ", ".join(self.reply_to)
        msg["Date"] = self.date
        msg["Message-ID"] = f"<{self.uid}@{_msgid_domain(sender_addr)}>"
        for name, value in self.headers.items():
            msg[name] = value
        msg.set_content(self.text)
        if self.html is not None:
            msg.add_alternative(self.html, subtype="html")
        return msg


def _msgid_domain(address: str) -> str:
    domain = address.rpartition("@")[2]
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "icc-mail.invalid"
