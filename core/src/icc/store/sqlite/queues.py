"""The embedded transport: SQLite in its own file, ``<state_dir>/queue.sqlite3``.

Its own file, not the state store's, so that a busy queue never holds up the tick's writes.

Durability: WAL journal, ``synchronous=FULL`` by default. In WAL mode ``NORMAL`` keeps the database
consistent but may lose the last transactions on power loss or an OS crash — a message
``icc.dispatch`` already returned an id for could vanish, which icc promises never happens. ``FULL``
syncs the WAL on every commit; consumers lease and acknowledge in batches, so they pay that sync per
batch, not per message. ``NORMAL`` can be chosen explicitly (the benchmark does, to compare with huey at
equal durability).

Every write is one ``BEGIN IMMEDIATE`` transaction: the write lock is taken up front, so two consumers
never both read the same available rows and then fight to upgrade their locks; ``busy_timeout`` makes
them queue up for it instead of failing.

One column, ``available_at``, says when a row may be leased: its dispatch time plus delay, its retry time,
or — while it is leased — its lease expiry. An expired lease therefore needs no sweeper: the row is
simply available again, and ``lease_owner`` still set tells that it was redelivered.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from icc.errors import QueueError
from icc.queue.message import Envelope
from icc.queue.transport import QueueStats as QueueStats  # re-exported: it was defined here
from icc.statedir import FileWatch, ensure_state_dir, secure_file
from icc.store.sqlite.changes import ChangeWatch
from icc.store.sqlqueue import SqlTransport, envelope, is_row_id, lease_batch, number

__all__ = ["DATABASE_FILE", "QueueStats", "SqliteTransport"]

T = TypeVar("T")

DATABASE_FILE = "queue.sqlite3"
SCHEMA_VERSION = 2
# A dispatch writes two pages to the WAL (its row's and its queue index entry's), each checksummed and copied
# whole: small pages make that cheaper (SQLite's default is 4096). A file made with other pages keeps them.
PAGE_SIZE = 1024
# How long a waiting consumer woken by a change waits for the commit that made it to end (the write lock), and
# the longest it waits before it looks again while another connection holds the lock longer.
_WRITER_WAIT = 0.05
_WRITER_RECHECK = 1.0
# After a change woke a waiting consumer, the next change wakes it no sooner than this (seconds): a database kept
# busy by other queues' messages or other consumers costs an idle consumer at most 5 looks a second.
_LOOK_SPACING = 0.2
# SQLite before 3.32 allows 999 bound parameters per statement.
_CHUNK = 500

_MESSAGES = """
CREATE TABLE IF NOT EXISTS {table} (
    id           INTEGER PRIMARY KEY,                -- never reused (see message_ids): a failed message keeps its id
    queue        TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,                   -- JSON object
    created_at   REAL    NOT NULL,
    available_at REAL    NOT NULL,                   -- leasable from (while leased: the lease expiry)
    attempts     INTEGER NOT NULL DEFAULT 0,         -- deliveries so far, counted when leased
    lease_owner  TEXT,                               -- the consumer holding it, NULL when not leased
    lease_batch  INTEGER NOT NULL DEFAULT 0,         -- how many messages that lease took together
    errors       TEXT    NOT NULL DEFAULT '[]'       -- JSON list of error records
)"""

_SCHEMA = (
    _MESSAGES.format(table="messages")
    + """;
