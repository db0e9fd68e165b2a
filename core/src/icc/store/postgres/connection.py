"""PostgreSQL plumbing shared by the PostgreSQL state store and queue transport: connections and migrations.

psycopg 3 is the optional extra ``icc-runner[postgres]``; it is imported only when ``[icc.store] url`` is set.

Every connection is its own (no pool, nothing shared across the tick's forks) and sets ``application_name``
(``icc <command> <host_id>``), ``statement_timeout``, ``lock_timeout`` and
``idle_in_transaction_session_timeout``, so a stuck database never hangs cron. Nothing relies on session state
(no session advisory locks, no prepared statements kept across transactions), so a pgbouncer in transaction mode
may sit in between. SQL names every table through the configured schema (``{schema}.runs``).

Migrations are numbered SQL files in ``icc/store/postgres/migrations`` (``0001_state.sql``, ...), applied in order in one
transaction under a transaction-level advisory lock: several hosts running ``icc db migrate`` at once apply each
migration once. ``icc run`` and ``icc consume`` never migrate; :func:`require_current` refuses an old or
unknown schema with the command to run.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from icc.errors import StateError
from icc.store.host import host_id

if TYPE_CHECKING:
    import psycopg

    from icc.config import Config

__all__ = [
    "Migration",
    "SchemaStatus",
    "connect",
    "migrate",
    "migrations",
    "redacted",
    "require_current",
    "schema_status",
    "shown_url",
    "timeouts",
]

STATEMENT_TIMEOUT_MS = 30_000
LOCK_TIMEOUT_MS = 10_000
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
CONNECT_TIMEOUT_S = 10


def shown_url(url: str) -> str:
    """``url`` without its password, for messages: ``postgresql://icc:***@db/app``. A user name libpq cannot
    decode (a bad ``%`` escape: perhaps a password typed where the user goes) is hidden too."""
    try:
        parts = urlsplit(url)
        if parts.username is not None and _BAD_ESCAPE.search(parts.username):
            host = parts.netloc.rpartition("@")[2]
            return urlunsplit(parts._replace(netloc=f"***@{host}"))
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "postgresql://***"


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_QUOTED = re.compile(r'"([^"]*)"')
# A password part shorter than this is redacted only where a message quotes it whole: replacing every "ab"
# would garble messages while hiding nothing a guess would not find.
_SHORTEST_SECRET = 4


def _userinfos(url: str) -> set[str]:
    """The user info of ``url`` as urllib reads it (up to the last ``@`` of the authority) and as libpq does (up
    to the first ``@`` before the first ``/``): with an unencoded ``@``, ``/`` or ``?`` in a password they differ."""
    rest = url.partition("://")[2]
    found: set[str] = set()
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        netloc = ""
    if "@" in netloc:
        found.add(netloc.rpartition("@")[0])
    authority = rest.split("/", 1)[0]
    if "@" in authority:
        found.add(authority.partition("@")[0])
        found.add(authority.rpartition("@")[0])
    return {info for info in found if info}


def redacted(text: str, url: str) -> str:
    """``text`` (a libpq or psycopg message) safe to print: ``url`` shown as :func:`shown_url`, and any part of
    its user info (the password, the user name, the whole user info; as written and percent-decoded) replaced by
    ``***``. libpq quotes what it cannot parse (``invalid percent-encoded token: "S3cret%ZZ"``) and cron mails
    stderr, so a connection error must never carry the password."""
    text = text.replace(url, shown_url(url))
    secrets: set[str] = set()  # redacted wherever they appear
    names: set[str] = set()  # redacted where a message quotes one whole ("role "icc" does not exist")
    for info in _userinfos(url):
        user, colon, password = info.partition(":")
        names.update({user, unquote(user)})
        if colon:  # a user info without a password is the user name alone
            for value in (info, unquote(info), password, unquote(password)):
                (secrets if len(value) >= _SHORTEST_SECRET else names).add(value)
    secrets.discard("")
    names.discard("")

    def quoted(match: re.Match[str]) -> str:
        token = match.group(1)
        if token in names or token in secrets or any(secret in token for secret in secrets):
            return '"***"'
        return match.group(0)

    text = _QUOTED.sub(quoted, text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _driver() -> Any:  # the psycopg module
    try:
        import psycopg  # lazy: psycopg: the postgres extra; its absence is worded here
    except ImportError:
        raise StateError(
            "[icc.store] url is a PostgreSQL database, but psycopg is not installed; "
            "install it with: pip install 'icc-runner[postgres]'"
        ) from None
    return psycopg


def quoted(schema: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise StateError(f"[icc.store] schema {schema!r} is not a lower-case SQL name")
    return f'"{schema}"'


def timeouts(limit: float | None = None) -> tuple[int, int, int]:
    """``(statement_timeout ms, lock_timeout ms, connect_timeout s)`` for work that must end within ``limit``
    seconds (a consumer's time limit): icc's defaults, shortened to the limit (libpq waits at least 2 s)."""
    if limit is None or not math.isfinite(limit):
        return STATEMENT_TIMEOUT_MS, LOCK_TIMEOUT_MS, CONNECT_TIMEOUT_S
    statement = int(min(STATEMENT_TIMEOUT_MS, max(1000.0, limit * 1000)))
    return statement, min(LOCK_TIMEOUT_MS, statement), int(min(CONNECT_TIMEOUT_S, max(2, math.ceil(limit))))


def _command() -> str:
    """The icc command this process runs (``run``, ``db migrate``), for ``application_name``: from click's
    context (global options such as ``--config h1`` come before the command); outside the ``icc`` command
    (``icc.dispatch()`` in an application), the program's name."""
    click = sys.modules.get("click")
    ctx = click.get_current_context(silent=True) if click is not None else None
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    if names:
        return " ".join(reversed(names))
    from icc.store import host  # lazy: as in connect

    if host.command is not None:  # the due `icc run`, without click
        return host.command
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "icc"


def connect(
    config: Config, *, purpose: str | None = None, autocommit: bool = False, limit: float | None = None
) -> psycopg.Connection[Any]:
    """A new connection to ``config.store.url`` with icc's timeouts (shortened to ``limit`` seconds, see
    :func:`timeouts`); a one-line :class:`StateError` when the server cannot be reached (the password is never
    shown)."""
    url = config.store.url
    if url is None:
        raise StateError("no [icc.store] url: this install keeps its state in SQLite")
    driver = _driver()
    command = purpose or _command()

    application = f"icc {command} {host_id(config)}"[:63]
    statement_ms, lock_ms, connect_s = timeouts(limit)
    options = (
        f"-c statement_timeout={statement_ms} -c lock_timeout={lock_ms} "
        f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
    )
    try:
        conn: psycopg.Connection[Any] = driver.connect(
            url,
            autocommit=autocommit,
            application_name=application,
            options=options,
            connect_timeout=connect_s,
            prepare_threshold=None,  # no server-side prepared statements: pgbouncer in transaction mode
            # A server that vanishes (partition, power loss) is noticed by TCP within about 30 s.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            tcp_user_timeout=30_000,
        )
    except driver.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "unsupported startup parameter: options" in str(exc):
            # pgbouncer refuses the options icc's timeouts travel in, unless told to drop them.
            detail += (
                " (a connection pooler such as pgbouncer: add `ignore_startup_parameters = options` to its "
                "ini and set the timeouts on the role, see the pgbouncer section of docs/several-servers.md)"
            )
        raise StateError(
            f"cannot connect to the PostgreSQL store {shown_url(url)}: {redacted(detail, url)}"
        ) from None
    return conn


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations shipped in this version of icc, in order."""
    found: list[Migration] = []
    for entry in resources.files("icc.store.postgres.migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def render(sql: str, schema: str) -> str:
    """SQL text with ``{schema}`` replaced by the quoted schema name."""
    return sql.replace("{schema}", quoted(schema))


@dataclass(frozen=True)
class SchemaStatus:
    """What ``icc db status`` shows: applied and pending migrations, and versions this icc does not know."""

    schema: str
    applied: list[tuple[int, str, str]]  # (version, name, applied at ISO)
    pending: list[Migration]
    unknown: list[int]  # applied by a newer icc

    @property
    def current(self) -> bool:
        return not self.pending and not self.unknown


def _lock_key(schema: str) -> int:
    """A stable 63-bit advisory lock key for migrating ``schema``."""
    import hashlib  # lazy: only icc db migrates (hashlib loads OpenSSL: a due tick's import time)

    return int.from_bytes(hashlib.sha256(f"icc.migrate:{schema}".encode()).digest()[:8], "big") >> 1


def schema_status(conn: psycopg.Connection[Any], schema: str) -> SchemaStatus:
    known = migrations()
    table = conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'migrations'", (schema,)
    ).fetchone()
    applied: list[tuple[int, str, str]] = []
    if table is not None:
        rows = conn.execute(
            render("SELECT version, name, applied_at FROM {schema}.migrations ORDER BY version", schema)
        ).fetchall()
        applied = [(int(v), str(n), a.isoformat(timespec="seconds")) for v, n, a in rows]
    if not conn.autocommit:
        conn.rollback()
    done = {v for v, _n, _a in applied}
    versions = {m.version for m in known}
    return SchemaStatus(
        schema=schema,
        applied=applied,
        pending=[m for m in known if m.version not in done],
        unknown=sorted(done - versions),
    )


def migrate(conn: psycopg.Connection[Any], schema: str) -> list[Migration]:
    """Apply the pending migrations in one transaction under an advisory transaction lock; return them.

    Safe from several hosts at once: the second waits for the lock, then finds nothing pending.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        conn.execute(render("CREATE SCHEMA IF NOT EXISTS {schema}", schema))
        conn.execute(
            render(
                "CREATE TABLE IF NOT EXISTS {schema}.migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                schema,
            )
        )
        done = {int(r[0]) for r in conn.execute(render("SELECT version FROM {schema}.migrations", schema))}
        unknown = done - {m.version for m in migrations()}
        if unknown:
            raise StateError(
                f"the PostgreSQL schema {schema!r} has migration {max(unknown)}, newer than this icc knows; "
                "upgrade icc on this host before migrating"
            )
        applied: list[Migration] = []
        for migration in migrations():
            if migration.version in done:
                continue
            conn.execute(render(migration.sql, schema))
            conn.execute(
                render("INSERT INTO {schema}.migrations (version, name) VALUES (%s, %s)", schema),
                (migration.version, migration.name),
            )
            applied.append(migration)
    return applied


def require_current(conn: psycopg.Connection[Any], schema: str, url: str) -> None:
    """Refuse a schema that is missing, behind, or ahead of this icc, naming the command that fixes it."""
    status = schema_status(conn, schema)
    if status.unknown:
        raise StateError(
            f"the PostgreSQL store {shown_url(url)} (schema {schema!r}) was migrated by a newer icc "
            f"(migration {max(status.unknown)}); upgrade icc on this host"
        )
    if status.pending:
        what = "has no icc schema yet" if not status.applied else "is behind this icc"
        raise StateError(
            f"the PostgreSQL store {shown_url(url)} (schema {schema!r}) {what}; run `icc db migrate`"
        )
