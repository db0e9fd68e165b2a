"""One tick of ``icc run``: capture the slot, claim what is due, run it, record it.

Order of a tick:

1. Capture the slot (the minute the tick started in) once.
2. Take the tick lock without waiting; if another tick holds it, say who and stop (exit 0).
3. Under the tick lock: record runs whose supervisor died as ``abandoned``; evaluate every job's due slots
   from its stored definition (no plugin import), apply its ``missed`` policy to slots missed since its last
   evaluation (within ``missed_window``); claim every (job, slot) in the state store; store each job's next slot and the
   watermark (the slot they were computed from). They are a cache for ticks at that slot or later: a tick at
   an earlier slot (the clock went back, or an earlier ``--at``) evaluates from its own slot, as if every job
   were new, and saves the cache from there; the claims still keep it from running a (job, slot) twice, and the
   ``missed``/``skipped`` rows the later tick wrote from that slot on are deleted (nothing ran for those slots).
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
   ends; an offset whose time passed while the tick was busy is recorded ``skipped``, never started late.

A tick for an instant given with ``--at`` (``realtime`` False) never sleeps: jitter is not waited for and every
offset of the minute is run at once, in order.

A tick refuses a state store that was never scanned (or is gone), and checks before each run and at its end
that the database file is still the one it opened: when it was deleted or replaced, it starts nothing more and
fails naming every claimed run and whether it ran, since none of that can be recorded.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icc import hostclock
from icc.errors import IccError, StateError
from icc.execution import (
    RunSpec,
    conclude,
    enter_run_context,
    run_bounded,
    run_in_supervisor,
    sleep_until,
    spawn_detached,
    start_detached,
    stop_requested,
    supervise,
)
from icc.locks import Holder, job_lock, pid_alive, tick_lock
from icc.state.base import FAILURES, Claim, JobRecord, RunKind, RunRecord, StateStore
from icc.state.dirs import state_dir_problem
from icc.state.sqlite import FILENAME, SQLiteStateStore
from icc.stores import open_store, store_label

if TYPE_CHECKING:
    from icc.config import Config
    from icc.jobs import Job, RunContext, RunResult
    from icc.leases import Leases
    from icc.plugins import PluginHost
    from icc.schedule import Schedule
    from icc.state.base import Outcome
    from icc.state.pause import Pause


NOT_EVALUATED = 0  # next_due of a job no tick has evaluated yet
LATE_OFFSET = 1.0  # seconds: a sub-minute offset the tick reaches this late (its second is over) is skipped


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


def run_host(config: Config) -> str:
    """The host runs are recorded under: with a shared store this host's ``host_id`` (containers share hostnames,
    and a tick judges only its own host's runs dead), else the hostname."""
    if config.store.url is not None:
        from icc.stores import host_id

        return host_id(config)
    return socket.gethostname()


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


def standin_job(record: JobRecord) -> Job:
    """A job whose plugin no longer loads, as the run hooks see it: built from its stored definition (name,
    description, schedule without callbacks, provenance); calling its task raises :class:`icc.PluginError`."""
    from icc.jobs import Job, Provenance
    from icc.schedule import Schedule

    def unloadable() -> None:
        from icc.errors import PluginError

        raise PluginError(f"job {record.name!r} could not be loaded from its plugin {record.plugin!r}")

    task: Any = tuple(record.definition["argv"]) if record.kind == "command" else unloadable
    return Job(
        record.name,
        task,
        Schedule.from_definition(record.definition["schedule"]),
        record.definition.get("description"),
        Provenance(record.plugin, record.distribution, record.version),
    )


