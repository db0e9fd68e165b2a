"""Plain foreground jobs in the light minute: ``icc run --quiet`` runs a minute whose due jobs are consumer jobs
and/or foreground jobs the last ``icc scan`` vouched for, without the coordinator, click, pluggy or the
configuration loader (:mod:`icc.tick.light` does the rest of the minute as for the consumers alone).

1. **Vouched at scan** (:func:`scan_rows`, stored by :func:`store_rows` in the SQLite-only table
   ``light_jobs``): a job is plain when it is a foreground callable job with no callbacks, no
   ``when()``/``skip()``, no ``between()``/``environments()``/year, no sub-minute seconds, jitter, output file,
   notification settings or freshness check of its own, not ``on_each_host()`` nor ``once()``, no ``args()``,
   a task that takes no context and that ``getattr(import_module(f.__module__), f.__qualname__)`` gives back,
   and a plugin that is a module implementing no hook but ``schedule``/``register_handlers``/
   ``register_commands`` (no ``configure``, no run hooks of its own). A row keeps what the light minute needs
   (the plugin module, imported first: its import-time code may set up what the task needs; the task's module
   and qualname; timeout, overlapping, the job lock file, the declaration order) and the jobs row's definition
   it vouches for: the light minute joins on it, so a job changed since (a scan by another icc, a row edited)
   is the full tick's. An ``in_background()`` job qualifies too (``background = 1``) when its plugin's
   ``schedule`` hook can be called without pluggy (:func:`_schedule_function`); its task, found by name
   through that hook, need not be a module-level function: :mod:`icc.tick.background` starts those runs.
2. **The next slots.** A row's ``slots`` are the job's next :data:`SLOTS_AHEAD` slots (each with its
   ``HH:MM`` in the job's zone, for the process title), computed with the job's own :class:`icc.Schedule` by
   ``icc scan`` for up to :data:`SCAN_SLOTS` new or changed rows (:func:`store_rows`) and by the full tick for
   the vouched jobs it ran (:func:`refresh_slots`, only those: a 10,000-job project pays nothing for the
   others). The light minute takes a job only when its stored ``next_due`` is this slot and
   the list goes on after it: it writes the following slot as ``next_due`` without importing ``icc.cron``. A
   list that ran out (or was never made: a job new since the scan) leaves the minute to the full tick, which
   makes a new one.
3. **The light foreground supervisor** (:class:`Supervisor`): one process, forked by the light tick, runs all
   of the minute's plain runs in the full tick's order (declaration order), so each plugin is imported once:
   within ``PLUGIN_LOAD_LIMIT`` or the job's timeout (SIGALRM, as :func:`icc.tick.coordinator.load_within`);
   a plugin import that raises, hangs or exits fails only its own runs, with the full path's errors. Per run:
   the job lock (unless overlapping), ``running`` with both pids, the task forked with
   :func:`icc.supervise.process.run_child` in the run's context (the project root, ``ICC_CONFIG``), watched by
   :class:`icc.supervise.process.Watch` (timeout, output, SIGTERM/SIGINT passed on), recorded by
   :func:`icc.supervise.process.task_outcome`'s rules; process titles ``icc: job NAME (slot HH:MM)``. Every
   process ends with ``os._exit``. The tick waits for it (``waitpid``). A supervisor that dies (``kill -9``):
   the tick records the run it was on ``abandoned`` (its task's process group killed), as the full tick does
   for a dead foreground supervisor, and starts a new supervisor for the runs not started yet, which then run
   as they would have (a stop request to the tick records them skipped instead).

Failures are heard as on the full path: when a plugin's run hooks can act (``ICC_RUN_HOOK_SETTINGS``:
``[icc.notify] urls``/``ICC_NOTIFY_URLS``, ``monitor.ping_url``, ``mail.alert_to``) the supervisor calls them
for each run as the full tick's supervisor does (:func:`icc.tick.light.run_hooks`: :func:`_hooked`, or after
the run for plugins that declare their failure episode); the light minute declines when a job has
notification settings of its own or the plugins changed since the scan (the drift stamp); a failed run makes
``icc run --quiet`` print its tick table and exit 1, as the full tick does.
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import sys
import time

from icc.errors import ExitGuard, plugin_failure
from icc.supervise.process import (
    OutputKeeper,
    Watch,
    enter_run_context,
    kill_group,
    run_child,
    signal_name,
    task_outcome,
    title_setter,
    within,
)
from icc.tick import light
from icc.tick.ahead import TABLE, _connect, _write, following
from icc.tick.light import _NotLight

TYPE_CHECKING = False  # not typing's: the light minute does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from icc.jobs import Job
    from icc.plugins import PluginHost
    from icc.store.protocol import JobRecord
    from icc.supervise.observers import RunHooks

PLUGIN_LOAD_LIMIT = 60.0  # icc.tick.coordinator.PLUGIN_LOAD_LIMIT (tests/tick/test_light_due.py pins it)
FAILED_OUTCOMES = ("failed", "timed_out", "stopped")  # icc.tick.coordinator.TickReport.failed
PLAIN_HOOKS = frozenset({"schedule", "register_handlers", "register_commands"})
# Keys of a schedule definition a plain job may have, and the values some of them must have.
_ALLOWED = frozenset(
    {"expression", "year", "zone", "between", "environments", "background", "overlapping", "timeout"}
    | {"missed", "has_callbacks", "missed_window", "notify"}
)
_REQUIRED: dict[str, object] = {
    "year": None,
    "between": None,
    "environments": None,
    "has_callbacks": False,
}

_CREATE = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    name        TEXT PRIMARY KEY,
    definition  TEXT NOT NULL,              -- the jobs row's definition this row vouches for
    plugin      TEXT NOT NULL,              -- the plugin's name, as the full path's errors name it
    source      TEXT NOT NULL,              -- local or entry-point
    module      TEXT NOT NULL,              -- the plugin module, imported first
    task_module TEXT NOT NULL,
    qualname    TEXT NOT NULL,
    timeout     REAL,
    overlapping INTEGER NOT NULL,
    lock        TEXT NOT NULL,              -- the job lock's file name (icc.locks.job_lock_name)
    ord         INTEGER NOT NULL,           -- declaration order: the full tick runs foreground jobs in it
    slots       TEXT NOT NULL DEFAULT '',   -- 'epoch@HH:MM,...': the next slots, from a full tick
    background  INTEGER NOT NULL DEFAULT 0  -- in_background(): its task is found by name (icc.tick.background)
)"""
# A table made before background rows were vouched for gets the column (its rows are all foreground ones).
_ADD_BACKGROUND = f"ALTER TABLE {TABLE} ADD COLUMN background INTEGER NOT NULL DEFAULT 0"
_UPSERT = (
    f"INSERT INTO {TABLE} (name, definition, plugin, source, module, task_module, qualname, timeout,"
    " overlapping, lock, ord, background) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
    " slots = CASE WHEN definition = excluded.definition THEN slots ELSE '' END,"
    " definition = excluded.definition, plugin = excluded.plugin, source = excluded.source,"
    " module = excluded.module, task_module = excluded.task_module, qualname = excluded.qualname,"
    " timeout = excluded.timeout, overlapping = excluded.overlapping, lock = excluded.lock, ord = excluded.ord,"
    " background = excluded.background"
)
# The due jobs the scan vouched for, as they are stored now: a row whose definition changed since is left out.
_VOUCHED = (
    "SELECT j.name, l.plugin, l.source, l.module, l.task_module, l.qualname, l.timeout, l.overlapping, l.lock,"
    f" l.ord, l.slots, l.background FROM jobs j JOIN {TABLE} l ON l.name = j.name AND l.definition = j.definition"
    " WHERE j.kind = 'callable' AND j.enabled = 1 AND j.removed_at IS NULL AND j.next_due = ?"
)


