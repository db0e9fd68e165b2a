"""The SMTP connection string, ``mail.dsn``.

``smtp://[user[:password]@]host[:port][?starttls=true&timeout=10&cafile=/path&verify=false]`` or ``smtps://...``.
User and password are percent-decoded. The password never appears in a repr or an error message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from icc.errors import ConfigError

DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
OPTIONS = ("starttls", "timeout", "verify", "cafile")


@dataclass(frozen=True)
class SmtpDsn:
    """A parsed ``mail.dsn``."""

    scheme: Literal["smtp", "smtps"]
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    timeout: float | None = None
    verify: bool = True
    cafile: str | None = None

    @property
    def implicit_tls(self) -> bool:
        return self.scheme == "smtps"

    def to_url(self, *, redact: bool = False) -> str:
        """The DSN as a string that :func:`parse_dsn` reads back; ``redact`` masks the password."""
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + ("***" if redact else quote(self.password, safe=""))
            auth += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = []
        if self.starttls:
            query.append("starttls=true")
        if self.timeout is not None:
            query.append(f"timeout={self.timeout!r}")
        if not self.verify:
            query.append("verify=false")
        if self.cafile is not None:
            query.append("cafile=" + quote(self.cafile, safe="/"))
        suffix = "?" + "&".join(query) if query else ""
        return f"{self.scheme}://{auth}{host}:{self.port}{suffix}"

    def __str__(self) -> str:
        return self.to_url(redact=True)


def _bool(key: str, value: str, shown: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"mail.dsn option {key}={value!r} is not a boolean (use true or false) in {shown}")


def parse_dsn(text: str) -> SmtpDsn:
    """Parse ``mail.dsn``; a :class:`icc.ConfigError` says which part is wrong."""
    if not isinstance(text, str):
        raise ConfigError(f"mail.dsn must be a string like 'smtp://host:25', not {type(text).__name__}")
    try:
        parts = urlsplit(text.strip())
    except ValueError as exc:
        raise ConfigError(f"mail.dsn is not a valid URL: {exc}") from None
    # Never echo the password back: show the DSN with it masked.
    shown = _redact(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(
            f"mail.dsn {shown!r} has scheme {parts.scheme!r}; use smtp:// (optionally ?starttls=true) or smtps://"
        )
    host = parts.hostname
    if not host:
        raise ConfigError(f"mail.dsn {shown!r} has no host; write it as {scheme}://mail.example.org:587")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"mail.dsn {shown!r} has a port that is not a number from 1 to 65535") from None
    if port == 0:
        raise ConfigError(f"mail.dsn {shown!r} has port 0; give a port from 1 to 65535")
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(f"mail.dsn {shown!r} has a path or fragment; only ?options may follow the host")
    try:
        username = unquote(parts.username, errors="strict") if parts.username is not None else None
        password = unquote(parts.password, errors="strict") if parts.password is not None else None
    except UnicodeDecodeError:
        raise ConfigError(f"mail.dsn {shown!r}: user or password is not percent-encoded UTF-8") from None
    if not username:
        if password:
            raise ConfigError(f"mail.dsn {shown!r} has a password but no user name")
        username = password = None

    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in OPTIONS:
            raise ConfigError(
                f"mail.dsn {shown!r} has unknown option {key!r}; known options: {', '.join(OPTIONS)}"
            )
        if key in options:
            raise ConfigError(f"mail.dsn {shown!r} gives option {key!r} twice")
        options[key] = value

    starttls = _bool("starttls", options["starttls"], shown) if "starttls" in options else False
    if starttls and scheme == "smtps":
        raise ConfigError(
            f"mail.dsn {shown!r}: smtps:// is TLS from the start; starttls=true belongs to smtp:// only"
        )
    timeout: float | None = None
    if "timeout" in options:
        try:
            timeout = float(options["timeout"])
        except ValueError:
            timeout = -1.0
        if not 0 < timeout < float("inf"):
            raise ConfigError(f"mail.dsn {shown!r}: timeout must be a positive number of seconds")
    verify = _bool("verify", options["verify"], shown) if "verify" in options else True
    cafile = options.get("cafile") or None
    return SmtpDsn(
        scheme="smtps" if scheme == "smtps" else "smtp",
        host=host,
        port=port if port is not None else DEFAULT_PORTS[scheme],
        username=username,
        password=password,
        starttls=starttls,
        timeout=timeout,
        verify=verify,
        cafile=cafile,
    )


def _redact(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    netloc, slash, tail = rest.partition("/")
    netloc, qmark, query = netloc.partition("?")
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}://{userinfo}{at}{hostport}{qmark}{query}{slash}{tail}"
