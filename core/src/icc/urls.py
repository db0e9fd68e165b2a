"""Heartbeat URLs: checked where they are given, and never shown in full.

A ping URL usually carries a secret (healthchecks.io's ping key or check UUID, Better Stack's heartbeat token,
Cronitor's key) in its path, sometimes in its user info or query. Every message icc prints shows such a URL
through :func:`redact`: scheme and host, the path as ``***`` (except the parts named in ``keep``), ``***@`` for
user info and ``?***`` for a query. Standard library only: the configuration imports it on the idle path.
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["JOB_PLACEHOLDER", "apprise_missing", "basic_auth", "notify_url_problem", "redact", "url_problem"]

JOB_PLACEHOLDER = "{job}"


def url_problem(value: object) -> str | None:
    """Why ``value`` is not an http(s) URL with a host, or None when it is one."""
    if not isinstance(value, str) or not value.strip():
        return "an http:// or https:// URL"
    if any(c.isspace() or ord(c) < 32 for c in value):
        return "an http:// or https:// URL without spaces or control characters"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  # a port that is not a number raises here
    except ValueError:
        return "an http:// or https:// URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "an http:// or https:// URL with a host"
    return None


def apprise_missing() -> str | None:
    """Why notification URLs cannot be used here (apprise is not installed), or None. Looks, imports nothing."""
    import importlib.util  # lazy: only with notification URLs configured

    try:
        spec = importlib.util.find_spec("apprise")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return "notification URLs need apprise, which is not installed: pip install 'icc-runner[notify]'"
    return None


def notify_url_problem(value: object) -> str | None:
    """Why ``value`` is not an apprise URL (``scheme://...``), or None when it looks like one. The syntax only:
    apprise itself checks the URL at scan (:mod:`icc.notify.notifications`)."""
    hint = "an apprise URL such as 'json://host/path', 'slack://...' or 'mailto://...'"
    if not isinstance(value, str) or not value.strip():
        return hint
    if any(c.isspace() or ord(c) < 32 for c in value):
        return f"{hint}, without spaces or control characters"
    scheme, sep, rest = value.partition("://")
    if not sep or not rest or not scheme[:1].isalpha() or not all(c.isalnum() or c in "+.-" for c in scheme):
        return hint
    return None


def redact(url: str, keep: Collection[str] = ()) -> str:
    """``https://hc-ping.com/***/{job}`` for ``https://hc-ping.com/KEY/{job}`` with ``keep={"{job}"}``.

    Path segments not in ``keep`` become one ``***`` per run of them; user info becomes ``***@``, a query
    ``?***``; a fragment is dropped. Something that does not parse as a URL is shown as ``***``.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "***"
    if not parts.scheme or not host:
        return "***"
    netloc = ("***@" if "@" in parts.netloc else "") + (f"[{host}]" if ":" in host else host)
    if port is not None:
        netloc += f":{port}"
    segments: list[str] = []
    for segment in parts.path.split("/")[1:]:
        if segment in keep or segment == "":
            segments.append(segment)
        elif not segments or segments[-1] != "***":
            segments.append("***")
    path = "/" + "/".join(segments) if segments else ""
    return f"{parts.scheme}://{netloc}{path}" + ("?***" if parts.query else "")


def basic_auth(url: str) -> tuple[str, str | None]:
    """``url`` without its user info, and that user info as an HTTP ``Authorization`` header value (``Basic
    ...``), or None when the URL has none. ``https://user:s%40cret@host/p`` gives ``https://host/p`` and the
    header for user ``user``, password ``s@cret``: a URL's user info is never sent as part of a host name."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _colon, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return urlunsplit(parts._replace(netloc=hostport)), f"Basic {token}"
