"""The state store's SQL, said once for both backends: what SQLite and PostgreSQL do the same way.

:class:`SqlStateStore` holds every query and every piece of row decoding the two stores share (huey's
``BaseSqlStorage`` is the model). Its SQL is written once, in PostgreSQL's spelling: ``%s`` placeholders and
tables as ``{schema}.name``; each backend renders it in :meth:`SqlStateStore._q` (SQLite: ``?`` and no schema).
What differs stays in the backends, as small methods:

- :meth:`~SqlStateStore._read`: one read statement's rows;
- :meth:`~SqlStateStore._write`: one write statement, its row count;
- :meth:`~SqlStateStore._transaction`: several statements in one transaction (SQLite: ``BEGIN IMMEDIATE``;
  PostgreSQL: a retry on a lost connection when that is safe);
- :meth:`~SqlStateStore._lock_jobs` and :meth:`~SqlStateStore._executemany`: a scan's lock, a batch;
- :attr:`~SqlStateStore._TRUE`, :meth:`~SqlStateStore._text`: a boolean as stored, text as the database keeps it.

The claims, leases, hosts and everything that carries an owner stay whole in each backend: there the two do
different things (one host against many), not the same thing in two spellings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from icc.store.protocol import (
    DURATION_SUM_KEY,
    FAILURES,
    TIMED_OUTCOMES,
    ActionRecord,
    JobRecord,
    JobSummary,
    Outcome,
    RunBrief,
    RunKind,
    RunRecord,
    SyncReport,
    UnchangedGone,
    duration_counts,
)

T = TypeVar("T")

RUN_COLUMNS = (
    "id, job, slot, kind, outcome, started_at, ended_at, exit_code, pid, host, output, error, task_pid"
)
JOB_COLUMNS = "name, kind, definition, plugin, distribution, version, enabled, removed_at, next_due"
FAILURES_SQL = ", ".join(f"'{o}'" for o in sorted(FAILURES))
SET_META = "INSERT INTO {schema}.meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"

# Runs per (job, outcome), counted once when a run is recorded or first finishes (`icc_job_runs_total`).
COUNT_RUN = (
    "INSERT INTO {schema}.run_counts (job, outcome, n) VALUES (%s, %s, 1) "
    "ON CONFLICT (job, outcome) DO UPDATE SET n = {schema}.run_counts.n + 1"
)

ADD_COUNT = (
    "INSERT INTO {schema}.run_counts (job, outcome, n) VALUES (%s, %s, %s) "
    "ON CONFLICT (job, outcome) DO UPDATE SET n = {schema}.run_counts.n + EXCLUDED.n"
)


def run_record(row: Sequence[Any]) -> RunRecord:
    """A ``runs`` row (``RUN_COLUMNS``) as a record."""
    return RunRecord(*row)


def job_record(row: Sequence[Any]) -> JobRecord:
    """A ``jobs`` row (``JOB_COLUMNS``) as a record."""
    name, kind, definition, plugin, dist, version, enabled, removed_at, next_due = row
    return JobRecord(
        name=name,
        kind=kind,
        definition=json.loads(definition),
        plugin=plugin,
        distribution=dist,
        version=version,
        enabled=bool(enabled),
        removed_at=removed_at,
        next_due=next_due,
    )


def grouped_counts(rows: Sequence[Any], *, durations: bool = False) -> dict[str, dict[str, int]]:
    """``(job, outcome, n)`` rows as ``{job: {outcome: n}}``: the outcomes, or with ``durations`` only the
    duration histogram's pseudo-outcomes (``~le:...``, ``~sum_ms``, see ``DURATION_BUCKETS``)."""
    found: dict[str, dict[str, int]] = {}
    for job, outcome, n in rows:
        if str(outcome).startswith("~") == durations:
            found.setdefault(str(job), {})[str(outcome)] = int(n)
    return found


class DryRun(Exception):
    """Raised inside a scan's transaction to roll it back, carrying what it would have done."""

    def __init__(self, report: SyncReport) -> None:
        super().__init__(report)
        self.report = report


