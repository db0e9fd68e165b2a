"""The shared state store: jobs, runs (the claims) and meta in a PostgreSQL schema several hosts use at once.

Same contract as :class:`~icc.store.sqlite.state.SQLiteStateStore`, method for method: each method is one transaction;
a claim is ``INSERT … ON CONFLICT DO NOTHING RETURNING`` against the unique index ``runs_claim (job, slot,
scope)``, so a (job, slot) is claimed once cluster-wide (once per host for ``on_each_host()`` jobs, whose
claims carry the host's id as their scope). Runs carry an owner token (``host_id:pid``) and a lease measured
on the server's clock, for the hosts that look after each other's runs.

Connections: one per store, made with :func:`icc.store.postgres.connection.connect` (timeouts, ``application_name``), never shared
across a fork. A store used in a forked child notices (its pid changed), leaves the parent's connection alone
(its socket is replaced by ``/dev/null`` in the child, so not even a close reaches the parent's session) and
opens its own. A connection the server dropped (``pg_terminate_backend``, a restart) is reopened once and the
operation retried when that is safe: reads, idempotent writes, and any write that failed before its commit was
sent. Every driver error becomes a one-line :class:`~icc.errors.StateError` without the password.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from icc.errors import StateError
from icc.statedir import ensure_state_dir
from icc.store.host import host_id
from icc.store.postgres.connection import connect, redacted, render, require_current, shown_url
from icc.store.protocol import Claim, HostRecord, JobRecord, Outcome, RunKind
from icc.store.sql import JOB_COLUMNS, SqlStateStore, job_record

if TYPE_CHECKING:
    import psycopg

    from icc.config import Config

__all__ = ["PostgresStateStore"]

T = TypeVar("T")

_NOW = "extract(epoch from clock_timestamp())::double precision"  # the server's clock
# Stores of this process: a forked child disarms their connections at once (see _disarm_inherited).
_LIVE: weakref.WeakSet[PostgresStateStore] = weakref.WeakSet()


def _disarm_inherited() -> None:
    """In a forked child: point every inherited connection's socket at /dev/null, so nothing this process does
    with it (a query, a close, its finalizer at exit) can reach the parent's session."""
    for store in list(_LIVE):
        store._disarm()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disarm_inherited)


def _text(value: str) -> str:
    """``value`` as PostgreSQL text can hold it (no NUL character; SQLite keeps those)."""
    return value.replace("\x00", "\ufffd")


