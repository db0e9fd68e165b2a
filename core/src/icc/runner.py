"""One tick of ``icc run``: capture the slot, claim what is due, run it, record it.

Order of a tick:

1. Capture the slot (the minute the tick started in) once.
2. Take the tick lock without waiting; if another tick holds it, say who and stop (exit 0).
3. Under the tick lock: record runs whose supervisor died as ``abandoned``; evaluate every job's due slots
   from its stored definition (no plugin import), apply its ``missed`` policy to slots missed since its last
   evaluation (within ``missed_window``); only if something is due, load the plugins to get the callables and
   evaluate ``when``/``skip``; claim every (job, slot) in the state store; store each job's next slot and the
   watermark (the slot they were computed from). They are a cache for ticks at that slot or later: a tick at
   an earlier slot (the clock went back, or an earlier ``--at``) evaluates from its own slot, as if every job
   were new, and saves the cache from there; the claims still keep it from running a (job, slot) twice, and the
   ``missed``/``skipped`` rows the later tick wrote from that slot on are deleted (nothing ran for those slots).
4. Release the tick lock, so the next minute's tick can start jobs on time even if this one overruns.
5. Start background runs, then run foreground jobs in declaration order. Each background run gets a detached
   supervisor forked from the tick (plugins already loaded; the tick's SQLite connection is closed around the
   forks, since a connection must never cross one). A ``jitter()`` job starts its offset after the minute: a
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icc import hostclock
from icc.errors import IccError, StateError
from icc.execution import RunSpec, conclude, sleep_until, start_detached, stop_requested, supervise
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


def observers(
    host: PluginHost | None, job: Job, ctx: RunContext
) -> tuple[Callable[[], list[str]], Callable[[RunResult], list[str]]]:
    """The ``before`` and ``after`` of a run: the job's own callbacks, then every plugin's ``before_run`` /
    ``after_run``. Each returns a line per callback or hook that raised; none of them changes the run."""
    schedule = job.schedule

    def call(which: str, fn: Callable[[Any], object], arg: object) -> list[str]:
        try:
            fn(arg)
        except BaseException as exc:  # an observer never breaks a run nor the tick
            return [f"{which} callback {_callback_name(fn)} failed: {type(exc).__name__}: {exc}"]
        return []

    def before() -> list[str]:
        notes = [n for fn in schedule.run_callbacks("before") for n in call("before", fn, ctx)]
        return notes + (host.call_before_run(job, ctx) if host is not None else [])

    def after(result: RunResult) -> list[str]:
        which = ["after"]
        if result.outcome == "succeeded":
            which.append("on_success")
        elif result.outcome in FAILURES:
            which.append("on_failure")
        notes = [n for w in which for fn in schedule.run_callbacks(w) for n in call(w, fn, result)]
        return notes + (host.call_after_run(job, ctx, result) if host is not None else [])

    return before, after


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
        self._plugins: PluginHost | None = None
        self._live: dict[str, Job] = {}
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

    # -- plugins, loaded only when something is due ---------------------------------------------------------
    def _load_plugins(self, report: TickReport) -> None:
        if self._plugins is not None:
            return
        from icc.plugins import load_plugins

        self._plugins = load_plugins(self.config)
        self._live = self._plugins.collect_jobs()
        report.plugin_failures = self._failure_texts()

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
        self._report_recorded(report)
        self._execute(planned, report)
        if not self._store_intact():
            raise StateError(self._lost_message(planned, report))
        if planned or self._recorded:
            self.store.prune_runs(self.config.keep_runs, self.config.keep_skipped)
        return report

    def _observers(
        self, record: JobRecord, ctx: RunContext
    ) -> tuple[Callable[[], list[str]], Callable[[RunResult], list[str]]] | None:
        """The run's callbacks and hooks; None when no plugin is loaded (then there is nothing to call)."""
        if self._plugins is None:
            return None
        return observers(self._plugins, self._live.get(record.name) or standin_job(record), ctx)

    def _report_recorded(self, report: TickReport, since: int = 0) -> None:
        """``after_run`` and the job's callbacks for the runs this tick recorded itself (abandoned, missed,
        skipped by a condition), from the ``since``-th on. Plugins are loaded only when there is one, so an idle
        tick stays light."""
        if len(self._recorded) <= since or not self._store_intact():
            return
        self._load_plugins(report)
        for run_id in self._recorded[since:]:
            run = self.store.run(run_id)
            record = self.store.job(run.job) if run is not None else None
            if run is None or record is None:
                continue
            zone = record.definition["schedule"].get("zone", self.config.timezone)
            ctx = run_context(run.job, run.id, run.slot, run.kind, zone, self.config.environment)
            found = self._observers(record, ctx)
            conclude(self.store, run.id, found[1] if found else None, run.job)

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
        if due:
            self._load_plugins(report)
            order = {name: i for i, name in enumerate(self._live)}
            due.sort(key=lambda item: (order.get(item[0].name, len(order)), item[0].name))
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
        if not run_slots:
            return []
        live = self._live.get(name)
        if (
            live is not None
            and live.schedule.has_callbacks
            and not live.schedule.check_conditions(self.config.environment)
        ):
            why = "a when/skip condition said no"
            for kind in ("missed", "scheduled"):
                of_kind = [s for s, k in run_slots if k == kind]
                if of_kind and (
                    recorded := self.store.record(
                        name, of_kind, "skipped", kind, error=why, scope=self._scope(schedule)
                    )
                ):
                    self._note_recorded(name, recorded, self._scope(schedule))
                    report.rows.append(
                        _summary_row(name, "skipped", recorded, self.config.timezone, "condition")
                    )
            return []
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
        """The run's spec, or why it cannot run."""
        record = item.record
        live = self._live.get(record.name)
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
        ctx = run_context(
            record.name, item.run_id, item.slot, item.kind, item.schedule.zone, self.config.environment
        )
        if record.kind == "command":
            spec.argv = list(definition["argv"])
        elif live is None:
            failures = "; ".join(self._failure_texts()) or "it is no longer defined"
            return f"job {record.name!r} could not be loaded from its plugin ({failures}); run `icc scan`"
        else:
            spec.func = _bind(live, ctx)
        found = self._observers(record, ctx)
        if found is not None:
            spec.before, spec.after = found
        return spec

    def _failure_texts(self) -> list[str]:
        return [f"{f.plugin}: {f.error}" for f in self._plugins.failures] if self._plugins else []

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
        try:
            result = supervise(self.store, spec, grace=self.config.grace, leases=self._leases)
        except OSError:  # e.g. its job lock's directory went with the state directory
            if self._store_intact():
                raise
            return False
        report.rows.append(
            TickRow(
                item.record.name,
                result.outcome,
                item.slot,
                duration=result.duration,
                next_run=next_due(item.schedule, self.slot),
                detail=result.error or "",
            )
        )
        return True

    def _run_offsets(self, owned: list[_Planned], report: TickReport) -> None:
        """The later offsets of the sub-minute jobs whose minute this tick owns, each claimed and started at its
        time (at once when not in real time), until the minute ends. An offset whose time passed while the tick
        was busy is recorded skipped: a sub-minute run never starts late."""
        from icc.ui import fmt_slot

        zone = self.config.timezone
        first = len(self._recorded)
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
            live = self._live.get(name)
            if (
                live is not None
                and live.schedule.has_callbacks
                and not live.schedule.check_conditions(self.config.environment)
            ):
                skip(item, [when], "a when/skip condition said no")
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
        self._report_recorded(report, first)

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
        """``after_run`` for a run the tick recorded without starting it."""
        ctx = run_context(
            item.record.name, item.run_id, item.slot, item.kind, item.schedule.zone, self.config.environment
        )
        found = self._observers(item.record, ctx)
        conclude(self.store, item.run_id, found[1] if found else None, item.record.name)


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
    before, after = observers(host, job, ctx)
    spec = RunSpec(
        job=name,
        run_id=run_id,
        timeout=schedule.timeout_seconds,
        overlapping=schedule.overlapping,
        cwd=config.root,
        config_path=config.path,
        state_dir=config.state_dir,
        before=before,
        after=after,
        output_limit=config.output_limit,
        echo=echo,
    )
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
    """Records for the state store; ``next_due`` 0 makes the next tick evaluate them from its own slot."""
    return [
        JobRecord(
            name=job.name,
            kind=job.kind,
            definition=record_definition(job),
            plugin=job.provenance.plugin,
            distribution=job.provenance.distribution,
            version=job.provenance.version,
            next_due=NOT_EVALUATED,
        )
        for job in jobs.values()
    ]
