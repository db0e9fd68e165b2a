"""The PostgreSQL transport: the queues of several hosts in one database (``[icc.store] url``).

The same contract as the embedded SQLite transport (:mod:`icc.queue.transport`), on the tables of
``icc/store/postgres/migrations/0001_init.sql`` (``messages``, ``failed``, ``control`` in the configured schema):

* ``lease`` takes rows with ``SELECT … FOR UPDATE SKIP LOCKED`` and marks them leased (attempt counted,
  owner, expiry) in the same transaction, so consumers on every host share a queue without waiting for
  each other and never take the same row twice. An expired lease comes back alone with
  ``redelivered=True`` and a "lease expired" history record; a row whose ``available_at`` is NaN (written
  by hand: never due) is leased alone as ``malformed`` for the consumer to move to failed.
* ``fail`` inserts the failed record and deletes the message in one transaction, ``failed_retry`` the
  reverse (the id is kept); acknowledgements delete only rows the owner still holds.
* Times that decide availability and lease expiry are the database server's clock
  (``extract(epoch from clock_timestamp())``), so hosts whose clocks disagree still agree on when a lease
  expired. Times handed in by the caller (``stats(now)``, ``request_stop(now)``) and handed out
  (``stop_requested_at``) are on this host's clock, translated through the offset measured in the same
  round trip.

Connections: one per process and transport, opened by :func:`icc.store.postgres.connection.connect` (timeouts,
``application_name``; no server-side prepared statements, so pgbouncer in transaction mode works). A child
forked after the transport was opened never uses or closes the parent's connection: it opens its own on
first use (and :attr:`forked` tells the dispatch cache to make a new transport). A connection the server
dropped (``pg_terminate_backend``, a restart) is noticed before the next statement (its socket turned
readable while idle) and reopened; an operation that fails because the connection broke under it is
retried once on a new connection when repeating it is safe (everything but ``send``, whose insert may have
committed: it fails with a :class:`QueueError` saying so; a retried ``lease`` first gives back what its owner
holds, which the lost try may have taken). Database errors become one-line
:class:`QueueError` messages without the password.

Wake-up (``[icc.consumers] notify = true``, off by default): a dispatch that is due at once, a release and a
``failed_retry`` also call ``pg_notify(<channel>, <queue>)`` in the same statement (delivered on commit, never
for a rolled back insert); the channel is :func:`channel` of the schema. A consumer with nothing to do then
waits on a LISTEN connection of its own (:meth:`PostgresTransport.wait`, opened on its first idle wait) for at
most its poll sleep, and leases again at once when one of its queues is named. Polling stays the only path
that must work: delayed and retried messages become due without a notification, and a LISTEN connection that
fails is closed, reported once (:class:`QueueError` from :meth:`~PostgresTransport.wait`), and tried again
after :data:`LISTEN_RETRY` seconds while the consumer polls. NOTIFY takes a global lock at commit, which
serialises the committing transactions that notify: that is why it is opt-in.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from icc.errors import QueueError, StateError
from icc.queue.message import (
    Envelope,
)
from icc.queue.transport import QueueStats
from icc.store.postgres.connection import _driver, connect, quoted, redacted, require_current, shown_url
from icc.store.sqlqueue import SqlTransport, envelope, is_row_id, lease_batch, number

if TYPE_CHECKING:
    import psycopg

    from icc.config import Config

__all__ = ["LISTEN_RETRY", "PostgresTransport", "channel"]

T = TypeVar("T")

_NOW = "extract(epoch from clock_timestamp())::double precision"
_MAX_ID = 2**63


# Seconds between two tries to LISTEN again after the LISTEN connection failed (the consumer polls meanwhile).
LISTEN_RETRY = 5.0


def channel(schema: str) -> str:
    """The NOTIFY channel of the queues in ``schema``: ``icc_<schema>_queue``, or a digest of the schema when
    that is longer than PostgreSQL's 63-byte names. Lower-case letters, digits and underscores only."""
    name = f"icc_{schema}_queue"
    if len(name) > 63:
        name = f"icc_{hashlib.sha256(schema.encode()).hexdigest()[:32]}_queue"
    return name