CREATE INDEX IF NOT EXISTS messages_queue_available ON messages (queue, available_at);
CREATE INDEX IF NOT EXISTS messages_lease_owner ON messages (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS failed (
    id         INTEGER PRIMARY KEY,                  -- the message's id
    queue      TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    payload    TEXT    NOT NULL,                     -- as it was stored, even when malformed
    created_at REAL    NOT NULL,
    failed_at  REAL    NOT NULL,
    attempts   INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    errors     TEXT    NOT NULL DEFAULT '[]'
);
-- Messages handled (acknowledged) per queue and minute: the throughput `icc web` shows for the last hour. Rows
-- older than a day are dropped as a consumer starts a new minute.
CREATE TABLE IF NOT EXISTS handled (
    queue  TEXT    NOT NULL,
    minute INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (queue, minute)
);
-- Requests to running consumers: 'stop' holds the time of the last `icc consume --stop`.
CREATE TABLE IF NOT EXISTS control (
    key   TEXT PRIMARY KEY,
    value REAL NOT NULL
);
-- The highest id a deleted message had, when no message with a higher one was left: a new message's id is past
-- it and past every message's (see _SEND), so no id is handed out twice, and a failed message's id stays its
-- own. Kept when the newest message is deleted rather than on every insert: AUTOINCREMENT's counter (schema 1)
-- was one more page written, and synced, per dispatch.
CREATE TABLE IF NOT EXISTS message_ids (
    last INTEGER NOT NULL
);
INSERT INTO message_ids (last) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM message_ids)
"""
)
_KEEP_LAST_ID = """
CREATE TRIGGER IF NOT EXISTS messages_keep_last_id AFTER DELETE ON messages
WHEN OLD.id > (SELECT last FROM message_ids) AND NOT EXISTS (SELECT 1 FROM messages WHERE id > OLD.id)
BEGIN
    UPDATE message_ids SET last = OLD.id;
END
"""

# One statement, its own write transaction: the id is the next past every message's and past message_ids.last.
_SEND = (
    "INSERT INTO messages (id, queue, name, payload, created_at, available_at) VALUES ("
    "max(coalesce((SELECT max(id) FROM messages), 0), (SELECT last FROM message_ids)) + 1, ?, ?, ?, ?, ?)"
)

_LEASE_SELECT = (
    "SELECT id, name, payload, attempts, created_at, lease_owner, lease_batch FROM messages "
    "WHERE queue = ? AND available_at <= ? ORDER BY available_at, id LIMIT ?"
)


def _marks(count: int) -> str:
    return ",".join("?" * count)


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _decode_text(data: bytes) -> str | bytes:
    """SQLite TEXT as str; bytes that are not UTF-8 stay bytes (a hand-written row), so that reading
    them never fails a whole lease: the consumer reports such a row as malformed."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _unusable(path: Path, exc: BaseException) -> str:
    return (
        f"the queue database {path} cannot be read ({exc}): it is damaged or not a queue database. "
        "Restore it from a backup, or move it away to start an empty queue"
    )


