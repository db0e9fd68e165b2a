"""The light cron minute: ``icc run --quiet`` when only the consumer cron jobs are due, without click, pluggy or
the plugins.

With ``consumers.mode = "cron"`` (the default) the ``consume:<queue>`` jobs are due every minute, so the common
minute is not idle. The full tick would import click, the plugin machinery and every plugin (about 190 ms of CPU)
only to fork consumers that, most minutes, wait out their time limit on empty queues. Here the fast path does
that minute itself, with ``os``, ``time`` and ``sqlite3``:

1. **When.** Everything due at this slot is a consumer job that the last ``icc scan`` vouched for (meta key
   ``light_minute``, written by :func:`scan_record`), each due exactly at this slot (no missed minute to apply a
   policy to); no run is unfinished, nothing is paused, the slot is not before the watermark (all checked by
   :mod:`icc.tick.idle` and again under the tick lock); ``--quiet`` (the tick prints nothing, so there is no
   table to draw); the configuration is one :mod:`icc.fastconfig` vouches for, in cron mode, with the same
   queues as the stored jobs, and no ``[icc.store]`` (PostgreSQL is always the full tick's); and no plugin's
   ``before_run``/``after_run`` hook can act on a consumer run: each plugin with run hooks names, in
   ``ICC_RUN_HOOK_SETTINGS``, the settings without which its hooks do nothing for a job that has no
   notification settings of its own (icc's pings: ``monitor.ping_url``; icc-mail: ``mail.alert_to``), and none
   of them is set. Anything else, or any doubt, is the full tick's (None).
2. **The tick.** Under the tick lock (the same kernel lock and holder record as :mod:`icc.locks`), in one
   ``BEGIN IMMEDIATE`` transaction, it writes what the full tick writes: with ``consumers.skip_empty`` a
   ``skipped`` row ("a when/skip condition said no") for each empty queue, a ``pending`` claim for each other
   consumer job (in ``consumers.queues`` order, as the full tick orders them), each consumer job's next slot
   (the next minute: they run every minute) and the watermark. Then it starts one detached supervisor per claim
   (a double fork, as :func:`icc.supervise.supervisor.start_detached` does), hands the runs over to them (``running``,
   the supervisor's pid) and prunes the run history.
3. **The supervisor** takes the job's lock, forks the consumer into a session of its own, records the run
   ``running`` with both pids, keeps the consumer's output, enforces the job's timeout (SIGTERM to the
   consumer's process group, SIGKILL after ``grace``), stops it on SIGTERM/SIGINT, and records the outcome,
   exit code, output and error by the rules of :func:`icc.supervise.supervisor.supervise`. It sleeps in ``select`` rather
   than polling.
4. **The consumer** waits up to ``consumers.time_limit`` for messages as ``icc consume`` does: it looks at the
   queue database (read-only, ``sqlite3`` only) every second for a message it could lease, and for an
   ``icc consume --stop`` made after it started. On an empty queue it prints the consumer's summary line
   ("consumed 0 messages ...; stopped: time limit of 20s reached") and exits 0. The moment a message is
   available (or the queue database is missing or cannot be read, which the real consumer reports), it
   asks its supervisor to become a child subreaper (as :func:`icc.supervise.supervisor.supervise` is for a whole run),
   loads the configuration and the plugins, and consumes with the real :class:`icc.queue.consumer.Consumer`
   for the rest of its time limit (counted from its start), exactly as :class:`icc.queue.builtin.ConsumerTask`
   does.

A ``kill -9`` of a supervisor leaves its run ``running`` with a dead pid: the next tick is a full one (a run
is unfinished) and records it ``abandoned``, killing its consumer's process group, as for any run.

What the light minute does not see: a plugin installed or a plugin's code changed since the last ``icc scan``
(``icc status`` says the plugins changed: scan again; with ``[icc] scan = "auto"`` :mod:`icc.tick.idle` notices
it first and leaves the minute to the full tick, which rescans). Its hooks and handlers are used once a message
arrives.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time

from icc.store import sqlite_queue_is_empty

TYPE_CHECKING = False  # not typing's: the fast path does not import typing
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from icc.config import Config
    from icc.jobs import Job
    from icc.plugins import PluginHost
    from icc.supervise.supervisor import OutputKeeper

META_KEY = "light_minute"
_HEADER = "icc light minute 1"
HOOK_SETTINGS_ATTRIBUTE = "ICC_RUN_HOOK_SETTINGS"
_EVERYTHING = "*"  # a plugin whose run hooks may act on any run: the light minute never applies

# icc.config's defaults of the settings read here (tests/tick/test_light_minute.py pins them).
DEFAULTS: dict[str, object] = {
    "grace": 10.0,
    "keep_runs": 100,
    "keep_skipped": 100,
    "output_limit": 64 * 1024,
}
CONSUMER_DEFAULTS: dict[str, object] = {
    "mode": "cron",
    "queues": ["mail", "async"],
    "time_limit": 20.0,
    "skip_empty": False,
    "notify": False,
}
QUEUE_FILE = "queue.sqlite3"  # icc.store.sqlite.queues.DATABASE_FILE
CONDITION_SAID_NO = (
    "a when/skip condition said no"  # the full tick's error for a run a skip() condition skipped
)
POLL = 1.0  # seconds between two looks at the queue (the real consumer's Limits.sleep)
# One look: the last `icc consume --stop`, and whether a message could be leased now (icc.store.sqlite.queues).
_POLL = (
    "SELECT (SELECT value FROM control WHERE key = 'stop'),"
    " EXISTS (SELECT 1 FROM messages WHERE queue = ? AND available_at <= ?)"
)
REPORT_TIMEOUT = 10.0  # seconds a supervisor has to report its pid (icc.supervise.supervisor.start_detached)

# The writes, as icc.store.sqlite.state makes them.
_COUNT_RUN = (
    "INSERT INTO run_counts (job, outcome, n) VALUES (?, ?, 1) "
    "ON CONFLICT (job, outcome) DO UPDATE SET n = n + 1"
)
_STATE = (
    "SELECT (SELECT COUNT(*) FROM runs WHERE outcome IN ('pending', 'running')),"
    " (SELECT value FROM meta WHERE key = 'watermark'),"
    " (SELECT COUNT(*) FROM meta WHERE key = 'pause'),"
    " (SELECT value FROM meta WHERE key = 'light_minute')"
)
_DUE = "SELECT name, next_due FROM jobs WHERE enabled = 1 AND removed_at IS NULL AND next_due <= ?"
_FAILURES = "'abandoned', 'failed', 'timed_out'"  # icc.store.protocol.FAILURES, sorted
_PRUNE = (
    "DELETE FROM runs WHERE outcome NOT IN ('pending', 'running') AND id IN ("
    "SELECT id FROM (SELECT id, outcome IN ('missed', 'skipped') AS unrun, ROW_NUMBER() OVER ("
    "PARTITION BY job, outcome IN ('missed', 'skipped') ORDER BY id DESC) AS n FROM runs)"
    " WHERE (unrun = 0 AND n > ?) OR (unrun = 1 AND n > ?))"
    " AND id NOT IN (SELECT MAX(id) FROM runs WHERE outcome = 'succeeded' GROUP BY job)"
    f" AND id NOT IN (SELECT MAX(id) FROM runs WHERE outcome IN ({_FAILURES}) GROUP BY job)"
)


class _NotLight(Exception):
    """Something the light minute does not handle: the full tick does the minute."""


# --- what the scan vouches for ---------------------------------------------------------------------------


def scan_record(config: Config, host: PluginHost, jobs: Mapping[str, Job]) -> str:
    """The ``light_minute`` meta value ``icc scan`` stores: the consumer jobs the light minute may run (name,
    job lock file, timeout) and the plugins with run hooks (with the settings that make them act), or why the
    light minute must not run at all (a plugin failed, a handler names an unknown queue: the consumer would
    print warnings only the plugins can tell)."""
    try:
        return _scan_record(config, host, jobs)
    except Exception as exc:  # never breaks a scan: the light minute just does not apply
        why = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, no tab
        return f"{_HEADER}\nrefused\t{why}"


def _scan_record(config: Config, host: PluginHost, jobs: Mapping[str, Job]) -> str:
    from icc.locks import job_lock_name
    from icc.queue.builtin import ConsumerTask
    from icc.queue.dispatch import handler_queue_warnings

    lines = [_HEADER]
    if host.failures:
        return "\n".join([*lines, "refused\ta plugin failed to load"])
    if handler_queue_warnings(config, host.collect_handlers()):
        return "\n".join([*lines, "refused\ta handler names a queue that is not configured"])
    expected = {"background": True, "between": None, "environments": None, "expression": "* * * * *"}
    expected.update({"overlapping": False, "year": None})
    for name, job in jobs.items():
        if not isinstance(job.task, ConsumerTask) or job.provenance.plugin != "icc.queue.builtin":
            continue  # not a consumer job: no definition built (10,000 jobs at a scan)
        schedule = job.schedule
        definition = schedule.definition()
        if (
            name != f"consume:{job.task.queue}"
            # on_each_host: every consumer job has it; the light minute runs on SQLite only (one host)
            or set(definition) - {*expected, "has_callbacks", "missed", "on_each_host", "timeout", "zone"}
            or any(definition.get(key) != value for key, value in expected.items())
            or schedule.timeout_seconds is None
            or any(schedule.run_callbacks(w) for w in ("before", "after", "on_success", "on_failure"))
        ):
            continue
        lines.append(f"consumer\t{name}\t{job_lock_name(name)}\t{schedule.timeout_seconds!r}")
    seen: set[str] = set()
    for hook in ("before_run", "after_run"):
        for impl in getattr(host.pm.hook, hook).get_hookimpls():
            if impl.plugin_name in seen:
                continue
            seen.add(impl.plugin_name)
            settings = getattr(impl.plugin, HOOK_SETTINGS_ATTRIBUTE, None)
            if not isinstance(settings, tuple | list) or not all(
                isinstance(s, str) and s.count(".") == 1 for s in settings
            ):
                lines.append(f"hooks\t{impl.plugin_name}\t{_EVERYTHING}")
            else:
                lines.append(f"hooks\t{impl.plugin_name}\t{','.join(settings)}")
    return "\n".join(lines)


def _parse_record(text: str | None) -> tuple[dict[str, tuple[str, float]], list[list[str]]]:
    """(consumer job -> (lock file name, timeout), settings each run-hook plugin needs to act)."""
    if text is None:
        raise _NotLight
    lines = text.split("\n")
    if lines[0] != _HEADER:
        raise _NotLight
    consumers: dict[str, tuple[str, float]] = {}
    hooks: list[list[str]] = []
    for line in lines[1:]:
        kind, _, rest = line.partition("\t")
        fields = rest.split("\t")
        if kind == "consumer" and len(fields) == 3:
            consumers[fields[0]] = (fields[1], float(fields[2]))
        elif kind == "hooks" and len(fields) == 2 and fields[1] != _EVERYTHING:
            hooks.append([s for s in fields[1].split(",") if s])
        else:
            raise _NotLight  # refused, a plugin whose hooks may act on any run, or something unknown
    return consumers, hooks


# --- the configuration -----------------------------------------------------------------------------------


class _Settings:
    def __init__(self, table: dict[str, object]) -> None:
        self.table = table
        consumers = table.get("consumers", {})
        if not isinstance(consumers, dict):
            raise _NotLight
        self.consumers = {**CONSUMER_DEFAULTS, **consumers}
        self.core = {key: table.get(key, default) for key, default in DEFAULTS.items()}
        queues = self.consumers["queues"]
        if not isinstance(queues, list):
            raise _NotLight
        self.queues = [str(q) for q in queues]
        if len(set(self.queues)) != len(self.queues) or any(q != q.strip() for q in self.queues):
            raise _NotLight  # the full loader's business
        self.time_limit = float(self.consumers["time_limit"])
        self.grace = float(self.core["grace"])  # type: ignore[arg-type]
        self.path: str | None = None  # the config file: the consumer's ICC_CONFIG, its directory its cwd

    def acts(self, setting: str) -> bool:
        """Whether ``table.key`` is set (in the file or by ``ICC_TABLE__KEY`` / ``ICC_TABLE_KEY``)."""
        table, _, key = setting.partition(".")
        section = self.table.get(table)
        if isinstance(section, dict) and section.get(key) not in (None, "", []):
            return True
        names = (f"ICC_{table}__{key}".upper(), f"ICC_{table}_{key}".upper())
        return any(os.environ.get(name, "").strip() for name in names)


def _settings(config_path: str | None) -> _Settings:
    from icc import fastconfig

    cwd = os.getcwd()
    if config_path is None and os.environ.get("ICC_CONFIG"):
        config_path = os.environ["ICC_CONFIG"]
    if config_path is not None:
        path: str | None = os.path.join(cwd, os.path.expanduser(config_path))
    else:
        path = fastconfig._find(cwd)
    table = fastconfig._icc_table(path) if path is not None else {}
    if "store" in table or any(name.startswith("ICC_STORE") for name in os.environ):
        raise _NotLight  # PostgreSQL (or a doubt about it): the full tick's
    settings = _Settings(table)
    settings.path = None if path is None else os.path.abspath(path)
    return settings


# --- kernel locks, as icc.locks takes them ---------------------------------------------------------------


def _hostname() -> str:
    """``socket.gethostname()``; on Linux from ``uname`` (the same name), without importing socket."""
    return os.uname().nodename if sys.platform.startswith("linux") else _socket_hostname()


def _socket_hostname() -> str:
    import socket

    return socket.gethostname()


def _holder_record(host: str) -> bytes:
    if any(c in host for c in '"\\') or not host.isascii() or not host.isprintable():
        import json

        quoted = json.dumps(host)
    else:
        quoted = f'"{host}"'
    data = f'{{"pid": {os.getpid()}, "host": {quoted}, "since": {time.time()!r}}}'.encode()
    return data.ljust(1024)  # icc.locks._RECORD_SIZE: one pwrite, never truncated


def _try_lock(path: str, host: str) -> int | None:
    """The lock's descriptor, or None when another process holds it. An unusable lock file raises
    :class:`_NotLight` (the caller lets :mod:`icc.locks` say what is wrong)."""
    import fcntl
    import stat

    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise _NotLight
    flags = os.O_RDWR | os.O_NONBLOCK | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise _NotLight from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as exc:
        os.close(fd)
        raise _NotLight from exc
    if os.fstat(fd).st_nlink == 0:  # unlinked meanwhile: not "the" lock
        os.close(fd)
        raise _NotLight
    os.pwrite(fd, _holder_record(host), 0)
    return fd


# --- the tick --------------------------------------------------------------------------------------------


def _connect(db_path: str) -> sqlite3.Connection:
    db = sqlite3.connect(db_path, timeout=30.0, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")  # as icc.store.sqlite.state opens it
    return db


def try_light_minute(config_path: str | None, slot: int, state_dir: str, db_path: str) -> int | None:
    """Exit code of a light minute (``icc run --quiet``), or None when the full tick must run it."""
    try:
        settings = _settings(config_path)
        if settings.consumers["mode"] != "cron":
            raise _NotLight
    except Exception:
        return None
    host = _hostname()
    try:
        lock = _try_lock(os.path.join(state_dir, "tick.lock"), host)
    except _NotLight:
        return None
    if lock is None:
        return None  # another tick: the full one says so
    try:
        try:
            db = _connect(db_path)
        except sqlite3.Error:
            return None
        try:
            planned = _plan(db, settings, slot, state_dir, host)
        except (_NotLight, sqlite3.Error, ValueError):
            return None
        finally:
            db.close()
    finally:
        os.close(lock)  # releases the tick lock: the runs start outside it, as the full tick's do
    try:
        _start(planned, settings, config_path, state_dir, db_path)
    except (OSError, sqlite3.Error) as exc:  # claimed, not started: the next tick records them abandoned
        sys.stderr.write(f"error: icc run could not start the consumers: {exc}\n")
        return 2
    return 0


def _plan(
    db: sqlite3.Connection, settings: _Settings, slot: int, state_dir: str, host: str
) -> list[tuple[int, str, str, float]]:
    """Claim the due consumer jobs and save the evaluation, in one transaction; (run id, job, lock file,
    timeout) of each claimed run."""
    db.execute("BEGIN IMMEDIATE")
    try:
        unfinished, watermark, paused, record = db.execute(_STATE).fetchone()
        if unfinished or paused or (watermark is not None and slot < int(watermark)):
            raise _NotLight
        consumers, hooks = _parse_record(record)
        if any(settings.acts(setting) for needed in hooks for setting in needed):
            raise _NotLight  # a plugin's run hooks would act on the consumer runs
        if set(consumers) != {f"consume:{q}" for q in settings.queues}:
            raise _NotLight  # the configuration changed since the scan: the full tick says what to do
        due = dict(db.execute(_DUE, (slot,)).fetchall())
        if not due or any(name not in consumers or next_due != slot for name, next_due in due.items()):
            raise _NotLight
        order = [f"consume:{q}" for q in settings.queues if f"consume:{q}" in due]
        to_run = order
        if settings.consumers["skip_empty"] is True:
            empty = [n for n in order if sqlite_queue_is_empty(state_dir, n.partition(":")[2])]
            now = time.time()
            for name in empty:
                cur = db.execute(
                    "INSERT OR IGNORE INTO runs (job, slot, kind, outcome, ended_at, error) "
                    "VALUES (?, ?, 'scheduled', 'skipped', ?, ?)",
                    (name, slot, now, CONDITION_SAID_NO),
                )
                if cur.rowcount == 1:
                    db.execute(_COUNT_RUN, (name, "skipped"))
            to_run = [n for n in order if n not in empty]
        planned: list[tuple[int, str, str, float]] = []
        for name in to_run:
            cur = db.execute(
                "INSERT OR IGNORE INTO runs (job, slot, kind, outcome, pid, host) "
                "VALUES (?, ?, 'scheduled', 'pending', ?, ?)",
                (name, slot, os.getpid(), host),
            )
            if cur.rowcount == 1 and cur.lastrowid is not None:
                lock_name, timeout = consumers[name]
                planned.append((cur.lastrowid, name, lock_name, timeout))
        db.executemany("UPDATE jobs SET next_due = ? WHERE name = ?", [(slot + 60, n) for n in order])
        db.execute("INSERT OR REPLACE INTO meta VALUES ('watermark', ?)", (str(slot),))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return planned


def _start(
    planned: list[tuple[int, str, str, float]],
    settings: _Settings,
    config_path: str | None,
    state_dir: str,
    db_path: str,
) -> None:
    """Start a detached supervisor per claimed run, hand the runs over to them, prune the history."""
    pipes: list[int] = []
    intermediates: list[int] = []
    for run_id, name, lock_name, timeout in planned:
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            code = 0
            try:
                os.close(read_fd)
                for fd in pipes:
                    os.close(fd)
                os.setsid()
                if os.fork() == 0:
                    job = _Job(run_id, name, os.path.join(state_dir, "locks", lock_name), timeout)
                    _supervisor(job, settings, config_path, state_dir, db_path, write_fd)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        pipes.append(read_fd)
        intermediates.append(pid)
    for pid in intermediates:
        os.waitpid(pid, 0)
    reports = _collect(pipes)
    now = time.time()
    db = _connect(db_path)
    try:
        started = [(pid, now, run_id) for (run_id, *_), pid in zip(planned, reports, strict=True) if pid]
        _write(
            db,
            "UPDATE runs SET outcome = 'running', pid = ?, started_at = ? WHERE id = ? AND outcome = 'pending'",
            started,
        )
        for (run_id, *_), reported in zip(planned, reports, strict=True):
            if reported == 0:  # it exited before reporting: failed, as start_detached says
                _finish(
                    db,
                    run_id,
                    "failed",
                    now,
                    None,
                    "",
                    "not started: its supervisor exited before starting the run",
                )
        with _transaction(db):
            db.execute(_PRUNE, (settings.core["keep_runs"], settings.core["keep_skipped"]))
    finally:
        db.close()


def _collect(pipes: list[int]) -> list[int | None]:
    """Each supervisor's pid; 0 when it exited without reporting; None when it did not report in time (its
    run is left pending: the next tick abandons it if it never starts)."""
    import selectors

    buffers = {fd: b"" for fd in pipes}
    closed: set[int] = set()
    deadline = time.monotonic() + REPORT_TIMEOUT
    with selectors.DefaultSelector() as sel:
        for fd in pipes:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(timeout=left):
                fd = int(key.fd)
                chunk = os.read(fd, 4096)
                buffers[fd] += chunk
                if not chunk:
                    closed.add(fd)
                    sel.unregister(fd)
    found: list[int | None] = []
    for fd in pipes:
        os.close(fd)
        text = buffers[fd].decode(errors="replace").strip()
        found.append(int(text) if text.isdigit() else (0 if fd in closed else None))
    return found


class _transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _write(db: sqlite3.Connection, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    with _transaction(db):
        db.executemany(sql, rows)


def _finish(
    db: sqlite3.Connection,
    run_id: int,
    outcome: str,
    now: float,
    exit_code: int | None,
    output: str,
    error: str | None,
) -> None:
    """:meth:`icc.store.sqlite.state.SQLiteStateStore.finish`."""
    with _transaction(db):
        row = db.execute(
            "SELECT job FROM runs WHERE id = ? AND outcome IN ('pending', 'running')", (run_id,)
        ).fetchone()
        if row is not None:
            db.execute(_COUNT_RUN, (row[0], outcome))
        db.execute(
            "UPDATE runs SET outcome = ?, ended_at = ?, exit_code = ?, output = ?, error = ?, "
            "started_at = CASE WHEN task_pid IS NULL THEN NULL ELSE started_at END WHERE id = ?",
            (outcome, now, exit_code, output, error, run_id),
        )


# --- the supervisor --------------------------------------------------------------------------------------


class _Job:
    def __init__(self, run_id: int, name: str, lock_path: str, timeout: float) -> None:
        self.run_id = run_id
        self.name = name
        self.lock_path = lock_path
        self.timeout = timeout
        self.queue = name.partition(":")[2]


class _Stop:
    signum = 0
    task: int | None = None


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _supervisor(
    job: _Job, settings: _Settings, config_path: str | None, state_dir: str, db_path: str, write_fd: int
) -> None:
    """In the detached grandchild: report its pid, supervise the consumer. Never returns."""
    try:
        os.write(write_fd, f"{os.getpid()}\n".encode())
        os.close(write_fd)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)

        def on_signal(signum: int, _frame: object) -> None:
            first = _Stop.signum == 0
            _Stop.signum = signum
            if first and _Stop.task is not None:
                try:  # noqa: SIM105 (contextlib is not imported on the fast path)
                    os.killpg(_Stop.task, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        _supervise(job, settings, config_path, state_dir, db_path)
    finally:
        os._exit(0)


def _supervise(job: _Job, settings: _Settings, config_path: str | None, state_dir: str, db_path: str) -> None:
    db = _connect(db_path)
    who = "its background supervisor"
    try:
        try:
            lock = _try_lock(job.lock_path, _hostname())
        except _NotLight:
            from pathlib import Path

            from icc.locks import lock_file_problem

            problem = lock_file_problem(Path(job.lock_path))
            _finish(db, job.run_id, "failed", time.time(), None, "", problem or "cannot take the job lock")
            return
        if lock is None:
            from pathlib import Path

            from icc.locks import Lock

            holder = Lock(Path(job.lock_path)).holder()
            since = ""
            if holder is not None:
                zone = os.environ.get("ICC_TIMEZONE", "").strip() or str(
                    settings.table.get("timezone", "UTC")
                )
                since = f" ({holder.describe(zone)})"
            error = f"skipped: the previous run is still running{since}"
            _finish(db, job.run_id, "skipped", time.time(), None, "", error)
            return
        if _Stop.signum:
            why = f"not started: {who} received {_signal_name(_Stop.signum)}"
            _finish(db, job.run_id, "skipped", time.time(), None, "", why)
            return
        _run(db, job, settings, config_path, state_dir, lock, who)
    finally:
        db.close()


def _run(
    db: sqlite3.Connection,
    job: _Job,
    settings: _Settings,
    config_path: str | None,
    state_dir: str,
    lock: int,
    who: str,
) -> None:
    import selectors

    out_r, out_w = os.pipe()
    ctl_r, ctl_w = os.pipe()  # the consumer asks for a subreaper before it loads any plugin...
    ack_r, ack_w = os.pipe()  # ... and waits for the answer
    started = time.time()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the consumer never returns
        for fd in (out_r, ctl_r, ack_w, lock):
            os.close(fd)
        _consumer(job, settings, config_path, state_dir, out_w, ctl_w, ack_r)
    for fd in (out_w, ctl_w, ack_r):
        os.close(fd)
    _Stop.task = pid
    if _Stop.signum:  # a signal between the check and the fork
        try:  # noqa: SIM105 (contextlib is not imported on the fast path)
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    _write(
        db,
        "UPDATE runs SET outcome = 'running', pid = ?, task_pid = ?, started_at = ? "
        "WHERE id = ? AND outcome IN ('pending', 'running')",
        [(os.getpid(), pid, started, job.run_id)],
    )
    chunks: list[bytes] = []
    size = 0
    keeper: OutputKeeper | None = None  # once the output is past the limit
    limit = int(settings.core["output_limit"])  # type: ignore[call-overload]
    handed_over = False
    deadline = started + job.timeout
    timed_out = False
    stop_sent = False
    kill_at: float | None = None
    status: int | None = None
    pipe_open = True
    sel = selectors.DefaultSelector()
    sel.register(out_r, selectors.EVENT_READ)
    sel.register(ctl_r, selectors.EVENT_READ)

    def take(chunk: bytes) -> None:
        nonlocal size, keeper
        if keeper is not None:
            keeper.add(chunk)
            return
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            from icc.supervise.supervisor import OutputKeeper

            keeper = OutputKeeper(limit)
            for old in chunks:
                keeper.add(old)
            chunks.clear()

    try:
        while True:
            now = time.time()
            if status is None:
                waited, st = os.waitpid(pid, os.WNOHANG)
                if waited == pid:
                    status = st
            if status is not None:
                while pipe_open and sel.select(timeout=0.05):
                    chunk = os.read(out_r, 65536)
                    if not chunk:
                        pipe_open = False
                    else:
                        take(chunk)
                break
            if now >= deadline and kill_at is None:
                timed_out = True
                _kill_group(pid, signal.SIGTERM)
                kill_at = now + settings.grace
            if _Stop.signum and not stop_sent:
                stop_sent = True  # the handler sent SIGTERM
                kill_at = min(kill_at or now + settings.grace, now + settings.grace)
            if kill_at is not None and now >= kill_at:
                _kill_group(pid, signal.SIGKILL)
                kill_at = now + 3600
            wake = min(deadline, kill_at or deadline) - now
            # Asleep until its deadline: the consumer's output closing (its exit) wakes it. Once the consumer
            # handed over, a process it started may hold that output open: look at its exit every second.
            for key, _ in sel.select(timeout=max(0.01, min(wake, 1.0) if handed_over else wake)):
                if key.fd == ctl_r:
                    if os.read(ctl_r, 16):
                        if not handed_over:
                            handed_over = True
                            _set_subreaper()
                        try:  # noqa: SIM105 (contextlib is not imported on the fast path)
                            os.write(ack_w, b"k")
                        except OSError:  # the consumer is gone already
                            pass
                    else:
                        sel.unregister(ctl_r)
                    continue
                chunk = os.read(out_r, 65536)
                if not chunk:
                    pipe_open = False
                    sel.unregister(out_r)
                    break
                take(chunk)
            if not pipe_open and status is None:
                # EOF: the consumer is gone, or closed its output; wait for its exit, without spinning.
                if _Stop.signum or timed_out or kill_at is not None:
                    time.sleep(0.02)
                else:
                    status = _wait(pid, deadline)
    finally:
        sel.close()
        for fd in (out_r, ctl_r, ack_w):
            try:  # noqa: SIM105 (contextlib is not imported on the fast path)
                os.close(fd)
            except OSError:
                pass
        _kill_group(pid, signal.SIGKILL)  # what it left in its group goes with it
        if handed_over:
            from icc.supervise.supervisor import _end_leftovers

            _end_leftovers(set())  # a subreaper adopted what left the group (no other child was there)
        os.close(lock)
    ended = time.time()
    output = keeper.text() if keeper is not None else b"".join(chunks).decode("utf-8", errors="replace")
    if limit <= 0:
        output = ""
    assert status is not None
    exit_code: int | None
    error: str | None = None
    if os.WIFSIGNALED(status):
        exit_code = -os.WTERMSIG(status)
        error = f"killed by {_signal_name(os.WTERMSIG(status))}"
    else:
        exit_code = os.WEXITSTATUS(status)
    if timed_out:
        outcome = "timed_out"
        error = f"timed out after {job.timeout:g}s; its process group was killed"
    elif _Stop.signum:
        outcome = "stopped"
        error = f"stopped: {who} received {_signal_name(_Stop.signum)}"
    elif exit_code == 0:
        outcome = "succeeded"
    else:
        outcome = "failed"
        error = error or f"exit code {exit_code}"
    _finish(db, job.run_id, outcome, ended, exit_code, output, error)


def _wait(pid: int, deadline: float) -> int | None:
    """The consumer's exit status once its output closed: at most until ``deadline``, then None."""
    while time.time() < deadline:
        waited, status = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return status
        if _Stop.signum:
            return None
        time.sleep(0.05)
    return None