def _callback_name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def bounded_observers(
    host: PluginHost | None, job: Job, ctx: RunContext, config: Config, spec: RunSpec
) -> tuple[Callable[[], list[str]], Callable[[RunResult], list[str]]]:
    """The ``before`` and ``after`` of a run, for its supervisor: the job's own callbacks, then every plugin's
    ``before_run`` / ``after_run``, each in a child process of its own, in the project root with ``ICC_CONFIG``,
    for at most ``callback_timeout`` seconds, its output collected into ``spec.preamble`` (stored with the run).
    Each returns a line per callback or hook that raised, exited or was killed; none of them changes the run."""
    schedule = job.schedule

    def bounded(label: str, title: str, fn: Callable[[], object]) -> list[str]:
        done = run_bounded(
            label,
            fn,
            limit=config.callback_timeout,
            output=spec.preamble,
            cwd=config.root,
            config_path=config.path,
            title=f"icc: {title} {job.name}{spec.title_suffix}",
        )
        return [done.note] if done.note else []

    def callbacks(which: str, arg: object) -> list[str]:
        return [
            note
            for fn in schedule.run_callbacks(which)
            for note in bounded(
                f"{which} callback {_callback_name(fn)}", f"callback {which}", partial(fn, arg)
            )
        ]

    def hooks(hook: str, **kwargs: object) -> list[str]:
        if host is None:
            return []
        return [
            note
            for plugin, call in host.hook_calls(hook)
            for note in bounded(f"{hook} hook of plugin {plugin!r}", f"hook {hook}", partial(call, **kwargs))
        ]

    def before() -> list[str]:
        return callbacks("before", ctx) + hooks("before_run", job=job, run=ctx)

    def after(result: RunResult) -> list[str]:
        which = ["after"]
        if result.outcome == "succeeded":
            which.append("on_success")
        elif result.outcome in FAILURES:
            which.append("on_failure")
        notes = [note for w in which for note in callbacks(w, result)]
        return notes + hooks("after_run", job=job, run=ctx, result=result, outcome=result.outcome)

    return before, after


PLUGIN_LOAD_LIMIT = (
    60.0  # seconds a run's supervisor waits for the plugins to load, for a job without timeout()
)
CONDITION_SAID_NO = "a when/skip condition said no"


def slot_title(slot: int | None, zone: str) -> str:
    """The tail of a run's process titles: `` (slot 03:00)`` in the job's zone, `` (manual)`` without slot."""
    if slot is None:
        return " (manual)"
    from zoneinfo import ZoneInfo

    moment = slot_datetime(slot).astimezone(ZoneInfo(zone))
    return f" (slot {moment.strftime('%H:%M:%S' if slot % 60 else '%H:%M')})"


def prepare_run(
    spec: RunSpec, config: Config, record: JobRecord, slot: int | None, kind: RunKind
) -> tuple[Outcome, str] | None:
    """In the run's supervisor, and only there: import the plugins (within the job's timeout, or
    :data:`PLUGIN_LOAD_LIMIT`), get the task, its callbacks and run hooks, and evaluate ``when()``/``skip()``,
    each predicate in a bounded child. Returns (outcome, error) when the task must not start, else None."""
    zone = record.definition["schedule"].get("zone", config.timezone)
    ctx = run_context(record.name, spec.run_id, slot, kind, zone, config.environment)
    enter_run_context(config.root, config.path)  # a plugin's import-time code sees the run's context too
    limit = spec.timeout or PLUGIN_LOAD_LIMIT
    loaded = load_within(config, limit)
    if loaded is None:  # a plugin's import hangs: this run fails, the tick and the other runs go on
        return "failed", (
            f"its plugins did not load within {limit:g}s (an import hangs?); the task was not started. "
            "Run `icc scan` to see which plugin"
        )
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


