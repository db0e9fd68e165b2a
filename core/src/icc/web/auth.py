"""Who may see the dashboard and act through it.

- With a token (``[icc.web] token`` or ``ICC_WEB_TOKEN``): every route but ``/healthz``, ``/login`` and the static
  files needs the session cookie a login with the token sets (HttpOnly, SameSite=Strict, Secure over HTTPS), or
  ``Authorization: Bearer TOKEN``. Without a token (only on a loopback address): every visitor is let in, and gets
  a session cookie all the same, which the CSRF tokens are bound to.
- Actions are POST only, with the form's CSRF token (an HMAC of the session) or a bearer token; ``--read-only``
  refuses them all (403).
- Tokens are compared in constant time (:func:`hmac.compare_digest`); each wrong one from an address waits a
  little longer before its answer (up to :data:`MAX_BACKOFF` seconds).

The session key is derived from the token (sessions survive a restart) or, without one, random per process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field

SESSION_COOKIE = "icc_session"
SESSION_SECONDS = 12 * 3600
MAX_BACKOFF = 2.0  # seconds: the wait after many wrong tokens in a row from one address
BACKOFF_STEP = 0.2  # seconds: the wait after the first wrong token, doubled for each one after it


def is_loopback(host: str) -> bool:
    """True for ``127.0.0.0/8``, ``::1`` and ``localhost``; any other name or address is a network bind."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Guard:
    """The dashboard's keys: the token (None: open, loopback only), the session key, ``read_only``."""

    token: str | None
    read_only: bool = False
    key: bytes = b""
    _failures: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.key:
            self.key = (
                hashlib.sha256(b"icc-web-session\0" + self.token.encode()).digest()
                if self.token is not None
                else secrets.token_bytes(32)
            )

    # -- the token ---------------------------------------------------------------------------------------------
    def token_ok(self, given: str | None) -> bool:
        if self.token is None or given is None:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def bearer(self, authorization: str | None) -> str | None:
        """The token of an ``Authorization: Bearer ...`` header, or None."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    async def wrong_token(self, remote: str) -> None:
        """After a wrong token from ``remote``: wait longer the more wrong ones came in a row."""
        count = self._failures.get(remote, 0)
        self._failures[remote] = count + 1
        if len(self._failures) > 10_000:  # many addresses: forget the oldest
            self._failures.pop(next(iter(self._failures)))
        await asyncio.sleep(min(MAX_BACKOFF, BACKOFF_STEP * 2**count))

    def right_token(self, remote: str) -> None:
        self._failures.pop(remote, None)

    # -- sessions ----------------------------------------------------------------------------------------------
    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def new_session(self, now: float | None = None) -> str:
        """A session cookie value: ``id.issued.signature``."""
        issued = int(time.time() if now is None else now)
        body = f"{secrets.token_urlsafe(16)}.{issued}"
        return f"{body}.{self._sign('session:' + body)}"

    def session_id(self, cookie: str | None, now: float | None = None) -> str | None:
        """The id of a valid, unexpired session cookie, else None."""
        if not cookie or cookie.count(".") != 2:
            return None
        sid, issued, signature = cookie.split(".")
        if not hmac.compare_digest(signature.encode(), self._sign(f"session:{sid}.{issued}").encode()):
            return None
        if not issued.isdigit() or (time.time() if now is None else now) - int(issued) > SESSION_SECONDS:
            return None
        return sid

    def csrf_token(self, sid: str) -> str:
        return self._sign("csrf:" + sid)[:40]

    def csrf_ok(self, sid: str | None, given: str | None) -> bool:
        if sid is None or not given:
            return False
        return hmac.compare_digest(given.encode(), self.csrf_token(sid).encode())
