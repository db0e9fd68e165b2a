"""The backends' administration, for ``icc db``: the PostgreSQL store's schema (migrate, its status) and the copy of
an SQLite store into it. Here, inside ``icc.store``, rather than in the command: only the store names a backend
(the import-linter "backends" contract). psycopg is imported only when one of these runs.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icc.errors import StateError
from icc.store.postgres import connection as pg
from icc.store.sqlite.queues import DATABASE_FILE
from icc.store.sqlite.state import FILENAME

if TYPE_CHECKING:
    import psycopg

    from icc.config import Config

__all__ = [
    "Migration",
    "SchemaStatus",
    "copy_from_sqlite",
    "known_migrations",
    "migrate",
    "schema_status",
    "where",
]

Migration = pg.Migration
SchemaStatus = pg.SchemaStatus


def where(config: Config) -> str:
    """The PostgreSQL store for messages: its URL without the password, and its schema."""
    return f"{pg.shown_url(config.store.url or '')} (schema {config.store.schema})"


def shown_url(config: Config) -> str:
    """The store's URL without its password."""
    return pg.shown_url(config.store.url or "")


@contextmanager
def connection(config: Config, purpose: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection; a database error on it becomes one line (the password never shown)."""
    url = config.store.url
    assert url is not None
    pg.quoted(config.store.schema)
    conn = pg.connect(config, purpose=purpose, autocommit=True)
    driver = pg._driver()
    try:
        yield conn
    except driver.Error as exc:
        text = str(exc).strip()
        detail = text.splitlines()[0] if text else type(exc).__name__
        raise StateError(
            f"icc {purpose}: the PostgreSQL store {pg.shown_url(url)} (schema {config.store.schema!r}) "
            f"refused: {pg.redacted(detail, url)}"
        ) from None
    finally:
        conn.close()


def migrate(config: Config) -> list[Migration]:
    """Apply the pending migrations (safe from several hosts at once); those applied."""
    with connection(config, "db migrate") as conn:
        return pg.migrate(conn, config.store.schema)


def schema_status(config: Config) -> SchemaStatus:
    """Which migrations the schema has, which are pending, which this icc does not know."""
    with connection(config, "db status") as conn:
        return pg.schema_status(conn, config.store.schema)


def known_migrations() -> dict[int, str]:
    """This icc's migrations: {version: name}."""
    return {m.version: m.name for m in pg.migrations()}


# -- copy-from-sqlite -------------------------------------------------------------------------------------------

_NOT_COPIED_META = frozenset({"schema_version"})  # SQLite's own file format version
_JOB_COLUMNS = "name, kind, definition, plugin, distribution, version, enabled, removed_at, next_due, created_at, updated_at"
_RUN_COLUMNS = (
    "id, job, slot, kind, outcome, started_at, ended_at, exit_code, pid, host, output, error, task_pid"
)
_MESSAGE_COLUMNS = "id, queue, name, payload, created_at, available_at, attempts, errors"
_FAILED_COLUMNS = "id, queue, name, payload, created_at, failed_at, attempts, reason, errors"


def _read_only(path: Path) -> sqlite3.Connection:
    """``path`` opened read-only: the copy never changes the SQLite files."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        is not None
    )


def _read_sqlite(state_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the copy takes, read from the SQLite files in ``state_dir``."""
    state_path = state_dir / FILENAME
    if not state_path.is_file():
        raise StateError(
            f"icc db copy-from-sqlite: no SQLite state at {state_path}; nothing to copy "
            "(name another directory with --state-dir DIR)"
        )
    rows: dict[str, list[tuple[Any, ...]]] = {}
    queue_path = state_dir / DATABASE_FILE
    current = state_path
    try:
        with closing(_read_only(state_path)) as src:
            if not _has_table(src, "jobs") or not _has_table(src, "meta"):
                raise StateError(f"icc db copy-from-sqlite: {state_path} is not an icc state database")
            rows["meta"] = [
                r for r in src.execute("SELECT key, value FROM meta") if r[0] not in _NOT_COPIED_META
            ]
            rows["jobs"] = src.execute(f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY name").fetchall()
            rows["runs"] = src.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id").fetchall()
            rows["run_counts"] = (
                src.execute("SELECT job, outcome, n FROM run_counts").fetchall()
                if _has_table(src, "run_counts")
                else []
            )
            rows["web_actions"] = (  # the dashboard's record of actions (icc web)
                src.execute(
                    "SELECT at, action, target, remote, detail FROM web_actions ORDER BY id"
                ).fetchall()
                if _has_table(src, "web_actions")
                else []
            )
        rows["messages"], rows["failed"], rows["last_id"] = [], [], [(0,)]
        if queue_path.is_file():
            current = queue_path
            with closing(_read_only(queue_path)) as src:
                rows["messages"] = src.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages ORDER BY id"
                ).fetchall()
                rows["failed"] = src.execute(f"SELECT {_FAILED_COLUMNS} FROM failed ORDER BY id").fetchall()
                if _has_table(src, "sqlite_sequence"):  # schema 1: AUTOINCREMENT's counter
                    found = src.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
                    rows["last_id"] = [(int(found[0]) if found else 0,)]
                if _has_table(src, "message_ids"):  # schema 2: the last id of a deleted newest message
                    found = src.execute("SELECT max(last) FROM message_ids").fetchone()
                    last = int(found[0]) if found and found[0] is not None else 0
                    rows["last_id"] = [(max(last, int(rows["last_id"][0][0])),)]
    except sqlite3.Error as exc:
        raise StateError(f"icc db copy-from-sqlite: cannot read {current}: {exc}") from None
    return rows


def _target_rows(conn: psycopg.Connection[Any], schema: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in ("jobs", "runs", "messages", "failed"):
        row = conn.execute(pg.render(f"SELECT count(*) FROM {{schema}}.{table}", schema)).fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


def _copy(conn: psycopg.Connection[Any], schema: str, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    """Insert ``rows`` into the PostgreSQL store (the caller holds the transaction)."""
    now = time.time()
    with conn.cursor() as cur:
        cur.executemany(
            pg.render(
                "INSERT INTO {schema}.meta (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                schema,
            ),
            rows["meta"],
        )
        cur.executemany(
            pg.render(
                f"INSERT INTO {{schema}}.jobs ({_JOB_COLUMNS}) VALUES ({', '.join(['%s'] * 11)})", schema
            ),
            [(*r[:6], bool(r[6]), *r[7:]) for r in rows["jobs"]],
        )
        # A run that was still in flight in SQLite has no owner on PostgreSQL: it is recorded as abandoned.
        runs = [
            (
                *r[:4],
                "abandoned" if r[4] in ("pending", "running") else r[4],
                r[5],
                (r[6] if r[6] is not None else now) if r[4] in ("pending", "running") else r[6],
                *r[7:11],
                "in flight in SQLite when the store was copied to PostgreSQL"
                if r[4] in ("pending", "running") and r[11] is None
                else r[11],
                r[12],
            )
            for r in rows["runs"]
        ]
        cur.executemany(
            pg.render(
                f"INSERT INTO {{schema}}.runs ({_RUN_COLUMNS}) OVERRIDING SYSTEM VALUE "
                f"VALUES ({', '.join(['%s'] * 13)})",
                schema,
            ),
            runs,
        )
        cur.executemany(
            pg.render(
                "INSERT INTO {schema}.run_counts (job, outcome, n) VALUES (%s, %s, %s) "
                "ON CONFLICT (job, outcome) DO UPDATE SET n = {schema}.run_counts.n + excluded.n",
                schema,
            ),
            rows["run_counts"],
        )
        cur.executemany(
            pg.render(
                "INSERT INTO {schema}.web_actions (at, action, target, remote, detail) VALUES (%s, %s, %s, %s, %s)",
                schema,
            ),
            rows.get("web_actions", []),
        )
        # Leases held by SQLite consumers end where they would have: the message is leasable again from then.
        cur.executemany(
            pg.render(
                f"INSERT INTO {{schema}}.messages ({_MESSAGE_COLUMNS}) OVERRIDING SYSTEM VALUE "
                f"VALUES ({', '.join(['%s'] * 8)})",
                schema,
            ),
            rows["messages"],
        )
        cur.executemany(
            pg.render(
                f"INSERT INTO {{schema}}.failed ({_FAILED_COLUMNS}) VALUES ({', '.join(['%s'] * 9)})", schema
            ),
            rows["failed"],
        )
        # New ids start past every copied one: messages, failed messages (they keep their message's id), and
        # ids SQLite handed out before (never reused: AUTOINCREMENT's counter or message_ids).
        last_message = max(
            [int(rows["last_id"][0][0])]
            + [int(r[0]) for r in rows["messages"]]
            + [int(r[0]) for r in rows["failed"]]
        )
        last_run = max([0] + [int(r[0]) for r in rows["runs"]])
        for table, last in (("messages", last_message), ("runs", last_run)):
            if last > 0:
                cur.execute(
                    pg.render(
                        f"SELECT setval(pg_get_serial_sequence('{{schema}}.{table}', 'id'), "
                        f"GREATEST(%s, (SELECT coalesce(max(id), 0) FROM {{schema}}.{table})))",
                        schema,
                    ),
                    (last,),
                )


def copy_from_sqlite(config: Config, source: Path) -> dict[str, int]:
    """Copy jobs, runs, meta and messages from the SQLite files in ``source`` into the empty, migrated PostgreSQL
    store of ``config``, in one transaction; how many of each."""
    schema = config.store.schema
    rows = _read_sqlite(source)
    with connection(config, "db copy-from-sqlite") as conn:
        pg.require_current(conn, schema, config.store.url or "")
        with conn.transaction():
            # Nobody writes into the store while it is copied into (a tick or consumer of another host waits).
            conn.execute(
                pg.render(
                    "LOCK TABLE {schema}.jobs, {schema}.runs, {schema}.messages, {schema}.failed, "
                    "{schema}.meta, {schema}.run_counts IN EXCLUSIVE MODE",
                    schema,
                )
            )
            found = {table: n for table, n in _target_rows(conn, schema).items() if n}
            if found:
                what = ", ".join(f"{n} {table}" for table, n in found.items())
                raise StateError(
                    f"icc db copy-from-sqlite: {where(config)} is not empty ({what}); nothing copied. Copy into a "
                    f"freshly migrated schema: drop it (DROP SCHEMA {schema} CASCADE) and run `icc db migrate` first"
                )
            _copy(conn, schema, rows)
    return {table: len(rows[table]) for table in ("jobs", "runs", "messages", "failed")}