def _kill_group(pgid: int, sig: int) -> None:
    try:  # noqa: SIM105 (contextlib is not imported on the fast path)
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _set_subreaper() -> None:
    from icc.supervise.supervisor import set_child_subreaper

    set_child_subreaper(True)


# --- the consumer ----------------------------------------------------------------------------------------


class _Stopped(Exception):
    pass


def _consumer(
    job: _Job,
    settings: _Settings,
    config_path: str | None,
    state_dir: str,
    out_w: int,
    ctl_w: int,
    ack_r: int,
) -> None:
    """In the forked consumer: a session of its own, its output to the supervisor; wait for messages, hand
    over to the real consumer when one is there. Never returns."""
    code = 1
    try:
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.close(out_w)
        if settings.path is not None:  # the run's context, as for every task: the project root, ICC_CONFIG
            try:  # noqa: SIM105 (contextlib is not imported on the fast path)
                os.chdir(os.path.dirname(settings.path))
            except OSError:
                pass
            os.environ["ICC_CONFIG"] = settings.path
        code = _consume(job, settings, config_path, state_dir, ctl_w, ack_r)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _consume(
    job: _Job, settings: _Settings, config_path: str | None, state_dir: str, ctl_w: int, ack_r: int
) -> int:
    started = time.monotonic()
    started_wall = time.time()
    deadline = started + settings.time_limit
    stop: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop.append(signum)
        raise _Stopped

    reason = ""
    db: sqlite3.Connection | None = None
    try:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            db = _open_queue(state_dir)
            while True:
                now = time.monotonic()
                if now >= deadline:
                    reason = f"time limit of {settings.time_limit:g}s reached"
                    break
                if db is None:
                    break  # no queue database to read: the real consumer opens (makes) it
                try:
                    stop_at, ready = db.execute(_POLL, (job.queue, time.time())).fetchone()
                    if stop_at is not None and float(stop_at) >= started_wall:
                        reason = "stop requested (icc consume --stop)"
                        break
                except (sqlite3.Error, TypeError, ValueError):
                    ready = True  # the real consumer says what is wrong
                if ready:
                    db.close()
                    db = None
                    break
                time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
        except _Stopped:
            pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if db is not None:
            db.close()
    if stop:
        reason = _signal_name(stop[0])
    if reason:
        elapsed = time.monotonic() - started
        sys.stdout.write(
            f"consumed 0 messages (0 handled, 0 retried, 0 failed) in {elapsed:.1f}s; stopped: {reason}\n"
        )
        return 0
    return _hand_over(job, config_path, started, ctl_w, ack_r)


