"""E-mail addresses and header text as icc-mail accepts them: one address per entry, no line breaks.

Kept apart from :mod:`icc_mail.message` so that validating ``[tool.icc.mail]`` when icc loads its plugins
does not import the e-mail package's heavier parts, smtplib or ssl.
"""

from __future__ import annotations

import re
from email.utils import getaddresses

from icc_mail.errors import MailError

_ADDR_SPEC = re.compile(r"[^@\s<>,;:\"()\[\]\\]+@[^@\s<>,;:\"()\[\]\\]+")
_LINE_BREAKS = ("\r", "\n", "\x00")


def no_line_breaks(value: str, what: str) -> None:
    if any(c in value for c in _LINE_BREAKS):
        raise MailError(
            f"{what} contains a line break ({value!r}); line breaks in headers allow header injection"
        )


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