# --- what the scan vouches for ---------------------------------------------------------------------------


def scan_rows(
    host: PluginHost, jobs: Mapping[str, Job], records: Iterable[JobRecord]
) -> list[tuple[object, ...]]:
    """The ``light_jobs`` rows of the plain jobs among ``records`` (the records this scan writes)."""
    import json  # lazy: icc scan's side only
    import types  # lazy: as above

    from icc.locks import job_lock_name  # lazy: as above

    infos = {info.name: info for info in host.plugins}
    plain_plugins: dict[str, str | None] = {}  # plugin -> its module, None when it is not plain
    tasks: dict[int, tuple[str, str] | None] = {}  # id(task) -> (module, qualname), None when it is not plain
    hooks_called: dict[str, bool] = {}  # plugin -> whether its schedule function can be called without pluggy
    rows: list[tuple[object, ...]] = []
    for rec in records:
        job = jobs.get(rec.name)
        info = infos.get(rec.plugin)
        schedule = rec.definition.get("schedule", {})
        if (
            job is None
            or info is None
            or rec.kind != "callable"
            or info.source not in ("local", "entry-point")
            or not _plain_schedule(schedule)
            or _has_user_code(job)
        ):
            continue
        if rec.plugin not in plain_plugins:
            plugin = host.pm.get_plugin(rec.plugin)
            hooks = {caller.name for caller in host.pm.get_hookcallers(plugin) or ()}
            plain_plugins[rec.plugin] = (
                plugin.__name__ if isinstance(plugin, types.ModuleType) and hooks <= PLAIN_HOOKS else None
            )
        module = plain_plugins[rec.plugin]
        background = schedule.get("background") is True
        if background:  # its task is found by name, through the plugin's own schedule function
            if module is not None and rec.plugin not in hooks_called:
                hooks_called[rec.plugin] = _schedule_function(host, rec.plugin) is not None
            task: tuple[str, str] | None = ("", "") if not job.takes_context() else None
            if not hooks_called.get(rec.plugin):
                continue
        else:
            if id(job.task) not in tasks:  # 10,000 jobs of one task: its signature looked at once
                tasks[id(job.task)] = _plain_task(job)
            task = tasks[id(job.task)]
        if module is None or task is None:
            continue
        rows.append(
            (
                rec.name,
                json.dumps(rec.definition, sort_keys=True),  # the jobs row's text (icc.store.sql)
                rec.plugin,
                info.source,
                module,
                task[0],
                task[1],
                schedule.get("timeout"),
                int(bool(schedule.get("overlapping"))),
                job_lock_name(rec.name),
                int(rec.definition.get("order", 0)),
                int(background),
                job.schedule,  # not stored: store_rows makes the first list of next slots with it
            )
        )
    return rows


