"""The light cron minute: ``icc run --quiet`` when only the consumer cron jobs are due, without click, pluggy or
the plugins. (With plain foreground jobs due too, or alone, :mod:`icc.tick.plain` vouches for them and runs
them through this module's tick: :class:`Plain`; background ones are started by :mod:`icc.tick.background`.)

With ``consumers.mode = "cron"`` (the default) the ``consume:<queue>`` jobs are due every minute, so the common
minute is not idle. The full tick would import click, the plugin machinery and every plugin (about 190 ms of CPU)
only to fork consumers that, most minutes, wait out their time limit on empty queues. Here the fast path does
that minute itself, with ``os``, ``time`` and ``sqlite3``:

1. **When.** Everything due at this slot is a consumer job that the last ``icc scan`` vouched for (meta key
   ``light_minute``, written by :func:`scan_record`), each due exactly at this slot (no missed minute to apply a
   policy to); no run is unfinished, nothing is paused, the slot is not before the watermark (all checked by
   :mod:`icc.tick.idle` and again under the tick lock); ``--quiet`` (the tick prints nothing, so there is no
   table to draw); the configuration is one :mod:`icc.fastconfig` vouches for, in cron mode, with the same
   queues as the stored jobs, and no ``[icc.store]`` (PostgreSQL is always the full tick's); and each plugin
   with run hooks names, in ``ICC_RUN_HOOK_SETTINGS``, the settings without which its hooks do nothing for a
   job that has no notification settings of its own (icc's pings: ``monitor.ping_url``; icc-mail:
   ``mail.alert_to``). When one of them is set, its hooks can act: the minute is still light when the plugins
   did not change since the scan (the drift stamp) and it is not a framework project, and the supervisors call
   them (5.). Anything else, or any doubt, is the full tick's (None).
2. **The tick.** Under the tick lock (the same kernel lock and holder record as :mod:`icc.locks`), in one
   ``BEGIN IMMEDIATE`` transaction, it writes what the full tick writes: with ``consumers.skip_empty`` a
   ``skipped`` row ("a when/skip condition said no") for each empty queue, a ``pending`` claim for each other
   consumer job (in ``consumers.queues`` order, as the full tick orders them), each consumer job's next slot
   (the next minute: they run every minute) and the watermark. Then it starts one detached supervisor per claim
   (:func:`icc.supervise.process.detach`, as :func:`icc.supervise.supervisor.start_detached` does), hands the
   runs over to them (``running``, the supervisor's pid) and prunes the run history.
3. **The supervisor** takes the job's lock, forks the consumer into a session of its own
   (:func:`icc.supervise.process.run_child`), records the run ``running`` with both pids, and watches it with
   the one supervise loop, :class:`icc.supervise.process.Watch`: it keeps the consumer's output, enforces the
   job's timeout (SIGTERM to the consumer's process group, SIGKILL after ``grace``), stops it on
   SIGTERM/SIGINT, and sleeps in ``select`` (on the output, the consumer's pidfd, the hand-over's pipe)
   rather than polling. It records the outcome, exit code, output and error by the rules every supervisor
   follows (:func:`icc.supervise.process.task_outcome`), with its own few SQLite statements: the state
   store's code is the full tick's.
4. **The consumer** waits up to ``consumers.time_limit`` for messages as ``icc consume`` does: it looks at the
   queue database (read-only, ``sqlite3`` only) every second for a message it could lease, and for an
   ``icc consume --stop`` made after it started. On an empty queue it prints the consumer's summary line
   ("consumed 0 messages ...; stopped: time limit of 20s reached") and exits 0. The moment a message is
   available (or the queue database is missing or cannot be read, which the real consumer reports), it
   asks its supervisor to become a child subreaper (as :func:`icc.supervise.supervisor.supervise` is for a whole run),
   loads the configuration and the plugins, and consumes with the real :class:`icc.queue.consumer.Consumer`
   for the rest of its time limit (counted from its start), exactly as :class:`icc.queue.builtin.ConsumerTask`
   does.

5. **Run hooks that act** (:func:`run_hooks`, :class:`Hooks`): a supervisor whose runs they can act on loads
   the configuration, the state store and, per run, the plugins the full tick's supervisor would load for it,
   and calls the same bounded observers (:class:`icc.supervise.observers.LightHooks`): the plugins before the
   task (a run whose plugins do not load within its timeout fails, not started), ``before_run`` before it,
   ``after_run`` once the run is recorded (:func:`icc.supervise.supervisor.conclude`). Plugins that declare
   their failure episode (``ICC_RUN_HOOK_EPISODE``) are loaded after the task instead, and only for a run that
   calls for them (a failure, the success that ends an episode).

A ``kill -9`` of a supervisor leaves its run ``running`` with a dead pid: the next tick is a full one (a run
is unfinished) and records it ``abandoned``, killing its consumer's process group, as for any run.

What the light minute does not see: a plugin installed or a plugin's code changed since the last ``icc scan``
(``icc status`` says the plugins changed: scan again; with ``[icc] scan = "auto"`` :mod:`icc.tick.idle` notices
it first and leaves the minute to the full tick, which rescans). Its hooks and handlers are used once a message
arrives.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import sqlite3
import stat
import sys
import time

from icc import fastconfig
from icc.errors import IccError
from icc.statedir import state_file_problem
from icc.store import sqlite_queue_is_empty
from icc.supervise.process import (
    OutputKeeper,
    Watch,
    detach,
    enter_run_context,
    kill_group,
    run_child,
    signal_name,
    task_outcome,
)
from icc.tick.ahead import _connect, _write  # the light paths' one connection and write (stdlib only)
from icc.tickwatch import drift

TYPE_CHECKING = False  # not typing's: the fast path does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from icc.config import Config
    from icc.jobs import Job
    from icc.plugins import PluginHost
    from icc.supervise.observers import LightHooks, RunHooks

META_KEY = "light_minute"
_HEADER = "icc light minute 1"
HOOK_SETTINGS_ATTRIBUTE = "ICC_RUN_HOOK_SETTINGS"
HOOK_EPISODE_ATTRIBUTE = "ICC_RUN_HOOK_EPISODE"  # e.g. "mail.alert:{job}": see Hooks
JOB_FIELD = "{job}"
EPISODE_OUTCOMES = ("abandoned", "failed", "timed_out")  # a declared hook acts on these whatever its episode
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
# icc.store.protocol's duration histogram (tests/tick/test_light_due.py pins it): importing it costs typing.
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600, 86400)
TIMED_OUTCOMES = ("succeeded", "failed", "timed_out", "stopped")
DURATION_PREFIX = "~le:"
DURATION_SUM_KEY = "~sum_ms"
_ADD_COUNT = (
    "INSERT INTO run_counts (job, outcome, n) VALUES (?, ?, ?) "
    "ON CONFLICT (job, outcome) DO UPDATE SET n = n + excluded.n"
)
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
    # icc scan's side: the light minute, on the fast path, must not load the locks module, the queue or pluggy.
    from icc.locks import job_lock_name  # lazy: icc scan's side only
    from icc.queue.builtin import ConsumerTask  # lazy: the queue and its plugin, icc scan's side only
    from icc.queue.dispatch import handler_queue_warnings  # lazy: icc scan's side only

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
    before = {impl.plugin_name for impl in host.pm.hook.before_run.get_hookimpls()}
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
                continue
            episode = getattr(impl.plugin, HOOK_EPISODE_ATTRIBUTE, None)
            if impl.plugin_name in before or not _episode_key(episode):
                episode = ""  # its hooks may act on any run (a before_run acts before the outcome is known)
            lines.append(f"hooks\t{impl.plugin_name}\t{','.join(settings)}\t{episode}")
    return "\n".join(lines)


def _episode_key(value: object) -> bool:
    """Whether ``value`` is an ``ICC_RUN_HOOK_EPISODE``: a meta key with ``{job}`` in it, on one line."""
    return (
        isinstance(value, str)
        and value.count(JOB_FIELD) == 1
        and value.isprintable()
        and "\t" not in value
        and "{" not in value.replace(JOB_FIELD, "")
    )


def _parse_record(text: str | None) -> tuple[dict[str, tuple[str, float]], list[tuple[list[str], str]]]:
    """(consumer job -> (lock file name, timeout), (the settings it needs to act, its episode key or "") of
    each run-hook plugin)."""
    if text is None:
        raise _NotLight
    lines = text.split("\n")
    if lines[0] != _HEADER:
        raise _NotLight
    consumers: dict[str, tuple[str, float]] = {}
    hooks: list[tuple[list[str], str]] = []
    for line in lines[1:]:
        kind, _, rest = line.partition("\t")
        fields = rest.split("\t")
        if kind == "consumer" and len(fields) == 3:
            consumers[fields[0]] = (fields[1], float(fields[2]))
        elif kind == "hooks" and len(fields) in (2, 3) and fields[1] != _EVERYTHING:
            episode = fields[2] if len(fields) == 3 and _episode_key(fields[2]) else ""
            hooks.append(([s for s in fields[1].split(",") if s], episode))
        else:
            raise _NotLight  # refused, a plugin whose hooks may act on any run, or something unknown
    return consumers, hooks


def _acting(hooks: list[tuple[list[str], str]], settings: _Settings) -> list[str]:
    """The episode keys of the plugins whose run hooks can act on the light minute's runs (one of their
    ``ICC_RUN_HOOK_SETTINGS`` is set; ``hooks``: each plugin's, from the scan's record), "" for one that
    declares none; empty when none can act."""
    return [episode for needed, episode in hooks if any(settings.acts(setting) for setting in needed)]


def _plugins_as_scanned(db: sqlite3.Connection) -> None:
    """Raise :class:`_NotLight` unless the plugins are the last scan's (the drift stamp): the scan stored which
    jobs are plain and which plugins have run hooks; a change since is the full tick's, which loads them all (and
    says so). Checked once per light minute, for its plain runs and its run hooks alike."""
    stamp = db.execute("SELECT value FROM meta WHERE key = 'drift_stamp'").fetchone()
    if stamp is None or drift(stamp[0]) is not None:
        raise _NotLight


def run_hooks(db: sqlite3.Connection, settings: _Settings) -> Hooks | None:
    """In a light supervisor: its runs' hooks when a plugin's run hooks can act on them; None otherwise
    (nothing is loaded: the common light minute)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    try:
        _, hooks = _parse_record(None if row is None else row[0])
    except _NotLight:
        return None  # the tick checked it under its lock; a scan meanwhile: as the tick found it
    episodes = _acting(hooks, settings)
    if not episodes:
        return None
    return Hooks(settings, None if "" in episodes else episodes)


