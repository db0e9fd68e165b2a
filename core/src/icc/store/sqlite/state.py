"""The embedded state store: one SQLite file in the state directory.

WAL journal, a busy timeout and ``BEGIN IMMEDIATE`` for every write, so concurrent ticks, ``icc exec`` and
``icc status`` serialise on the database instead of failing. The file is created atomically (schema built in a
temporary file, then hard-linked into place), so an existing file without icc's schema is never mistaken for a
new, empty store: it is a :class:`~icc.errors.StateError` and nothing is written to it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from icc.errors import StateError
from icc.statedir import check_state_file, ensure_state_dir, os_error, secure_file
from icc.store.protocol import Claim, HostRecord, JobRecord, RunKind
from icc.store.sql import JOB_COLUMNS, SqlStateStore, grouped_counts, job_record
from icc.store.sqlite.diagnosis import database_error, is_corrupt

T = TypeVar("T")

SCHEMA_VERSION = "1"
FILENAME = "state.sqlite3"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    definition TEXT NOT NULL,
    plugin TEXT NOT NULL,
    distribution TEXT,
    version TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    removed_at REAL,
    next_due INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    slot INTEGER,
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    started_at REAL,
    ended_at REAL,
    exit_code INTEGER,
    pid INTEGER,
    host TEXT,
    output TEXT NOT NULL DEFAULT '',
    error TEXT,
    task_pid INTEGER
);
-- The claim: a (job, slot) pair is inserted at most once, by whichever tick gets there first.
CREATE UNIQUE INDEX runs_claim ON runs (job, slot) WHERE slot IS NOT NULL;
CREATE INDEX runs_job ON runs (job, id);
CREATE INDEX runs_unfinished ON runs (outcome) WHERE outcome IN ('pending', 'running');
"""

# Runs per (job, outcome) since the store was made, for `icc metrics` (`icc_job_runs_total`): kept apart from
# the runs table, which history pruning shortens. Made on first open, so older stores get it too.
_COUNTS = (
    "CREATE TABLE IF NOT EXISTS run_counts ("
    "job TEXT NOT NULL, outcome TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (job, outcome))"
)
# The due column: a tick reads only the jobs whose next slot it reached (issue 17). Made on open too, so a state
# file an older icc made gets it (CREATE INDEX IF NOT EXISTS writes nothing when it is there).
_DUE_INDEX = "CREATE INDEX IF NOT EXISTS jobs_next_due ON jobs (next_due)"
# Actions taken through the dashboard (icc web): what, on what, when, from where. Made on open, as above.
_WEB_ACTIONS = (
    "CREATE TABLE IF NOT EXISTS web_actions (id INTEGER PRIMARY KEY, at REAL NOT NULL, action TEXT NOT NULL, "
    "target TEXT NOT NULL, remote TEXT NOT NULL, detail TEXT)",
    "CREATE INDEX IF NOT EXISTS web_actions_target ON web_actions (target, id)",
)