def _schedule_function(host: PluginHost, plugin: str) -> object:
    """The plugin's ``schedule`` hook when the light minute can call it as pluggy would, without pluggy: a
    function of the plugin module, marked by ``icc.hookimpl`` with no option that changes how it is called,
    taking ``scheduler`` (or nothing); else None."""
    import types  # lazy: icc scan's side only

    impls = [impl for impl in host.pm.hook.schedule.get_hookimpls() if impl.plugin_name == plugin]
    if len(impls) != 1:
        return None
    impl = impls[0]
    func = impl.function
    module = host.pm.get_plugin(plugin)
    if (
        not isinstance(func, types.FunctionType)
        or getattr(module, "schedule", None) is not func
        or impl.hookwrapper
        or impl.wrapper
        or tuple(impl.argnames) not in ((), ("scheduler",))
        or impl.kwargnames
    ):
        return None
    return func


def _plain_schedule(schedule: Mapping[str, object]) -> bool:
    """Nothing around the task (a background job's ``in_background()`` aside)."""
    if set(schedule) - _ALLOWED or any(schedule.get(k) != v for k, v in _REQUIRED.items()):
        return False
    notify = schedule.get("notify")
    return notify is None or notify == {"pings": False}  # without_pings(): nothing of its own to notify


def _has_user_code(job: Job) -> bool:
    """Whether anything but the task runs around it: arguments given, callbacks, conditions."""
    schedule = job.schedule
    return (
        schedule.call_args is not None
        or schedule.has_callbacks
        or any(schedule.run_callbacks(w) for w in ("before", "after", "on_success", "on_failure"))
    )


def _plain_task(job: Job) -> tuple[str, str] | None:
    """(module, qualname) of a plain job's task (a module-level function that takes no context), or None."""
    import importlib  # lazy: icc scan's side only
    import types  # lazy: as above

    task = job.task
    if not isinstance(task, types.FunctionType) or "<" in task.__qualname__ or job.takes_context():
        return None
    try:
        found: object = importlib.import_module(task.__module__)
        for part in task.__qualname__.split("."):
            found = getattr(found, part)
    except Exception:
        return None
    return (task.__module__, task.__qualname__) if found is task else None


def store_rows(db_path: str, rows: Sequence[tuple[object, ...]], rebuilt: Iterable[str]) -> None:
    """Keep the plain jobs' rows of the jobs this scan wrote (``rebuilt``): the plain ones upserted (their
    slots kept while their definition is the same), the others deleted. Rows of jobs not written stay (a
    plugin unchanged since the last scan). Never fails the scan: the light minute then just does not apply."""
    import contextlib  # lazy: icc scan's side only

    rebuilt = list(rebuilt)
    if not rows and not rebuilt:
        return  # nothing written (every plugin unchanged): the rows stand
    with contextlib.suppress(sqlite3.Error):
        db = _connect(db_path)
        try:
            with light._transaction(db):
                db.execute(_CREATE)
                if "background" not in {row[1] for row in db.execute(f"PRAGMA table_info({TABLE})")}:
                    db.execute(_ADD_BACKGROUND)
                plain = {str(row[0]) for row in rows}
                db.executemany(
                    f"DELETE FROM {TABLE} WHERE name = ?", [(n,) for n in rebuilt if n not in plain]
                )
                db.executemany(_UPSERT, [row[:12] for row in rows])
                _first_slots(db, rows)
        finally:
            db.close()


