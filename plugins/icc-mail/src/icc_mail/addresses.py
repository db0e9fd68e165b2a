"""E-mail addresses and header text as icc-mail accepts them: one address per entry, no line breaks.

Kept apart from :mod:`icc_mail.message` so that validating ``[tool.icc.mail]`` when icc loads its plugins
does not import the e-mail package's heavier parts, smtplib or ssl.
"""

from __future__ import annotations

import re
from email.utils import getaddresses

from icc_mail.errors import MailError

_ADDR_SPEC = re.compile(r"[^@\s<>,;:\"()\[\]\\]+@[^@\s<>,;:\"()\[\]\\]+")
# CR and LF, NUL, and every other character str.splitlines() splits on (VT, FF, FS, GS, RS, NEL, U+2028,
# U+2029): the email package refuses a header containing any of them when the mail is built, so a mail that
# carried one would fail at every delivery attempt.
_LINE_BREAKS = frozenset("\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def encodable(value: str, what: str) -> None:
    """Refuse a lone surrogate (a str can hold one, UTF-8 cannot): the mail could never be sent."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MailError(
            f"{what} contains a lone surrogate ({value[exc.start]!r} at position {exc.start}), "
            "which cannot be encoded as UTF-8"
        ) from None


def no_line_breaks(value: str, what: str) -> None:
    if not _LINE_BREAKS.isdisjoint(value):
        raise MailError(
            f"{what} contains a line break ({value!r}); line breaks in headers allow header injection"
        )
    encodable(value, what)


def check_address(value: object, what: str) -> str:
    """Return the bare address of ``value`` ("Jane <jane@example.org>" -> "jane@example.org")."""
    if not isinstance(value, str):
        raise MailError(f"{what}: an address is a string, not {type(value).__name__} ({value!r})")
    no_line_breaks(value, what)
    pairs = getaddresses([value])
    addr = pairs[0][1] if len(pairs) == 1 else ""
    if not _ADDR_SPEC.fullmatch(addr) or addr not in value:
        raise MailError(
            f"{what}: {value!r} is not one e-mail address; "
            "write 'jane@example.org' or 'Jane Doe <jane@example.org>'"
        )
    return addr