def _open_queue(state_dir: str) -> sqlite3.Connection | None:
    """A read-only connection to the queue database; None when it is not there or not one icc trusts."""
    from icc.statedir import state_file_problem

    path = os.path.join(state_dir, QUEUE_FILE)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return None
    if any(state_file_problem(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")):
        return None
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None


def _hand_over(job: _Job, config_path: str | None, started: float, ctl_w: int, ack_r: int) -> int:
    """A message is there: become the real consumer (configuration, plugins) for the rest of the time limit,
    as :class:`icc.queue.builtin.ConsumerTask` runs in a supervised task. Returns its exit code."""
    import select

    os.write(ctl_w, b"h")
    select.select([ack_r], [], [], 5.0)  # the supervisor is a subreaper before any plugin code runs
    os.close(ctl_w)
    os.close(ack_r)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    try:
        from pathlib import Path

        from icc.config import load_config
        from icc.errors import IccError
        from icc.queue.builtin import consume_in_process

        try:
            config = load_config(None if config_path is None else Path(config_path), export=True)
            consume_in_process(config, job.queue, started=started)
        except IccError as exc:  # as ConsumerTask reports it: one line, its exit code
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(exc.exit_code) from None
    except SystemExit as exc:
        if exc.code is None or exc.code == 0:
            return 0
        if isinstance(exc.code, int):
            return exc.code & 0xFF or 1
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1
    return 0