class PostgresStateStore(SqlStateStore):
    """:class:`~icc.store.protocol.StateStore` on a PostgreSQL schema (``[icc.store] url``); the SQL both stores
    share is in :class:`~icc.store.sql.SqlStateStore`."""

    def __init__(self, config: Config) -> None:
        if config.store.url is None:
            raise StateError("no [icc.store] url: this install keeps its state in SQLite")

        ensure_state_dir(config.state_dir)  # this host's locks and host id still live there
        self._config = config
        self._url: str = config.store.url
        self._schema = config.store.schema
        self._lease = float(config.store.lease)
        self.host_id = host_id(config)
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = os.getpid()
        self._inherited: list[Any] = []  # a parent's disarmed connections: kept, never used
        self._sql: dict[str, str] = {}
        self._renewal: psycopg.Connection[Any] | None = None  # the lease renewal thread's own connection
        self._renewal_pid = os.getpid()
        self._renewal_lock = threading.Lock()  # held while a renewal uses its connection
        conn = self._connection()
        try:
            require_current(conn, self._schema, self._url)
        except StateError:
            self.close()
            raise
        except Exception as exc:  # a driver error while reading the schema's state
            self.close()
            raise self._error(exc, "opening it") from None
        _LIVE.add(self)

    # -- plumbing -----------------------------------------------------------------------------------------
    @property
    def owner(self) -> str:
        """The owner token of this process's runs: ``host_id:pid``."""
        return f"{self.host_id}:{os.getpid()}"

    def _q(self, sql: str) -> str:
        found = self._sql.get(sql)
        if found is None:
            found = self._sql[sql] = render(sql, self._schema)
        return found

    def _label(self) -> str:
        return f"{shown_url(self._url)} (schema {self._schema})"

    def _error(self, exc: BaseException, doing: str) -> StateError:
        text = str(exc).strip()
        detail = text.splitlines()[0] if text else type(exc).__name__
        detail = redacted(detail, self._url)
        return StateError(f"the PostgreSQL store {self._label()} failed {doing}: {detail}")

    def _disarm(self) -> None:
        """This is a forked child: the connection belongs to the parent. Keep it (its finalizer would close it)
        with its socket replaced by /dev/null, and open a new one when needed."""
        if self._pid == os.getpid():
            return
        conn, self._conn = self._conn, None
        renewal, self._renewal = self._renewal, None
        self._pid = self._renewal_pid = os.getpid()
        self._renewal_lock = threading.Lock()  # the parent's renewal thread is not here to release it
        for inherited in (conn, renewal):
            if inherited is None:
                continue
            with contextlib.suppress(Exception):
                fd = inherited.fileno()
                devnull = os.open(os.devnull, os.O_RDWR)
                try:
                    os.dup2(devnull, fd)
                finally:
                    os.close(devnull)
            self._inherited.append(inherited)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._pid != os.getpid():
            self._disarm()
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken):
            self._drop()
            conn = None
        if conn is None:
            conn = self._conn = connect(self._config)
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _tx(
        self,
        work: Callable[[psycopg.Connection[Any]], T],
        *,
        doing: str,
        idempotent: bool = True,
        recover: Callable[[psycopg.Connection[Any]], T] | None = None,
        single: bool = False,
    ) -> T:
        """Run ``work`` in one transaction. A connection lost on the way is reopened once and ``work`` run
        again when that is safe: it failed before its commit was sent, or it is ``idempotent``; a commit whose
        fate is unknown is settled by ``recover`` when given.

        ``single``: ``work`` is one statement, run in autocommit (a statement is its own transaction): one round
        trip instead of three (BEGIN, the statement, COMMIT). Its fate is unknown as soon as it is sent."""
        import psycopg  # lazy: psycopg: the postgres extra, loaded already by connect()

        for attempt in (0, 1):
            conn = self._connection()
            committing = single
            try:
                if single:
                    conn.autocommit = True
                    try:
                        return work(conn)
                    finally:
                        if not (conn.closed or conn.broken):
                            conn.autocommit = False
                result = work(conn)
                committing = True
                conn.commit()
                return result
            except psycopg.Error as exc:
                lost = conn.closed or conn.broken
                if not lost:
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()
                    raise self._error(exc, doing) from None
                self._drop()
                if attempt == 1:
                    raise self._error(exc, doing) from None
                if committing and not idempotent:
                    if recover is None:
                        raise self._error(exc, doing) from None
                    work = recover
            except BaseException:
                if not (conn.closed or conn.broken):
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _transaction(self, work: Callable[[Any], T], *, doing: str, idempotent: bool = True) -> T:
        return self._tx(work, doing=doing, idempotent=idempotent)

    def _executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with conn.cursor() as cur:
            cur.executemany(sql, rows)

    def _lock_jobs(self, conn: Any) -> None:
        conn.execute(self._q("LOCK TABLE {schema}.jobs IN SHARE ROW EXCLUSIVE MODE"))

    def _text(self, value: str) -> str:
        return _text(value)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        def work(conn: psycopg.Connection[Any]) -> list[Any]:
            return conn.execute(self._q(sql), params).fetchall()

        return self._tx(work, doing="reading it", single=True)

    def _write(self, sql: str, params: Sequence[Any] = (), *, idempotent: bool = True) -> int:
        """One statement, in autocommit: one round trip, and no transaction left open holding its row locks
        when the connection is cut before the answer arrives (it would hold them until the server's
        idle_in_transaction_session_timeout)."""

        def work(conn: psycopg.Connection[Any]) -> int:
            return conn.execute(self._q(sql), params).rowcount

        return self._tx(work, doing="writing to it", idempotent=idempotent, single=True)

    # -- jobs --------------------------------------------------------------------------------------------
    def due_jobs(self, slot: int) -> list[JobRecord]:
        # on_each_host() jobs always: each host keeps its own progress through them (strpos over the JSON text
        # is a superset, as in icc.store.postgres.idle; the tick reads the definition itself).
        rows = self._read(
            f"SELECT {JOB_COLUMNS} FROM {{schema}}.jobs WHERE removed_at IS NULL AND enabled "
            "AND (next_due IS NULL OR next_due <= %s OR strpos(definition, 'on_each_host') > 0) ORDER BY name",
            (slot,),
        )
        return [job_record(r) for r in rows]

    # -- meta ---------------------------------------------------------------------------------------------
    def update_meta(self, key: str, change: Callable[[str | None], str | None]) -> str | None:
        q = self._q

        def work(conn: psycopg.Connection[Any]) -> str | None:
            while True:
                # A placeholder row for an absent key: a concurrent caller waits on it like on a row lock.
                made = conn.execute(
                    q(
                        "INSERT INTO {schema}.meta (key, value) VALUES (%s, '') ON CONFLICT (key) DO NOTHING "
                        "RETURNING 1"
                    ),
                    (key,),
                ).fetchone()
                if made is not None:
                    current = None
                    break
                row = conn.execute(
                    q("SELECT value FROM {schema}.meta WHERE key = %s FOR UPDATE"), (key,)
                ).fetchone()
                if row is not None:
                    current = str(row[0])
                    break
                # Deleted between the two statements: try again.
            value = change(current)
            if value is None:
                conn.execute(q("DELETE FROM {schema}.meta WHERE key = %s"), (key,))
            else:
                conn.execute(q("UPDATE {schema}.meta SET value = %s WHERE key = %s"), (value, key))
            return value

        # Not idempotent (``change`` may count): retried only when the commit was surely not sent.
        return self._tx(work, doing="writing to it", idempotent=False)

    # -- runs --------------------------------------------------------------------------------------------
    def claim(
        self, job: str, slot: int, kind: RunKind, *, pid: int, host: str, scope: str = ""
    ) -> int | None:
        q = self._q
        owner = self.owner
        params = (job, slot, scope, kind, pid, host, owner, self._lease)

        def work(conn: psycopg.Connection[Any]) -> int | None:
            row = conn.execute(
                q(
                    "INSERT INTO {schema}.runs (job, slot, scope, kind, outcome, pid, host, owner, lease_until) "
                    f"VALUES (%s, %s, %s, %s, 'pending', %s, %s, %s, {_NOW} + %s) "
                    "ON CONFLICT DO NOTHING RETURNING id"
                ),
                params,
            ).fetchone()
            return None if row is None else int(row[0])

        def recover(conn: psycopg.Connection[Any]) -> int | None:
            # The insert's fate is unknown: the claim is ours if the row is there, still pending, with our owner;
            # someone else's if another row is there; and when there is no row, nothing was committed: claim again.
            row = conn.execute(
                q(
                    "SELECT id, outcome = 'pending' AND owner = %s AND pid = %s FROM {schema}.runs "
                    "WHERE job = %s AND slot = %s AND scope = %s"
                ),
                (owner, pid, job, slot, scope),
            ).fetchone()
            if row is None:
                return work(conn)
            return int(row[0]) if row[1] else None

        return self._tx(work, doing="claiming a run", idempotent=False, recover=recover, single=True)

    def claim_many(self, claims: Sequence[Claim], *, pid: int, host: str) -> list[int | None]:
        if not claims:
            return []
        q = self._q
        owner = self.owner
        # The first of duplicates is the one that may win. The rows go in (job, slot, scope) order, the same
        # on every host: two batches racing on the same rows wait for each other in one order, never in a cycle.
        first: dict[tuple[str, int, str], Claim] = {}
        for c in claims:
            first.setdefault((c.job, c.slot, c.scope), c)
        keys = sorted(first)
        ids: dict[tuple[str, int, str], int] = {}

        def insert(conn: psycopg.Connection[Any], todo: list[tuple[str, int, str]]) -> None:
            rows = conn.execute(
                q(
                    "INSERT INTO {schema}.runs (job, slot, scope, kind, outcome, pid, host, owner, lease_until) "
                    f"SELECT c.job, c.slot, c.scope, c.kind, 'pending', %s, %s, %s, {_NOW} + %s "
                    "FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[]) AS c(job, slot, scope, kind) "
                    "ON CONFLICT DO NOTHING RETURNING id, job, slot, scope"
                ),
                (
                    pid,
                    host,
                    owner,
                    self._lease,
                    [k[0] for k in todo],
                    [k[1] for k in todo],
                    [k[2] for k in todo],
                    [first[k].kind for k in todo],
                ),
            ).fetchall()
            for run_id, job, slot, scope in rows:
                ids[(job, int(slot), scope)] = int(run_id)

        def work(conn: psycopg.Connection[Any]) -> None:
            insert(conn, keys)

        def recover(conn: psycopg.Connection[Any]) -> None:
            # The statement's fate is unknown (it is one statement: all of it was committed or none). A row
            # there, still pending, with our owner and pid is ours; another's row is not; the claims with no
            # row were not committed: claim them again.
            rows = conn.execute(
                q(
                    "SELECT r.id, r.job, r.slot, r.scope, r.outcome = 'pending' AND r.owner = %s AND r.pid = %s "
                    "FROM {schema}.runs r JOIN unnest(%s::text[], %s::bigint[], %s::text[]) AS c(job, slot, scope) "
                    "ON r.job = c.job AND r.slot = c.slot AND r.scope = c.scope"
                ),
                (owner, pid, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
            ).fetchall()
            present: set[tuple[str, int, str]] = set()
            for run_id, job, slot, scope, mine in rows:
                key = (job, int(slot), scope)
                present.add(key)
                if mine:
                    ids[key] = int(run_id)
            missing = [k for k in keys if k not in present]
            if missing:
                insert(conn, missing)

        self._tx(work, doing="claiming runs", idempotent=False, recover=recover, single=True)
        won: list[int | None] = []
        for c in claims:
            won.append(ids.pop((c.job, c.slot, c.scope), None))  # popped: a later duplicate gets None
        return won

    def start_manual(self, job: str, *, pid: int, host: str) -> int:
        q = self._q

        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                q(
                    "INSERT INTO {schema}.runs (job, slot, kind, outcome, pid, host, owner, lease_until) "
                    f"VALUES (%s, NULL, 'manual', 'pending', %s, %s, %s, {_NOW} + %s) RETURNING id"
                ),
                (job, pid, host, self.owner, self._lease),
            ).fetchone()
            assert row is not None
            return int(row[0])

        return self._tx(work, doing="starting a run", idempotent=False)

    def _record_row(self, conn: Any, row: tuple[Any, ...]) -> bool:
        job, slot, kind, outcome, now, error, scope = row
        found = conn.execute(
            self._q(
                # A host's own row (on_each_host) carries its host; a cluster-wide one none. The owner says which
                # host recorded it (forget_unrun deletes only this host's missed rows).
                "INSERT INTO {schema}.runs (job, slot, scope, kind, outcome, ended_at, error, host, owner) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, NULLIF(%s, ''), %s) ON CONFLICT DO NOTHING RETURNING id"
            ),
            (job, slot, scope, kind, outcome, now, error, scope, self.owner),
        ).fetchone()
        return found is not None

    def forget_unrun(self, since: int) -> int:
        # Only the missed rows this host recorded: another host's rows, and skipped rows (decisions), are kept.
        return self._write(
            "DELETE FROM {schema}.runs WHERE slot >= %s AND outcome = 'missed' AND left(owner, %s) = %s",
            (since, len(self.host_id) + 1, f"{self.host_id}:"),
        )

    def take_exclusive(self, run_id: int, *, pid: int) -> str | None:
        import psycopg  # lazy: as in _tx

        q = self._q

        def work(conn: psycopg.Connection[Any]) -> str | None:
            try:
                with conn.transaction():  # a savepoint: a conflict leaves the transaction usable
                    conn.execute(
                        q(
                            "UPDATE {schema}.runs SET outcome = 'running', exclusive = true, pid = %s, owner = %s, "
                            f"lease_until = {_NOW} + %s WHERE id = %s AND outcome IN ('pending', 'running')"
                        ),
                        (pid, self.owner, self._lease, run_id),
                    )
                return None
            except psycopg.errors.UniqueViolation:
                row = conn.execute(
                    q(
                        "SELECT o.host, o.pid FROM {schema}.runs AS r JOIN {schema}.runs AS o "
                        "ON o.job = r.job AND o.scope = r.scope AND o.outcome = 'running' AND o.exclusive "
                        "WHERE r.id = %s"
                    ),
                    (run_id,),
                ).fetchone()
                if row is None:
                    return "another host"
                return f"host {row[0]}, pid {row[1]}"

        # Idempotent: taken twice by the same run is taken (its own row is not a conflict).
        return self._tx(work, doing="starting a run")

    def mark_running(self, run_id: int, *, pid: int, task_pid: int | None, now: float) -> None:
        self._write(
            "UPDATE {schema}.runs SET outcome = 'running', pid = %s, task_pid = %s, started_at = %s, "
            f"owner = %s, lease_until = {_NOW} + %s "
            "WHERE id = %s AND outcome IN ('pending', 'running')",
            (pid, task_pid, now, self.owner, self._lease, run_id),
        )

    def hand_over(self, supervisors: Mapping[int, int], *, now: float) -> None:
        if not supervisors:
            return
        q = self._q

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur:
                cur.executemany(
                    q(
                        "UPDATE {schema}.runs SET outcome = 'running', pid = %s, started_at = %s, "
                        f"owner = %s, lease_until = {_NOW} + %s WHERE id = %s AND outcome = 'pending'"
                    ),
                    [
                        (pid, now, f"{self.host_id}:{pid}", self._lease, run_id)
                        for run_id, pid in supervisors.items()
                    ],
                )

        self._tx(work, doing="writing to it")

    # Compare-and-set: only an unfinished run is written, and only by the host holding it, but for ``abandoned``,
    # which any host records once the lease passed. A fenced host's late finish thus never overwrites what
    # another host recorded.
    def _finish_guard(self, run_id: int, outcome: Outcome) -> tuple[str, tuple[Any, ...]]:
        return " AND (%s OR host IS NULL OR host = %s OR left(owner, %s) = %s) FOR UPDATE", (
            outcome == "abandoned",
            self.host_id,
            len(self.host_id) + 1,
            f"{self.host_id}:",
        )

    _FINISH_SETS = "lease_until = NULL, "

    def close(self) -> None:
        _LIVE.discard(self)
        if self._pid != os.getpid():
            self._disarm()
            return
        self._drop()
        # Not while a renewal thread uses that connection (closing it under a running query is unsafe); a
        # renewal that hangs keeps its connection until the process ends.
        if self._renewal_lock.acquire(timeout=1.0):
            try:
                self._drop_renewal()
            finally:
                self._renewal_lock.release()

    # -- hosts --------------------------------------------------------------------------------------------
    def register_host(self, hostname: str) -> float | None:
        def work(conn: psycopg.Connection[Any]) -> float:
            # The server's clock read twice, the round trip with less delay kept (the first one of a
            # transaction also carries its BEGIN); the server read it halfway through, give or take.
            best: tuple[float, float, float] | None = None
            for _ in range(2):
                before = time.time()
                row = conn.execute(f"SELECT {_NOW}").fetchone()
                after = time.time()
                if row is not None and (best is None or after - before < best[1] - best[0]):
                    best = (before, after, float(row[0]))
            assert best is not None
            before, after, server = best
            offset = (before + after) / 2 - server
            conn.execute(
                self._q(
                    "INSERT INTO {schema}.hosts (host_id, hostname, last_seen, clock_offset) "
                    f"VALUES (%s, %s, {_NOW}, %s) ON CONFLICT (host_id) DO UPDATE SET "
                    "hostname = EXCLUDED.hostname, last_seen = EXCLUDED.last_seen, "
                    "clock_offset = EXCLUDED.clock_offset"
                ),
                (self.host_id, _text(hostname), offset),
            )
            return offset

        return self._tx(work, doing="recording this host")

    def hosts(self) -> list[HostRecord]:
        rows = self._read(
            "SELECT host_id, hostname, last_seen, clock_offset FROM {schema}.hosts ORDER BY host_id"
        )
        return [HostRecord(str(h), str(n), float(s), float(o)) for h, n, s, o in rows]

    # -- leases -------------------------------------------------------------------------------------------
    @property
    def lease(self) -> float | None:
        return self._lease

    def renew(self, run_ids: Sequence[int]) -> list[int]:
        """On a connection of its own (the renewal thread's), never the one the supervisor writes with: a hung
        statement there cannot delay a renewal, and a hung renewal cannot delay the supervisor."""
        if not run_ids:
            return []
        if self._renewal_pid != os.getpid():  # forked: the parent's renewal connection is left alone
            self._disarm()
        with self._renewal_lock:
            return self._renew(run_ids)

    def _renew(self, run_ids: Sequence[int]) -> list[int]:
        import psycopg  # lazy: as in _tx

        conn = self._renewal
        if conn is not None and (conn.closed or conn.broken):
            self._drop_renewal()
            conn = None
        if conn is None:
            conn = self._renewal = connect(self._config)
        try:
            rows = conn.execute(
                self._q(
                    f"UPDATE {{schema}}.runs SET lease_until = {_NOW} + %s WHERE id = ANY(%s) "
                    "AND (host = %s OR left(owner, %s) = %s) AND outcome IN ('pending', 'running') RETURNING id"
                ),
                (self._lease, list(run_ids), self.host_id, len(self.host_id) + 1, f"{self.host_id}:"),
            ).fetchall()
            conn.commit()
        except psycopg.Error as exc:
            self._drop_renewal()
            raise self._error(exc, "renewing the leases of its runs") from None
        return [int(r[0]) for r in rows]

    def _drop_renewal(self) -> None:
        conn, self._renewal = self._renewal, None
        if conn is not None and self._renewal_pid == os.getpid():
            with contextlib.suppress(Exception):
                conn.close()

    def expired_leases(self) -> dict[int, str]:
        rows = self._read(
            "SELECT id, COALESCE(host, split_part(owner, ':', 1)) FROM {schema}.runs "
            f"WHERE outcome IN ('pending', 'running') AND lease_until < {_NOW}"
        )
        return {int(i): str(h) for i, h in rows}

    def reconnect(self) -> None:
        if self._pid != os.getpid():
            self._disarm()
        self._drop()
