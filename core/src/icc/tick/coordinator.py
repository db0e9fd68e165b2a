"""One tick of ``icc run``: capture the slot, claim what is due, run it, record it.

Order of a tick:

1. Capture the slot (the minute the tick started in) once.
2. Take the tick lock without waiting; if another tick holds it, say who and stop (exit 0).
3. Under the tick lock: record runs whose supervisor died as ``abandoned``; evaluate every job's due slots
   from its stored definition (no plugin import), apply its ``missed`` policy to slots missed since its last
   evaluation (within ``missed_window``); only if something is due, load the plugins to get the callables and
   evaluate ``when``/``skip``; claim every (job, slot) in the state store; store the next slots that changed and
   the watermark (the slot they were computed from). Only the jobs whose next slot the tick reached are read
   (``due_jobs``, through an index). The next slots are a cache for ticks at that slot or later: a tick at an
   earlier slot (the clock went back, an earlier ``--at``, a late host) evaluates from its own slot, as if every
   job were new; the claims and recorded rows keep it from running a (job, slot) twice. Only when the watermark
   is ahead of the clock does it save the cache from its slot and delete this host's ``missed`` rows of slots
   still to come (a tick that ran ahead wrote them); ``skipped`` rows and other hosts' rows are never deleted.
   On a shared store each host keeps its own progress through its ``on_each_host()`` jobs (meta
   ``progress:<host_id>``).
4. Release the tick lock, so the next minute's tick can start jobs on time even if this one overruns.
5. Start background runs, then run foreground jobs in declaration order (stored by the scan). Each run gets a
   supervisor forked from the tick (the tick's SQLite connection is closed around the forks, since a connection
   must never cross one): detached for a background run, waited for (``waitpid``) for a foreground one. The
   supervisor, never the tick, imports the plugins, evaluates ``when``/``skip`` and runs the callbacks and hooks
   (each in a bounded child: :func:`bounded_observers`); the rows the tick records itself get theirs from a
   detached concluder (:func:`conclude_recorded`). The tick runs no user code. A ``jitter()`` job starts its offset after the minute: a
   background one's supervisor sleeps until then, foreground ones run in the order of their offsets, the tick
   sleeping until each.
6. Sub-minute jobs (``every_seconds``): the tick that claimed a job's second-0 slot owns its minute. After the
   runs above it claims and starts each later offset (slot = minute + offset) at its time, until the minute
   ends; an offset whose time passed while the tick was busy is recorded ``skipped``, never started late. With
   a foreground run to make, a background job's offsets (every 5 s or slower) are claimed before it and handed
   to supervisors that sleep until their second.

A tick for an instant given with ``--at`` (``realtime`` False) never sleeps: jitter is not waited for and every
offset of the minute is run at once, in order.

A tick refuses a state store that was never scanned (or is gone), and checks before each run and at its end
that the database file is still the one it opened: when it was deleted or replaced, it starts nothing more and
fails naming every claimed run and whether it ran, since none of that can be recorded.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from icc import hosts as hostclock
from icc.errors import IccError, StateError
from icc.locks import Holder, hostname, job_lock, pid_alive, tick_lock
from icc.records import record as _record
from icc.statedir import output_file_problem, state_dir_problem, state_file_problem
from icc.store import open_store, sqlite_file, store_label
from icc.store.protocol import FINISHED, Claim, JobRecord, Outcome, RunKind, RunRecord, StateStore
from icc.supervise.observers import (
    PLUGIN_LOAD_LIMIT,
    acting_hook_plugins,
    bounded_observers,
    callback_name,
    load_within,
    not_loaded,
    plugins_wanted,
    run_context,
    slot_title,
    standin_job,
)
from icc.supervise.process import within
from icc.supervise.supervisor import (
    STOP,
    RunSpec,
    conclude,
    enter_run_context,
    preload,
    run_bounded,
    run_in_supervisor,
    set_title,
    sleep_until,
    spawn_detached,
    start_detached,
    stop_requested,
    supervise,
)
from icc.tick.journal import (
    JOURNAL,
    OutcomeJournal,
    _Journaled,
    _reason,
    forget_journal,
    read_journal,
)
from icc.tickwatch import DRIFT_META_KEY, RUN_HOOKS_META_KEY, parse_run_hook_plugins, stamp_tick

if TYPE_CHECKING:
    from icc.config import Config
    from icc.jobs import Job
    from icc.pause import Pause
    from icc.plugins import PluginHost
    from icc.schedule import Schedule
    from icc.store.protocol import Outcome
    from icc.supervise.leases import Leases


NOT_EVALUATED = 0  # next_due of a job no tick has evaluated yet
PAUSE_META_KEY = "pause"  # icc.pause.META_KEY, without importing icc.pause when nothing is paused
STALE_NEXT_META_KEY = "stale.next"  # icc.notify.freshness.NEXT_KEY, likewise
ONCE_META_PREFIX = "once:"  # meta key of a once() job whose one run was decided: its slot
LATE_OFFSET = 1.0  # seconds: a sub-minute offset the tick reaches this late (its second is over) is skipped
AHEAD_OFFSETS = 12  # offsets a minute (every_seconds(5)) up to which a busy tick hands them out ahead
PRUNE_BATCH = (
    1000  # [icc] keep_runs_days: the most rows one tick deletes by age (the next ticks take the rest)
)


def slot_of(moment: datetime) -> int:
    """The epoch second of the minute ``moment`` falls in."""
    ts = int(moment.timestamp())
    return ts - ts % 60


def slot_datetime(slot: int) -> datetime:
    return datetime.fromtimestamp(slot, tz=UTC)


def next_due(schedule: Schedule, slot: int) -> int | None:
    """The next minute slot after ``slot`` at which ``schedule`` matches (a sub-minute job's second 0)."""
    nxt = schedule.time_rule.next_after(slot_datetime(slot))
    return None if nxt is None else slot_of(nxt)


def due_slots(schedule: Schedule, start: int, end: int) -> list[int]:
    """Slots in [start, end] (epoch seconds, minute-aligned) at which ``schedule`` matches."""
    found: list[int] = []
    cursor = slot_datetime(start - 60)
    rule = schedule.time_rule  # minutes: a sub-minute job's offsets are the owning tick's business
    while True:
        nxt = rule.next_after(cursor)
        if nxt is None:
            break
        s = slot_of(nxt)
        if s > end:
            break
        if s >= start:
            found.append(s)
        cursor = nxt
    return found


_KEEPER: list[int] = []  # this process's end of the pipe its database keeper waits on (hold_database)


def hold_database(db_path: Path) -> None:
    """Keep the SQLite state database open, in a keeper process, until :func:`release_database` (or this
    process's exit).

    SQLite checkpoints the WAL into the database and deletes it when the last connection closes, and the next
    connection to open rebuilds the WAL index and creates the WAL again (with a sync of the directory). A tick
    holds no connection while it forks a run's supervisor (a connection must never cross a fork), so without
    a keeper every run paid all of that twice: its supervisor opened the database as the first connection and
    closed it as the last, and so did the tick after it. The keeper is forked before this process opens any
    connection, opens its own, reads once (no transaction stays open: checkpoints go on) and waits for the end
    of a pipe. Durability is unchanged: WAL with ``synchronous=NORMAL``, every commit kept against a process
    crash; a checkpoint still runs every 1000 pages, and when the keeper closes last. Every process forked
    from here closes its copy of the pipe (``os.register_at_fork``), so the keeper ends with the tick, not
    with the background runs it started."""
    if _KEEPER or any(state_file_problem(f"{db_path}{suffix}") for suffix in ("", "-wal", "-shm")):
        return  # held already; or a file the store refuses with its own error
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the keeper never returns
        try:
            os.close(write_fd)
            _keep_open(str(db_path), read_fd)
        finally:
            os._exit(0)
    os.close(read_fd)
    _KEEPER[:] = [write_fd, pid]


def _keep_open(db_path: str, read_fd: int) -> None:
    """The keeper's body: a connection that never writes, held until the pipe's other end is closed."""
    import signal  # lazy: the keeper's only
    import sqlite3  # lazy: loaded already (the idle tick's query)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)  # a stop of the tick's group ends it: nothing to lose
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # never holds the tick's output open (a pipe's reader waits for the tick alone)
        os.dup2(devnull, fd)
    os.close(devnull)
    set_title("icc: hold the state database open for a tick")
    quoted = db_path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    identity = _file_identity(Path(db_path))
    try:  # mode=rw: never creates a database
        db = sqlite3.connect(f"file:{quoted}?mode=rw", uri=True, timeout=5, isolation_level=None)
        db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()  # maps the WAL index; no transaction stays open
    except sqlite3.Error:
        return
    with contextlib.suppress(OSError):
        while os.read(read_fd, 64):
            pass
    if identity is None or _file_identity(Path(db_path)) != identity:
        # Deleted or replaced meanwhile (the tick says so): closing as the last connection of the old file
        # would checkpoint it and delete the WAL by its name, which may be a new database's now.
        os._exit(0)
    db.close()  # the last connection: checkpoints the WAL, as any last one does


KEEPER_WAIT = 10.0  # seconds release_database waits for the keeper's close (a checkpoint) at the most


def release_database() -> None:
    """End the keeper :func:`hold_database` started (it closes its connection and exits), and wait for it (at
    most :data:`KEEPER_WAIT` seconds), so that no process of this tick holds the state directory once ``icc run``
    has returned (a backup, an unmount or a removal right after it finds nothing busy)."""
    if _KEEPER:
        import select  # lazy: a due tick's end alone (selectors, the supervise loop's, loads it anyway)

        write_fd, pid = _KEEPER
        _KEEPER.clear()
        with contextlib.suppress(OSError):
            os.close(write_fd)
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            pidfd = None
        if pidfd is not None:
            try:
                select.select([pidfd], [], [], KEEPER_WAIT)  # readable when the keeper has exited
            finally:
                os.close(pidfd)
        with contextlib.suppress(OSError):
            os.waitpid(pid, os.WNOHANG)  # reaped now if it is done; else when this process exits


def _forget_keeper_in_child() -> None:
    """In a forked child (a supervisor, a task, the concluder): close its copy of the keeper's pipe."""
    if _KEEPER:
        with contextlib.suppress(OSError):
            os.close(_KEEPER[0])
        _KEEPER.clear()


os.register_at_fork(after_in_child=_forget_keeper_in_child)


def run_host(config: Config) -> str:
    """The host runs are recorded under: with a shared store this host's ``host_id`` (containers share hostnames,
    and a tick judges only its own host's runs dead), else the hostname."""
    if config.store.url is not None:
        from icc.store import host_id  # lazy: only a shared store names hosts by host_id

        return host_id(config)
    return hostname()


def why_abandoned(
    run: RunRecord,
    record: JobRecord | None,
    state_dir: Path,
    host_name: str,
    expired: Mapping[int, str] | None = None,
) -> str | None:
    """Why an unfinished run is dead, or None while it may still live: its lease passed on the server's clock
    (``expired``: run id -> the host that held it, from a shared store), or, on this host, its process is gone."""
    if expired and run.id in expired:
        return (
            f"its lease expired: host {expired[run.id]} stopped renewing it (the host or its supervisor died, "
            "hung, or lost the database)"
        )
    if run.host not in (None, host_name) or pid_alive(run.pid):
        return None
    if (
        record is not None
        and not record.definition.get("schedule", {}).get("overlapping", False)
        and job_lock(state_dir, run.job).is_held_elsewhere()
    ):
        return None  # its supervisor holds the job lock: not dead yet
    if run.outcome == "pending":
        return "the tick that claimed it died before starting it"
    return f"its supervisor (pid {run.pid}) died without recording an outcome"


CONDITION_SAID_NO = "a when/skip condition said no"


def prepare_run(
    spec: RunSpec,
    config: Config,
    record: JobRecord,
    slot: int | None,
    kind: RunKind,
    hook_plugins: Mapping[str, str | None] | None = None,
) -> tuple[Outcome, str] | None:
    """In the run's supervisor, and only there: import the plugins (within the job's timeout, or
    :data:`PLUGIN_LOAD_LIMIT`), get the task, its callbacks and run hooks, and evaluate ``when()``/``skip()``,
    each predicate in a bounded child. Returns (outcome, error) when the task must not start, else None.

    ``hook_plugins`` (the plugins with run hooks, as the last scan stored them, when the plugins did not
    change since): only those and the job's own plugin are imported, and only its ``schedule`` hook is
    called. None: every plugin is loaded."""
    zone = record.definition["schedule"].get("zone", config.timezone)
    ctx = run_context(record.name, spec.run_id, slot, kind, zone, config.environment)
    enter_run_context(config.root, config.path)  # a plugin's import-time code sees the run's context too
    limit = spec.timeout or PLUGIN_LOAD_LIMIT
    only = plugins_wanted(record, hook_plugins)
    # A background run's supervisor takes what its intermediate loaded for it (:func:`preload_runs`), if that
    # went well; otherwise (and in every other supervisor) it loads for itself.
    loaded = _PRELOADED.get(_load_key(only, record.plugin))
    if loaded is None:
        loaded = load_within(config, limit, only, None if only is None else record.plugin, record.name)
    if loaded is None:  # a plugin's import hangs: this run fails, the tick and the other runs go on
        return "failed", not_loaded(limit)
    host, live = loaded
    spec.notices += [f"{f.plugin}: {f.error}" for f in host.failures]
    job = live.get(record.name)
    spec.before, spec.after = bounded_observers(host, job or standin_job(record), ctx, config, spec)
    if record.kind != "command":
        if job is None:
            failures = "; ".join(f"{f.plugin}: {f.error}" for f in host.failures) or "it is no longer defined"
            return (
                "failed",
                f"job {record.name!r} could not be loaded from its plugin ({failures}); run `icc scan`",
            )
        spec.func = _bind(job, ctx)
    if job is not None and job.schedule.has_callbacks and not _conditions_pass(job, config, spec):
        return "skipped", CONDITION_SAID_NO
    return None


_LoadKey = tuple[frozenset[tuple[str, str | None]], str] | None
# What the intermediate that forks the background supervisors loaded for them (preload_runs): per set of
# plugins (and the plugin whose schedule hook built the jobs), the host and the jobs, as each supervisor
# would have loaded them itself. Empty in every other process.
_PRELOADED: dict[_LoadKey, tuple[PluginHost, dict[str, Job]]] = {}
PRELOAD_LIMIT = 2.0  # seconds the intermediate gives the plugins to load before the supervisors load alone


def _load_key(only: Mapping[str, str | None] | None, plugin: str) -> _LoadKey:
    return None if only is None else (frozenset(only.items()), plugin)


def preload_runs(
    config: Config, runs: list[tuple[JobRecord, Mapping[str, str | None] | None, float]]
) -> None:
    """In the intermediate that forks the background runs' supervisors (:func:`icc.supervise.process.detach`),
    before it forks them: load the plugins and build the jobs of ``runs`` ((record, run hook plugins, the
    run's load limit) each) once, so that twenty supervisors do not each import the plugin and call its
    ``schedule`` hook (:func:`prepare_run` takes its job from here).

    Each set of plugins is loaded as a run's supervisor would load it (:func:`load_within`): the same plugins,
    the same failures to report; only the jobs of all its runs are built in one call of the plugin's hook. It
    is bounded by the runs' shortest load limit, and by :data:`PRELOAD_LIMIT` (the tick waits for it). Whatever
    does not go as in a supervisor is left out, and those runs' supervisors load for themselves as before, so
    each records exactly its own error: the limit reached (an import that hangs), or a ``schedule`` hook that
    failed building several jobs at once (one job's bad schedule must not fail the others' runs)."""
    if not runs:
        return
    enter_run_context(config.root, config.path)  # a plugin's import-time code sees the run's context
    groups: dict[_LoadKey, tuple[dict[str, str | None] | None, str, set[str]]] = {}
    for record, hook_plugins, _limit in runs:
        only = plugins_wanted(record, hook_plugins)
        key = _load_key(only, record.plugin)
        groups.setdefault(key, (only, record.plugin, set()))[2].add(record.name)
    limit = min(PRELOAD_LIMIT, *(run_limit for _r, _h, run_limit in runs))

    def load_all() -> None:
        from icc.plugins import load_only, load_plugins  # lazy: the intermediate's

        for key, (only, plugin, names) in groups.items():
            if only is None:
                host = load_plugins(config)
                live = host.collect_jobs()
            else:
                host = load_only(config, only)
                failed = len(host.failures)
                live = host.jobs_of(plugin, frozenset(names))
                if len(host.failures) > failed:
                    continue  # its schedule hook raised building them together: each supervisor alone
            _PRELOADED[key] = (host, live)

    if not within(limit, load_all):
        _PRELOADED.clear()  # a hook interrupted halfway: nothing of it is trusted
    gc.freeze()  # the supervisors' collections never walk (and so copy) what they share from here


def conclude_recorded(
    config: Config, run_ids: list[int], hook_plugins: Mapping[str, str | None] | None = None
) -> None:
    """The concluder, a detached process forked by the tick after its writes: the callbacks and ``after_run``
    hooks of the rows the tick recorded itself (missed, skipped by a pause, abandoned, not started), each
    bounded as in a run's supervisor. Consecutive rows of one job with the same outcome and error (missed
    slots collapsed, a paused hour) make one call, for the latest row, whose ``RunResult.error`` carries the
    count: ``missed 5 slots (skip policy), 10:00 to 10:04``. With ``hook_plugins`` (as for
    :func:`prepare_run`) only those and the jobs' own plugins are loaded."""
    from icc.supervise.supervisor import run_result, set_title  # lazy: the concluder's only

    set_title(f"icc: conclude {len(run_ids)} recorded runs")
    enter_run_context(config.root, config.path)
    only: dict[str, str | None] | None = None
    if hook_plugins is not None:
        store = open_store(config)
        try:
            runs = [store.run(run_id) for run_id in run_ids]
            records = [store.job(name) for name in {run.job for run in runs if run is not None}]
        finally:
            store.close()
        only = {r.plugin: r.distribution for r in records if r is not None} | dict(hook_plugins)
    loaded = load_within(config, PLUGIN_LOAD_LIMIT, only)
    if loaded is None:
        return
    host, live = loaded
    store = open_store(config)
    try:
        groups: list[list[RunRecord]] = []
        for run_id in run_ids:
            run = store.run(run_id)
            if run is None:
                continue
            last = groups[-1][-1] if groups else None
            if (
                last is not None
                and run.outcome in ("missed", "skipped")
                and (last.job, last.outcome, last.error) == (run.job, run.outcome, run.error)
            ):
                groups[-1].append(run)
            else:
                groups.append([run])
        for group in groups:
            run = group[-1]
            record = store.job(run.job)
            if record is None:
                continue
            zone = record.definition["schedule"].get("zone", config.timezone)
            ctx = run_context(run.job, run.id, run.slot, run.kind, zone, config.environment)
            spec = RunSpec(job=run.job, run_id=run.id, title_suffix=slot_title(run.slot, zone))
            job = live.get(run.job) or standin_job(record)
            _before, after = bounded_observers(host, job, ctx, config, spec)
            result = run_result(run)
            if len(group) > 1:
                result = replace(result, error=_collapsed_error(group, zone))
            conclude(store, run.id, after, run.job, result=result, output=spec.preamble)
    finally:
        store.close()


def _collapsed_error(group: list[RunRecord], zone: str) -> str:
    """The error one call stands for: ``missed 5 slots (skip policy), 10:00 to 10:04``."""
    from zoneinfo import ZoneInfo  # lazy: as in slot_title

    def hhmm(slot: int | None) -> str:
        return "?" if slot is None else slot_datetime(slot).astimezone(ZoneInfo(zone)).strftime("%H:%M")

    error = group[-1].error or group[-1].outcome
    span = f"{hhmm(group[0].slot)} to {hhmm(group[-1].slot)}"
    if error.startswith("missed"):
        return f"missed {len(group)} slots{error[len('missed') :]}, {span}"
    return f"{error}: {len(group)} slots, {span}"


def _conditions_pass(job: Job, config: Config, spec: RunSpec) -> bool:
    """``when()``/``skip()``, each in a bounded child whose output goes to the run's; one that raises, exits or
    hangs counts as a no (with a note in the run's output)."""
    whens, skips = job.schedule.conditions()
    for which, fn, wanted in [*(("when", f, True) for f in whens), *(("skip", f, False) for f in skips)]:
        done = run_bounded(
            f"{which}() condition {callback_name(fn)}",
            fn,
            limit=config.callback_timeout,
            output=spec.preamble,
            cwd=config.root,
            config_path=config.path,
            title=f"icc: condition {job.name}{spec.title_suffix}",
        )
        if done.note is not None:
            spec.preamble += f"{done.note}; counted as a no\n".encode()
            return False
        if bool(done.value) is not wanted:
            return False
    return True


@_record
class TickRow:
    """One line of the tick's table."""

    job: str
    outcome: str
    slot: int | None
    duration: float | None = None
    next_run: int | None = None
    detail: str = ""
    background: bool = False


@_record
class TickReport:
    slot: int
    rows: list[TickRow] = field(default_factory=list)
    locked_out: bool = False  # another tick holds the tick lock
    held_by: Holder | None = None  # who, when its record could be read
    plugin_failures: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    lock_held_for: float | None = None  # locked out: seconds the holder has held the tick lock, when known
    drift: str | None = None  # why the plugins changed since the last scan (icc.tickwatch.drift)
    rescan: str | None = None  # [icc] scan = "auto": why the tick's own scan failed ("" when it worked)

    @property
    def failed(self) -> bool:
        return any(r.outcome in ("failed", "timed_out", "stopped") for r in self.rows)


def rescan(config: Config) -> str:
    """``icc scan`` in a child process of its own session, killed with its group after ``scan_timeout``
    seconds (a plugin import that hangs cannot hang the tick): "" when it worked, else why not, in one line."""
    import signal  # lazy: only a tick that rescans (scan = "auto" and the plugins changed)
    import subprocess  # lazy: as above
    import sys  # lazy: as above

    from icc import framework  # lazy: a rescan only

    argv = framework.argv() or [sys.executable, "-m", "icc"]
    if config.path is not None:
        argv += ["--config", str(config.path)]
    try:
        child = subprocess.Popen(
            [*argv, "scan", "--json"],
            cwd=config.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return f"cannot start `icc scan`: {exc.strerror or exc}"
    try:
        _, err = child.communicate(timeout=config.scan_timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return f"`icc scan` did not finish within scan_timeout ({config.scan_timeout:g} s): it was stopped"
    if child.returncode == 0:
        return ""
    last = next((line for line in reversed(err.decode(errors="replace").splitlines()) if line.strip()), "")
    return f"`icc scan` exited {child.returncode}" + (f": {last.strip()}" if last else "")


@_record
class _Planned:
    record: JobRecord
    schedule: Schedule
    slot: int
    kind: RunKind
    run_id: int = 0


class Tick:
    """One tick; ``run()`` does the work and returns what happened."""

    def __init__(
        self,
        config: Config,
        *,
        at: datetime | None = None,
        realtime: bool | None = None,
        hold_open: bool = False,
    ) -> None:
        """``hold_open``: on SQLite, keep the database open in a small keeper process while the tick runs
        (:func:`hold_database`); only for a process with no other SQLite connection open (``icc run``)."""
        self.config = config
        self.slot = slot_of(at or datetime.now(UTC))
        # Real time: sleep for jitter and sub-minute offsets. Default: only without ``at``.
        self.realtime = at is None if realtime is None else realtime
        self.db_path = sqlite_file(config.state_dir)
        problem = state_dir_problem(config.state_dir)  # a planted link or a foreign directory first
        if problem is not None:
            raise StateError(problem)
        self._identity: tuple[int, int] | None = None  # SQLite: the database file's (device, inode)
        if config.store.url is None:
            if not self.db_path.exists():  # a tick never creates a store: it would have nothing to schedule
                raise StateError(
                    f"no state store at {self.db_path} (never scanned, or deleted); nothing was run. "
                    "Run `icc scan` to register the jobs"
                )
            if hold_open:
                hold_database(self.db_path)
            self.store: StateStore = open_store(config)
            self._identity = _file_identity(self.db_path) or (-1, -1)  # gone already: never intact
        else:
            self.store = open_store(config)
        if self.store.get_meta("plugins_fingerprint") is None:
            release_database()
            raise StateError(
                f"the state store {store_label(config)} was never scanned; nothing was run. "
                "Run `icc scan` to register the jobs"
            )
        self.host_name = run_host(config)
        try:  # a shared store: this host's row and its clock's offset; refused when far off (icc.hosts)
            self.clock_offset = hostclock.check(self.store)
        except IccError:
            self.store.close()
            raise

        self._leases: Leases | None = None  # while a tick on a shared store runs its claims
        self._recorded: list[
            int
        ] = []  # runs this tick recorded itself (abandoned, missed, skipped): to report
        self._lost = False  # the database file was deleted or replaced under this tick
        self._journal: OutcomeJournal | None = None  # while its runs run: outcomes the store could not take
        self._pid = os.getpid()
        self._plugins_current = False  # the drift stamp says the plugins are as the last scan saw them
        self._hooks: tuple[list[tuple[str, str | None, tuple[str, ...] | None]] | None] | None = None

    def _open_store(self) -> StateStore:
        """A new connection to the store this tick opened; never to a new one made in its place."""
        if not self._store_intact():
            raise StateError(f"the state database {self.db_path} was deleted or replaced")
        store = open_store(self.config)
        journal = self._journal
        if journal is not None and os.getpid() != self._pid:
            journal = journal.reopen()  # a supervisor's: the journal on a descriptor of its own
        if journal is not None:  # a finish the store cannot take (a full disk) is kept for the next tick
            return cast("StateStore", _Journaled(store, journal))
        return store

    def _store_intact(self) -> bool:
        if self._identity is None:  # a database server: a lost connection is an error of its own
            return True
        if not self._lost and _file_identity(self.db_path) != self._identity:
            self._lost = True
        return not self._lost

    # -- the tick -------------------------------------------------------------------------------------------
    def run(self) -> TickReport:
        try:
            return self._run()
        finally:
            release_database()

    def _run(self) -> TickReport:
        report = TickReport(self.slot)
        stamp_tick(str(self.config.state_dir))  # `icc check`: a tick began (and below: it ended)
        lock = tick_lock(self.config.state_dir)
        if not lock.try_acquire():
            report.locked_out = True
            report.held_by = lock.holder()
            if report.held_by is not None:
                report.lock_held_for = max(0.0, time.time() - report.held_by.since)
            return report
        try:
            self._record_journal(report)
            self._check_drift(report)
            self._recover_abandoned(report)
            planned = self._plan(report)
        finally:
            lock.release()
        concluded = self._spawn_concluder(0)
        # A local store: space for the outcomes it may not be able to take (a full disk), reserved now.
        journal = OutcomeJournal.reserve(self.config.state_dir) if planned and self._identity else None
        if journal is not None:
            self._journal = journal
            self.store = cast("StateStore", _Journaled(self.store, journal))
        try:
            self._execute(planned, report)
        except StateError as exc:
            if self._identity is None or not self._store_intact():
                raise  # a database server's error is its own (a lost connection); a lost file is told below
            raise StateError(self._stopped_message(exc, planned, report, journal)) from None
        finally:
            if journal is not None:
                self._journal = None
                journal.close()
                if isinstance(self.store, _Journaled):
                    self.store = self.store.store
        if not self._store_intact():
            raise StateError(self._lost_message(planned, report))
        if planned or self._recorded:
            self.store.prune_runs(self.config.keep_runs, self.config.keep_skipped)
            if self.config.keep_runs_days is not None:
                before = time.time() - self.config.keep_runs_days * 86_400
                self.store.prune_old_runs(before, PRUNE_BATCH)
        self._check_freshness()
        stamp_tick(str(self.config.state_dir))
        self._spawn_concluder(concluded)
        return report

    def _check_freshness(self) -> None:
        """Alert the jobs gone stale (``expect_success_within``) once ``stale.next`` has passed: the alerts are
        queued, never sent here (icc.notify.freshness). A store that fails here never fails the tick."""
        now = time.time()
        try:
            stored = self.store.get_meta(STALE_NEXT_META_KEY)
            if stored is None:
                return  # no job has expect_success_within(): icc.notify.freshness is not even imported
            with contextlib.suppress(ValueError):
                if now < float(stored):
                    return
            from icc.notify import freshness  # lazy: only once stale.next has passed (or reads oddly)

            if freshness.due(self.store, now):
                freshness.check(self.config, self.store, now)
        except StateError as exc:
            from icc import logs  # lazy: only when the store failed here

            logs.get(__name__).warning("the freshness check could not run: %s", exc)

    def _check_drift(self, report: TickReport) -> None:
        """Whether the plugins changed since the last scan (stat calls against the scan's stamp); with
        ``[icc] scan = "auto"`` the tick then rescans in a child process, bounded by ``scan_timeout``, and
        goes on with the stored jobs when that scan fails. A package directory that changed without a plugin
        distribution changing (an unrelated install) refreshes the stamp, so the idle tick stays idle."""
        from icc.tick.idle import plugins_drift, refreshed_stamp  # lazy: only the full tick checks drift

        stamp = self.store.get_meta(DRIFT_META_KEY)
        if stamp is None:  # scanned by an icc that wrote no stamp: `icc status` compares the fingerprint
            return
        why = plugins_drift(self.config, stamp, self.store.get_meta("plugins_fingerprint"))
        if why is None:
            self._plugins_current = True
            fresh = refreshed_stamp(stamp)
            if fresh != stamp:
                self.store.update_meta(DRIFT_META_KEY, lambda old: fresh if old == stamp else old)
            return
        report.drift = why
        if self.config.scan != "auto":
            return
        report.rescan = rescan(self.config)
        if report.rescan == "":  # the scan stored a new stamp: whatever still differs is drift still
            stamp = self.store.get_meta(DRIFT_META_KEY)
            report.drift = plugins_drift(self.config, stamp, self.store.get_meta("plugins_fingerprint"))
            self._plugins_current = report.drift is None

    def _hook_plugins(self, record: JobRecord | None = None) -> Mapping[str, str | None] | None:
        """The plugins with run hooks the last scan stored, for the supervisors (they load those and the
        job's own plugin); None while the plugins may have changed since (drift, or no stamp): they load all.

        For ``record``, a job with no notification settings of its own, without the plugins whose
        ``ICC_RUN_HOOK_SETTINGS`` are all unset: their hooks would do nothing for it (icc's pings without
        ``monitor.ping_url``, icc-mail without ``mail.alert_to``), so they are neither imported nor called."""
        if self._hooks is None:
            stored = self.store.get_meta(RUN_HOOKS_META_KEY) if self._plugins_current else None
            self._hooks = (parse_run_hook_plugins(stored),)
        found = self._hooks[0]
        return None if found is None else acting_hook_plugins(found, self.config, record)

    def _spawn_concluder(self, since: int) -> int:
        """The callbacks and hooks of the rows this tick recorded itself, from the ``since``-th on, run by a
        detached concluder process (:func:`conclude_recorded`), never by the tick. Returns how many are done."""
        ids = self._recorded[since:]
        if not ids or not self._store_intact():
            return len(self._recorded)
        hooks = self._hook_plugins()
        sqlite = self._identity is not None
        if sqlite:
            self.store.close()  # no SQLite connection may cross the fork
        try:
            spawn_detached(partial(conclude_recorded, self.config, ids, hooks))
        finally:
            if sqlite:
                with contextlib.suppress(StateError):  # lost: reported at the end of the tick
                    self.store = self._open_store()
        return len(self._recorded)

    def _lost_message(self, planned: list[_Planned], report: TickReport) -> str:
        from icc.slots import fmt_time  # lazy: only to word an error

        zone = self.config.timezone
        rows = {(r.job, r.slot): r for r in report.rows}
        told = []
        for item in planned:
            name, slot = item.record.name, item.slot
            row = rows.get((name, slot))
            if row is None or row.detail.startswith("not started"):
                what = "was not run"
            elif row.outcome == "started":
                what = f"was started ({row.detail}); its outcome is not recorded"
            else:
                what = f"ran: {row.outcome}, not recorded" + (f" ({row.detail})" if row.detail else "")
            told.append(f"{name} at {fmt_time(slot, zone)} {what}")
        claimed = "; ".join(told) or "nothing was claimed"
        return (
            f"the state database {self.db_path} was deleted or replaced while this tick ran: {claimed}. "
            "Restore the state directory from a backup, or run `icc scan` to start a new one"
        )

    def _stopped_message(
        self, exc: StateError, planned: list[_Planned], report: TickReport, journal: OutcomeJournal | None
    ) -> str:
        """What a tick that the store stopped part way did, run by run (the store's own words say "nothing was
        lost" of the write that failed, which is not all there is to say here). The runs it claimed and never
        started are kept in the journal as skipped, so the next tick releases them with the reason."""
        from icc.slots import fmt_time  # lazy: only to word an error

        reason = _reason(exc)
        zone = self.config.timezone
        rows = {(r.job, r.slot) for r in report.rows}
        kept: dict[int, dict[str, Any]] = {}
        for item in planned:  # kept by this tick or by a supervisor it forked
            entry = journal.kept(item.run_id) if journal is not None else None
            if entry is not None:
                kept[item.run_id] = entry
        told = []
        for item in planned:
            name, slot = item.record.name, item.slot
            if (name, slot) in rows:
                continue  # ran or started, and recorded
            entry = kept.get(item.run_id)
            if entry is not None and entry["outcome"] == "abandoned":
                told.append(f"{name} at {fmt_time(slot, zone)} was started; its outcome is lost")
                continue
            if entry is not None:
                told.append(
                    f"{name} at {fmt_time(slot, zone)} ran: {entry['outcome']}, not recorded yet (kept in "
                    f"{journal.path if journal else JOURNAL}; the next tick records it)"
                )
                continue
            why = f"not started: the tick stopped before it ({reason})"
            if journal is not None and journal.add({"run": item.run_id, "outcome": "skipped", "error": why}):
                told.append(
                    f"{name} at {fmt_time(slot, zone)} was not started (the next tick records it skipped)"
                )
            else:
                told.append(f"{name} at {fmt_time(slot, zone)} was not started")
        what = "; ".join(told) or "every run it claimed is recorded"
        return f"this tick stopped part way: {reason}: {what}. Free the space; the next tick records the rest"

    def _record_journal(self, report: TickReport) -> None:
        """Record what the last tick kept in the journal (outcomes its store could not take), then empty it. A
        run recorded since (by another tick) is left as it is."""
        if self._identity is None:
            return  # the journal is kept only for a local store
        entries = read_journal(self.config.state_dir)
        if not entries:
            return
        done: set[Any] = set()
        for entry in entries:
            done.add(entry.get("run"))
            try:
                run_id, outcome = int(entry["run"]), str(entry["outcome"])
            except (KeyError, TypeError, ValueError):
                continue
            run = self.store.run(run_id)
            if run is None or run.outcome not in ("pending", "running") or outcome not in FINISHED:
                continue
            error = entry.get("error")
            late = "recorded by the next tick: the store could not take it when the run ended"
            if outcome != "skipped":
                error = f"{error}; {late}" if error else late
            self.store.finish(
                run_id,
                cast("Outcome", outcome),
                now=float(entry.get("ended_at") or time.time()),
                exit_code=entry.get("exit_code"),
                output=str(entry.get("output") or ""),
                error=error,
            )
            self._recorded.append(run_id)
            report.rows.append(TickRow(run.job, outcome, run.slot, detail=error or ""))
        forget_journal(self.config.state_dir, done)

    def _recover_abandoned(self, report: TickReport) -> None:
        unfinished = self.store.unfinished()
        expired = self.store.expired_leases() if unfinished else {}
        for run in unfinished:
            why = why_abandoned(run, self.store.job(run.job), self.config.state_dir, self.host_name, expired)
            if why is None:
                continue
            if run.host in (None, self.host_name) and run.task_pid and pid_alive(run.task_pid):
                # The supervisor died, its task lives on unsupervised: stop it, so the next run can't overlap.
                with contextlib.suppress(OSError):
                    if os.getpgid(run.task_pid) == run.task_pid:
                        os.killpg(run.task_pid, 9)
            if run.outcome == "pending":  # its task never started: release the claim, it is no failure
                why = f"not started: {why}"
                self.store.finish(run.id, "skipped", now=time.time(), error=why)
                self._recorded.append(run.id)
                report.rows.append(TickRow(run.job, "skipped", run.slot, detail=why))
                continue
            self.store.finish(run.id, "abandoned", now=time.time(), error=why)
            self._recorded.append(run.id)
            report.abandoned.append(run.job)
            report.rows.append(TickRow(run.job, "abandoned", run.slot, detail=why))

    def _plan(self, report: TickReport) -> list[_Planned]:
        from icc.cron import compiled_matches  # lazy: only a tick that plans
        from icc.schedule import Schedule  # lazy: as above

        stored = self.store.get_meta("watermark")
        watermark = None if stored is None else int(stored)
        # The stored next slots were computed at the watermark: at an earlier slot they say nothing.
        backwards = watermark is not None and self.slot < watermark
        rewind = False
        if backwards:
            # The store's clock: this host's, or on a shared store the server's (it judges who ran ahead).
            now = slot_of(datetime.fromtimestamp(time.time() - (self.clock_offset or 0.0), UTC))
            # A watermark ahead of the clock: a tick ran ahead (an --at ahead, a clock stepped back since). Its
            # cache is no good to anyone, and the slots it recorded missed that are still to come did not run:
            # this host's such rows are deleted, so those slots run when the clock reaches them. A watermark at
            # or behind the clock: this tick is late (a frozen host, an --at in the past); every row stays a
            # fact (skipped rows always do) and the cache is left to the ticks that are on time.
            rewind = watermark is not None and watermark > now
            if rewind:
                self.store.forget_unrun(max(self.slot, now))
        paused = self._paused()
        next_dues: dict[str, int | None] = {}  # only those that changed are written back
        due: list[tuple[JobRecord, Schedule, list[int]]] = []
        at = slot_datetime(self.slot)
        # On a shared store each host keeps its own progress through its on_each_host() jobs: the shared next slot
        # says only where the cluster is, and a host that was down still owes a row for each of its own slots.
        progress = self._host_progress() if self.config.store.url is not None else None
        own: dict[
            str, list[Any]
        ] = {}  # this host's progress to save: job -> [next slot, schedule fingerprint]
        own_mark = progress.get("watermark") if progress is not None else None
        host_behind = isinstance(own_mark, int) and self.slot < own_mark
        # Only the jobs that may be due (next slot reached, never evaluated, or per host) are read and decoded; an
        # earlier slot than the watermark says nothing about the stored next slots, so it reads them all.
        records = self.store.jobs() if backwards else self.store.due_jobs(self.slot)
        for record in records:
            if not record.enabled:
                continue
            stored_next, behind = record.next_due, backwards
            per_host = progress is not None and bool(record.definition["schedule"].get("on_each_host"))
            fingerprint = 0
            if per_host:
                assert progress is not None
                fingerprint = _fingerprint(record.definition["schedule"])
                jobs = progress.get("jobs")
                entry = jobs.get(record.name) if isinstance(jobs, dict) else None
                # Never evaluated here, changed since, or re-enabled (the shared slot reset): nothing is missed.
                pair: list[Any] = entry if isinstance(entry, list) and len(entry) == 2 else [None, None]
                valid = pair[1] == fingerprint and record.next_due != NOT_EVALUATED
                first = pair[0] if valid else NOT_EVALUATED
                stored_next = first if first is None or isinstance(first, int) else NOT_EVALUATED
                behind = host_behind
            compiled = record.definition.get("compiled")
            if (
                compiled is not None
                and not behind
                and stored_next
                and stored_next > self.slot
                and compiled_matches(compiled, record.definition["schedule"]["zone"], at) is False
            ):
                # Not due, nothing to catch up, its next slot still stands: bit tests, no schedule built.
                if per_host:
                    own[record.name] = [stored_next, fingerprint]
                continue
            schedule = Schedule.from_definition(record.definition["schedule"])
            # next_due 0: never evaluated (new, changed or re-enabled): nothing before now counts as missed.
            start = self.slot if behind or not stored_next else min(stored_next, self.slot)
            window = schedule.missed_window_minutes
            start = max(start, self.slot - (self.config.missed_window if window is None else window) * 60)
            slots = due_slots(schedule, start, self.slot)
            once_key = None
            if schedule.one_off:
                once_key = ONCE_META_PREFIX + record.name + (f"@{self.host_name}" if per_host else "")
                slots = self._once_slots(once_key, schedule, slots, stored_next)
            nxt = next_due(schedule, self.slot)
            if nxt != record.next_due:
                next_dues[record.name] = nxt
            if per_host:
                own[record.name] = [nxt, fingerprint]
            if slots and schedule.check_conditions(self.config.environment):
                if paused is not None and not paused.exempts(record.name, schedule.runs_when_paused):
                    self._skip_paused(record.name, schedule, slots, report)
                    continue
                if once_key is not None:  # decided: run (or recorded missed by its policy), never again
                    self._once_decided(once_key, slots[-1])
                due.append((record, schedule, slots))
        planned: list[_Planned] = []
        # Declaration order, as stored by the scan (no plugin is imported by the tick).
        due.sort(key=lambda item: (item[0].definition.get("order", len(due)), item[0].name))
        for record, schedule, slots in due:
            planned.extend(self._apply_policy(record, schedule, slots, report))
        # All of the tick's claims in one write (one round trip on a shared store); a claim lost leaves its item out.
        claims = [Claim(p.record.name, p.slot, p.kind, self._scope(p.schedule)) for p in planned]
        won = self.store.claim_many(claims, pid=os.getpid(), host=self.host_name)
        for item, run_id in zip(planned, won, strict=True):
            if run_id is not None:
                item.run_id = run_id
        if rewind or not backwards:
            self.store.save_evaluation(next_dues, self.slot)
            if self._identity is not None and due:
                from icc.tick.ahead import refresh_slots  # lazy: only a tick that ran jobs (SQLite)

                # The light minute's next slots of the plain jobs among those that ran (icc.tick.ahead).
                ran = [(r.name, s, next_dues.get(r.name, r.next_due)) for r, s, _ in due]
                refresh_slots(str(self.db_path), ran)
        if progress is not None and (own or progress.get("jobs")):
            self._save_host_progress(own)
        return [p for p in planned if p.run_id]

    def _once_slots(
        self, key: str, schedule: Schedule, slots: list[int], stored_next: int | None
    ) -> list[int]:
        """A ``once()`` job's slots at this tick: none once its run was decided (meta ``once:<job>``, kept across
        scans and history pruning); its one slot when due; and this tick's slot when that one had already passed
        before any tick evaluated the job (added, or changed, after its moment), unless ``missed("skip")``."""
        if self.store.get_meta(key) is not None:
            return []
        if slots:
            return slots
        first = schedule.time_rule.next_after(datetime(1, 1, 2, tzinfo=UTC))
        if first is None or slot_of(first) >= self.slot:
            return []
        if stored_next != NOT_EVALUATED:
            # Passed beyond its missed window while nothing ticked: decided too, so that a changed definition
            # (evaluated afresh) does not run it now.
            self._once_decided(key, slot_of(first))
            return []
        return [] if schedule.missed_policy == "skip" else [self.slot]

    def _once_decided(self, key: str, slot: int) -> None:
        self.store.update_meta(key, lambda _old: str(slot))

    def _progress_key(self) -> str:
        return f"progress:{self.host_name}"

    def _host_progress(self) -> dict[str, Any]:
        """This host's progress through its ``on_each_host()`` jobs on a shared store: ``{"watermark": slot,
        "jobs": {name: [next slot, schedule fingerprint]}}`` (empty when it has none, or it cannot be read)."""
        import json  # lazy: only a shared store's per-host progress

        text = self.store.get_meta(self._progress_key())
        try:
            found = json.loads(text) if text else {}
        except ValueError:
            found = {}
        return found if isinstance(found, dict) else {}

    def _save_host_progress(self, jobs: dict[str, list[Any]]) -> None:
        """Keep this host's progress: at a slot earlier than its own watermark only the jobs it evaluated move."""
        import json  # lazy: as above

        def change(old: str | None) -> str:
            try:
                previous = json.loads(old) if old else {}
            except ValueError:
                previous = {}
            if not isinstance(previous, dict):
                previous = {}
            mark, kept = previous.get("watermark"), previous.get("jobs")
            if isinstance(mark, int) and mark > self.slot:
                return json.dumps(
                    {"watermark": mark, "jobs": {**(kept if isinstance(kept, dict) else {}), **jobs}}
                )
            return json.dumps({"watermark": self.slot, "jobs": jobs})

        self.store.update_meta(self._progress_key(), change)

    def _scope(self, schedule: Schedule) -> str:
        """The claim scope of a job's slots: this host for ``on_each_host()`` jobs, else the whole cluster."""
        return self.host_name if schedule.per_host else ""

    def _paused(self) -> Pause | None:
        """The pause in force at this tick's slot; one that has ended is removed (it ends by itself), but only
        when it ended on the real clock too: a tick ``--at`` a later instant runs what is due there, yet never
        lifts the pause for the real ticks."""
        if self.store.get_meta(PAUSE_META_KEY) is None:
            return None
        from icc import pause  # lazy: only a paused tick

        found = pause.current(self.store, self.slot)
        if found is None:
            pause.clear_expired(self.store, min(self.slot, time.time()))
        return found

    def _skip_paused(self, name: str, schedule: Schedule, slots: list[int], report: TickReport) -> None:
        from icc.pause import PAUSED_ERROR  # lazy: only a paused tick

        recorded = self.store.record(
            name, slots, "skipped", "scheduled", error=PAUSED_ERROR, scope=self._scope(schedule)
        )
        self._note_recorded(name, recorded, self._scope(schedule))
        if recorded:
            report.rows.append(_summary_row(name, "skipped", recorded, self.config.timezone, "paused"))

    def _apply_policy(
        self, record: JobRecord, schedule: Schedule, slots: list[int], report: TickReport
    ) -> list[_Planned]:
        name = record.name
        current = slots[-1] == self.slot
        missed = slots[:-1] if current else slots
        policy = schedule.missed_policy
        run_slots: list[tuple[int, RunKind]] = [(self.slot, "scheduled")] if current else []
        if missed:
            if policy == "all":
                run_slots = [(s, "missed") for s in missed] + run_slots
                missed = []
            elif policy == "once" and not current:
                run_slots = [(missed[-1], "missed")]
                missed = missed[:-1]
            recorded = self.store.record(
                name,
                missed,
                "missed",
                "missed",
                error=f"missed ({policy} policy)",
                scope=self._scope(schedule),
            )
            self._note_recorded(name, recorded, self._scope(schedule))
            if recorded:
                report.rows.append(_summary_row(name, "missed", recorded, self.config.timezone))
        # when()/skip() are the run's supervisor's business: the tick runs no user code.
        return [_Planned(record, schedule, s, kind) for s, kind in run_slots]

    def _note_recorded(self, name: str, slots: list[int], scope: str = "") -> None:
        """Remember the rows just recorded for ``slots`` of job ``name`` (in claim ``scope``), to report them.

        On a shared store an ``on_each_host()`` job's rows of the same slots from other hosts are left to them:
        such a row carries its host (see PostgresStateStore.record), a cluster-wide one none."""
        if slots:
            wanted = set(slots)
            host = scope if scope and self.config.store.url is not None else None
            rows = self.store.runs(name, limit=len(slots) + 16)
            self._recorded.extend(sorted(r.id for r in rows if r.slot in wanted and r.host == host))

    # -- execution ------------------------------------------------------------------------------------------
    def _spec(self, item: _Planned) -> RunSpec | str:
        """The run's spec: what its supervisor needs to import the job's plugin and run it; or why it must not
        start (an unsafe output file)."""
        record = item.record
        definition = record.definition
        spec = RunSpec(
            job=record.name,
            run_id=item.run_id,
            timeout=definition["schedule"].get("timeout"),
            overlapping=bool(definition["schedule"].get("overlapping", False)),
            cwd=self.config.root,
            config_path=self.config.path,
            state_dir=self.config.state_dir,
            output_limit=self.config.output_limit,
        )
        if (problem := set_output_file(spec, item.schedule, self.config.root)) is not None:
            return problem
        spec.title_suffix = slot_title(item.slot, item.schedule.zone)
        if record.kind == "command":
            spec.argv = list(definition["argv"])
        spec.prepare = partial(
            prepare_run,
            config=self.config,
            record=record,
            slot=item.slot,
            kind=item.kind,
            hook_plugins=self._hook_plugins(record),
        )
        return spec

    def _execute(self, planned: list[_Planned], report: TickReport) -> None:
        if not planned or not self._store_intact():
            return
        preload()  # what every supervisor imports, once here rather than in each of them
        if self.store.lease is None:
            self._execute_planned(planned, report)
            return
        # A shared store: the leases of this tick's claims are kept while they wait for their turn.
        from icc.supervise.leases import Leases  # lazy: only a shared store's claims have leases

        self._leases = Leases(self.store)
        for item in planned:
            self._leases.hold(item.run_id)
        try:
            self._execute_planned(planned, report)
        finally:
            self._leases.stop()
            self._leases = None

    def _execute_planned(self, planned: list[_Planned], report: TickReport) -> None:
        foreground: list[tuple[_Planned, RunSpec]] = []
        background: list[tuple[_Planned, RunSpec]] = []
        for item in planned:
            spec = self._spec(item)
            if isinstance(spec, str):
                self.store.finish(item.run_id, "failed", now=time.time(), error=spec)
                report.rows.append(TickRow(item.record.name, "failed", item.slot, detail=spec))
                self._conclude_unstarted(item)
            else:
                (background if item.schedule.background else foreground).append((item, spec))
        if self.realtime:
            for item, spec in background:
                if (offset := self._jitter(item)) > 0:
                    spec.start_at = float(item.slot + offset)  # its supervisor sleeps: nothing else waits
        if background:
            self._start_background(background, report)
            if self._leases is not None:
                for item, _spec in background:
                    self._leases.release(item.run_id)  # their supervisors keep them from now on
        owned = [
            item
            for item in planned
            if item.schedule.seconds is not None and item.slot == self.slot and item.kind == "scheduled"
        ]
        ahead: set[str] = set()
        if self.realtime and (foreground or any(not item.schedule.background for item in owned)):
            ahead = self._start_offsets_ahead(owned, report)  # a foreground run would hold them up
        # Jittered foreground jobs in the order of their offsets (a stable sort: the others keep their order).
        foreground.sort(key=lambda pair: self._jitter(pair[0]))
        for item, spec in foreground:
            if self.realtime and (offset := self._jitter(item)) > 0:
                sleep_until(item.slot + offset)  # a stop request wakes it; the run is then recorded skipped
            if not self._run_foreground(item, spec, report):
                return
        owned = [item for item in owned if item.record.name not in ahead]
        if owned:
            self._run_offsets(owned, report)

    def _jitter(self, item: _Planned) -> int:
        """Seconds after its minute this run starts: the job's jitter offset, for a run of the tick's own slot
        (a missed slot caught up starts at once)."""
        if item.kind != "scheduled" or item.slot != self.slot:
            return 0
        return item.schedule.start_offset(item.record.name)

    def _run_foreground(self, item: _Planned, spec: RunSpec, report: TickReport) -> bool:
        """Run one foreground job to its end and report it; False when the tick must start nothing more."""
        if not self._store_intact():
            return False  # its outcome could not be recorded, nor its claim kept: run nothing more
        if self._leases is not None:
            self._leases.release(item.run_id)  # its supervisor keeps it from now on
        sqlite = self._identity is not None
        if sqlite:
            self.store.close()  # no SQLite connection may cross the fork
        try:
            code, told, notices = run_in_supervisor(spec, self._open_store, grace=self.config.grace)
            # Plugins that failed to load in the supervisor: icc run warns once about each.
            report.plugin_failures += [n for n in notices if n not in report.plugin_failures]
        finally:
            if sqlite:
                with contextlib.suppress(StateError):  # lost: reported at the end of the tick
                    self.store = self._open_store()
        if self._lost:
            if told is not None:  # what ran, for the tick's error: its outcome could not be recorded
                report.rows.append(
                    TickRow(
                        item.record.name,
                        told.outcome,
                        item.slot,
                        duration=told.duration,
                        detail=told.error or "",
                    )
                )
            return False
        run = self.store.run(item.run_id)
        if run is None:
            return True  # pruned or forgotten meanwhile by another tick: nothing to show
        kept = self._journal.kept(item.run_id) if self._journal is not None else None
        if run.outcome in ("pending", "running") and kept is not None:
            # Its supervisor could not record how it ended (a full disk) and kept that in the journal: the tick
            # stops here and says so, run by run; the next tick records it.
            raise StateError(str(kept.get("why") or "the state store could not record a run's outcome"))
        if run.outcome in ("pending", "running"):
            # The supervisor died without recording the run (killed, or icc itself failed): say so now.
            if run.task_pid and run.host in (None, self.host_name):
                with contextlib.suppress(OSError):
                    if os.getpgid(run.task_pid) == run.task_pid:
                        os.killpg(run.task_pid, 9)
            why = f"its supervisor exited with code {code} without recording an outcome"
            self.store.finish(item.run_id, "abandoned", now=time.time(), error=why)
            run = self.store.run(item.run_id)
            assert run is not None
        detail = run.error or ""
        if (
            told is not None
            and told.outcome == "stopped"
            and run.outcome not in ("stopped", "pending", "running")
        ):
            # A host frozen past its lease stops its task when it wakes, but another host recorded the run first
            # (abandoned) and its record stays: the row says what the store says, and what this host did.
            detail = f"{run.error or run.outcome}; this host stopped its task when it woke"
        report.rows.append(
            TickRow(
                item.record.name,
                run.outcome,
                item.slot,
                duration=run.duration,
                next_run=next_due(item.schedule, self.slot),
                detail=detail,
            )
        )
        return True

    def _start_offsets_ahead(self, owned: list[_Planned], report: TickReport) -> set[str]:
        """The later offsets of this minute's background sub-minute jobs, claimed and handed to their detached
        supervisors now, each sleeping until its second (as for ``jitter()``): a foreground run in this tick must
        not make them late. An offset already past is recorded skipped, never started late. Returns the jobs
        whose offsets are all handled here."""
        from icc.slots import fmt_slot  # lazy: only to word a skipped offset

        first = len(self._recorded)
        handled: set[str] = set()
        starts: list[tuple[_Planned, RunSpec]] = []
        stopped = False
        for item in owned:
            if stopped:
                break
            if not item.schedule.background or len(item.schedule.offsets()) > AHEAD_OFFSETS:
                continue  # every 1 to 4 seconds: too many sleeping supervisors (and connections); as before
            name, scope = item.record.name, self._scope(item.schedule)
            handled.add(name)
            late: list[int] = []
            for offset in item.schedule.offsets()[1:]:
                when = item.slot + offset
                if stop_requested() or not self._store_intact():
                    stopped = True  # the offsets not handled yet are _run_offsets' to record
                    break
                if time.time() >= when + LATE_OFFSET:
                    late.append(when)
                    continue
                run_id = self.store.claim(
                    name, when, "scheduled", pid=os.getpid(), host=self.host_name, scope=scope
                )
                if run_id is None:
                    continue  # another tick has this (job, slot)
                sub = _Planned(item.record, item.schedule, when, "scheduled", run_id)
                spec = self._spec(sub)
                if isinstance(spec, str):
                    self.store.finish(run_id, "failed", now=time.time(), error=spec)
                    report.rows.append(TickRow(name, "failed", when, detail=spec))
                    self._conclude_unstarted(sub)
                    continue
                spec.start_at = float(when)  # its supervisor sleeps until its second
                starts.append((sub, spec))
            if stopped:
                handled.discard(name)
            if late:
                why = "skipped: its time passed while the tick was busy; never started late"
                recorded = self.store.record(name, late, "skipped", "scheduled", error=why, scope=scope)
                self._note_recorded(name, recorded, scope)
                if recorded:
                    detail = (
                        why if len(recorded) > 1 else f"{why} ({fmt_slot(recorded[0], self.config.timezone)})"
                    )
                    report.rows.append(_summary_row(name, "skipped", recorded, self.config.timezone, detail))
        if starts:
            self._start_background(starts, report)
        self._spawn_concluder(first)
        return handled

    def _run_offsets(self, owned: list[_Planned], report: TickReport) -> None:
        """The later offsets of the sub-minute jobs whose minute this tick owns, each claimed and started at its
        time (at once when not in real time), until the minute ends. An offset whose time passed while the tick
        was busy is recorded skipped: a sub-minute run never starts late."""
        from icc.slots import fmt_slot  # lazy: only to word a skipped offset

        zone = self.config.timezone
        end = self.slot + 60
        events = sorted(
            (item.slot + offset, index, item)
            for index, item in enumerate(owned)
            for offset in item.schedule.offsets()[1:]
        )
        skipped: dict[tuple[str, str], list[int]] = {}

        def skip(item: _Planned, slots: list[int], why: str) -> None:
            recorded = self.store.record(
                item.record.name, slots, "skipped", "scheduled", error=why, scope=self._scope(item.schedule)
            )
            self._note_recorded(item.record.name, recorded, self._scope(item.schedule))
            skipped.setdefault((item.record.name, why), []).extend(recorded)

        for position, (when, _index, item) in enumerate(events):
            name = item.record.name
            if self.realtime and time.time() < when:
                sleep_until(when)
            stop = stop_requested() or not self._store_intact()
            if stop or (self.realtime and time.time() >= end):
                if self._store_intact():
                    why = (
                        f"skipped: {STOP.who} was asked to stop"
                        if stop
                        else "skipped: the minute ended before the tick got to it"
                    )
                    for later, _i, other in events[position:]:
                        skip(other, [later], why)
                break
            if self.realtime and time.time() >= when + LATE_OFFSET:
                skip(item, [when], "skipped: its time passed while the tick was busy; never started late")
                continue
            run_id = self.store.claim(
                name,
                when,
                "scheduled",
                pid=os.getpid(),
                host=self.host_name,
                scope=self._scope(item.schedule),
            )
            if run_id is None:
                continue  # another tick has this (job, slot)
            sub = _Planned(item.record, item.schedule, when, "scheduled", run_id)
            spec = self._spec(sub)
            if isinstance(spec, str):
                self.store.finish(run_id, "failed", now=time.time(), error=spec)
                report.rows.append(TickRow(name, "failed", when, detail=spec))
                self._conclude_unstarted(sub)
            elif item.schedule.background:
                self._start_background([(sub, spec)], report)
            elif not self._run_foreground(sub, spec, report):
                break
        for (name, why), slots in skipped.items():
            if slots:
                detail = why if len(slots) > 1 else f"{why} ({fmt_slot(slots[0], zone)})"
                report.rows.append(_summary_row(name, "skipped", slots, zone, detail))

    def _start_background(self, background: list[tuple[_Planned, RunSpec]], report: TickReport) -> None:
        if stop_requested():
            for item, _spec in background:
                why = f"not started: {STOP.who} was asked to stop"
                self.store.finish(item.run_id, "skipped", now=time.time(), error=why)
                report.rows.append(TickRow(item.record.name, "skipped", item.slot, detail=why))
                self._conclude_unstarted(item)
            return
        runs = [
            (item.record, self._hook_plugins(item.record), spec.timeout or PLUGIN_LOAD_LIMIT)
            for item, spec in background
        ]
        self.store.close()  # no SQLite connection may cross the forks
        try:
            started = start_detached(
                [spec for _item, spec in background],
                self._open_store,
                grace=self.config.grace,
                prepare=partial(preload_runs, self.config, runs),
            )
        finally:
            with contextlib.suppress(StateError):  # lost: reported at the end of the tick
                self.store = self._open_store()
        now = time.time()
        if self._lost:
            for (item, _spec), detached in zip(background, started, strict=True):
                detail = (
                    f"in background, pid {detached.pid}" if detached.pid else f"not started: {detached.error}"
                )
                state = "started" if detached.pid else "failed"
                report.rows.append(
                    TickRow(item.record.name, state, item.slot, detail=detail, background=True)
                )
            return
        self.store.hand_over(
            {item.run_id: d.pid for (item, _spec), d in zip(background, started, strict=True) if d.pid},
            now=now,
        )
        for (item, _spec), detached in zip(background, started, strict=True):
            name, nxt = item.record.name, next_due(item.schedule, self.slot)
            if detached.pid is not None:
                state, detail = "started", f"in background, pid {detached.pid}"
            else:
                state, detail = ("pending" if detached.leave else "failed"), f"not started: {detached.error}"
                if not detached.leave:
                    self.store.finish(item.run_id, "failed", now=now, error=detail)
                    self._conclude_unstarted(item)
            report.rows.append(TickRow(name, state, item.slot, next_run=nxt, detail=detail, background=True))

    def _conclude_unstarted(self, item: _Planned) -> None:
        """``after_run`` for a run the tick recorded without starting it: the concluder's business."""
        self._recorded.append(item.run_id)


def set_output_file(spec: RunSpec, schedule: Schedule, root: Path) -> str | None:
    """``send_output_to`` / ``append_output_to``: the file, relative to the project root; why the run must not
    start when the path is unsafe (a FIFO, another user's link or directory, inside the state directory)."""
    if schedule.output_to is not None:
        path, append = schedule.output_to
        spec.output_to = root / Path(path).expanduser()
        spec.output_append = append
        problem = output_file_problem(spec.output_to, spec.state_dir)
        if problem is not None:
            return f"not started: {problem}"
    return None


def _fingerprint(schedule: Mapping[str, Any]) -> int:
    """A short checksum of a stored schedule definition: a host's progress through a changed one is void."""
    import json  # lazy: only icc scan's records
    import zlib  # lazy: as above

    return zlib.crc32(json.dumps(schedule, sort_keys=True).encode())


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def _summary_row(name: str, outcome: str, slots: list[int], zone: str, detail: str = "") -> TickRow:
    """One table row for many recorded slots of a job (an hour of missed minutes is one line, not sixty)."""
    if len(slots) > 1:
        from icc.slots import fmt_slot  # lazy: only to word a summary row

        span = f"{len(slots)} slots, {fmt_slot(slots[0], zone)} to {fmt_slot(slots[-1], zone)}"
        detail = f"{detail}; {span}" if detail else span
    return TickRow(name, outcome, slots[-1], detail=detail)


def _bind(job: Job, ctx: Any) -> Callable[[], object]:
    task = job.task
    assert callable(task)
    given = job.schedule.call_args
    if given is not None:  # args(): the task gets them, as JSON gives them back, instead of the context
        args, kwargs = given
        return lambda: task(*args, **kwargs)
    if job.takes_context():
        return lambda: task(ctx)
    return task


def manual_run(
    config: Config, name: str, *, echo: Callable[[bytes], None] | None = None
) -> tuple[TickRow, int]:
    """``icc exec JOB``: run one job now in the foreground, recorded as a manual run; ``echo`` gets its output
    as it arrives."""
    from icc.errors import JobNotFoundError  # lazy: icc exec only
    from icc.plugins import load_plugins  # lazy: icc exec only: the plugin host
    from icc.schedule import Schedule  # lazy: icc exec only

    store = open_store(config)
    record = store.job(name)
    host = load_plugins(config)
    live = host.collect_jobs()
    job = live.get(name)
    if job is None and name in host.left_out:
        from icc.errors import PluginError  # lazy: only when the job is not found

        raise PluginError(host.left_out[name])
    if job is None and (record is None or record.kind != "command"):
        known = ", ".join(sorted(set(live) | {r.name for r in store.jobs()})) or "none"
        raise JobNotFoundError(f"no job named {name!r}; known jobs: {known}")
    run_id = store.start_manual(name, pid=os.getpid(), host=run_host(config))
    if job is None:
        assert record is not None
        job = standin_job(record)  # a command job whose plugin no longer loads: run from its record
        schedule = Schedule.from_definition(record.definition["schedule"])
    else:
        schedule = job.schedule
    ctx = run_context(name, run_id, None, "manual", schedule.zone, config.environment)
    spec = RunSpec(
        job=name,
        run_id=run_id,
        timeout=schedule.timeout_seconds,
        overlapping=schedule.overlapping,
        cwd=config.root,
        config_path=config.path,
        state_dir=config.state_dir,
        output_limit=config.output_limit,
        echo=echo,
        title_suffix=" (manual)",
    )
    if (problem := set_output_file(spec, schedule, config.root)) is not None:
        store.finish(run_id, "failed", now=time.time(), error=problem)
        store.close()
        return TickRow(name, "failed", None, detail=problem), run_id
    spec.before, spec.after = bounded_observers(host, job, ctx, config, spec)
    if job.kind == "command":
        spec.argv = job.argv
    else:
        spec.func = _bind(job, ctx)
    from icc.supervise.supervisor import install_stop_handlers  # lazy: icc exec only

    install_stop_handlers()
    result = supervise(store, spec, grace=config.grace)
    store.close()
    row = TickRow(name, result.outcome, None, duration=result.duration, detail=result.error or "")
    return row, run_id


def record_definition(job: Job) -> dict[str, Any]:
    """What the state store keeps of a job: enough to schedule it, and to run a command, without plugins."""
    definition: dict[str, Any] = {"schedule": job.schedule.definition(), "description": job.description}
    from icc.cron import compiled_form  # lazy: icc scan's records only

    compiled = compiled_form(job.schedule.time_rule)
    if compiled is not None:
        # The masks a fresh tick tests instead of parsing the expression (scan ignores this key when it compares).
        definition["compiled"] = compiled
    if job.kind == "command":
        definition["argv"] = job.argv
    else:
        from icc.jobs import default_name  # lazy: only a job without a name

        definition["target"] = default_name(job.task)  # type: ignore[arg-type]
    return definition


def job_records(jobs: dict[str, Job], skip: Collection[str] = ()) -> list[JobRecord]:
    """Records for the state store; ``next_due`` 0 makes the next tick evaluate them from its own slot. Each
    definition keeps the job's declaration ``order``: the tick runs foreground jobs in it without plugins.
    ``skip``: plugins whose jobs need no record (their digest did not change), their order counted still."""
    return [
        JobRecord(
            name=job.name,
            kind=job.kind,
            definition={**record_definition(job), "order": index},
            plugin=job.provenance.plugin,
            distribution=job.provenance.distribution,
            version=job.provenance.version,
            next_due=NOT_EVALUATED,
        )
        for index, job in enumerate(jobs.values())
        if job.provenance.plugin not in skip
    ]


SCAN_DIGESTS_META_KEY = "scan_digests"  # {plugin: plugin_digests()} as the last scan stored its jobs


def plugin_digests(jobs: dict[str, Job]) -> dict[str, str]:
    """A digest per plugin of everything :func:`job_records` stores of its jobs (their declaration order too),
    with the icc version and the code that makes a record from a schedule: a scan whose digest of a plugin
    equals the stored one builds no record for its jobs and leaves their rows as they are (issue 17: 10,000
    jobs, nothing changed). A schedule counts by :meth:`icc.schedule.Schedule.digest_state`, which makes its
    definition; the compiled masks follow from the definition and the code."""
    import hashlib  # lazy: scan's alone (OpenSSL's load is a due tick's import time)
    import marshal  # lazy: scan's alone

    from icc.jobs import default_name  # lazy: scan's alone

    items: dict[str, list[tuple[Any, ...]]] = {}
    names: dict[int, str] = {}  # default_name by the task's id: many jobs share a task (all alive meanwhile)
    for index, job in enumerate(jobs.values()):
        p = job.provenance
        if job.kind == "command":
            task: Any = job.argv
        else:
            task = names.get(id(job.task))
            if task is None:
                task = names[id(job.task)] = default_name(job.task)  # type: ignore[arg-type]
        item = (
            index,
            job.name,
            task,
            job.description,
            p.distribution,
            p.version,
            job.schedule.digest_state(),
        )
        items.setdefault(p.plugin, []).append(item)
    code = _record_code_stamp()
    digests = {}
    for plugin, listed in items.items():
        # marshal's bytes (format 2: no back-references, so equal values give equal bytes) are three times
        # quicker than JSON's; nothing is ever loaded from them. A value marshal refuses (an int subclass in
        # args()) goes through JSON instead.
        try:
            data = marshal.dumps(listed, 2)
        except ValueError:
            import json  # lazy: scan's alone, and rare

            data = json.dumps(listed, sort_keys=True, default=repr).encode()
        digests[plugin] = hashlib.sha256(code + data).hexdigest()
    return digests


def _record_code_stamp() -> bytes:
    """The icc version and the modification times of the modules that turn a schedule into its stored record:
    an icc changed in place (an editable install) without a new version makes every plugin's digest new."""
    import sys  # lazy: scan's alone

    from icc._version import __version__  # lazy: scan's alone

    stamp = [__version__]
    for module in ("icc.schedule", "icc.cron", "icc.jobs", __name__):
        path = getattr(sys.modules.get(module), "__file__", None)
        try:
            stamp.append(str(os.stat(path).st_mtime_ns) if path else "-")
        except OSError:
            stamp.append("-")
    return " ".join(stamp).encode()