class SqlStateStore:
    """What both SQL state stores say the same way. A backend supplies the dialect methods below."""

    _TRUE = "true"  # a true boolean as the database stores it (SQLite: 1)
    _SLOT_SECONDS = "slot::double precision"  # a slot (an integer) as seconds, to compare with a start time

    # -- the dialect: each backend's own ------------------------------------------------------------------
    def _q(self, sql: str) -> str:
        """``sql`` (``%s`` placeholders, ``{schema}.table``) rendered for this database."""
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read statement (``sql`` not yet rendered)."""
        raise NotImplementedError

    def _write(self, sql: str, params: Sequence[Any] = (), *, idempotent: bool = True) -> int:
        """One write statement (``sql`` not yet rendered), committed; its row count."""
        raise NotImplementedError

    def _transaction(self, work: Callable[[Any], T], *, doing: str, idempotent: bool = True) -> T:
        """``work(connection)`` in one write transaction: committed when it returns, rolled back when it raises."""
        raise NotImplementedError

    def _executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One rendered statement for each of ``rows``, inside a transaction."""
        raise NotImplementedError

    def _lock_jobs(self, conn: Any) -> None:
        """Inside a scan's transaction, before the jobs are read: one scan at a time."""
        raise NotImplementedError

    def _record_row(self, conn: Any, row: tuple[Any, ...]) -> bool:
        """Inside :meth:`record`'s transaction: insert the never-started row of one slot, ``row`` being (job, slot,
        kind, outcome, now, error, scope), unless that slot has a row already; whether it was inserted."""
        raise NotImplementedError

    # Inside finish(): what else picks the run (rendered SQL after "outcome IN ('pending', 'running')") and its
    # parameters, and what else its end sets.
    def _finish_guard(self, run_id: int, outcome: Outcome) -> tuple[str, tuple[Any, ...]]:
        return "", ()

    _FINISH_SETS = ""
    # Whether a run that has finished already is left as it is (True) or written again (SQLite, one host: the
    # last finish is what the run shows).
    _FINISHED_STAYS = True

    def _text(self, value: str) -> str:
        """``value`` as the database's text can hold it."""
        return value

    def _bool(self, value: bool) -> Any:
        """``value`` as a parameter for a boolean column."""
        return value

    # -- jobs --------------------------------------------------------------------------------------------
    def jobs(
        self, *, include_removed: bool = False, plugins: Collection[str] | None = None
    ) -> list[JobRecord]:
        where = [] if include_removed else ["removed_at IS NULL"]
        params: tuple[str, ...] = ()
        if plugins is not None:
            if not plugins:
                return []
            params = tuple(sorted(plugins))
            where.append(f"plugin IN ({', '.join('%s' for _ in params)})")
        condition = f"WHERE {' AND '.join(where)}" if where else ""
        return [
            job_record(r)
            for r in self._read(
                f"SELECT {JOB_COLUMNS} FROM {{schema}}.jobs {condition} ORDER BY name", params
            )
        ]

    def definition_totals(self) -> dict[str, tuple[int, int]]:
        rows = self._read(
            "SELECT plugin, COUNT(*), SUM(LENGTH(definition)) FROM {schema}.jobs WHERE removed_at IS NULL "
            "GROUP BY plugin"
        )
        return {str(plugin): (int(count), int(length or 0)) for plugin, count, length in rows}

    # The schedule (JSON text) and the description (text) of a row's definition, read by the database.
    _SCHEDULE_AND_DESCRIPTION = "(definition::json -> 'schedule')::text, definition::json ->> 'description'"

    def job_summaries(self) -> list[JobSummary]:
        decoded: dict[str | None, Mapping[str, Any]] = {}
        found = []
        for row in self._read(
            "SELECT name, kind, plugin, distribution, version, enabled, removed_at, next_due, "
            f"{self._SCHEDULE_AND_DESCRIPTION} FROM {{schema}}.jobs ORDER BY name"
        ):
            name, kind, plugin, distribution, version, enabled, removed_at, next_due, text, description = row
            schedule = decoded.get(text)
            if schedule is None:
                schedule = decoded[text] = json.loads(text) if text is not None else {}
            found.append(
                JobSummary(
                    name,
                    kind,
                    plugin,
                    distribution,
                    version,
                    bool(enabled),
                    removed_at,
                    next_due,
                    schedule,
                    description,
                )
            )
        return found

    def job(self, name: str) -> JobRecord | None:
        rows = self._read(f"SELECT {JOB_COLUMNS} FROM {{schema}}.jobs WHERE name = %s", (name,))
        return job_record(rows[0]) if rows else None

    def sync_jobs(
        self,
        records: Sequence[JobRecord],
        *,
        prune: bool,
        dry_run: bool,
        now: float,
        meta: Mapping[str, str],
        unchanged: Mapping[str, str] | None = None,
    ) -> SyncReport:
        wanted = {r.name: r for r in records}
        known = unchanged or {}
        q = self._q

        def work(conn: Any) -> SyncReport:
            report = SyncReport()
            self._lock_jobs(conn)
            columns = JOB_COLUMNS
            params: tuple[str, ...] = ()
            if known:  # their definitions are not read: '{}' in their place (10,000 jobs, nothing changed)
                plugins = tuple(sorted(set(known.values())))
                marks = ", ".join("%s" for _ in plugins)
                columns = JOB_COLUMNS.replace(
                    "definition", f"CASE WHEN plugin IN ({marks}) THEN '{{}}' ELSE definition END", 1
                )
                params = plugins
            rows = conn.execute(q(f"SELECT {columns} FROM {{schema}}.jobs"), params).fetchall()
            # Rows are decoded only when their stored text differs: a job whose stored row says exactly what
            # the scan would write (its definition's JSON text too) is unchanged, with nothing to write.
            raw = {row[0]: row for row in rows}
            for name, plugin in known.items():
                row = raw.get(name)
                if row is None or row[7] is not None or row[3] != plugin:
                    raise UnchangedGone(name)
                report.unchanged.append(name)
            for name, rec in wanted.items():
                text = json.dumps(rec.definition, sort_keys=True)
                row = raw.get(name)
                if (
                    row is not None
                    and row[7] is None
                    and tuple(row[1:6])
                    == (
                        rec.kind,
                        text,
                        rec.plugin,
                        rec.distribution,
                        rec.version,
                    )
                ):
                    report.unchanged.append(name)
                    continue  # keep its next_due: slots missed before this scan stay visible
                old = None if row is None else job_record(row)
                fields = (rec.kind, text, rec.plugin, rec.distribution, rec.version, rec.next_due, now)
                if old is None:
                    report.added.append(name)
                    conn.execute(
                        q(
                            "INSERT INTO {schema}.jobs (kind, definition, plugin, distribution, version, next_due,"
                            " updated_at, name, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                        ),
                        (*fields, name, now),
                    )
                    continue
                if old.removed_at is not None:
                    report.restored.append(name)
                elif old.same_definition(rec):
                    report.unchanged.append(name)
                    if dict(old.definition) != dict(rec.definition):
                        # Only the derived "compiled" masks differ (a definition stored by an older icc).
                        conn.execute(
                            q("UPDATE {schema}.jobs SET definition = %s WHERE name = %s"), (fields[1], name)
                        )
                    continue  # keep its next_due: slots missed before this scan stay visible
                else:
                    report.changed.append(name)
                conn.execute(
                    q(
                        "UPDATE {schema}.jobs SET kind = %s, definition = %s, plugin = %s, distribution = %s,"
                        " version = %s, next_due = %s, updated_at = %s, removed_at = NULL WHERE name = %s"
                    ),
                    (*fields, name),
                )
            for name, row in raw.items():
                if name in wanted or name in known:
                    continue
                old = job_record(row)
                if prune:
                    report.pruned.append(name)
                    conn.execute(q("DELETE FROM {schema}.jobs WHERE name = %s"), (name,))
                    conn.execute(q("DELETE FROM {schema}.runs WHERE job = %s"), (name,))
                elif old.removed_at is None:
                    report.removed.append(name)
                    conn.execute(
                        q(
                            "UPDATE {schema}.jobs SET removed_at = %s, next_due = NULL, updated_at = %s"
                            " WHERE name = %s"
                        ),
                        (now, now, name),
                    )
            for key, value in meta.items():
                conn.execute(q(SET_META), (key, value))
            if dry_run:
                raise DryRun(report)
            return report

        try:
            return self._transaction(work, doing="syncing the jobs")
        except DryRun as dry:
            return dry.report  # rolled back: nothing written

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._write(
            "UPDATE {schema}.jobs SET enabled = %s, updated_at = %s WHERE name = %s",
            (self._bool(enabled), time.time(), name),
        )

    def set_next_due(self, updates: Mapping[str, int | None]) -> None:
        if not updates:
            return
        self._next_dues(updates, None)

    def save_evaluation(self, next_dues: Mapping[str, int | None], slot: int) -> None:
        self._next_dues(next_dues, slot)

    def _next_dues(self, updates: Mapping[str, int | None], watermark: int | None) -> None:
        q = self._q

        def work(conn: Any) -> None:
            if updates:
                self._executemany(
                    conn,
                    q("UPDATE {schema}.jobs SET next_due = %s WHERE name = %s"),
                    [(v, k) for k, v in updates.items()],
                )
            if watermark is not None:
                conn.execute(q(SET_META), ("watermark", str(watermark)))

        self._transaction(work, doing="writing to it")

    def earliest_due(self) -> int | None:
        rows = self._read(
            f"SELECT MIN(next_due) FROM {{schema}}.jobs WHERE enabled = {self._TRUE} AND removed_at IS NULL"
        )
        value = rows[0][0] if rows else None
        return None if value is None else int(value)

    # -- meta ---------------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM {schema}.meta WHERE key = %s", (key,))
        return str(rows[0][0]) if rows else None

    # -- runs --------------------------------------------------------------------------------------------
    def record(
        self,
        job: str,
        slots: Sequence[int],
        outcome: Outcome,
        kind: RunKind,
        *,
        error: str | None = None,
        scope: str = "",
    ) -> list[int]:
        q = self._q
        now = time.time()

        def work(conn: Any) -> list[int]:
            recorded: list[int] = []
            for slot in slots:
                if self._record_row(conn, (job, slot, kind, outcome, now, error, scope)):
                    recorded.append(slot)
                    conn.execute(q(COUNT_RUN), (job, outcome))
            return recorded

        return self._transaction(work, doing="recording runs", idempotent=False)

    def finish(
        self,
        run_id: int,
        outcome: Outcome,
        *,
        now: float,
        exit_code: int | None = None,
        output: str = "",
        error: str | None = None,
    ) -> None:
        q = self._q
        guard, guard_params = self._finish_guard(run_id, outcome)

        def work(conn: Any) -> None:
            row = conn.execute(
                q(
                    "SELECT job, started_at, task_pid FROM {schema}.runs WHERE id = %s AND outcome IN "
                    f"('pending', 'running'){guard}"
                ),
                (run_id, *guard_params),
            ).fetchone()
            if row is not None:  # counted once, when it first finishes
                conn.execute(q(COUNT_RUN), (row[0], outcome))
                if row[1] is not None and row[2] is not None and outcome in TIMED_OUTCOMES:
                    # icc_job_duration_seconds: the run's bucket and the sum (ms), kept apart from the history
                    bucket, millis = duration_counts(max(0.0, now - float(row[1])))
                    conn.execute(q(ADD_COUNT), (row[0], bucket, 1))
                    conn.execute(q(ADD_COUNT), (row[0], DURATION_SUM_KEY, millis))
            elif self._FINISHED_STAYS:
                return  # finished already: refused
            conn.execute(
                # A run whose task never started (no task_pid: skipped, could not start, abandoned before its
                # task started) has no start time and so no duration, even if a tick handed it over.
                q(
                    "UPDATE {schema}.runs SET outcome = %s, ended_at = %s, exit_code = %s, output = %s, error = %s, "
                    f"{self._FINISH_SETS}"
                    "started_at = CASE WHEN task_pid IS NULL THEN NULL ELSE started_at END WHERE id = %s"
                ),
                (
                    outcome,
                    now,
                    exit_code,
                    self._text(output),
                    None if error is None else self._text(error),
                    run_id,
                ),
            )

        # Idempotent: a second time finds it finished (and where a finished run stays, writes nothing).
        self._transaction(work, doing="recording a run's end")

    def add_note(self, run_id: int, note: str) -> None:
        self._write(
            "UPDATE {schema}.runs SET error = CASE WHEN error IS NULL OR error = '' THEN %s "
            "ELSE error || '; ' || %s END WHERE id = %s",
            (self._text(note), self._text(note), run_id),
            idempotent=False,
        )

    def add_output(self, run_id: int, output: str) -> None:
        self._write(
            "UPDATE {schema}.runs SET output = COALESCE(output, '') || %s WHERE id = %s",
            (self._text(output), run_id),
            idempotent=False,
        )

    def run(self, run_id: int) -> RunRecord | None:
        rows = self._read(f"SELECT {RUN_COLUMNS} FROM {{schema}}.runs WHERE id = %s", (run_id,))
        return run_record(rows[0]) if rows else None

    def unfinished(self) -> list[RunRecord]:
        return [
            run_record(r)
            for r in self._read(
                f"SELECT {RUN_COLUMNS} FROM {{schema}}.runs WHERE outcome IN ('pending', 'running') ORDER BY id"
            )
        ]

    def runs(self, job: str, *, limit: int = 20, before: int | None = None) -> list[RunRecord]:
        if before is None:
            rows = self._read(
                f"SELECT {RUN_COLUMNS} FROM {{schema}}.runs WHERE job = %s ORDER BY id DESC LIMIT %s",
                (job, limit),
            )
        else:
            rows = self._read(
                f"SELECT {RUN_COLUMNS} FROM {{schema}}.runs WHERE job = %s AND id < %s ORDER BY id DESC LIMIT %s",
                (job, before, limit),
            )
        return [run_record(r) for r in rows]

    def run_briefs(self, job: str, *, limit: int, before: int | None = None) -> list[RunBrief]:
        rows = self._read(
            "SELECT id, job, slot, outcome, started_at, ended_at, exit_code, host, error FROM {schema}.runs "
            "WHERE job = %s AND id < %s ORDER BY id DESC LIMIT %s",
            (job, (2**62) if before is None else before, limit),
        )
        return [RunBrief(int(r[0]), str(r[1]), *r[2:]) for r in rows]

    def last_runs_of(self, job: str) -> dict[str, RunRecord]:
        found: dict[str, RunRecord] = {}
        for key, where in (
            ("last", "outcome NOT IN ('missed', 'skipped', 'pending')"),
            ("success", "outcome = 'succeeded'"),
            ("failure", f"outcome IN ({FAILURES_SQL})"),
        ):
            rows = self._read(
                f"SELECT {RUN_COLUMNS} FROM {{schema}}.runs WHERE job = %s AND {where} ORDER BY id DESC LIMIT 1",
                (job,),
            )
            if rows:
                found[key] = run_record(rows[0])
        return found

    def missed_count(self, job: str, since: int, until: int) -> int:
        rows = self._read(
            "SELECT COUNT(*) FROM {schema}.runs WHERE job = %s AND slot BETWEEN %s AND %s AND outcome = 'missed'",
            (job, since, until),
        )
        return int(rows[0][0])

    def change_stamp(self) -> tuple[Any, ...]:
        row = self._read(
            "SELECT (SELECT MAX(id) FROM {schema}.runs), "
            # outcome IN (...) exactly as the partial index runs_unfinished says: SQLite uses it only then.
            "(SELECT COUNT(*) FROM {schema}.runs WHERE outcome IN ('pending', 'running')), "
            "(SELECT SUM(CASE WHEN outcome = 'running' THEN id ELSE 0 END) FROM {schema}.runs "
            "WHERE outcome IN ('pending', 'running')), "
            "(SELECT MAX(updated_at) FROM {schema}.jobs), "
            "(SELECT value FROM {schema}.meta WHERE key = 'pause'), "
            "(SELECT MAX(id) FROM {schema}.web_actions)"
        )[0]
        return tuple(row)

    # -- dashboard actions ----------------------------------------------------------------------------------
    def record_action(self, action: str, target: str, *, remote: str, at: float, detail: str | None) -> int:
        def work(conn: Any) -> int:
            cur = conn.execute(
                self._q(
                    "INSERT INTO {schema}.web_actions (at, action, target, remote, detail) "
                    "VALUES (%s, %s, %s, %s, %s) RETURNING id"
                ),
                (at, action, target, remote, detail),
            )
            return int(cur.fetchone()[0])

        return self._transaction(work, doing="recording a dashboard action", idempotent=False)

    def actions(self, target: str | None = None, *, limit: int = 50) -> list[ActionRecord]:
        columns = "id, at, action, target, remote, detail"
        if target is None:
            rows = self._read(
                f"SELECT {columns} FROM {{schema}}.web_actions ORDER BY id DESC LIMIT %s", (limit,)
            )
        else:
            rows = self._read(
                f"SELECT {columns} FROM {{schema}}.web_actions WHERE target = %s ORDER BY id DESC LIMIT %s",
                (target, limit),
            )
        return [ActionRecord(int(i), float(a), str(w), str(t), str(r), d) for i, a, w, t, r, d in rows]

    def latest_runs(self) -> dict[str, RunRecord]:
        rows = self._read(
            f"SELECT {RUN_COLUMNS} FROM {{schema}}.runs WHERE id IN (SELECT MAX(id) FROM {{schema}}.runs "
            "WHERE outcome NOT IN ('missed', 'skipped', 'pending') GROUP BY job)"
        )
        return {r.job: r for r in map(run_record, rows)}

    def outcomes_between(self, since: float, until: float) -> list[tuple[int, str, float, str]]:
        rows = self._read(
            f"SELECT id, job, t, outcome FROM (SELECT id, job, COALESCE({self._SLOT_SECONDS}, started_at) AS t, "
            "outcome FROM {schema}.runs) AS r WHERE t >= %s AND t < %s ORDER BY t, id",
            (since, until),
        )
        return [(int(i), str(j), float(t), str(o)) for i, j, t, o in rows]

    def missed_counts(self, since: int, until: int) -> dict[str, int]:
        rows = self._read(
            "SELECT job, COUNT(*) FROM {schema}.runs WHERE outcome = 'missed' AND slot BETWEEN %s AND %s "
            "GROUP BY job",
            (since, until),
        )
        return {str(job): int(count) for job, count in rows}

    def duration_counts(self) -> dict[str, dict[str, int]]:
        return grouped_counts(
            self._read("SELECT job, outcome, n FROM {schema}.run_counts ORDER BY job, outcome"),
            durations=True,
        )

    def run_counts(self) -> dict[str, dict[str, int]]:
        return grouped_counts(
            self._read("SELECT job, outcome, n FROM {schema}.run_counts ORDER BY job, outcome")
        )

    def last_outcomes(self) -> dict[str, dict[str, RunRecord]]:
        rows = self._read(
            f"SELECT {RUN_COLUMNS} FROM {{schema}}.runs WHERE id IN ("
            "SELECT MAX(id) FROM {schema}.runs WHERE outcome = 'succeeded' GROUP BY job "
            f"UNION SELECT MAX(id) FROM {{schema}}.runs WHERE outcome IN ({FAILURES_SQL}) GROUP BY job)"
        )
        found: dict[str, dict[str, RunRecord]] = {}
        for run in map(run_record, rows):
            found.setdefault(run.job, {})["success" if run.outcome == "succeeded" else "failure"] = run
        return found

    def prune_runs(self, keep: int, keep_unrun: int = 100) -> int:
        # Real runs and unrun slots (missed, skipped) are counted apart: an hour of missed minutes never pushes
        # out a real run. The last success and the last failure of a job are always kept.
        return self._write(
            "DELETE FROM {schema}.runs WHERE outcome NOT IN ('pending', 'running') AND id IN ("
            "SELECT id FROM (SELECT id, outcome IN ('missed', 'skipped') AS unrun, ROW_NUMBER() OVER ("
            "PARTITION BY job, outcome IN ('missed', 'skipped') ORDER BY id DESC) AS n FROM {schema}.runs) AS r"
            " WHERE (NOT unrun AND n > %s) OR (unrun AND n > %s))"
            " AND id NOT IN (SELECT MAX(id) FROM {schema}.runs WHERE outcome = 'succeeded' GROUP BY job)"
            f" AND id NOT IN (SELECT MAX(id) FROM {{schema}}.runs WHERE outcome IN ({FAILURES_SQL}) GROUP BY job)",
            (keep, keep_unrun),
        )

    def prune_old_runs(self, before: float, limit: int) -> int:
        # The oldest first (ids grow with time), at most ``limit`` rows a call: a tick never deletes a million
        # rows at once; the next ticks take the rest. The last success and the last failure are kept.
        return self._write(
            "DELETE FROM {schema}.runs WHERE id IN (SELECT id FROM {schema}.runs"
            " WHERE outcome NOT IN ('pending', 'running') AND COALESCE(ended_at, started_at, slot) < %s"
            " AND id NOT IN (SELECT MAX(id) FROM {schema}.runs WHERE outcome = 'succeeded' GROUP BY job)"
            f" AND id NOT IN (SELECT MAX(id) FROM {{schema}}.runs WHERE outcome IN ({FAILURES_SQL}) GROUP BY job)"
            " ORDER BY id LIMIT %s)",
            (before, limit),
        )