SCAN_SLOTS = 200  # rows a scan makes a list of next slots for (about 0.6 ms each); a full tick makes the rest


def _first_slots(db: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    """The lists of next slots of (up to :data:`SCAN_SLOTS` of) the rows that have none (new, or changed
    since), from the ``next_due`` the scan stored: the first minute after a scan is a light one too."""
    from icc.tick.ahead import slots_text  # lazy: icc scan's side only

    schedules = {str(row[0]): row[12] for row in rows if len(row) > 12}
    if not schedules:
        return
    todo = db.execute(
        f"SELECT l.name, j.next_due FROM {TABLE} l JOIN jobs j ON j.name = l.name"
        " WHERE l.slots = '' AND j.next_due IS NOT NULL"
    ).fetchall()
    updates: list[tuple[str, str]] = []
    for name, next_due in todo:
        if len(updates) >= SCAN_SLOTS:
            break
        if name in schedules:
            try:
                updates.append((slots_text(schedules[name], int(next_due)), name))  # type: ignore[arg-type]
            except Exception:  # noqa: S112 (a schedule that cannot say: the full tick makes its list)
                continue
    db.executemany(f"UPDATE {TABLE} SET slots = ? WHERE name = ?", updates)


# --- the light tick's plan -------------------------------------------------------------------------------


class PlainRun:
    """One claimed run of a plain job: what its supervisor needs."""

    def __init__(self, row: tuple[object, ...], slot: int, hhmm: str, next_due: int) -> None:
        name, plugin, source, module, task_module, qualname, timeout, overlapping, lock, order, _, bg = row
        self.name = str(name)
        self.plugin = str(plugin)
        self.source = str(source)
        self.module = str(module)
        self.task_module = str(task_module)
        self.qualname = str(qualname)
        self.timeout = None if timeout is None else float(timeout)  # type: ignore[arg-type]
        self.overlapping = bool(overlapping)
        self.lock = str(lock)
        self.order = int(order)  # type: ignore[call-overload]
        self.background = bool(bg)  # in_background(): started by icc.tick.background
        self.slot = slot
        self.title = f"icc: job {self.name} (slot {hhmm})"
        self.next_due = next_due
        self.run_id = 0

    def text(self) -> str:
        """This run for the supervisor's pipe (:meth:`parse`): fields apart by US, the run ended by RS."""
        timeout = "" if self.timeout is None else repr(self.timeout)
        fields = [str(self.run_id), self.name, self.plugin, self.source, self.module, self.task_module]
        fields += [self.qualname, timeout, str(int(self.overlapping)), self.lock, str(self.order)]
        fields += [str(self.slot), self.title, str(self.next_due), str(int(self.background))]
        return _US.join(fields) + _RS

    @classmethod
    def parse(cls, text: str) -> PlainRun:
        fields = text.split(_US)
        run_id, slot, title, next_due = fields[0], fields[11], fields[12], fields[13]
        timeout = fields[7]
        row = (*fields[1:7], None if timeout == "" else float(timeout), int(fields[8]), *fields[9:11], "")
        row = (*row, int(fields[14]))
        run = cls(row, int(slot), "", int(next_due))
        run.run_id = int(run_id)
        run.title = title
        return run


_FALSE = ("", "0", "false", "no", "off")  # icc.plugins._FALSE (pinned by tests/tick/test_light_due.py)
_US, _RS = "\x1f", "\x1e"  # a job name is one line of printable text (icc.jobs)


def plan(db: sqlite3.Connection, names: Sequence[str], slot: int) -> list[PlainRun]:
    """The plain runs of ``names`` (due at ``slot``, not consumer jobs), in the full tick's order; raises
    :class:`icc.tick.light._NotLight` when any of them is not one the light minute may run. The caller
    (:func:`icc.tick.light._plan`) has checked that the plugins are the last scan's."""
    if os.environ.get("ICC_PLUGINS", "").strip():
        raise _NotLight  # a selection of plugins: the full path says what is left out
    autoload = os.environ.get("ICC_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() in _FALSE
    found: dict[str, PlainRun] = {}
    wanted = set(names)
    for row in db.execute(_VOUCHED, (slot,)).fetchall():
        name = str(row[0])
        if name not in wanted:
            continue
        after = following(str(row[10]), slot)
        if after is None or (row[2] == "entry-point" and not autoload):
            raise _NotLight
        found[name] = PlainRun(row, slot, after[1], after[0])
    if set(found) != wanted:
        raise _NotLight
    return sorted(found.values(), key=lambda run: (run.order, run.name))


def try_minute(config_path: str | None, slot: int, state_dir: str, db_path: str) -> int | None:
    """Exit code of a light minute whose due jobs are plain foreground jobs and/or the consumer jobs, or
    None when the full tick must run it."""
    return light.try_light_minute(config_path, slot, state_dir, db_path, None, PLAIN)


# --- the light tick's side of the runs -------------------------------------------------------------------


READY_WAIT = 1.0  # seconds the tick waits for its supervisor's connection before it closes its own


class _Tick:
    """The light tick while its foreground supervisor runs: a stop (SIGTERM/SIGINT) is passed on to it."""

    signum = 0
    child = 0


def _tick_signal(signum: int, _frame: object) -> None:
    first = _Tick.signum == 0
    _Tick.signum = signum
    if _Tick.child and first:
        try:  # noqa: SIM105 (contextlib is not imported on the light minute's path)
            os.kill(_Tick.child, signum)
        except ProcessLookupError:
            pass


class Supervisor:
    """The light tick's handle on the foreground supervisor of its plain runs, forked before the tick takes
    its lock or opens the store. The supervisor opens its connection at once, and keeps it until it ends with
    ``os._exit``: the tick's connection is then never the last one closed, nor is the supervisor's closed at
    all, so no close checkpoints the WAL on the minute's path (SQLite recovers a connection a process did not
    close; the next full tick's close, or an automatic checkpoint, moves the WAL into the database)."""

    def __init__(self, settings: light._Settings, state_dir: str, db_path: str) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.db_path = db_path
        self.runs: list[PlainRun] = []  # all of the minute's plain runs
        self.pid = 0
        self.to_w = -1
        self.from_r = -1
        self.handlers = (
            signal.signal(signal.SIGTERM, _tick_signal),
            signal.signal(signal.SIGINT, _tick_signal),
        )
        self._fork()

    def _fork(self) -> None:
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the supervisor never returns
            os.close(to_w)
            os.close(from_r)
            _supervisor(to_r, from_w, self.settings, self.state_dir, self.db_path)
        os.close(to_r)
        os.close(from_w)
        self.pid, self.to_w, self.from_r = pid, to_w, from_r
        _Tick.child = pid
        if _Tick.signum:  # a stop before it could be passed on
            os.kill(pid, _Tick.signum)

    def ready(self) -> None:
        """Wait (briefly) until the supervisor has opened its connection."""
        if self.from_r >= 0 and select.select([self.from_r], [], [], READY_WAIT)[0]:
            os.read(self.from_r, 1)

    def send(self, runs: list[PlainRun]) -> None:
        """Hand the claimed runs over (none: it exits)."""
        if not self.runs:
            self.runs = runs
        data = "".join(run.text() for run in runs).encode("utf-8", errors="surrogateescape")
        while data:
            data = data[os.write(self.to_w, data) :]
        os.close(self.to_w)
        self.to_w = -1

    def cancel(self) -> None:
        """Let it go (the minute is the full tick's, or it was given its runs) and reap it."""
        if self.to_w >= 0:
            os.close(self.to_w)
            self.to_w = -1
        if self.pid:
            os.waitpid(self.pid, 0)
            self.pid = 0
            _Tick.child = 0
        if self.from_r >= 0:
            os.close(self.from_r)
            self.from_r = -1
        signal.signal(
            signal.SIGTERM, self.handlers[0]
        )  # the full tick (when it runs the minute) sets its own
        signal.signal(signal.SIGINT, self.handlers[1])

    def wait(self) -> int:
        """Wait for the supervisor (``waitpid``, no polling): the exit code of ``icc run --quiet``. One that
        died: the run it was on is recorded abandoned, and a new supervisor runs the rest (:func:`_after`)."""
        died = False
        while True:
            _, status = os.waitpid(self.pid, 0)
            self.pid = 0
            _Tick.child = 0
            os.set_blocking(self.from_r, False)
            try:
                said = os.read(self.from_r, 64)
            except OSError:
                said = b""
            os.close(self.from_r)
            self.from_r = -1
            if said.endswith((b"d0", b"d1")) and not died:
                return 0 if said.endswith(b"d0") else _report(self.runs, self.settings, self.db_path)
            if not said.endswith((b"d0", b"d1")):
                died = True
                rest = _after(self.runs, os.waitstatus_to_exitcode(status), self.db_path, self.settings)
                if rest:
                    self._fork()
                    self.send(rest)
                    continue
            return _report(self.runs, self.settings, self.db_path)


def start(settings: light._Settings, state_dir: str, db_path: str) -> Supervisor:
    return Supervisor(settings, state_dir, db_path)


def _after(runs: list[PlainRun], code: int, db_path: str, settings: light._Settings) -> list[PlainRun]:
    """The supervisor died: the run it was on, when it did not record it, is abandoned (as the full tick
    records a foreground run whose supervisor died), its task's process group killed; the runs after it are
    still to run (or, after a stop, recorded skipped). Pruned when nothing is left."""
    db = _connect(db_path)
    try:
        marks = ", ".join("?" for _ in runs)
        rows = db.execute(
            f"SELECT id, outcome, task_pid FROM runs WHERE id IN ({marks})", [r.run_id for r in runs]
        ).fetchall()
        state = {row[0]: (row[1], row[2]) for row in rows}
        left = [r for r in runs if state.get(r.run_id, ("", None))[0] in ("pending", "running")]
        rest: list[PlainRun] = []
        if left:
            first, rest = left[0], left[1:]
            task_pid = state[first.run_id][1]
            if task_pid:
                try:  # its task lives on unsupervised: it goes, as the full tick ends it
                    if os.getpgid(task_pid) == task_pid:
                        os.killpg(task_pid, signal.SIGKILL)
                except OSError:
                    pass
            why = f"its supervisor exited with code {code} without recording an outcome"
            light._finish(db, first.run_id, "abandoned", time.time(), None, "", why)
            if _Tick.signum:
                why = f"not started: icc run received {signal_name(_Tick.signum)}"
                for run in rest:
                    light._finish(db, run.run_id, "skipped", time.time(), None, "", why)
                rest = []
        if not rest:
            light.prune(db, settings)
        return rest
    finally:
        db.close()


def _report(runs: list[PlainRun], settings: light._Settings, db_path: str) -> int:
    """0; or, when a run failed, timed out or was stopped, the tick table on stdout and 1 (as the full tick
    under ``--quiet``)."""
    db = _connect(db_path)
    try:
        marks = ", ".join("?" for _ in runs)
        found = {
            row[0]: row[1:]
            for row in db.execute(
                f"SELECT id, outcome, error, started_at, ended_at FROM runs WHERE id IN ({marks})",
                [r.run_id for r in runs],
            )
        }
    finally:
        db.close()
    if not any(found.get(r.run_id, ("",))[0] in FAILED_OUTCOMES for r in runs):
        return 0
    from icc.slots import fmt_duration, fmt_slot, fmt_time  # lazy: only a minute with a failed run

    zone = os.environ.get("ICC_TIMEZONE", "").strip() or str(settings.table.get("timezone", "UTC"))
    # icc.tick.summary's TABLE_HEADER and table_cells (importing it would close a cycle with the coordinator)
    lines = [["job", "outcome", "slot", "took", "next run", "detail"]]
    for run in runs:
        outcome, error, started, ended = found.get(run.run_id, ("gone", None, None, None))
        took = None if started is None or ended is None else max(0.0, float(ended) - float(started))
        cells = [run.name, str(outcome), fmt_slot(run.slot, zone), fmt_duration(took)]
        lines.append([*cells, fmt_time(run.next_due, zone), str(error or "")])
    widths = [max(len(c) for c in col) for col in zip(*lines, strict=False)]
    out = [f"icc run {fmt_time(runs[0].slot, zone)} ({zone})"]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in lines]
    sys.stdout.write("\n".join(out) + "\n")
    return 1


# --- the foreground supervisor ---------------------------------------------------------------------------


def _untitled(_title: str) -> None:
    """No setproctitle: the processes keep their command line as title."""


class _Stop:
    signum = 0
    task: int | None = None


def _on_stop(signum: int, _frame: object) -> None:
    first = _Stop.signum == 0
    _Stop.signum = signum
    if first and _Stop.task is not None:
        kill_group(_Stop.task, signal.SIGTERM)


def _supervisor(to_r: int, from_w: int, settings: light._Settings, state_dir: str, db_path: str) -> None:
    """The foreground supervisor (forked by the light tick): open the store, say so, read the runs the tick
    claimed, run them in order, prune, say how it went (``d0``, or ``d1`` when a run failed), ``os._exit``
    (its connection is not closed: see :class:`Supervisor`)."""
    code = 0
    try:
        signal.signal(signal.SIGTERM, _on_stop)
        signal.signal(signal.SIGINT, _on_stop)
        os.setpgid(0, 0)  # a stop reaches it once, passed on by the tick (as the full tick's supervisor)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)  # icc run's stdout is its table: nothing of a run goes there
        os.close(devnull)
        db = _connect(db_path)
        db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()  # open for real (a lazy open is not one)
        os.write(from_w, b"r")
        chunks = []
        while chunk := os.read(to_r, 65536):
            chunks.append(chunk)
        os.close(to_r)
        text = b"".join(chunks).decode("utf-8", errors="surrogateescape")
        runs = [PlainRun.parse(part) for part in text.split(_RS) if part]
        if runs:
            title = title_setter() or _untitled
            title(f"icc: supervise {len(runs)} runs")
            root = os.path.dirname(settings.path) if settings.path is not None else os.getcwd()
            enter_run_context(root, settings.path)  # a plugin's import-time code sees the run's context too
            if root not in sys.path and any(run.source == "local" for run in runs):
                sys.path.insert(0, root)  # local plugins, as icc.plugins.load_only loads them
            loaded: dict[str, str | None] = {}  # plugin -> why it did not load, None when it did
            hooks = light.run_hooks(db, settings)  # None: no plugin's run hooks can act (nothing loaded)
            failed = False
            for run in runs:
                if hooks is None or hooks.episodes is not None:
                    outcome = _one(db, run, settings, state_dir, loaded, title, (from_w,))
                    if hooks is not None:  # declared: loaded after the run, if it calls for them
                        hooks.after(db, run.run_id, run.name, run.timeout)
                else:
                    outcome = _hooked(db, run, settings, state_dir, loaded, title, (from_w,), hooks)
                failed = outcome in FAILED_OUTCOMES or failed
            light.prune(db, settings)
            os.write(from_w, b"d1" if failed else b"d0")
    except BaseException:
        code = 1
        try:
            import traceback  # lazy: only a supervisor that failed

            traceback.print_exc()
        except BaseException:  # noqa: S110 (nothing left to say it with)
            pass
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


def _hooked(
    db: sqlite3.Connection,
    run: PlainRun,
    settings: light._Settings,
    state_dir: str,
    loaded: dict[str, str | None],
    title: Callable[[str], None],
    keep_out: tuple[int, ...],
    hooks: light.Hooks,
) -> str:
    """Run one of the runs with its hooks, as :func:`icc.supervise.supervisor.supervise` calls them: its
    job's plugin and the run hook plugins loaded first (within its timeout: a run whose plugins do not load
    fails, its task not started), ``before`` once its task may start, ``after``
    (:meth:`icc.supervise.observers.RunHooks.conclude`) once it is recorded, whatever its outcome."""
    observed = hooks.observe(run.run_id, run.timeout, told=run.plugin)  # _load tells of its own plugin
    if isinstance(observed, str):
        light._finish(db, run.run_id, "failed", time.time(), None, "", observed)
        return "failed"
    notes: list[str] = []
    outcome = _one(db, run, settings, state_dir, loaded, title, keep_out, observed, notes)
    observed.conclude(notes)
    return outcome


def _one(
    db: sqlite3.Connection,
    run: PlainRun,
    settings: light._Settings,
    state_dir: str,
    loaded: dict[str, str | None],
    title: Callable[[str], None],
    keep_out: tuple[int, ...],
    observed: RunHooks | None = None,
    notes: list[str] | None = None,
) -> str:
    """Run one of the runs; its outcome. ``observed``: its ``before`` observers run before its task (their
    notes added to ``notes``)."""
    if _Stop.signum:
        why = f"not started: icc run received {signal_name(_Stop.signum)}"
        light._finish(db, run.run_id, "skipped", time.time(), None, "", why)
        return "skipped"
    if run.plugin not in loaded:
        loaded[run.plugin] = _load(run)
    problem = loaded[run.plugin]
    func = _task(run) if problem is None else None
    if func is None:
        if problem is None:  # its plugin no longer defines it as scanned
            problem = f"job {run.name!r} could not be loaded from its plugin (it is no longer defined); run `icc scan`"
        light._finish(db, run.run_id, "failed", time.time(), None, "", problem)
        return "failed"
    lock: int | None = None
    if not run.overlapping:
        taken = _job_lock(db, run, settings, state_dir)
        if isinstance(taken, str):
            return taken
        lock = taken
    try:
        if observed is not None and notes is not None:
            notes += observed.before()
        return _run(
            db, run, func, settings, lock, title, keep_out, b"" if observed is None else observed.preamble
        )
    finally:
        if lock is not None:
            os.close(lock)


def _load(run: PlainRun) -> str | None:
    """Import the run's plugin module within its time limit (:func:`icc.supervise.process.within`); None, or the
    run's error as the full path says it (:func:`icc.tick.coordinator.prepare_run`)."""
    limit = run.timeout or PLUGIN_LOAD_LIMIT
    saved = os.dup(1)
    os.dup2(2, 1)  # what the plugin prints goes to stderr, as icc.plugins.plugin_code() sends it
    error: str | None = None
    loaded = True
    try:
        with ExitGuard():  # icc.plugins' guard: a plugin's os._exit() fails it, not us
            loaded = within(limit, lambda: __import__(run.module))
    except BaseException as exc:
        error = plugin_failure(exc)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    if not loaded:
        return (
            f"its plugins did not load within {limit:g}s (an import hangs?); the task was not started. "
            "Run `icc scan` to see which plugin"
        )
    if error is not None:
        sys.stderr.write(f"warning: plugin {run.plugin}: {error}\n")  # as icc run warns of it (tick.summary)
        return f"job {run.name!r} could not be loaded from its plugin ({run.plugin}: {error}); run `icc scan`"
    return None


def _task(run: PlainRun) -> Callable[[], object] | None:
    """The task as the scan found it, or None when it is gone."""
    try:
        found: object = __import__(run.task_module, fromlist=["_"])
        for part in run.qualname.split("."):
            found = getattr(found, part)
    except Exception:
        return None
    return found if callable(found) else None


def _job_lock(db: sqlite3.Connection, run: PlainRun, settings: light._Settings, state_dir: str) -> int | str:
    """The job lock's descriptor; or the outcome the run was recorded with instead (as the full supervisor
    records it): skipped while the previous run holds it, failed for a lock file that cannot be used."""
    path = os.path.join(state_dir, "locks", run.lock)
    try:
        lock = light._try_lock(path, light._hostname())
    except _NotLight:
        from pathlib import Path  # lazy: only a broken lock file gets here

        from icc.locks import lock_file_problem  # lazy: only to say what is wrong

        problem = lock_file_problem(Path(path))
        light._finish(db, run.run_id, "failed", time.time(), None, "", problem or "cannot take the job lock")
        return "failed"
    if lock is None:
        from pathlib import Path  # lazy: only a run whose previous run still runs gets here

        from icc.locks import Lock  # lazy: only to say who holds the lock

        holder = Lock(Path(path)).holder()
        since = ""
        if holder is not None:
            zone = os.environ.get("ICC_TIMEZONE", "").strip() or str(settings.table.get("timezone", "UTC"))
            since = f" ({holder.describe(zone)})"
        error = f"skipped: the previous run is still running{since}"
        light._finish(db, run.run_id, "skipped", time.time(), None, "", error)
        return "skipped"
    return lock


def _run(
    db: sqlite3.Connection,
    run: PlainRun,
    func: Callable[[], object],
    settings: light._Settings,
    lock: int | None,
    title: Callable[[str], None],
    keep_out: tuple[int, ...],
    preamble: bytes = b"",
) -> str:
    """Fork the task, watch it to its end with the supervise loop, record the run (its output after
    ``preamble``, what the before observers printed); its outcome."""
    out_r, out_w = os.pipe()
    error_r, error_w = os.pipe()
    os.set_blocking(error_r, False)  # read once the task is gone; a daemonized grandchild may hold it open
    held = (out_r, error_r, *keep_out) if lock is None else (out_r, error_r, lock, *keep_out)
    started = time.time()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the task never returns
        run_child(func, out_w, held, error_w, enter=lambda: title(run.title))
    os.close(out_w)
    os.close(error_w)
    _Stop.task = pid
    if _Stop.signum:  # a signal between the check and the fork
        kill_group(pid, signal.SIGTERM)
    _write(
        db,
        "UPDATE runs SET outcome = 'running', pid = ?, task_pid = ?, started_at = ? "
        "WHERE id = ? AND outcome IN ('pending', 'running')",
        [(os.getpid(), pid, started, run.run_id)],
    )
    keeper = OutputKeeper(int(settings.core["output_limit"]))  # type: ignore[call-overload]
    if preamble:
        keeper.add(preamble)
    deadline = None if run.timeout is None else started + run.timeout
    watch = Watch(pid, out_r, keeper.add, deadline=deadline, grace=settings.grace)
    passed_on: list[bool] = []

    def stopping(watch: Watch, now: float) -> None:
        if _Stop.signum and not passed_on:  # its handler sent SIGTERM to the task's group
            passed_on.append(True)
            watch.stop(now, settings.grace, send=False)

    try:
        status = watch.run(stopping)
    finally:
        _Stop.task = None
        os.close(out_r)
        kill_group(pid, signal.SIGKILL)  # what it left in its group goes with it
    ended = time.time()
    try:
        raised = os.read(error_r, 4096).decode("utf-8", errors="replace").strip() or None
    except OSError:
        raised = None
    finally:
        os.close(error_r)
    stopped = f"stopped: icc run received {signal_name(_Stop.signum)}" if _Stop.signum else None
    outcome, exit_code, error = task_outcome(
        status, timed_out=watch.timed_out, timeout=run.timeout, stopped=stopped, raised=raised
    )
    light._finish(db, run.run_id, outcome, ended, exit_code, keeper.text(), error)
    return outcome


PLAIN = light.Plain(plan, start)  # plain foreground runs only; icc.tick.background's adds the background ones