def load_within(config: Config, limit: float) -> tuple[PluginHost, dict[str, Job]] | None:
    """The plugins and their jobs, loaded in this (forked) process; None when that took longer than ``limit``
    seconds (SIGALRM interrupts an import that hangs in Python code)."""
    import signal

    from icc.plugins import load_plugins

    fired: list[bool] = []

    def on_alarm(_signum: int, _frame: object) -> None:
        fired.append(True)
        raise TimeoutError(f"loading the plugins took longer than {limit:g}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        host = load_plugins(config)
        live = host.collect_jobs()
    except TimeoutError:
        fired.append(True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # A plugin's loader records an exception as its failure: the flag says whether the limit was reached.
    return None if fired else (host, live)


def conclude_recorded(config: Config, run_ids: list[int]) -> None:
    """The concluder, a detached process forked by the tick after its writes: the callbacks and ``after_run``
    hooks of the rows the tick recorded itself (missed, skipped by a pause, abandoned, not started), each
    bounded as in a run's supervisor. Consecutive rows of one job with the same outcome and error (missed
    slots collapsed, a paused hour) make one call, for the latest row, whose ``RunResult.error`` carries the
    count: ``missed 5 slots (skip policy), 10:00 to 10:04``."""
    from icc.execution import run_result, set_title

    set_title(f"icc: conclude {len(run_ids)} recorded runs")
    enter_run_context(config.root, config.path)
    loaded = load_within(config, PLUGIN_LOAD_LIMIT)
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
    from zoneinfo import ZoneInfo

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
            f"{which}() condition {_callback_name(fn)}",
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


def run_context(
    record_name: str, run_id: int, slot: int | None, kind: RunKind, zone: str, env: str
) -> RunContext:
    """The :class:`icc.RunContext` of a run; its slot is aware, in the job's zone."""
    from zoneinfo import ZoneInfo

    from icc.jobs import RunContext

    moment = None if slot is None else slot_datetime(slot).astimezone(ZoneInfo(zone))
    return RunContext(record_name, run_id, moment, kind, env)


@dataclass
class TickRow:
    """One line of the tick's table."""

    job: str
    outcome: str
    slot: int | None
    duration: float | None = None
    next_run: int | None = None
    detail: str = ""
    background: bool = False


@dataclass
class TickReport:
    slot: int
    rows: list[TickRow] = field(default_factory=list)
    locked_out: bool = False  # another tick holds the tick lock
    held_by: Holder | None = None  # who, when its record could be read
    plugin_failures: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.outcome in ("failed", "timed_out", "stopped") for r in self.rows)


@dataclass
class _Planned:
    record: JobRecord
    schedule: Schedule
    slot: int
    kind: RunKind
    run_id: int = 0


class Tick:
    """One tick; ``run()`` does the work and returns what happened."""

    def __init__(self, config: Config, *, at: datetime | None = None, realtime: bool | None = None) -> None:
        self.config = config
        self.slot = slot_of(at or datetime.now(UTC))
        # Real time: sleep for jitter and sub-minute offsets. Default: only without ``at``.
        self.realtime = at is None if realtime is None else realtime
        self.db_path = config.state_dir / FILENAME
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
            self.store: StateStore = SQLiteStateStore(config.state_dir)
            self._identity = _file_identity(self.db_path) or (-1, -1)  # gone already: never intact
        else:
            self.store = open_store(config)
        if self.store.get_meta("plugins_fingerprint") is None:
            raise StateError(
                f"the state store {store_label(config)} was never scanned; nothing was run. "
                "Run `icc scan` to register the jobs"
            )
        self.host_name = run_host(config)
        try:  # a shared store: this host's row and its clock's offset; refused when far off (icc.hostclock)
            self.clock_offset = hostclock.check(self.store)
        except IccError:
            self.store.close()
            raise

        self._leases: Leases | None = None  # while a tick on a shared store runs its claims
        self._recorded: list[
            int
        ] = []  # runs this tick recorded itself (abandoned, missed, skipped): to report
        self._lost = False  # the database file was deleted or replaced under this tick

    def _open_store(self) -> StateStore:
        """A new connection to the store this tick opened; never to a new one made in its place."""
        if not self._store_intact():
            raise StateError(f"the state database {self.db_path} was deleted or replaced")
        return open_store(self.config)

    def _store_intact(self) -> bool:
        if self._identity is None:  # a database server: a lost connection is an error of its own
            return True
        if not self._lost and _file_identity(self.db_path) != self._identity:
            self._lost = True
        return not self._lost

    # -- the tick -------------------------------------------------------------------------------------------
    def run(self) -> TickReport:
        report = TickReport(self.slot)
        lock = tick_lock(self.config.state_dir)
        if not lock.try_acquire():
            report.locked_out = True
            report.held_by = lock.holder()
            return report
        try:
            self._recover_abandoned(report)
            planned = self._plan(report)
        finally:
            lock.release()
        concluded = self._spawn_concluder(0)
        self._execute(planned, report)
        if not self._store_intact():
            raise StateError(self._lost_message(planned, report))
        if planned or self._recorded:
            self.store.prune_runs(self.config.keep_runs, self.config.keep_skipped)
        self._spawn_concluder(concluded)
        return report

    def _spawn_concluder(self, since: int) -> int:
        """The callbacks and hooks of the rows this tick recorded itself, from the ``since``-th on, run by a
        detached concluder process (:func:`conclude_recorded`), never by the tick. Returns how many are done."""
        ids = self._recorded[since:]
        if not ids or not self._store_intact():
            return len(self._recorded)
        sqlite = self._identity is not None
        if sqlite:
            self.store.close()  # no SQLite connection may cross the fork
        try:
            spawn_detached(partial(conclude_recorded, self.config, ids))
        finally:
            if sqlite:
                with contextlib.suppress(StateError):  # lost: reported at the end of the tick
                    self.store = self._open_store()
        return len(self._recorded)

    def _lost_message(self, planned: list[_Planned], report: TickReport) -> str:
        from icc.ui import fmt_time

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
            self.store.finish(run.id, "abandoned", now=time.time(), error=why)
            self._recorded.append(run.id)
            report.abandoned.append(run.job)
            report.rows.append(TickRow(run.job, "abandoned", run.slot, detail=why))

    def _plan(self, report: TickReport) -> list[_Planned]:
        from icc.cron import compiled_matches
        from icc.schedule import Schedule

        watermark = self.store.get_meta("watermark")
        # The stored next slots were computed at the watermark: at an earlier slot they say nothing.
        backwards = watermark is not None and self.slot < int(watermark)
        if backwards:
            # Slots from here on that the later tick recorded missed or skipped did not run: they are due again.
            self.store.forget_unrun(self.slot)
        paused = self._paused()
        next_dues: dict[str, int | None] = {}
        due: list[tuple[JobRecord, Schedule, list[int]]] = []
        at = slot_datetime(self.slot)
        for record in self.store.jobs():
            if not record.enabled:
                continue
            compiled = record.definition.get("compiled")
            if (
                compiled is not None
                and not backwards
                and record.next_due
                and record.next_due > self.slot
                and compiled_matches(compiled, record.definition["schedule"]["zone"], at) is False
            ):
                # Not due, nothing to catch up, its next slot still stands: bit tests, no schedule built.
                next_dues[record.name] = record.next_due
                continue
            schedule = Schedule.from_definition(record.definition["schedule"])
            # next_due 0: never evaluated (new, changed or re-enabled): nothing before now counts as missed.
            start = self.slot if backwards or not record.next_due else min(record.next_due, self.slot)
            window = schedule.missed_window_minutes
            start = max(start, self.slot - (self.config.missed_window if window is None else window) * 60)
            slots = due_slots(schedule, start, self.slot)
            next_dues[record.name] = next_due(schedule, self.slot)
            if slots and schedule.check_conditions(self.config.environment):
                if paused is not None and not paused.exempts(record.name, schedule.runs_when_paused):
                    self._skip_paused(record.name, schedule, slots, report)
                    continue
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
        self.store.save_evaluation(next_dues, self.slot)
        return [p for p in planned if p.run_id]

    def _scope(self, schedule: Schedule) -> str:
        """The claim scope of a job's slots: this host for ``on_each_host()`` jobs, else the whole cluster."""
        return self.host_name if schedule.per_host else ""

    def _paused(self) -> Pause | None:
        """The pause in force at this tick's slot; one that has ended is removed (it ends by itself)."""
        from icc.state import pause

        if self.store.get_meta(pause.META_KEY) is None:
            return None
        found = pause.current(self.store, self.slot)
        if found is None:
            pause.clear_expired(self.store, self.slot)
        return found

    def _skip_paused(self, name: str, schedule: Schedule, slots: list[int], report: TickReport) -> None:
        from icc.state.pause import PAUSED_ERROR

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
    def _spec(self, item: _Planned) -> RunSpec:
        """The run's spec: what its supervisor needs to import the job's plugin and run it."""
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
        set_output_file(spec, item.schedule, self.config.root)
        spec.title_suffix = slot_title(item.slot, item.schedule.zone)
        if record.kind == "command":
            spec.argv = list(definition["argv"])
        spec.prepare = partial(prepare_run, config=self.config, record=record, slot=item.slot, kind=item.kind)
        return spec

    def _execute(self, planned: list[_Planned], report: TickReport) -> None:
        if not planned or not self._store_intact():
            return
        if self.store.lease is None:
            self._execute_planned(planned, report)
            return
        # A shared store: the leases of this tick's claims are kept while they wait for their turn.
        from icc.leases import Leases

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
        # Jittered foreground jobs in the order of their offsets (a stable sort: the others keep their order).
        foreground.sort(key=lambda pair: self._jitter(pair[0]))
        for item, spec in foreground:
            if self.realtime and (offset := self._jitter(item)) > 0:
                sleep_until(item.slot + offset)  # a stop request wakes it; the run is then recorded skipped
            if not self._run_foreground(item, spec, report):
                return
        owned = [
            item
            for item in planned
            if item.schedule.seconds is not None and item.slot == self.slot and item.kind == "scheduled"
        ]
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
        report.rows.append(
            TickRow(
                item.record.name,
                run.outcome,
                item.slot,
                duration=run.duration,
                next_run=next_due(item.schedule, self.slot),
                detail=run.error or "",
            )
        )
        return True

    def _run_offsets(self, owned: list[_Planned], report: TickReport) -> None:
        """The later offsets of the sub-minute jobs whose minute this tick owns, each claimed and started at its
        time (at once when not in real time), until the minute ends. An offset whose time passed while the tick
        was busy is recorded skipped: a sub-minute run never starts late."""
        from icc.ui import fmt_slot

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
                        "skipped: icc run was asked to stop"
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
            if item.schedule.background:
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
                why = "not started: icc run was asked to stop"
                self.store.finish(item.run_id, "skipped", now=time.time(), error=why)
                report.rows.append(TickRow(item.record.name, "skipped", item.slot, detail=why))
                self._conclude_unstarted(item)
            return
        self.store.close()  # no SQLite connection may cross the forks
        try:
            started = start_detached(
                [spec for _item, spec in background], self._open_store, grace=self.config.grace
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


def set_output_file(spec: RunSpec, schedule: Schedule, root: Path) -> None:
    """``send_output_to`` / ``append_output_to``: the file, relative to the project root."""
    if schedule.output_to is not None:
        path, append = schedule.output_to
        spec.output_to = root / Path(path).expanduser()
        spec.output_append = append


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def _summary_row(name: str, outcome: str, slots: list[int], zone: str, detail: str = "") -> TickRow:
    """One table row for many recorded slots of a job (an hour of missed minutes is one line, not sixty)."""
    if len(slots) > 1:
        from icc.ui import fmt_slot

        span = f"{len(slots)} slots, {fmt_slot(slots[0], zone)} to {fmt_slot(slots[-1], zone)}"
        detail = f"{detail}; {span}" if detail else span
    return TickRow(name, outcome, slots[-1], detail=detail)


def _bind(job: Job, ctx: Any) -> Callable[[], object]:
    task = job.task
    assert callable(task)
    if job.takes_context():
        return lambda: task(ctx)
    return task


def manual_run(
    config: Config, name: str, *, echo: Callable[[bytes], None] | None = None
) -> tuple[TickRow, int]:
    """``icc exec JOB``: run one job now in the foreground, recorded as a manual run; ``echo`` gets its output
    as it arrives."""
    from icc.errors import JobNotFoundError
    from icc.plugins import load_plugins
    from icc.schedule import Schedule

    store = open_store(config)
    record = store.job(name)
    host = load_plugins(config)
    live = host.collect_jobs()
    job = live.get(name)
    if job is None and name in host.left_out:
        from icc.errors import PluginError

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
    spec.before, spec.after = bounded_observers(host, job, ctx, config, spec)
    set_output_file(spec, schedule, config.root)
    if job.kind == "command":
        spec.argv = job.argv
    else:
        spec.func = _bind(job, ctx)
    from icc.execution import install_stop_handlers

    install_stop_handlers()
    result = supervise(store, spec, grace=config.grace)
    store.close()
    row = TickRow(name, result.outcome, None, duration=result.duration, detail=result.error or "")
    return row, run_id


def record_definition(job: Job) -> dict[str, Any]:
    """What the state store keeps of a job: enough to schedule it, and to run a command, without plugins."""
    definition: dict[str, Any] = {"schedule": job.schedule.definition(), "description": job.description}
    from icc.cron import compiled_form

    compiled = compiled_form(job.schedule.time_rule)
    if compiled is not None:
        # The masks a fresh tick tests instead of parsing the expression (scan ignores this key when it compares).
        definition["compiled"] = compiled
    if job.kind == "command":
        definition["argv"] = job.argv
    else:
        from icc.jobs import default_name

        definition["target"] = default_name(job.task)  # type: ignore[arg-type]
    return definition


def job_records(jobs: dict[str, Job]) -> list[JobRecord]:
    """Records for the state store; ``next_due`` 0 makes the next tick evaluate them from its own slot. Each
    definition keeps the job's declaration ``order``: the tick runs foreground jobs in it without plugins."""
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
    ]