class SQLiteStateStore(SqlStateStore):
    """:class:`~icc.store.protocol.StateStore` on an SQLite file; the SQL both stores share is in
    :class:`~icc.store.sql.SqlStateStore`."""

    _TRUE = "1"
    _SLOT_SECONDS = "slot"
    _SCHEDULE_AND_DESCRIPTION = (
        "json_extract(definition, '$.schedule'), json_extract(definition, '$.description')"
    )
    _FINISHED_STAYS = False  # one host: a later finish of the same run is what it shows, as it always was

    def __init__(self, state_dir: Path, *, timeout: float = 30.0) -> None:
        ensure_state_dir(state_dir)
        self.path = state_dir / FILENAME
        self._timeout = timeout
        self._sql: dict[str, str] = {}  # rendered SQL (see _q)
        for suffix in ("", "-wal", "-shm"):
            check_state_file(self.path.with_name(self.path.name + suffix))
        if not self.path.exists():
            self._create(timeout)
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(exc, "opening it") from exc
        try:
            # Read before anything that could write: an emptied or foreign file stays as it is.
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.Error as exc:
            self._db.close()
            if "no such table" in str(exc) and not is_corrupt(self.path):
                raise StateError(
                    f"state database {self.path} is not an icc state database (it has no meta table: emptied, "
                    f"or another program's file); it was left untouched. Move it away (mv {self.path} "
                    f"{self.path}.broken) and run `icc scan` to start a new one"
                ) from exc
            raise self._error(exc, "opening it") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error(exc, "opening it") from exc
        if row is None or row[0] != SCHEMA_VERSION:
            self._db.close()
            raise StateError(
                f"state database {self.path} has schema version {row[0] if row else 'none'}, "
                f"this icc needs {SCHEMA_VERSION}; upgrade icc or move the file away"
            )
        with contextlib.suppress(sqlite3.Error):  # a store icc cannot write still reads (run_counts: none)
            self._db.execute(_COUNTS)
        with contextlib.suppress(sqlite3.Error):  # likewise: without the index a tick reads the same rows
            self._db.execute(_DUE_INDEX)
        with contextlib.suppress(sqlite3.Error):  # likewise: a store icc cannot write has no actions to show
            for statement in _WEB_ACTIONS:
                self._db.execute(statement)
        for suffix in ("-wal", "-shm"):
            secure_file(self.path.with_name(self.path.name + suffix))

    def _error(self, exc: BaseException, doing: str) -> StateError:
        """What is wrong, from the SQLite error and a look at the file (only corruption advises moving it)."""
        return database_error(self.path, exc, doing=doing, timeout=self._timeout)

    def _create(self, timeout: float) -> None:
        """Build the schema in a temporary file and link it into place: never a half-made store."""
        tmp = self.path.with_name(f".{FILENAME}.{os.getpid()}.tmp")
        old_umask = os.umask(0o077)
        try:
            db = sqlite3.connect(tmp, timeout=timeout, isolation_level=None)
            try:
                db.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            finally:
                db.close()
            secure_file(tmp)
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                os.link(tmp, self.path)
        except sqlite3.Error as exc:
            raise database_error(self.path, exc, doing="creating it", timeout=timeout) from exc
        except OSError as exc:
            raise os_error(self.path, exc, doing="creating the state database") from exc
        finally:
            os.umask(old_umask)
            with contextlib.suppress(OSError):
                tmp.unlink()

    # -- the dialect (see icc.store.sql) -----------------------------------------------------------------
    def _q(self, sql: str) -> str:
        found = self._sql.get(sql)
        if found is None:
            found = self._sql[sql] = sql.replace("{schema}.", "").replace("%s", "?")
        return found

    def _bool(self, value: bool) -> Any:
        return int(value)

    def _write(self, sql: str, params: Sequence[Any] = (), *, idempotent: bool = True) -> int:
        del idempotent  # a local file: no connection to lose between a commit and its answer
        with self._writing() as db:
            return db.execute(self._q(sql), params).rowcount

    def _transaction(self, work: Callable[[Any], T], *, doing: str, idempotent: bool = True) -> T:
        del doing, idempotent  # as in _write: every failed write reads "writing to it"
        with self._writing() as db:
            return work(db)

    def _executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn.executemany(sql, rows)

    def _lock_jobs(self, conn: Any) -> None:
        pass  # BEGIN IMMEDIATE: the whole scan is under the write lock already

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc, "starting a write") from exc
        try:
            yield self._db
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc, "writing to it") from exc
            raise
        else:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise self._error(exc, "writing to it") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(self._q(sql), params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc, "reading it") from exc

    # -- jobs --------------------------------------------------------------------------------------------
    def due_jobs(self, slot: int) -> list[JobRecord]:
        # No ORDER BY: sorting by name would walk the name index over every row; the due ones are few.
        rows = self._read(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE removed_at IS NULL AND enabled = 1 "
            "AND (next_due IS NULL OR next_due <= ?)",
            (slot,),
        )
        return sorted(map(job_record, rows), key=lambda job: job.name)

    # -- meta ---------------------------------------------------------------------------------------------
    def update_meta(self, key: str, change: Callable[[str | None], str | None]) -> str | None:
        with self._writing() as db:  # BEGIN IMMEDIATE: the read below is already under the write lock
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            value = change(row[0] if row else None)
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            return value

    # -- runs --------------------------------------------------------------------------------------------
    def claim(
        self, job: str, slot: int, kind: RunKind, *, pid: int, host: str, scope: str = ""
    ) -> int | None:
        del scope  # one host uses this store: once per slot is once per host
        with self._writing() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO runs (job, slot, kind, outcome, pid, host) VALUES (?, ?, ?, 'pending', ?, ?)",
                (job, slot, kind, pid, host),
            )
            return cur.lastrowid if cur.rowcount == 1 else None

    def claim_many(self, claims: Sequence[Claim], *, pid: int, host: str) -> list[int | None]:
        # One write transaction; scope ignored, as by claim(). A duplicate later in the batch is ignored too.
        won: list[int | None] = []
        if not claims:
            return won
        with self._writing() as db:
            for c in claims:
                cur = db.execute(
                    "INSERT OR IGNORE INTO runs (job, slot, kind, outcome, pid, host) "
                    "VALUES (?, ?, ?, 'pending', ?, ?)",
                    (c.job, c.slot, c.kind, pid, host),
                )
                won.append(cur.lastrowid if cur.rowcount == 1 else None)
        return won

    def start_manual(self, job: str, *, pid: int, host: str) -> int:
        with self._writing() as db:
            cur = db.execute(  # started_at is set when its task starts (mark_running), like any run
                "INSERT INTO runs (job, slot, kind, outcome, pid, host) VALUES (?, NULL, 'manual', 'pending', ?, ?)",
                (job, pid, host),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def _record_row(self, conn: Any, row: tuple[Any, ...]) -> bool:
        job, slot, kind, outcome, now, error, _scope = row  # the scope: one host, see claim()
        cur = conn.execute(
            # Never started: no started_at, so no duration either.
            "INSERT OR IGNORE INTO runs (job, slot, kind, outcome, ended_at, error) VALUES (?, ?, ?, ?, ?, ?)",
            (job, slot, kind, outcome, now, error),
        )
        return bool(cur.rowcount == 1)

    def forget_unrun(self, since: int) -> int:
        # One host writes this store: every missed row is this host's. Skipped rows are decisions: kept.
        with self._writing() as db:
            cur = db.execute("DELETE FROM runs WHERE slot >= ? AND outcome = 'missed'", (since,))
            return cur.rowcount

    def take_exclusive(self, run_id: int, *, pid: int) -> str | None:
        del run_id, pid  # one host: the job lock keeps runs apart
        return None

    def mark_running(self, run_id: int, *, pid: int, task_pid: int | None, now: float) -> None:
        with self._writing() as db:
            db.execute(
                "UPDATE runs SET outcome = 'running', pid = ?, task_pid = ?, started_at = ? "
                "WHERE id = ? AND outcome IN ('pending', 'running')",
                (pid, task_pid, now, run_id),
            )

    def hand_over(self, supervisors: Mapping[int, int], *, now: float) -> None:
        with self._writing() as db:
            db.executemany(
                "UPDATE runs SET outcome = 'running', pid = ?, started_at = ? WHERE id = ? AND outcome = 'pending'",
                [(pid, now, run_id) for run_id, pid in supervisors.items()],
            )

    def run_counts(self) -> dict[str, dict[str, int]]:
        try:
            rows = self._db.execute("SELECT job, outcome, n FROM run_counts ORDER BY job, outcome").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return {}  # a store this icc could not add the table to (read-only)
            raise self._error(exc, "reading it") from exc
        except sqlite3.Error as exc:
            raise self._error(exc, "reading it") from exc
        return grouped_counts(rows)

    def close(self) -> None:
        self._db.close()

    # -- hosts: one host uses this store, its clock is the store's -------------------------------------------
    def register_host(self, hostname: str) -> float | None:
        return None

    def hosts(self) -> list[HostRecord]:
        return []

    # -- leases: none here (one host; its pid and job lock checks suffice) ----------------------------------
    @property
    def lease(self) -> float | None:
        return None

    def renew(self, run_ids: Sequence[int]) -> list[int]:
        if not run_ids:
            return []
        marks = ", ".join("?" for _ in run_ids)
        rows = self._read(
            f"SELECT id FROM runs WHERE id IN ({marks}) AND outcome IN ('pending', 'running')", tuple(run_ids)
        )
        return [int(r[0]) for r in rows]

    def expired_leases(self) -> dict[int, str]:
        return {}

    def reconnect(self) -> None:
        return None


def open_store(state_dir: Path) -> SQLiteStateStore:
    return SQLiteStateStore(state_dir)