def _init_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create what is missing, and bring a database of an older icc up to date (in the caller's transaction)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise QueueError(
            f"the queue database {path} was written by a newer icc (schema {version}); upgrade icc"
        )
    if version < SCHEMA_VERSION:
        _migrate_autoincrement(conn)
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(_KEEP_LAST_ID)
    if version != SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _migrate_autoincrement(conn: sqlite3.Connection) -> None:
    """Schema 1 to 2: the messages table without AUTOINCREMENT, every message kept (ids, attempts, leases and
    errors as they were); the last id AUTOINCREMENT handed out becomes ``message_ids.last``, so no id is reused."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'").fetchone()
    if row is None or "AUTOINCREMENT" not in str(row[0]).upper():
        return
    last = 0
    if conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
    ).fetchone():
        found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        last = int(found[0]) if found and found[0] is not None else 0
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'failed'").fetchone():
        last = max(last, int(conn.execute("SELECT coalesce(max(id), 0) FROM failed").fetchone()[0]))
    columns = "id, queue, name, payload, created_at, available_at, attempts, lease_owner, lease_batch, errors"
    conn.execute(_MESSAGES.format(table="messages_v2"))
    conn.execute(f"INSERT INTO messages_v2 ({columns}) SELECT {columns} FROM messages")
    conn.execute("DROP TABLE messages")  # and its indexes; the new ones are made by _SCHEMA
    conn.execute("ALTER TABLE messages_v2 RENAME TO messages")
    conn.execute("CREATE TABLE IF NOT EXISTS message_ids (last INTEGER NOT NULL)")
    conn.execute("DELETE FROM message_ids")
    conn.execute("INSERT INTO message_ids (last) VALUES (?)", (last,))


def _create(path: Path) -> bool:
    """Create the database at ``path`` complete, if it does not exist; True if this call created it.

    It is built under a temporary name and linked into place, so ``path`` never exists half made: an
    empty file there is then always a damaged database, never a new one. The file is 0600 from the
    start (SQLite would follow the umask, and the -wal and -shm files copy the database's mode).
    """
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.new")
    os.close(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # before the first table: it is the file's
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            _init_schema(conn, tmp)
            conn.execute("COMMIT")
        finally:
            conn.close()  # checkpoints the WAL into the file
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False  # another process made it first
        except OSError:
            # No hard links on this file system: create it in place (an empty file for a moment).
            try:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                return False
        return True
    finally:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{tmp}{suffix}")


class SqliteTransport(SqlTransport):
    """The SQLite queue database of one state directory. Thread-safe: one connection behind a lock,
    shared by the consumer loop and its heartbeat thread. What it shares with the PostgreSQL transport is in
    :class:`~icc.store.sqlqueue.SqlTransport`."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout: float = 30.0,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._sql: dict[str, str] = {}  # rendered SQL (see _t)
        # What an idle consumer asks at each look (every second without a change watch), answered again without a
        # read while the files stay as they were (icc.statedir.FileWatch): available()'s no (for which queues, until when) and the stop request.
        self._watch = FileWatch(str(path), reuse=0.1)
        self._idle_answer: tuple[int, tuple[str, ...], float] = (0, (), 0.0)  # generation, queues, until
        self._stop_answer: tuple[int, float | None] = (0, None)  # generation, answer
        # What an idle consumer waits on instead of polling (see wait): made at its first wait.
        self._changes: ChangeWatch | None = None
        self._writing = 0.0  # another connection was writing at the last wake: look again this soon (seconds)
        self._looked = -math.inf  # when wait() last said "look now" (time.monotonic())
        self._busy_ms = max(0, int(busy_timeout * 1000))
        try:
            created = _create(path)
            if not created and path.stat().st_size == 0:
                # icc creates the file complete (see _create): an empty one was truncated or replaced.
                raise QueueError(
                    f"the queue database {path} is empty (0 bytes): it was truncated or replaced, so the "
                    "messages it held are gone. Restore it from a backup, or delete it to start an empty queue"
                )
            secure_file(path)
            self._conn = sqlite3.connect(
                str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.text_factory = _decode_text
            self._sender = self._conn.cursor()  # kept: send() runs under the lock, one at a time
        except (OSError, sqlite3.Error) as exc:
            raise QueueError(f"cannot open the queue database {path}: {exc}") from exc
        try:
            self._set_wal(busy_timeout)
            self._conn.execute(f"PRAGMA synchronous = {synchronous}")
            with self._write() as conn:
                _init_schema(conn, path)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise QueueError(_unusable(path, exc)) from None
        except BaseException:
            self._conn.close()
            raise
        for suffix in ("-wal", "-shm"):
            secure_file(path.with_name(path.name + suffix))

    @classmethod
    def open(cls, state_dir: Path, *, synchronous: Literal["FULL", "NORMAL"] = "FULL") -> SqliteTransport:
        """The queue database of ``state_dir`` (created 0700, the file 0600)."""
        ensure_state_dir(state_dir)
        return cls(state_dir / DATABASE_FILE, synchronous=synchronous)

    def _set_wal(self, timeout: float) -> None:
        # Switching a new database to WAL needs the write lock, and the busy handler does not cover
        # that upgrade: two processes opening a fresh database at once would see "database is locked".
        deadline = time.monotonic() + timeout
        while True:
            try:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise QueueError(f"cannot open the queue database {self.path}: {exc}") from exc
                time.sleep(0.01)
                continue
            except sqlite3.DatabaseError as exc:  # not a database at all
                raise QueueError(_unusable(self.path, exc)) from None
            if str(mode).lower() != "wal":
                raise QueueError(
                    f"the queue database {self.path} cannot use WAL journaling (got {mode!r}); "
                    "put state_dir on a local file system"
                )
            return

    @property
    def forked(self) -> bool:
        """True in a child process forked after this transport was opened: open a new one there."""
        return os.getpid() != self._pid

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise QueueError(f"queue database {self.path}: {exc}") from exc
            except OverflowError as exc:  # a number past SQLite's 64-bit integers
                raise QueueError(f"queue database {self.path}: {exc}") from None

    # -- the dialect (see icc.store.sqlqueue) ---------------------------------------------------------
    def _t(self, sql: str) -> str:
        found = self._sql.get(sql)
        if found is None:
            found = self._sql[sql] = sql.replace("{s}.", "").replace("%s", "?")
        return found

    def _transaction(self, op: Callable[[Any], T]) -> T:
        with self._write() as conn:
            return op(conn)

    def _at(self, delay: float) -> tuple[str, float]:
        return "%s", time.time() + delay

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(self._t(sql), params).fetchall()
            except sqlite3.Error as exc:
                raise QueueError(f"queue database {self.path}: {exc}") from exc
            except OverflowError as exc:
                raise QueueError(f"queue database {self.path}: {exc}") from None

    # --- Transport ------------------------------------------------------------------------------

    def send(self, queue: str, name: str, payload: str, *, delay: float = 0.0) -> int:
        now = time.time()
        # One statement in autocommit mode is its own write transaction, committed (and synced, at FULL)
        # before it returns: as durable as BEGIN IMMEDIATE … COMMIT, in one call instead of three.
        with self._lock:
            try:
                cursor = self._sender
                cursor.execute(_SEND, (queue, name, payload, now, now + delay))
            except sqlite3.Error as exc:
                raise QueueError(f"queue database {self.path}: {exc}") from exc
            except OverflowError as exc:  # a delay past SQLite's 64-bit numbers
                raise QueueError(f"queue database {self.path}: {exc}") from None
            message_id = cursor.lastrowid
        assert message_id is not None
        return message_id

    def lease(
        self, queue: str, *, owner: str, limit: int, lease: float, ack: Sequence[int] = ()
    ) -> list[Envelope]:
        with self._write() as conn:
            self._delete(conn, ack, owner)
            if limit < 1:
                return []
            now = time.time()
            bad = self._lease_malformed(conn, queue, owner, now, lease)
            if bad is not None:
                return [bad]
            taken = lease_batch(conn.execute(_LEASE_SELECT, (queue, now, limit)).fetchall())
            if not taken:
                return []
            ids = [row[0] for row in taken]
            conn.execute(
                "UPDATE messages SET attempts = attempts + 1, lease_owner = ?, available_at = ?, "
                f"lease_batch = ? WHERE id IN ({_marks(len(ids))})",
                (owner, now + lease, len(ids), *ids),
            )
            return self._envelopes(conn, queue, taken, now)

    @staticmethod
    def _lease_malformed(
        conn: sqlite3.Connection, queue: str, owner: str, now: float, lease: float
    ) -> Envelope | None:
        """A row whose ``available_at`` is not a number (written by hand), leased alone so that the
        consumer moves it to failed. Text and blobs sort after every number, so such a row would
        otherwise never be available; this range of the index finds them cheaply."""
        row = conn.execute(
            "SELECT id, name, payload, attempts, created_at, available_at FROM messages "
            "WHERE queue = ? AND available_at >= '' ORDER BY available_at, id LIMIT 1",
            (queue,),
        ).fetchone()
        if row is None:
            return None
        message_id, available_at = row[0], row[5]
        conn.execute(
            "UPDATE messages SET attempts = attempts + 1, lease_owner = ?, available_at = ?, lease_batch = 1 "
            "WHERE id = ?",
            (owner, now + lease, message_id),
        )
        shown = available_at if isinstance(available_at, str) else repr(available_at)
        return envelope(
            queue,
            row,
            malformed=f"available_at {shown[:80]!r} is not a number of seconds, so it was never due",
        )

    def ack(self, ids: Sequence[int], *, owner: str) -> None:
        if ids:
            with self._write() as conn:
                self._delete(conn, ids, owner)

    def release(self, ids: Sequence[int], *, owner: str) -> None:
        if not ids:
            return
        with self._write() as conn:
            for chunk in _chunks(ids):
                # Back at its place in the queue (created_at), as if never leased.
                conn.execute(
                    "UPDATE messages SET attempts = MAX(attempts - 1, 0), lease_owner = NULL, lease_batch = 0, "
                    f"available_at = MIN(created_at, available_at) WHERE lease_owner = ? "
                    f"AND id IN ({_marks(len(chunk))})",
                    (owner, *chunk),
                )

    def extend(self, *, owner: str, lease: float) -> int:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE messages SET available_at = ? WHERE lease_owner = ?", (time.time() + lease, owner)
            )
            return cursor.rowcount

    def available(self, queues: Sequence[str], now: float | None = None) -> bool:
        """Whether any of ``queues`` has a message a lease would take now (or a malformed row it would
        move to failed): one read, no write lock. The consumer asks before leasing while it is idle.

        An answer of no holds while the database files stay as they were and none of the queues' messages
        (delayed, or leased by another consumer) comes due: then the next ask makes two stat calls and no
        read (an idle consumer without a change watch asks once a second)."""
        at = time.time() if now is None else now
        key = tuple(queues)
        generation = self._watch.generation(at) if now is None else 0
        if generation:
            read_at, asked, until = self._idle_answer
            if read_at == generation and asked == key and at < until:
                return False
        marks = _marks(len(queues))
        rows = self._read(
            f"SELECT EXISTS (SELECT 1 FROM messages WHERE queue IN ({marks}) AND available_at <= ?) "
            f"OR EXISTS (SELECT 1 FROM messages WHERE queue IN ({marks}) AND available_at >= ''), "
            f"(SELECT min(available_at) FROM messages WHERE queue IN ({marks}))",
            (*queues, at, *queues, *queues),
        )
        ready, next_at = rows[0]
        if generation:
            # A no holds until the first of these queues' messages comes due (their files unchanged).
            due = number(next_at) if next_at is not None else math.inf
            self._idle_answer = (0, (), 0.0) if ready else (generation, key, due)
        return bool(ready)

    def wait(self, queues: Sequence[str], timeout: float) -> bool | None:
        """Wait up to ``timeout`` seconds for the queue database to change (a dispatch, a stop request, the file
        created, removed or replaced: Linux's inotify on its directory) or for the moment the first of
        ``queues``' messages (delayed, retried, or leased by another consumer) comes due, as the last
        :meth:`available` answer read it. :meth:`interrupt` cuts it short.

        True: one of those happened (or the watch has just begun): look now. False: nothing to look at yet (the
        time passed, or a commit that woke it is still in progress: ask again). None: no change watch here (no
        inotify, or the state directory is missing): the caller polls every ``Limits.sleep`` as it would
        without it. Only the thread that waits calls it."""
        changes = self._changes
        if changes is None:
            changes = self._changes = ChangeWatch(
                str(self.path.parent), (self.path.name, f"{self.path.name}-wal")
            )
        wait = max(0.0, timeout)
        read_at, asked, due = self._idle_answer
        if read_at and asked == tuple(queues):
            wait = min(wait, max(0.0, due - time.time()))
        if self._writing:
            wait = min(wait, self._writing)
        woken = changes.wait(wait, not_before=self._looked + _LOOK_SPACING)
        if woken is None:
            return None
        if woken or self._writing:
            if self._other_writer():
                # A writer held the lock past _WRITER_WAIT: look once it is done, backing off (up to a second,
                # the poll's interval) while it stays held.
                self._writing = min(_WRITER_RECHECK, max(_LOOK_SPACING, 2 * self._writing))
                return False
            self._writing = 0.0
            self._looked = time.monotonic()
            self._watch.moved()  # the files changed just now: the next question reads them, with no reuse
            return True
        return wait < timeout  # True: a message came due

    def _other_writer(self) -> bool:
        """Whether another connection is still writing, ``_WRITER_WAIT`` from now. A commit's pages are written to
        the ``-wal`` (which inotify sees) before its ``fsync`` and before it is marked committed in the ``-shm``
        (which inotify does not see: it is mapped memory), so a read right after the change that woke a waiter
        may not see it yet, and nothing would wake the waiter again. Taking the write lock, waiting for it that
        long at most, and giving it back at once (nothing is written) lets that commit end first."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(_WRITER_WAIT * 1000)}")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    return "locked" in str(exc) or "busy" in str(exc)
                conn.execute("ROLLBACK")
                return False
            except sqlite3.Error:
                return False  # the read that follows says what is wrong
            finally:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    def interrupt(self) -> None:
        """Make a :meth:`wait` in progress (or the next one) return True at once: the consumer's ``stop``.
        Safe from signal handlers and other threads."""
        changes = self._changes
        if changes is not None:
            changes.interrupt()

    def pending(self, queue: str | None = None) -> int:
        if queue is None:
            rows = self._read("SELECT count(*) FROM messages")
        else:
            rows = self._read("SELECT count(*) FROM messages WHERE queue = ?", (queue,))
        return int(rows[0][0])

    # --- operating: stats and stop requests ------------------------------------------------------

    def stats(self, now: float | None = None) -> dict[str, QueueStats]:
        """Per queue that holds anything: ready, delayed, in flight (by owner), oldest age, failed."""
        now = time.time() if now is None else now
        rows = self._read(
            "SELECT queue, lease_owner, available_at > ? AS later, COUNT(*), MIN(created_at) FROM messages "
            "GROUP BY queue, lease_owner, later",
            (now,),
        )
        return self._tally(
            now,
            rows,
            self._read("SELECT queue, COUNT(*) FROM failed GROUP BY queue"),
            self._read("SELECT queue, SUM(n) FROM handled WHERE minute >= ? GROUP BY queue", (now - 3600,)),
        )

    def request_stop(self, now: float | None = None) -> float:
        """Ask every consumer running now to stop after its current message; return the request's time."""
        at = time.time() if now is None else now
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO control (key, value) VALUES ('stop', ?)", (at,))
        return at

    def stop_requested_at(self) -> float | None:
        """The time of the last stop request, or None; read again only when the database files changed (a
        consumer asks twice a second)."""
        generation = self._watch.generation(time.time())
        if generation == self._stop_answer[0]:
            return self._stop_answer[1]
        rows = self._read("SELECT value FROM control WHERE key = 'stop'")
        answer = number(rows[0][0]) if rows else None
        self._stop_answer = (generation, answer)
        return answer

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        if self._changes is not None:
            self._changes.close()

    def _delete(self, conn: sqlite3.Connection, ids: Sequence[int], owner: str) -> None:
        """Acknowledge: delete the messages ``owner`` holds, and count them per queue in ``handled``."""
        counts: dict[str, int] = {}
        for chunk in _chunks(ids):
            params = (owner, *chunk)
            where = f"lease_owner = ? AND id IN ({_marks(len(chunk))})"
            for queue, count in conn.execute(
                f"SELECT queue, COUNT(*) FROM messages WHERE {where} GROUP BY queue", params
            ):
                counts[queue] = counts.get(queue, 0) + count
            conn.execute(f"DELETE FROM messages WHERE {where}", params)
        if counts:
            minute = int(time.time() // 60 * 60)
            conn.executemany(
                "INSERT INTO handled (queue, minute, n) VALUES (?, ?, ?) "
                "ON CONFLICT (queue, minute) DO UPDATE SET n = n + excluded.n",
                [(queue, minute, n) for queue, n in counts.items()],
            )
            if minute != getattr(self, "_handled_pruned", None):
                conn.execute("DELETE FROM handled WHERE minute < ?", (minute - 86400,))
                self._handled_pruned = minute

    # --- FailedStore ----------------------------------------------------------------------------

    def _failed_ids(self, conn: sqlite3.Connection, ids: Sequence[int] | None) -> list[int]:
        if ids is None:
            return [row[0] for row in conn.execute("SELECT id FROM failed ORDER BY id")]
        found: list[int] = []
        for chunk in _chunks([i for i in dict.fromkeys(ids) if is_row_id(i)]):
            found += [
                row[0]
                for row in conn.execute(f"SELECT id FROM failed WHERE id IN ({_marks(len(chunk))})", chunk)
            ]
        return sorted(found)

    def failed_retry(self, ids: Sequence[int] | None = None) -> list[int]:
        now = time.time()
        with self._write() as conn:
            moved = self._failed_ids(conn, ids)
            for chunk in _chunks(moved):
                marks = _marks(len(chunk))
                # Back into the queue first, then out of failed, in one transaction. Attempts start
                # again from zero; the error history stays with the message.
                conn.execute(
                    "INSERT INTO messages (id, queue, name, payload, created_at, available_at, attempts, errors) "
                    f"SELECT id, queue, name, payload, created_at, ?, 0, errors FROM failed WHERE id IN ({marks})",
                    (now, *chunk),
                )
                conn.execute(f"DELETE FROM failed WHERE id IN ({marks})", chunk)
            return moved

    def failed_remove(self, ids: Sequence[int] | None = None) -> list[int]:
        with self._write() as conn:
            removed = self._failed_ids(conn, ids)
            for chunk in _chunks(removed):
                conn.execute(f"DELETE FROM failed WHERE id IN ({_marks(len(chunk))})", chunk)
            return removed