def _clean(text: str) -> str:
    """Text PostgreSQL accepts: no NUL, no lone surrogates."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


class _Lost(Exception):
    """The connection broke under an operation (wraps the driver's error)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class PostgresTransport(SqlTransport):
    """The queues of ``config.store`` in PostgreSQL. Thread-safe: one connection behind a lock, shared by
    the consumer loop and its heartbeat thread. What it shares with the SQLite transport is in
    :class:`~icc.store.sqlqueue.SqlTransport`."""

    _FOR_UPDATE = " FOR UPDATE"

    def __init__(self, config: Config, *, limit: float | None = None) -> None:

        assert config.store.url is not None
        self._config = config
        self._url = config.store.url
        self._label = f"the PostgreSQL queue store {shown_url(self._url)}"
        self._schema = quoted(config.store.schema)
        self._psycopg = _driver()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._conn: psycopg.Connection[Any] | None = None
        self._conn_pid = 0
        self._inherited: list[object] = []  # a parent's connections: never used nor closed here
        self._limit = limit  # a consumer's time limit (limit_time): its connections' timeouts fit in it
        self.notify = config.consumers.notify
        self._channel = channel(config.store.schema)
        # The LISTEN connection of a waiting consumer (only ever used by the thread that waits).
        self._listener: psycopg.Connection[Any] | None = None
        self._listener_pid = 0
        self._listen_after = 0.0  # time.monotonic() before which no new LISTEN is tried
        self._listen_failing = False  # reported once; quiet until it listens again
        conn = self._connection()
        try:
            require_current(conn, config.store.schema, self._url)
        except self._psycopg.Error as exc:
            raise QueueError(self._message(exc)) from None
        except StateError as exc:  # no schema, or a newer icc's: icc.dispatch raises QueueError only
            raise QueueError(str(exc)) from None

    # --- the dialect (see icc.store.sqlqueue) ---------------------------------------------------------

    def _t(self, sql: str) -> str:
        return sql.replace("{s}", self._schema)

    def _transaction(self, op: Callable[[psycopg.Connection[Any]], T]) -> T:
        def run(conn: psycopg.Connection[Any]) -> T:
            with self._tx(conn):
                return op(conn)

        return self._run(run)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        query = self._t(sql)
        return self._run(lambda conn: conn.execute(query, params).fetchall())

    def _at(self, delay: float) -> tuple[str, float]:
        return f"{_NOW} + %s", float(delay)

    def _clean(self, text: str) -> str:
        return _clean(text)

    def _limit_param(self, limit: int) -> int:
        return min(max(limit, 0), _MAX_ID - 1)

    @staticmethod
    def _age(at: float, oldest: object) -> float:
        if oldest is None or not math.isfinite(oldest):  # type: ignore[arg-type]
            return 0.0
        return max(0.0, at - number(oldest, at))

    # --- the connection ---------------------------------------------------------------------------

    @property
    def forked(self) -> bool:
        """True in a child process forked after this transport was opened: open a new one there."""
        return os.getpid() != self._pid

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and self._conn_pid != os.getpid():
            self._inherited.append(conn)  # the parent's: dropping it would be fine, closing it not
            conn = self._conn = None
        if conn is not None and (conn.closed or conn.broken or self._dropped(conn)):
            with contextlib.suppress(Exception):
                conn.close()
            conn = self._conn = None
        if conn is None:
            try:
                conn = connect(self._config, autocommit=True, limit=self._limit)
            except Exception as exc:  # StateError from icc.store.postgres.connection: keep its one line
                raise QueueError(str(exc)) from None
            self._conn, self._conn_pid = conn, os.getpid()
        return conn

    @staticmethod
    def _dropped(conn: psycopg.Connection[Any]) -> bool:
        """True when the server spoke on an idle connection: it can only be its farewell (terminated,
        shutting down) or the socket's end. One non-blocking poll, no round trip."""
        try:
            poller = select.poll()  # not select.select: an application may hold descriptors past 1024
            poller.register(conn.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def _message(self, exc: BaseException) -> str:
        text = str(exc).strip()
        detail = text.splitlines()[0] if text else type(exc).__name__

        return f"{self._label}: {redacted(detail, self._url)}"

    def _run(self, operation: Callable[[psycopg.Connection[Any]], T], *, repeatable: bool = True) -> T:
        """Run ``operation`` on this process's connection; reopen a dropped connection and, when
        ``repeatable``, try once more. Database errors become a one-line :class:`QueueError`."""
        psycopg = self._psycopg
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    return operation(conn)
                except psycopg.Error as exc:
                    lost = (
                        conn.broken
                        or conn.closed
                        or (
                            isinstance(exc, psycopg.OperationalError)
                            and (exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P")))
                        )
                    )
                    if not lost:
                        raise QueueError(self._message(exc)) from None
                    with contextlib.suppress(Exception):
                        conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise QueueError(self._message(exc)) from None
                    if not repeatable:
                        raise QueueError(
                            f"{self._message(exc)} (the connection broke while the message was being "
                            "stored: it may or may not have been queued)"
                        ) from None
                except (OverflowError, ValueError) as exc:  # a number past 64 bits, NUL in text
                    raise QueueError(self._message(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _tx(self, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
        with conn.transaction():
            yield conn

    def _clock(self, conn: psycopg.Connection[Any]) -> float:
        """This host's clock minus the server's, seconds (half the round trip of error at most)."""
        before = time.time()
        row = conn.execute(f"SELECT {_NOW}").fetchone()
        after = time.time()
        assert row is not None
        return (before + after) / 2 - float(row[0])

    def limit_time(self, seconds: float) -> None:
        """A consumer with ``seconds`` to run: the connections opened from now on get statement, lock and connect
        timeouts that fit (:func:`icc.store.postgres.connection.timeouts`). The open one keeps its own: a ``SET`` would outlive this
        process on a pgbouncer's server connection. No timeout of the server's reaches a frozen server: that is
        the consumer's guard's to deal with."""
        self._limit = seconds

    # --- Transport ------------------------------------------------------------------------------

    def send(self, queue: str, name: str, payload: str, *, delay: float = 0.0) -> int:
        sql = self._t(
            "INSERT INTO {s}.messages (queue, name, payload, created_at, available_at) "
            f"SELECT %s, %s, %s, now.t, now.t + %s FROM (SELECT {_NOW} AS t) AS now RETURNING id"
        )
        params: tuple[Any, ...] = (queue, name, payload, float(delay))
        if self.notify and not delay > 0:
            # One statement, one transaction: the notification is delivered when the insert commits. A delayed
            # message wakes nobody: it becomes due later, and polling finds it.
            sql = f"WITH m AS ({sql}) SELECT m.id, pg_notify(%s, %s) FROM m"
            params = (*params, self._channel, queue)

        def op(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(sql, params).fetchone()
            assert row is not None
            return int(row[0])

        return self._run(op, repeatable=False)

    def lease(
        self, queue: str, *, owner: str, limit: int, lease: float, ack: Sequence[int] = ()
    ) -> list[Envelope]:
        ack_ids = [i for i in ack if is_row_id(i)]
        tries = 0

        def op(conn: psycopg.Connection[Any]) -> list[Envelope]:
            nonlocal tries
            tries += 1
            with self._tx(conn):
                if ack_ids:
                    self._delete(conn, ack_ids, owner)
                if tries > 1:
                    # The connection broke under the first try, perhaps after its commit: the batch it
                    # took would be held by this owner unknown to it (and kept alive by its heartbeat).
                    # Give back what the owner holds, as release() does, before leasing again.
                    conn.execute(
                        self._t(
                            "UPDATE {s}.messages SET attempts = GREATEST(attempts - 1, 0), lease_owner = NULL, "
                            "lease_batch = 0, available_at = LEAST(created_at, available_at) "
                            f"WHERE lease_owner = %s AND available_at > {_NOW}"
                        ),
                        (owner,),
                    )
                if limit < 1:
                    return []
                bad = self._lease_malformed(conn, queue, owner, lease)
                if bad is not None:
                    return [bad]
                rows = conn.execute(
                    self._t(
                        "SELECT id, name, payload, attempts, created_at, lease_owner, lease_batch, now.t "
                        f"FROM {{s}}.messages, (SELECT {_NOW} AS t) AS now "
                        "WHERE queue = %s AND available_at <= now.t ORDER BY available_at, id LIMIT %s "
                        "FOR UPDATE OF messages SKIP LOCKED"
                    ),
                    (queue, limit),
                ).fetchall()
                taken = lease_batch(rows)
                if not taken:
                    return []
                ids = [row[0] for row in taken]
                now = float(taken[0][7])
                conn.execute(
                    self._t(
                        "UPDATE {s}.messages SET attempts = attempts + 1, lease_owner = %s, "
                        f"available_at = {_NOW} + %s, lease_batch = %s WHERE id = ANY(%s)"
                    ),
                    (owner, float(lease), len(ids), ids),
                )
                return self._envelopes(conn, queue, taken, now)

        return self._run(op)

    def _lease_malformed(
        self, conn: psycopg.Connection[Any], queue: str, owner: str, lease: float
    ) -> Envelope | None:
        """A row whose ``available_at`` is NaN (written by hand) is never due: leased alone so that the
        consumer moves it to failed. NaN sorts after every number; the index finds it cheaply."""
        row = conn.execute(
            self._t(
                "SELECT id, name, payload, attempts, created_at FROM {s}.messages "
                "WHERE queue = %s AND available_at = 'NaN' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
            ),
            (queue,),
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            self._t(
                "UPDATE {s}.messages SET attempts = attempts + 1, lease_owner = %s, "
                f"available_at = {_NOW} + %s, lease_batch = 1 WHERE id = %s"
            ),
            (owner, float(lease), row[0]),
        )
        return envelope(
            queue, row, malformed="available_at 'NaN' is not a number of seconds, so it was never due"
        )

    def ack(self, ids: Sequence[int], *, owner: str) -> None:
        ids = [i for i in ids if is_row_id(i)]
        if ids:
            self._run(lambda conn: self._delete(conn, ids, owner))

    def release(self, ids: Sequence[int], *, owner: str) -> None:
        ids = [i for i in ids if is_row_id(i)]
        if not ids:
            return
        # Back at its place in the queue (created_at), as if never leased.
        sql = self._t(
            "UPDATE {s}.messages SET attempts = GREATEST(attempts - 1, 0), lease_owner = NULL, lease_batch = 0, "
            "available_at = LEAST(created_at, available_at) WHERE lease_owner = %s AND id = ANY(%s)"
        )
        params: tuple[Any, ...] = (owner, ids)
        if self.notify:  # available again at once: wake the consumers waiting for them
            sql = f"WITH r AS ({sql} RETURNING queue) SELECT pg_notify(%s, q) FROM (SELECT DISTINCT queue AS q FROM r) AS d"
            params = (*params, self._channel)
        self._run(lambda conn: conn.execute(sql, params))

    def extend(self, *, owner: str, lease: float) -> int:
        sql = self._t(f"UPDATE {{s}}.messages SET available_at = {_NOW} + %s WHERE lease_owner = %s")
        return self._run(lambda conn: conn.execute(sql, (float(lease), owner)).rowcount)

    def pending(self, queue: str | None = None) -> int:
        params: tuple[str, ...] = ()
        if queue is None:
            sql = self._t("SELECT count(*) FROM {s}.messages")
        else:
            sql, params = self._t("SELECT count(*) FROM {s}.messages WHERE queue = %s"), (queue,)

        def op(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(sql, params).fetchone()
            return int(row[0]) if row else 0

        return self._run(op)

    # --- operating: stats and stop requests ------------------------------------------------------

    def stats(self, now: float | None = None) -> dict[str, QueueStats]:
        """Per queue that holds anything: ready, delayed, in flight (by owner), oldest age, failed.
        ``now`` is on this host's clock (default: the server's now)."""

        def op(conn: psycopg.Connection[Any]) -> tuple[float, list[Any], list[Any], list[Any]]:
            if now is None:
                row = conn.execute(f"SELECT {_NOW}").fetchone()
                assert row is not None
                at = float(row[0])
            else:
                at = now - self._clock(conn)
            rows = conn.execute(
                self._t(
                    "SELECT queue, lease_owner, available_at > %s AS later, count(*), min(created_at) "
                    "FROM {s}.messages GROUP BY queue, lease_owner, later"
                ),
                (at,),
            ).fetchall()
            failed = conn.execute(self._t("SELECT queue, count(*) FROM {s}.failed GROUP BY queue")).fetchall()
            # The minutes of ``handled`` are on the acknowledging hosts' clocks (checked against the server's).
            since = (time.time() if now is None else now) - 3600
            handled = conn.execute(
                self._t("SELECT queue, sum(n) FROM {s}.handled WHERE minute >= %s GROUP BY queue"), (since,)
            ).fetchall()
            return at, rows, failed, handled

        at, rows, failed, handled = self._run(op)
        return self._tally(at, rows, failed, handled)

    def request_stop(self, now: float | None = None) -> float:
        """Ask every consumer running now (on every host) to stop after its current message; return the
        request's time on this host's clock. Stored on the server's clock."""

        def op(conn: psycopg.Connection[Any]) -> float:
            offset = self._clock(conn)
            at = time.time() if now is None else now
            conn.execute(
                self._t(
                    "INSERT INTO {s}.control (key, value) VALUES ('stop', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ),
                (at - offset,),
            )
            return at

        return self._run(op)

    def stop_requested_at(self) -> float | None:
        """The time of the last stop request on this host's clock, or None."""

        def op(conn: psycopg.Connection[Any]) -> float | None:
            before = time.time()
            row = conn.execute(
                self._t(f"SELECT (SELECT value FROM {{s}}.control WHERE key = 'stop'), {_NOW}")
            ).fetchone()
            after = time.time()
            if row is None or row[0] is None:
                return None
            return float(row[0]) + ((before + after) / 2 - float(row[1]))

        return self._run(op)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._conn_pid == os.getpid():
                with contextlib.suppress(Exception):
                    conn.close()
        self._drop_listener()

    # --- the wake-up: LISTEN ---------------------------------------------------------------------

    def wait(self, queues: Sequence[str], timeout: float) -> bool | None:
        """Wait up to ``timeout`` seconds for a notification naming one of ``queues``.

        True: one came (or listening has just begun, so what was sent before it must be looked for now):
        lease again. False: the time passed without one. None: no wake-up here (``notify`` is off, or the
        LISTEN connection failed and is not tried again yet): the caller sleeps as it would without it.
        Raises :class:`QueueError` (one line) when the LISTEN connection cannot be opened or breaks, once until
        it listens again; tries again every :data:`LISTEN_RETRY` seconds. Only the thread that waits calls it.
        """
        if not self.notify:
            return None
        listener = self._listener
        if listener is not None and self._listener_pid != os.getpid():
            self._inherited.append(listener)  # a parent's: never used nor closed here
            listener = self._listener = None
        fresh = False
        if listener is None:
            if time.monotonic() < self._listen_after:
                return None
            listener = self._listen()
            if listener is None:
                return None
            fresh = True
        psycopg = self._psycopg
        try:
            wanted = set(queues)
            woken = fresh
            wait = 0.0 if fresh else max(0.0, timeout)
            while True:
                got = False
                for note in listener.notifies(timeout=wait, stop_after=1):
                    got = True
                    if note.channel == self._channel and note.payload in wanted:
                        woken = True
                if not got:
                    return woken
                wait = 0.0  # drain what else is there, without waiting
        except psycopg.Error as exc:
            self._drop_listener()
            self._listen_failed(self._message(exc))
            return None

    def _listen(self) -> psycopg.Connection[Any] | None:

        try:
            conn = connect(self._config, purpose="consume-listen", autocommit=True, limit=self._limit)
        except Exception as exc:  # StateError from icc.store.postgres.connection: keep its one line
            self._listen_failed(str(exc))
            return None
        try:
            conn.execute(f'LISTEN "{self._channel}"')
        except self._psycopg.Error as exc:
            with contextlib.suppress(Exception):
                conn.close()
            self._listen_failed(self._message(exc))
            return None
        self._listener, self._listener_pid = conn, os.getpid()
        self._listen_failing = False
        return conn

    def _listen_failed(self, problem: str) -> None:
        """Poll for :data:`LISTEN_RETRY` seconds, then try again; the first failure in a row is raised."""
        self._listen_after = time.monotonic() + LISTEN_RETRY
        if self._listen_failing:
            return
        self._listen_failing = True
        raise QueueError(
            f"{problem} (while listening for new messages: polling instead, trying to listen again every "
            f"{LISTEN_RETRY:g}s)"
        )

    def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None and self._listener_pid == os.getpid():
            with contextlib.suppress(Exception):
                conn.close()

    def _delete(self, conn: psycopg.Connection[Any], ids: Sequence[int], owner: str) -> None:
        """Acknowledge: delete the messages ``owner`` holds, and count them per queue in ``handled``."""
        counts: dict[str, int] = {}
        for (queue,) in conn.execute(
            self._t("DELETE FROM {s}.messages WHERE lease_owner = %s AND id = ANY(%s) RETURNING queue"),
            (owner, list(ids)),
        ).fetchall():
            counts[queue] = counts.get(queue, 0) + 1
        if counts:
            minute = int(time.time() // 60 * 60)
            with conn.cursor() as cur:
                cur.executemany(
                    self._t(
                        "INSERT INTO {s}.handled (queue, minute, n) VALUES (%s, %s, %s) "
                        "ON CONFLICT (queue, minute) DO UPDATE SET n = {s}.handled.n + EXCLUDED.n"
                    ),
                    [(queue, minute, n) for queue, n in sorted(counts.items())],
                )
            if minute != getattr(self, "_handled_pruned", None):
                conn.execute(self._t("DELETE FROM {s}.handled WHERE minute < %s"), (minute - 86400,))
                self._handled_pruned = minute

    # --- FailedStore ----------------------------------------------------------------------------

    def _failed_ids(self, conn: psycopg.Connection[Any], ids: Sequence[int] | None) -> list[int]:
        if ids is None:
            rows = conn.execute(self._t("SELECT id FROM {s}.failed ORDER BY id FOR UPDATE")).fetchall()
        else:
            wanted = [i for i in dict.fromkeys(ids) if is_row_id(i)]
            rows = conn.execute(
                self._t("SELECT id FROM {s}.failed WHERE id = ANY(%s) ORDER BY id FOR UPDATE"), (wanted,)
            ).fetchall()
        return [int(row[0]) for row in rows]

    def failed_retry(self, ids: Sequence[int] | None = None) -> list[int]:
        def op(conn: psycopg.Connection[Any]) -> list[int]:
            with self._tx(conn):
                moved = self._failed_ids(conn, ids)
                if moved:
                    # Back into the queue first, then out of failed, in one transaction. Attempts start
                    # again from zero; the error history stays with the message.
                    conn.execute(
                        self._t(
                            "INSERT INTO {s}.messages (id, queue, name, payload, created_at, available_at, "
                            f"attempts, errors) SELECT id, queue, name, payload, created_at, {_NOW}, 0, errors "
                            "FROM {s}.failed WHERE id = ANY(%s)"
                        ),
                        (moved,),
                    )
                    conn.execute(self._t("DELETE FROM {s}.failed WHERE id = ANY(%s)"), (moved,))
                    if self.notify:
                        conn.execute(
                            self._t(
                                "SELECT pg_notify(%s, q) FROM "
                                "(SELECT DISTINCT queue AS q FROM {s}.messages WHERE id = ANY(%s)) AS d"
                            ),
                            (self._channel, moved),
                        )
                return moved

        return self._run(op)

    def failed_remove(self, ids: Sequence[int] | None = None) -> list[int]:
        def op(conn: psycopg.Connection[Any]) -> list[int]:
            with self._tx(conn):
                removed = self._failed_ids(conn, ids)
                if removed:
                    conn.execute(self._t("DELETE FROM {s}.failed WHERE id = ANY(%s)"), (removed,))
                return removed

        return self._run(op)