class Hooks:
    """The run hooks that can act on a light supervisor's runs. :meth:`loaded` loads them as the full tick's
    supervisor does (:class:`icc.supervise.observers.LightHooks`: the configuration, the store, each run's
    plugins), once, when a run needs them.

    ``episodes``: when every plugin whose hooks can act declares an ``ICC_RUN_HOOK_EPISODE`` (and has no
    ``before_run``), their keys (``{job}`` for the job's name). Such hooks act only on a run that failed, timed
    out or was abandoned, or on one that succeeded while one of those state store meta keys is set (an episode
    of failure mail or notifications to end): the supervisor then runs the task first, and loads and calls
    them after it only when the run calls for it (:meth:`quiet`); a success after a success loads nothing.
    None: they are loaded before each run, and ``before_run`` is called, as in the full tick."""

    def __init__(self, settings: _Settings, episodes: list[str] | None) -> None:
        self.settings = settings
        self.episodes = episodes
        self._loaded: LightHooks | None = None
        self.warned: list[str] = []  # the plugins that failed to load, told once

    def loaded(self) -> LightHooks:
        if self._loaded is None:
            from icc.supervise.observers import LightHooks  # lazy: the run hooks' plugins, only when needed

            self._loaded = LightHooks(self.settings.path)
        return self._loaded

    def quiet(self, db: sqlite3.Connection, run_id: int, job: str) -> bool:
        """Whether the declared hooks do nothing for recorded run ``run_id`` of ``job`` (see above)."""
        assert self.episodes is not None
        row = db.execute("SELECT outcome FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or row[0] in EPISODE_OUTCOMES:
            return False
        keys = [episode.replace(JOB_FIELD, job) for episode in self.episodes]
        marks = ", ".join("?" for _ in keys)
        found = db.execute(f"SELECT COUNT(*) FROM meta WHERE key IN ({marks})", keys).fetchone()
        return bool(found[0] == 0)

    def observe(self, run_id: int, timeout: float | None, told: str | None = None) -> RunHooks | str:
        """Run ``run_id``'s observers (:meth:`icc.supervise.observers.LightHooks.run`), a plugin that failed to
        load told on stderr once (as ``icc run`` warns of it; not plugin ``told``, which its caller tells); or
        why its plugins did not load."""
        observed = self.loaded().run(run_id, timeout)
        if not isinstance(observed, str):
            for notice in observed.spec.notices:
                if notice not in self.warned and not (told and notice.startswith(f"{told}: ")):
                    self.warned.append(notice)
                    sys.stderr.write(f"warning: plugin {notice}\n")
        return observed

    def after(self, db: sqlite3.Connection, run_id: int, job: str, timeout: float | None) -> None:
        """With declared episodes, once run ``run_id`` is recorded: load and call its hooks when it calls for
        them (:meth:`quiet`), as the full supervisor's ``after``; a note on the run when they did not load."""
        if self.quiet(db, run_id, job):
            return
        observed = self.observe(run_id, timeout)
        if isinstance(observed, str):
            self.loaded().note(run_id, job, f"its run hooks were not called: {observed.partition(';')[0]}")
        else:
            observed.conclude([])

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded.close()


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
        self.command: list[str] | None = None  # a framework project's `manage.py icc`: the hand-over execs it

    def acts(self, setting: str) -> bool:
        """Whether ``table.key`` is set (in the file or by ``ICC_TABLE__KEY`` / ``ICC_TABLE_KEY``)."""
        table, _, key = setting.partition(".")
        section = self.table.get(table)
        if isinstance(section, dict) and section.get(key) not in (None, "", []):
            return True
        names = (f"ICC_{table}__{key}".upper(), f"ICC_{table}_{key}".upper())
        return any(os.environ.get(name, "").strip() for name in names)


def _settings(config_path: str | None) -> _Settings:
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


def _known_settings(known: dict[str, object]) -> _Settings:
    """A framework project's settings, from its snapshot (:mod:`icc.tick.snapshot`): the table its writer
    resolved, and the command a consumer that has a message to handle becomes."""
    table, command = known.get("light"), known.get("command")
    if known.get("store") is not None or not isinstance(table, dict) or not isinstance(command, list):
        raise _NotLight
    settings = _Settings(table)
    settings.command = [str(arg) for arg in command]
    return settings


# --- kernel locks, as icc.locks takes them ---------------------------------------------------------------


def _hostname() -> str:
    """``socket.gethostname()``; on Linux from ``uname`` (the same name), without importing socket."""
    return os.uname().nodename if sys.platform.startswith("linux") else _socket_hostname()


def _socket_hostname() -> str:
    import socket  # lazy: not Linux only

    return socket.gethostname()


def _holder_record(host: str) -> bytes:
    if any(c in host for c in '"\\') or not host.isascii() or not host.isprintable():
        import json  # lazy: only a host name that needs quoting

        quoted = json.dumps(host)
    else:
        quoted = f'"{host}"'
    data = f'{{"pid": {os.getpid()}, "host": {quoted}, "since": {time.time()!r}}}'.encode()
    return data.ljust(1024)  # icc.locks._RECORD_SIZE: one pwrite, never truncated


def _try_lock(path: str, host: str) -> int | None:
    """The lock's descriptor, or None when another process holds it. An unusable lock file raises
    :class:`_NotLight` (the caller lets :mod:`icc.locks` say what is wrong). A deliberate light copy of
    ``icc.locks.Lock``'s acquisition: importing icc.locks (json, re, hashlib) would cost the light minute more
    than these lines."""
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


def try_light_minute(
    config_path: str | None,
    slot: int,
    state_dir: str,
    db_path: str,
    known: dict[str, object] | None = None,
    plain: Plain | None = None,
) -> int | None:
    """Exit code of a light minute (``icc run --quiet``), or None when the full tick must run it. ``known``: a
    framework project's snapshot instead of the configuration file. ``plain``: the plain foreground jobs'
    side (:mod:`icc.tick.plain`), when jobs other than the consumer jobs are due."""
    try:
        settings = _settings(config_path) if known is None else _known_settings(known)
    except Exception:
        return None
    # The plain runs' supervisor, forked before the tick holds a lock or a connection; it opens its own.
    supervisor = plain.start(settings, state_dir, db_path) if plain is not None else None
    try:
        return _light_minute(settings, config_path, slot, state_dir, db_path, plain, supervisor)
    finally:
        if supervisor is not None:
            supervisor.cancel()  # when it was not given its runs: it exits


def _light_minute(
    settings: _Settings,
    config_path: str | None,
    slot: int,
    state_dir: str,
    db_path: str,
    plain: Plain | None,
    supervisor: Any,
) -> int | None:
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
            planned, runs = _plan(db, settings, slot, state_dir, host, plain)
        except (_NotLight, sqlite3.Error, ValueError):
            return None
        finally:
            if supervisor is not None:
                supervisor.ready()  # its connection is open: closing this one is not the last close
            db.close()
    finally:
        os.close(lock)  # releases the tick lock: the runs start outside it, as the full tick's do
    background = [run for run in runs if getattr(run, "background", False)]
    runs = [run for run in runs if not getattr(run, "background", False)]
    try:
        if supervisor is not None:
            supervisor.send(runs)  # first: no detached supervisor may inherit its pipe
        if background and plain is not None and plain.start_background is not None:
            plain.start_background(background, settings, state_dir, db_path)
        _start(planned, settings, config_path, state_dir, db_path, prune=not runs)
        return supervisor.wait() if supervisor is not None and runs else 0
    except (OSError, sqlite3.Error) as exc:  # claimed, not started: the next tick records them abandoned
        sys.stderr.write(f"error: icc run could not start the runs: {exc}\n")
        return 2


class Plain:
    """The plain foreground jobs' side of the light minute (:mod:`icc.tick.plain`, which imports this module):
    ``plan(db, names, slot)`` vouches for the due jobs that are not consumer jobs (the runs, in order; raises
    :class:`_NotLight`); ``start(settings, state_dir, db_path)`` forks their supervisor, whose handle is told
    when the plan is made (``ready()``, before the tick's connection closes), is given the claimed runs
    (``send(runs)``), and is waited for (``wait()``: the exit code) or let go (``cancel()``)."""

    def __init__(
        self,
        plan: Callable[[sqlite3.Connection, list[str], int], list[Any]],
        start: Callable[[_Settings, str, str], Any],
        start_background: Callable[[list[Any], _Settings, str, str], None] | None = None,
    ) -> None:
        self.plan = plan
        self.start = start
        self.start_background = start_background  # the background runs (:mod:`icc.tick.background`)


def _plan(
    db: sqlite3.Connection,
    settings: _Settings,
    slot: int,
    state_dir: str,
    host: str,
    plain: Plain | None = None,
) -> tuple[list[tuple[int, str, str, float]], list[Any]]:
    """Claim the due jobs and save the evaluation, in one transaction: (run id, job, lock file, timeout) of
    each claimed consumer run, and the claimed plain runs (``plain.plan``'s, each with its ``run_id`` set)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        unfinished, watermark, paused, record = db.execute(_STATE).fetchone()
        if unfinished or paused or (watermark is not None and slot < int(watermark)):
            raise _NotLight
        consumers, hooks = _parse_record(record)
        acting = bool(_acting(hooks, settings))
        if acting and settings.command is not None:
            raise _NotLight  # run hooks to call, and a Django or Flask project: its settings are its config
        due = dict(db.execute(_DUE, (slot,)).fetchall())
        if not due or any(next_due != slot for next_due in due.values()):
            raise _NotLight  # nothing due, or a missed slot: the full tick applies the policy
        others = [name for name in due if name not in consumers]
        if others and plain is None:
            raise _NotLight
        if acting or others:
            _plugins_as_scanned(db)  # plain runs to vouch for, or run hooks the supervisors will call
        runs = plain.plan(db, others, slot) if others and plain is not None else []
        if (
            plain is not None
            and plain.start_background is None
            and any(getattr(r, "background", 0) for r in runs)
        ):
            raise _NotLight  # background runs, and nothing here to start them: the full tick's
        order = [f"consume:{q}" for q in settings.queues if f"consume:{q}" in due]
        if len(order) + len(others) != len(due):
            raise _NotLight  # a consumer job of a queue no longer configured
        if order and (
            settings.consumers["mode"] != "cron"
            or set(consumers) != {f"consume:{q}" for q in settings.queues}
        ):
            raise _NotLight  # the configuration changed since the scan: the full tick says what to do
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
        # Claimed in declaration order, as the full tick claims: the consumer jobs (icc's built-in plugin, loaded
        # last) after every plugin's jobs.
        claimed = []
        for run in runs:
            cur = db.execute(_CLAIM, (run.name, slot, os.getpid(), host))
            if cur.rowcount == 1 and cur.lastrowid is not None:
                run.run_id = cur.lastrowid
                claimed.append(run)
        planned: list[tuple[int, str, str, float]] = []
        for name in to_run:
            cur = db.execute(_CLAIM, (name, slot, os.getpid(), host))
            if cur.rowcount == 1 and cur.lastrowid is not None:
                lock_name, timeout = consumers[name]
                planned.append((cur.lastrowid, name, lock_name, timeout))
        nexts = [(slot + 60, n) for n in order] + [(run.next_due, run.name) for run in runs]
        db.executemany("UPDATE jobs SET next_due = ? WHERE name = ?", nexts)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('watermark', ?)", (str(slot),))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return planned, claimed


_CLAIM = "INSERT OR IGNORE INTO runs (job, slot, kind, outcome, pid, host) VALUES (?, ?, 'scheduled', 'pending', ?, ?)"


def _start(
    planned: list[tuple[int, str, str, float]],
    settings: _Settings,
    config_path: str | None,
    state_dir: str,
    db_path: str,
    *,
    prune: bool = True,
) -> None:
    """Start a detached supervisor per claimed run (:func:`icc.supervise.process.detach`), hand the runs over
    to them, prune the history (unless ``prune`` is False: the caller prunes once its own runs are done)."""
    if not planned and not prune:
        return
    jobs = [
        _Job(run_id, name, os.path.join(state_dir, "locks", lock_name), timeout)
        for run_id, name, lock_name, timeout in planned
    ]

    def target(job: _Job) -> Callable[[], None]:
        return lambda: _supervisor(job, settings, config_path, state_dir, db_path)

    reports = detach([target(job) for job in jobs], REPORT_TIMEOUT)
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
        if prune:
            with _transaction(db):
                db.execute(_PRUNE, (settings.core["keep_runs"], settings.core["keep_skipped"]))
    finally:
        db.close()


def prune(db: sqlite3.Connection, settings: _Settings) -> None:
    """Prune the run history as the full tick does after its runs."""
    with _transaction(db):
        db.execute(_PRUNE, (settings.core["keep_runs"], settings.core["keep_skipped"]))


class _transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _finish(
    db: sqlite3.Connection,
    run_id: int,
    outcome: str,
    now: float,
    exit_code: int | None,
    output: str,
    error: str | None,
) -> None:
    """:meth:`icc.store.sql.SqlStateStore.finish` on SQLite: the outcome counted once, and for a run whose task
    started its duration in the ``icc_job_duration_seconds`` histogram (:func:`icc.store.protocol.duration_counts`)."""
    with _transaction(db):
        row = db.execute(
            "SELECT job, started_at, task_pid FROM runs WHERE id = ? AND outcome IN ('pending', 'running')",
            (run_id,),
        ).fetchone()
        if row is not None:
            db.execute(_COUNT_RUN, (row[0], outcome))
            if row[1] is not None and row[2] is not None and outcome in TIMED_OUTCOMES:
                seconds = max(0.0, now - float(row[1]))
                bound = next((b for b in DURATION_BUCKETS if seconds <= b), None)
                bucket = f"{DURATION_PREFIX}{'+Inf' if bound is None else f'{bound:g}'}"
                db.executemany(
                    _ADD_COUNT, [(row[0], bucket, 1), (row[0], DURATION_SUM_KEY, round(seconds * 1000))]
                )
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


def _supervisor(
    job: _Job, settings: _Settings, config_path: str | None, state_dir: str, db_path: str
) -> None:
    """In the detached supervisor (its pid reported, its stdio on /dev/null): supervise the consumer run."""

    def on_signal(signum: int, _frame: object) -> None:
        first = _Stop.signum == 0
        _Stop.signum = signum
        if first and _Stop.task is not None:
            kill_group(_Stop.task, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _supervise(job, settings, config_path, state_dir, db_path)


def _supervise(job: _Job, settings: _Settings, config_path: str | None, state_dir: str, db_path: str) -> None:
    db = _connect(db_path)
    try:
        hooks = run_hooks(db, settings)
        if hooks is None:
            _supervise_run(db, job, settings, config_path, state_dir, None, [])
            return
        try:
            if hooks.episodes is not None:  # declared: loaded after the run, if it calls for them
                _supervise_run(db, job, settings, config_path, state_dir, None, [])
                hooks.after(db, job.run_id, job.name, job.timeout)
            else:
                _supervise_hooked(db, job, settings, config_path, state_dir, hooks)
        finally:
            hooks.close()
    finally:
        db.close()


def _supervise_hooked(
    db: sqlite3.Connection,
    job: _Job,
    settings: _Settings,
    config_path: str | None,
    state_dir: str,
    hooks: Hooks,
) -> None:
    """The run with its hooks, as :func:`icc.supervise.supervisor.supervise` calls them: the plugins loaded
    first (within the job's timeout: a run whose plugins do not load fails, its task not started), ``before``
    once the task may start, ``after`` (:meth:`icc.supervise.observers.RunHooks.conclude`) once it is recorded,
    whatever its outcome."""
    observed = hooks.observe(job.run_id, job.timeout)
    if isinstance(observed, str):
        _finish(db, job.run_id, "failed", time.time(), None, "", observed)
        return
    notes: list[str] = []
    _supervise_run(db, job, settings, config_path, state_dir, observed, notes)
    observed.conclude(notes)


def _supervise_run(
    db: sqlite3.Connection,
    job: _Job,
    settings: _Settings,
    config_path: str | None,
    state_dir: str,
    observed: RunHooks | None,
    notes: list[str],
) -> None:
    who = "its background supervisor"
    try:
        lock = _try_lock(job.lock_path, _hostname())
    except _NotLight:
        from pathlib import Path  # lazy: only a broken lock file gets here

        from icc.locks import lock_file_problem  # lazy: only to say what is wrong

        problem = lock_file_problem(Path(job.lock_path))
        _finish(db, job.run_id, "failed", time.time(), None, "", problem or "cannot take the job lock")
        return
    if lock is None:
        from pathlib import Path  # lazy: only a run whose previous run still runs gets here

        from icc.locks import Lock  # lazy: only to say who holds the lock

        holder = Lock(Path(job.lock_path)).holder()
        since = ""
        if holder is not None:
            zone = os.environ.get("ICC_TIMEZONE", "").strip() or str(settings.table.get("timezone", "UTC"))
            since = f" ({holder.describe(zone)})"
        error = f"skipped: the previous run is still running{since}"
        _finish(db, job.run_id, "skipped", time.time(), None, "", error)
        return
    if _Stop.signum:
        why = f"not started: {who} received {signal_name(_Stop.signum)}"
        _finish(db, job.run_id, "skipped", time.time(), None, "", why)
        return
    _run(db, job, settings, config_path, state_dir, lock, who, observed, notes)


def _run(
    db: sqlite3.Connection,
    job: _Job,
    settings: _Settings,
    config_path: str | None,
    state_dir: str,
    lock: int,
    who: str,
    observed: RunHooks | None = None,
    notes: list[str] | None = None,
) -> None:
    """Fork the consumer, watch it to its end with the supervise loop (:class:`icc.supervise.process.Watch`),
    record the run. ``observed``: its ``before`` observers run first (their notes added to ``notes``)."""
    if observed is not None and notes is not None:
        notes += observed.before()
    out_r, out_w = os.pipe()
    ctl_r, ctl_w = os.pipe()  # the consumer asks for a subreaper before it loads any plugin...
    ack_r, ack_w = os.pipe()  # ... and waits for the answer
    started = time.time()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the consumer never returns
        run_child(
            lambda: _consumer(job, settings, config_path, state_dir, ctl_w, ack_r),
            out_w,
            (out_r, ctl_r, ack_w, lock),
            enter=lambda: _enter_consumer(settings),
        )
    for fd in (out_w, ctl_w, ack_r):
        os.close(fd)
    _Stop.task = pid
    if _Stop.signum:  # a signal between the check and the fork
        kill_group(pid, signal.SIGTERM)
    _write(
        db,
        "UPDATE runs SET outcome = 'running', pid = ?, task_pid = ?, started_at = ? "
        "WHERE id = ? AND outcome IN ('pending', 'running')",
        [(os.getpid(), pid, started, job.run_id)],
    )
    keeper = OutputKeeper(int(settings.core["output_limit"]))  # type: ignore[call-overload]
    if observed is not None and observed.preamble:
        keeper.add(observed.preamble)  # what the before observers printed, first (as the full supervisor)
    watch = Watch(pid, out_r, keeper.add, deadline=started + job.timeout, grace=settings.grace)
    hand_over = _HandOver(ctl_r, ack_w)
    watch.on_readable(ctl_r, hand_over.answer)
    passed_on: list[bool] = []

    def stopping(watch: Watch, now: float) -> None:
        if _Stop.signum and not passed_on:  # its handler sent SIGTERM to the consumer's group
            passed_on.append(True)
            watch.stop(now, settings.grace, send=False)

    try:
        status = watch.run(stopping)
    finally:
        for fd in (out_r, ctl_r, ack_w):
            try:  # noqa: SIM105 (contextlib is not imported on the fast path)
                os.close(fd)
            except OSError:
                pass
        kill_group(pid, signal.SIGKILL)  # what it left in its group goes with it
        if hand_over.done:
            from icc.supervise.supervisor import _end_leftovers  # lazy: a consumer that handed over only

            _end_leftovers(set())  # a subreaper adopted what left the group (no other child was there)
        os.close(lock)
    stopped = f"stopped: {who} received {signal_name(_Stop.signum)}" if _Stop.signum else None
    outcome, exit_code, error = task_outcome(
        status, timed_out=watch.timed_out, timeout=job.timeout, stopped=stopped
    )
    _finish(db, job.run_id, outcome, time.time(), exit_code, keeper.text(), error)


class _HandOver:
    """The supervisor's side of the consumer's hand-over: asked (a byte on ``ctl_r``), it becomes a child
    subreaper, as :func:`icc.supervise.supervisor.supervise` is for a whole run, before any plugin code runs,
    and answers on ``ack_w``."""

    def __init__(self, ctl_r: int, ack_w: int) -> None:
        self.ctl_r = ctl_r
        self.ack_w = ack_w
        self.done = False

    def answer(self) -> bool:
        if not os.read(self.ctl_r, 16):
            return False
        if not self.done:
            self.done = True
            from icc.supervise.supervisor import set_child_subreaper  # lazy: the plugins load next anyway

            set_child_subreaper(True)
        try:  # noqa: SIM105 (contextlib is not imported on the fast path)
            os.write(self.ack_w, b"k")
        except OSError:  # the consumer is gone already
            pass
        return True


# --- the consumer ----------------------------------------------------------------------------------------


class _Stopped(Exception):
    pass


def _enter_consumer(settings: _Settings) -> None:
    """In the forked consumer, first: the run's context, as for every task (the project root, ``ICC_CONFIG``)."""
    if settings.path is not None:
        enter_run_context(os.path.dirname(settings.path), settings.path)


def _consumer(
    job: _Job, settings: _Settings, config_path: str | None, state_dir: str, ctl_w: int, ack_r: int
) -> None:
    """The forked consumer (run by :func:`icc.supervise.process.run_child`, in a session of its own, its output
    to the supervisor): wait for messages, hand over to the real consumer when one is there."""
    started = _consume(job, settings, state_dir)
    if started is not None:
        _hand_over(job, config_path, started, ctl_w, ack_r, settings)


def _consume(job: _Job, settings: _Settings, state_dir: str) -> float | None:
    """Wait for a message on the job's queue, up to the time limit; print the consumer's summary line when
    none came (or a stop did). None then; else when it started (``time.monotonic()``): hand over."""
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
        reason = signal_name(stop[0])
    if not reason:
        return started
    elapsed = time.monotonic() - started
    sys.stdout.write(
        f"consumed 0 messages (0 handled, 0 retried, 0 failed) in {elapsed:.1f}s; stopped: {reason}\n"
    )
    return None


def _open_queue(state_dir: str) -> sqlite3.Connection | None:
    """A read-only connection to the queue database; None when it is not there or not one icc trusts."""
    path = os.path.join(state_dir, QUEUE_FILE)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return None
    if any(state_file_problem(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")):
        return None
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None


def _hand_over(
    job: _Job, config_path: str | None, started: float, ctl_w: int, ack_r: int, settings: _Settings
) -> None:
    """A message is there: become the real consumer (configuration, plugins) for the rest of the time limit,
    as :class:`icc.queue.builtin.ConsumerTask` runs in a supervised task. Its exit code is
    :func:`icc.supervise.process.run_child`'s, from what this raises. In a framework project the consumer
    needs the framework set up: this process becomes ``manage.py icc consume QUEUE --time-limit REST``."""
    os.write(ctl_w, b"h")
    select.select([ack_r], [], [], 5.0)  # the supervisor is a subreaper before any plugin code runs
    os.close(ctl_w)
    os.close(ack_r)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    if settings.command is not None:
        rest = max(0.1, settings.time_limit - (time.monotonic() - started))
        argv = [*settings.command, "consume", job.queue, "--time-limit", f"{rest:.3f}"]
        sys.stdout.flush()
        os.execv(argv[0], argv)  # noqa: S606  # an argv list, never a shell: the crontab line's own command
    from pathlib import Path  # lazy: pathlib, only once a message is there

    from icc.config import load_config  # lazy: the configuration loader, only once a message is there
    from icc.queue.builtin import consume_in_process  # lazy: the plugins, only once a message is there

    try:
        config = load_config(None if config_path is None else Path(config_path), export=True)
        consume_in_process(config, job.queue, started=started)
    except IccError as exc:  # as ConsumerTask reports it: one line, its exit code
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
