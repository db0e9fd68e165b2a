"""Background runs in the light minute: ``icc run --quiet`` starts the minute's ``in_background()`` jobs that
the last ``icc scan`` vouched for (:func:`icc.tick.plain.scan_rows`, rows with ``background = 1``) without the
coordinator, click, pluggy or the configuration loader, in one detached supervisor for all of them.

1. **Vouched at scan**: a background job qualifies under the plain jobs' rules (nothing around its task),
   except that it is ``in_background()`` and its task need not be a module-level function: the supervisor
   finds it by name by calling the plugin module's own ``schedule`` function, as the full path's preload
   (:func:`icc.tick.coordinator.preload_runs`) calls the plugin's ``schedule`` hook for the jobs of its runs.
   So the plugin's hook must be callable as pluggy calls it: a function of the plugin module, marked by
   ``icc.hookimpl`` with no wrapper option, taking ``scheduler`` (or nothing).
2. **The light tick** claims the background runs with the minute's other runs in its one transaction (their
   next slots from :mod:`icc.tick.ahead`'s precomputed lists), then :func:`start` forks one detached
   supervisor for all of them (:func:`icc.supervise.process.detach`: an intermediate in a session apart forks
   it and exits), waits for its pid and hands the runs over to it (``running``, that pid), as the full tick
   hands a run to each of its supervisors. One that exited before reporting: its runs are recorded failed
   ("not started: its supervisor exited before starting the run").
3. **The supervisor** imports each plugin once and calls its ``schedule`` function with a light scheduler
   (:class:`_Scheduler`: it keeps the tasks of the runs' jobs by name, records every other call; anything
   it cannot answer as :class:`icc.jobs.Scheduler` would makes it call the hook again with the real
   scheduler), bounded as the full path bounds a run's plugin load (each run's timeout, or
   ``PLUGIN_LOAD_LIMIT``, SIGALRM) and guarded against ``os._exit``: a plugin that raises, hangs or exits at
   import or in ``schedule`` fails only its own runs, each with the full path's error. Then
   ``gc.freeze()``, and per run, in the full tick's order: the job lock (unless overlapping; held: skipped,
   as on the full path), the task forked into a session of its own (:func:`icc.supervise.process.run_child`,
   in the run's context: the project root, ``ICC_CONFIG``; title ``icc: job NAME (slot HH:MM)``), and the
   run recorded ``running`` with both pids before the next fork. It then watches all of its tasks in one
   loop, one ``select`` over all their descriptors (:func:`icc.supervise.process.watch_all`): output,
   timeouts (SIGTERM to the task's group, SIGKILL after ``grace``), a stop (SIGTERM/SIGINT: passed on to
   every task's group, the runs not started yet recorded skipped, "its background supervisor received
   SIGTERM"), recording each run as its task ends by :func:`icc.supervise.process.task_outcome`'s rules.
4. **Run hooks that act** (:func:`icc.tick.light.run_hooks`): called as the foreground supervisor calls them
   (:mod:`icc.tick.plain`), with the same objects. Declared episodes (:class:`icc.tick.light.Hooks`): after
   each run is recorded, its hooks loaded and called when it calls for them. Otherwise (a ``before_run`` acts):
   each run's plugins loaded before any task is forked (:func:`_observe`; a run whose plugins do not load
   within its timeout fails, its task not started), then, with the job locks, every run's ``before``
   observers, then the forks: no task runs unwatched while an observer runs. ``after`` observers
   (:func:`_after`) are called in the watch loop as each run is recorded, so they hold up the other tasks'
   watching (their output waits in its pipe, their time limits are checked late) by at most what the bounded
   observers take.

One supervisor per minute rather than one per run: each process forked costs a few milliseconds of CPU
(copy-on-write page faults of the process it was forked from), and twenty of them on two cores were what
kept the twenty tasks from starting soon (docs/operations.md, the light minute). A ``kill -9`` of the
supervisor leaves its runs ``running`` with a dead pid: the next tick is a full one (runs are unfinished)
and records each ``abandoned``, killing its task's process group, as for any supervisor. Between a task's
fork and its ``running`` record (one short write) the task has no pid recorded, as on the full path.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time

from icc.errors import ExitGuard, plugin_failure
from icc.supervise.process import (
    OutputKeeper,
    Watch,
    detach,
    enter_run_context,
    kill_group,
    run_child,
    signal_name,
    task_outcome,
    title_setter,
    watch_all,
    within,
)
from icc.tick import light
from icc.tick.ahead import _connect, _write
from icc.tick.plain import PLUGIN_LOAD_LIMIT, PlainRun, _job_lock, _Tick, _untitled, plan
from icc.tick.plain import start as start_plain

TYPE_CHECKING = False  # not typing's: the light minute does not import typing
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    from icc.supervise.observers import RunHooks

WHO = "its background supervisor"
STOPPED_TICK = "not started: icc run was asked to stop"  # the full tick's words (icc.tick.coordinator)  # as the full path's background supervisor names itself in a run's error
# icc.schedule.FLUENT_METHODS (tests/tick/test_light_background.py pins it): the Schedule methods that return
# the schedule, recorded by the light scheduler; anything else read from a schedule takes the real one.
FLUENT = frozenset(
    [
        "cron",
        "set_minute",
        "set_hour",
        "set_day",
        "set_month",
        "set_day_of_week",
        "set_year",
        "every_minute",
        "every_minutes",
        "every_hour",
        "every_hours",
        "daily",
        "weekly",
        "monthly",
        "yearly",
        "at",
        "on",
        "on_mondays",
        "on_tuesdays",
        "on_wednesdays",
        "on_thursdays",
        "on_fridays",
        "on_saturdays",
        "on_sundays",
        "on_weekdays",
        "on_weekends",
        "between",
        "timezone",
        "environments",
        "when",
        "skip",
        "every",
        "starting",
        "once",
        "unless_between",
        "args",
        "in_background",
        "without_overlapping",
        "allow_overlapping",
        "timeout",
        "every_seconds",
        "every_second",
        "jitter",
        "missed_window",
        "missed",
        "even_when_paused",
        "on_each_host",
        "email_output_to",
        "email_output_on_failure",
        "ping_before",
        "then_ping",
        "ping_on_success",
        "ping_on_failure",
        "without_pings",
        "notify_on_failure",
        "expect_success_within",
        "before",
        "after",
        "on_success",
        "on_failure",
        "send_output_to",
        "append_output_to",
    ]
)


def try_minute(config_path: str | None, slot: int, state_dir: str, db_path: str) -> int | None:
    """Exit code of a light minute whose due jobs are plain foreground or background jobs and/or the
    consumer jobs, or None when the full tick must run it (:func:`icc.tick.plain.try_minute`, with the
    background runs started here)."""
    return light.try_light_minute(config_path, slot, state_dir, db_path, None, MINUTE)


# --- the light tick's side -------------------------------------------------------------------------------


def start(runs: list[PlainRun], settings: light._Settings, state_dir: str, db_path: str) -> None:
    """In the light tick, which holds no connection now: fork the runs' one detached supervisor and hand the
    runs over to it (``running`` with its pid), or record them failed when it exited before it reported."""
    if not runs:
        return
    if _Tick.signum:  # icc run was asked to stop before it started them: as the full tick records them
        db = _connect(db_path)
        try:
            for run in runs:
                light._finish(db, run.run_id, "skipped", time.time(), None, "", STOPPED_TICK)
        finally:
            db.close()
        return
    (pid,) = detach([lambda: _supervisor(runs, settings, state_dir, db_path)], light.REPORT_TIMEOUT)
    if pid is None:
        return  # it did not report in time: it may still start them; if not, the next tick abandons them
    now = time.time()
    db = _connect(db_path)
    try:
        if pid:
            _write(
                db,
                "UPDATE runs SET outcome = 'running', pid = ?, started_at = ? WHERE id = ? AND outcome = 'pending'",
                [(pid, now, run.run_id) for run in runs],
            )
        else:
            why = "not started: its supervisor exited before starting the run"
            for run in runs:
                light._finish(db, run.run_id, "failed", now, None, "", why)
    finally:
        db.close()


MINUTE = light.Plain(plan, start_plain, start)


# --- the supervisor --------------------------------------------------------------------------------------


class _Stop:
    signum = 0
    tasks: list[int] = []


def _on_stop(signum: int, _frame: object) -> None:
    first = _Stop.signum == 0
    _Stop.signum = signum
    if first:
        for pid in _Stop.tasks:
            kill_group(pid, signal.SIGTERM)


class _Running:
    """One started run: its task's watch and what its record needs."""

    def __init__(
        self,
        run: PlainRun,
        watch: Watch,
        keeper: OutputKeeper,
        error_r: int,
        lock: int | None,
        observed: RunHooks | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self.run = run
        self.watch = watch
        self.keeper = keeper
        self.error_r = error_r
        self.lock = lock
        self.observed = observed
        self.notes = [] if notes is None else notes


def _supervisor(runs: list[PlainRun], settings: light._Settings, state_dir: str, db_path: str) -> None:
    """In the detached supervisor (its pid reported, its stdio on /dev/null): load, start, watch, record.
    Its connection is never closed (it ends with ``os._exit``): no close checkpoints the WAL meanwhile."""
    signal.signal(signal.SIGTERM, _on_stop)
    signal.signal(signal.SIGINT, _on_stop)
    title = title_setter() or _untitled
    title(f"icc: supervise {len(runs)} background runs")
    root = os.path.dirname(settings.path) if settings.path is not None else os.getcwd()
    enter_run_context(root, settings.path)  # a plugin's import-time code sees the run's context too
    if root not in sys.path and any(run.source == "local" for run in runs):
        sys.path.insert(0, root)  # local plugins, as icc.plugins.load_only loads them
    tasks = _load(runs, settings)
    db = _connect(db_path)
    hooks = light.run_hooks(db, settings)  # None: no plugin's run hooks can act (nothing more is loaded)
    observed = _observe(db, runs, tasks, hooks)
    gc.freeze()  # the tasks' collections never walk (and so copy) what they share from here
    subreaper = _subreaper()  # a task that daemonizes cannot escape: adopted here, ended below
    ready: list[tuple[PlainRun, Callable[[], object], int | None, RunHooks | None, list[str]]] = []
    for run in runs:
        seen = observed.get(run.run_id)
        if isinstance(seen, str):
            continue  # its plugins did not load: recorded failed, its task not started
        notes: list[str] = []
        task = tasks[run.name]
        taken: int | str | None = None
        if _Stop.signum:
            why = f"not started: {WHO} received {signal_name(_Stop.signum)}"
            light._finish(db, run.run_id, "skipped", time.time(), None, "", why)
        elif isinstance(task, str):
            light._finish(db, run.run_id, "failed", time.time(), None, "", task)
        elif not run.overlapping and isinstance(taken := _job_lock(db, run, settings, state_dir), str):
            pass  # recorded skipped (the previous run holds it) or failed (a broken lock file)
        else:
            if seen is not None:
                notes += seen.before()
            ready.append((run, task, None if isinstance(taken, str) else taken, seen, notes))
            continue
        _after(db, run, hooks, seen, notes)  # recorded without its task: its after observers all the same
    started: list[_Running] = []
    # The descriptors a task must not inherit: the job locks, earlier tasks' pipes. Every run's before
    # observers were called before any task is forked: no task runs unwatched meanwhile.
    held = [lock for _, _, lock, _, _ in ready if lock is not None]
    for run, task, lock, seen, notes in ready:
        if _Stop.signum:  # stopped meanwhile
            if lock is not None:
                os.close(lock)
                held.remove(lock)
            why = f"not started: {WHO} received {signal_name(_Stop.signum)}"
            light._finish(db, run.run_id, "skipped", time.time(), None, "", why)
            _after(db, run, hooks, seen, notes)
            continue
        started.append(_fork(db, run, task, settings, lock, title, held, seen, notes))
    if started:
        _watch(db, started, settings, hooks)
    if hooks is not None:
        hooks.close()
    if subreaper:
        from icc.supervise.supervisor import _end_leftovers, _has_children  # lazy: once all its runs ended

        if _has_children():
            _end_leftovers(set())


def _observe(
    db: sqlite3.Connection,
    runs: list[PlainRun],
    tasks: dict[str, Callable[[], object] | str],
    hooks: light.Hooks | None,
) -> dict[int, RunHooks | str]:
    """When the run hooks can act and are not declared (``before_run`` acts: :class:`icc.tick.light.Hooks`),
    each run's observers, loaded before any task is forked as the full tick's supervisor loads them (within
    the run's timeout: :meth:`icc.tick.light.Hooks.observe`); a run whose plugins did not load is recorded
    failed (its task not started)."""
    if hooks is None or hooks.episodes is not None:
        return {}
    observed: dict[int, RunHooks | str] = {}
    for run in runs:
        if _Stop.signum:
            break  # the rest are recorded skipped, their hooks not loaded
        seen = hooks.observe(run.run_id, run.timeout, told=run.plugin)
        if isinstance(seen, str):
            light._finish(db, run.run_id, "failed", time.time(), None, "", seen)
        observed[run.run_id] = seen
    return observed


def _after(
    db: sqlite3.Connection,
    run: PlainRun,
    hooks: light.Hooks | None,
    seen: RunHooks | None,
    notes: list[str],
) -> None:
    """Run ``run`` is recorded: its ``after`` observers, as :func:`icc.tick.plain._hooked` and the episodes'
    :meth:`icc.tick.light.Hooks.after` call them in the foreground supervisor."""
    if seen is not None:
        seen.conclude(notes)
    elif hooks is not None and hooks.episodes is not None:
        hooks.after(db, run.run_id, run.name, run.timeout)


def _watch(
    db: sqlite3.Connection, started: list[_Running], settings: light._Settings, hooks: light.Hooks | None
) -> None:
    """Watch the started runs' tasks in one loop, recording each run as its task ends, then calling its
    ``after`` observers (bounded: they hold up the other tasks' watching at most that long)."""
    by_watch = {id(r.watch): r for r in started}
    passed_on: set[int] = set()

    def stopping(watch: Watch, now: float) -> None:
        if _Stop.signum and watch.pid not in passed_on:  # its handler sent SIGTERM to the task's group
            passed_on.add(watch.pid)
            watch.stop(now, settings.grace, send=False)

    def ended(watch: Watch) -> None:
        running = by_watch[id(watch)]
        _record(db, running)
        _after(db, running.run, hooks, running.observed, running.notes)

    # A stop wakes the loop at once (its handler's SIGTERM may reach a task before the task's own handlers
    # are set: the loop then sends SIGKILL after the grace).
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    watch_all([r.watch for r in started], ended, stopping, wake_r)


def _subreaper() -> bool:
    """Linux: make this process a child subreaper, as each of the full path's supervisors is for its run
    (:func:`icc.supervise.supervisor.set_child_subreaper`); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes  # lazy: Linux only, for prctl

        return bool(ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError, ImportError):
        return False


PR_SET_CHILD_SUBREAPER = 36  # icc.supervise.supervisor's


def _fork(
    db: sqlite3.Connection,
    run: PlainRun,
    task: Callable[[], object],
    settings: light._Settings,
    lock: int | None,
    title: Callable[[str], None],
    held: list[int],
    observed: RunHooks | None = None,
    notes: list[str] | None = None,
) -> _Running:
    """Fork the run's task and record it ``running`` with both pids; its output after what its ``before``
    observers printed (``observed``)."""
    out_r, out_w = os.pipe()
    error_r, error_w = os.pipe()
    os.set_blocking(error_r, False)  # read once the task is gone; a daemonized grandchild may hold it open
    close = (out_r, error_r, *held)  # held: its own job lock too
    started = time.time()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the task never returns
        run_child(task, out_w, close, error_w, enter=lambda: title(run.title))
    os.close(out_w)
    os.close(error_w)
    _Stop.tasks.append(pid)
    if _Stop.signum:  # a signal between the check and the fork
        kill_group(pid, signal.SIGTERM)
    _write(
        db,
        "UPDATE runs SET outcome = 'running', pid = ?, task_pid = ?, started_at = ? "
        "WHERE id = ? AND outcome IN ('pending', 'running')",
        [(os.getpid(), pid, started, run.run_id)],
    )
    held += [out_r, error_r]
    keeper = OutputKeeper(int(settings.core["output_limit"]))  # type: ignore[call-overload]
    if observed is not None and observed.preamble:
        keeper.add(observed.preamble)
    deadline = None if run.timeout is None else started + run.timeout
    watch = Watch(pid, out_r, keeper.add, deadline=deadline, grace=settings.grace)
    return _Running(run, watch, keeper, error_r, lock, observed, notes)


def _record(db: sqlite3.Connection, running: _Running) -> None:
    """The task ended: what it left in its group goes with it, its lock is released, the run recorded."""
    watch, run = running.watch, running.run
    ended = time.time()
    kill_group(watch.pid, signal.SIGKILL)
    os.close(watch.read_fd)
    if running.lock is not None:
        os.close(running.lock)
    try:
        raised = os.read(running.error_r, 4096).decode("utf-8", errors="replace").strip() or None
    except OSError:
        raised = None
    finally:
        os.close(running.error_r)
    stopped = f"stopped: {WHO} received {signal_name(_Stop.signum)}" if _Stop.signum else None
    assert watch.status is not None
    outcome, exit_code, error = task_outcome(
        watch.status, timed_out=watch.timed_out, timeout=run.timeout, stopped=stopped, raised=raised
    )
    light._finish(db, run.run_id, outcome, ended, exit_code, running.keeper.text(), error)


# --- loading the plugins ---------------------------------------------------------------------------------


def _load(runs: list[PlainRun], settings: light._Settings) -> dict[str, Callable[[], object] | str]:
    """Each run's task, or the error its run fails with (the full path's words), each plugin loaded once."""
    groups: dict[str, list[PlainRun]] = {}
    for run in runs:
        groups.setdefault(run.plugin, []).append(run)
    zone = os.environ.get("ICC_TIMEZONE", "").strip() or str(settings.table.get("timezone", "UTC")).strip()
    environment = (
        os.environ.get("ICC_ENVIRONMENT", "").strip()
        or str(settings.table.get("environment", "production")).strip()
    )
    found: dict[str, Callable[[], object] | str] = {}
    for plugin, its_runs in groups.items():
        # The longest of the runs' limits bounds the load; a run whose own limit it passed fails as its own
        # supervisor's load would have (the full path loads for each run within its own limit).
        limits = {run.name: run.timeout or PLUGIN_LOAD_LIMIT for run in its_runs}
        began = time.monotonic()
        tasks, problem, loaded = _load_plugin(
            plugin, its_runs[0].module, set(limits), max(limits.values()), zone, environment
        )
        took = time.monotonic() - began
        for run in its_runs:
            limit = limits[run.name]
            if not loaded or took > limit:
                found[run.name] = (
                    f"its plugins did not load within {limit:g}s (an import hangs?); the task was not started. "
                    "Run `icc scan` to see which plugin"
                )
            elif problem is not None:
                found[run.name] = (
                    f"job {run.name!r} could not be loaded from its plugin ({plugin}: {problem}); run `icc scan`"
                )
            elif run.name not in tasks:
                found[run.name] = (
                    f"job {run.name!r} could not be loaded from its plugin (it is no longer defined); run `icc scan`"
                )
            else:
                found[run.name] = tasks[run.name]
    return found


def _load_plugin(
    plugin: str, module_name: str, names: set[str], limit: float, zone: str, environment: str
) -> tuple[dict[str, Callable[[], object]], str | None, bool]:
    """Import the plugin module and call its ``schedule`` function for the jobs ``names``, within ``limit``
    seconds, ``os._exit`` guarded: (tasks by job name, the plugin's failure as the full path describes it,
    whether it loaded within the limit)."""
    tasks: dict[str, Callable[[], object]] = {}

    def work() -> None:
        __import__(module_name)
        hook = sys.modules[module_name].schedule
        scheduler = _Scheduler(frozenset(names), zone, environment)
        try:
            hook(scheduler) if hook.__code__.co_argcount else hook()
        except _Unsure:  # it asked the scheduler for more than the light one answers: the real one
            from icc.jobs import Provenance, Scheduler  # lazy: only a hook that needs the real scheduler

            real = Scheduler(
                timezone=zone, environment=environment, provenance=Provenance(plugin), only=frozenset(names)
            )
            hook(real) if hook.__code__.co_argcount else hook()
            scheduler.tasks = {n: job.task for n, job in real.jobs.items() if callable(job.task)}
        tasks.update(scheduler.tasks)

    problem: str | None = None
    loaded = True
    try:
        with ExitGuard():  # icc.plugins' guard: a plugin's os._exit() fails it, not us
            loaded = within(limit, work)
    except BaseException as exc:  # as icc.plugins describes a plugin's failure
        problem = plugin_failure(exc)
    return tasks, problem, loaded


class _Unsure(BaseException):
    """The light scheduler was asked something only the real one answers."""


def default_name(task: object) -> str:
    """:func:`icc.jobs.default_name` (pinned by tests/tick/test_light_background.py)."""
    qualname = getattr(task, "__qualname__", None)
    if not isinstance(qualname, str):
        task = type(task)
        qualname = task.__qualname__
    module = getattr(task, "__module__", None) or "unknown"
    return f"{module}:{qualname}"


class _Scheduler:
    """What a plugin's ``schedule`` hook gets in the background supervisor: :class:`icc.jobs.Scheduler` with
    ``only`` (the runs' jobs), keeping only each wanted job's task. Every schedule it returns records fluent
    calls and nothing else; a question it cannot answer raises :class:`_Unsure` (the real scheduler then)."""

    def __init__(self, names: frozenset[str], timezone: str, environment: str) -> None:
        self.timezone = timezone
        self.environment = environment
        self.names = names
        self.tasks: dict[str, Callable[[], object]] = {}

    def add(self, task: object, *, name: str | None = None, description: str | None = None) -> _Schedule:
        wanted = name or (default_name(task) if callable(task) else None)
        if wanted in self.names:
            if not callable(task) or wanted in self.tasks:
                raise _Unsure  # the real scheduler says what is wrong
            self.tasks[wanted] = task
        return _Schedule()

    def command(self, *_args: object, **_options: object) -> _Schedule:
        return _Schedule()  # a command job: never one of the runs' (callable) jobs

    def __getattr__(self, name: str) -> object:
        raise _Unsure(name)


class _Schedule:
    __slots__ = ()

    def __getattr__(self, name: str) -> Callable[..., _Schedule]:
        if name not in FLUENT:
            raise _Unsure(name)
        return self._fluent

    def _fluent(self, *_args: object, **_kwargs: object) -> _Schedule:
        return self
