"""What ``icc status``, ``icc metrics`` and ``icc queue stats`` report, gathered in one place.

Typed, frozen records built from the store (:func:`status`, :func:`job_detail`, :func:`queues`,
:func:`metrics`, :func:`timeline`): :class:`StatusReport` bundles :class:`JobReport` (with its
:class:`RunReport` s), :class:`PauseReport`, :class:`HostReport`, :class:`TickLockReport`, the plugins and the
drift; each record's ``to_json()`` is its documented ``--json`` layout. The commands only render these records
(a table, JSON, the Prometheus text format); nothing here prints.

icc.cli imports this module for every command, and a due ``icc run --json`` for :func:`tick_data`: what only
one report needs (the store, the tick's module, the plugin host, the notify plugins) is imported in its function.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast
from zoneinfo import ZoneInfo

from icc.errors import IccError
from icc.tickwatch import DRIFT_META_KEY, LOCK_HELD_NOTICE, held_for, last_tick, tick_lock_held

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from _typeshed import DataclassInstance

    from icc.config import Config
    from icc.pause import Pause
    from icc.queue.transport import QueueStats
    from icc.schedule import Schedule
    from icc.store.protocol import DurationHistogram, JobSummary, RunRecord, StateStore
    from icc.tick.coordinator import TickReport


def iso(epoch: float | None, zone: str) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).astimezone(ZoneInfo(zone)).isoformat()


def tick_data(report: TickReport, zone: str) -> dict[str, Any]:
    """``icc run --json``: the tick's report, times in ISO 8601 in the configured zone."""
    holder = report.held_by
    return {
        "schema": 1,
        "slot": iso(report.slot, zone),
        "timezone": zone,
        "locked_out": report.locked_out,
        "held_by": None
        if holder is None
        else {"pid": holder.pid, "host": holder.host, "since": iso(holder.since, zone)},
        "failed": report.failed,
        "drift": report.drift,
        "runs": [
            {
                "job": r.job,
                "outcome": r.outcome,
                "slot": iso(r.slot, zone),
                "duration": r.duration,
                "next_run": iso(r.next_run, zone),
                "background": r.background,
                "detail": r.detail,
            }
            for r in report.rows
        ],
    }


def dead_runs(config: Config, store: StateStore, unfinished: list[RunRecord]) -> dict[int, str]:
    """Unfinished runs whose process is gone, with why: shown as the ``abandoned`` the next tick records."""
    from icc.tick.coordinator import run_host, why_abandoned  # lazy: the tick, ~100 ms: see the docstring

    host_name = run_host(config)
    expired = store.expired_leases() if unfinished else {}
    return {
        run.id: f"{why} (the next tick records it)"
        for run in unfinished
        if (why := why_abandoned(run, store.job(run.job), config.state_dir, host_name, expired)) is not None
    }


def shown(run: RunRecord, dead: Mapping[int, str]) -> tuple[str, str | None]:
    """A run's outcome and error as status shows them."""
    return ("abandoned", dead[run.id]) if run.id in dead else (run.outcome, run.error)


def run_data(run: RunRecord, zone: str, dead: Mapping[int, str], *, full: bool = False) -> dict[str, Any]:
    """A run as ``--json`` shows it (``icc logs``, ``icc exec``): :meth:`RunReport.to_json`."""
    return RunReport.of(run, dead).to_json(zone, full=full)


# -- the records ------------------------------------------------------------------------------------------------
# Typed, frozen facts; times are epoch seconds. ``to_json(zone)`` gives the documented ``--json`` layout (times in
# ISO 8601 in ``zone``); the commands render the rest.


@dataclass(frozen=True, slots=True)
class RunReport:
    """One run (or a missed or skipped slot) as status shows it: an unfinished run whose process is gone is
    ``abandoned``, with why (the next tick records it so)."""

    id: int
    kind: str
    outcome: str
    slot: int | None
    started_at: float | None
    ended_at: float | None
    duration: float | None
    exit_code: int | None
    error: str | None
    pid: int | None = None  # the task's own process, else its supervisor's
    output: str = ""

    @classmethod
    def of(cls, run: RunRecord, dead: Mapping[int, str]) -> RunReport:
        outcome, error = shown(run, dead)
        return cls(
            id=run.id,
            kind=run.kind,
            outcome=outcome,
            slot=run.slot,
            started_at=run.started_at,
            ended_at=run.ended_at,
            duration=run.duration,
            exit_code=run.exit_code,
            error=error,
            pid=run.task_pid or run.pid,
            output=run.output,
        )

    def to_json(self, zone: str, *, full: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "outcome": self.outcome,
            "slot": iso(self.slot, zone),
            "started_at": iso(self.started_at, zone),
            "ended_at": iso(self.ended_at, zone),
            "duration": self.duration,
            "exit_code": self.exit_code,
            "error": self.error,
        }
        if full:
            data |= {"pid": self.pid, "output": self.output}
        return data


@dataclass(frozen=True, slots=True)
class RunningReport:
    """A run of a job running now."""

    run_id: int
    pid: int | None
    since: float | None

    def to_json(self, zone: str) -> dict[str, Any]:
        return {"run_id": self.run_id, "pid": self.pid, "since": iso(self.since, zone)}


@dataclass(frozen=True, slots=True)
class JobReport:
    """A job of the state store (removed ones included) with its schedule, next run and recent runs."""

    name: str
    kind: str
    plugin: str
    distribution: str | None
    version: str | None
    description: str | None
    cron: str
    schedule_text: str  # the schedule in words: "daily at 03:30"
    zone: str
    background: bool
    enabled: bool
    removed: bool
    next_run: float | None
    last_run: RunReport | None
    last_success: RunReport | None
    last_failure: RunReport | None
    running: tuple[RunningReport, ...]
    missed: int  # slots recorded missed within the missed window
    args: dict[str, Any] | None = None  # args(): {"args": [...], "kwargs": {...}} as stored at scan
    freshness: FreshnessReport | None = None  # expect_success_within(); None: the job has no freshness check
    # every()/once(): ``cron`` is only the minute grid the schedule is evaluated on, which says nothing of it
    # (every(minutes=90) is "* * * * *"): tables show the words instead
    words_only: bool = False

    @property
    def stale(self) -> bool | None:
        """Whether its ``expect_success_within`` is overdue; None when it has none."""
        return None if self.freshness is None else self.freshness.stale

    between: tuple[str, str] | None = None  # between("22:00", "06:00")
    environments: tuple[str, ...] | None = None  # environments("production", ...)

    @property
    def state(self) -> str:
        return "removed" if self.removed else ("enabled" if self.enabled else "disabled")

    def to_json(self, zone: str) -> dict[str, Any]:
        def run(report: RunReport | None) -> dict[str, Any] | None:
            return None if report is None else report.to_json(zone)

        return {
            "name": self.name,
            "kind": self.kind,
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
            "description": self.description,
            "schedule": {
                "cron": self.cron,
                "description": self.schedule_text,
                "timezone": self.zone,
                "background": self.background,
                "between": None if self.between is None else list(self.between),
                "environments": None if self.environments is None else list(self.environments),
            },
            "enabled": self.enabled,
            "removed": self.removed,
            "next_run": iso(self.next_run, zone),
            "last_run": run(self.last_run),
            "last_success": run(self.last_success),
            "last_failure": run(self.last_failure),
            "running": [r.to_json(zone) for r in self.running],
            "missed": self.missed,
            "args": self.args,
            "stale": self.stale,
            "freshness": None if self.freshness is None else self.freshness.to_json(zone),
        }


@dataclass(frozen=True, slots=True)
class FreshnessReport:
    """A job's ``expect_success_within`` as ``icc status`` shows it."""

    within: int  # seconds
    stale: bool
    stale_at: float | None  # when it goes (or went) stale; None: not scanned with the check yet
    last_success: float | None

    def line(self, zone: str) -> str:
        """`icc status JOB`'s freshness line: "stale since ...: no success within 3600s (last success: never)" or
        "fresh until ...: a success expected within 3600s"."""
        if self.stale_at is None:
            return f"a success expected within {self.within}s (counted from the next scan)"
        last = "never" if self.last_success is None else _short_time(self.last_success, zone)
        if self.stale:
            return (
                f"stale since {_short_time(self.stale_at, zone)}: no success within {self.within}s "
                f"(last success: {last})"
            )
        return f"fresh until {_short_time(self.stale_at, zone)}: a success expected within {self.within}s"

    def to_json(self, zone: str) -> dict[str, Any]:
        return {"within": self.within, "stale": self.stale, "stale_at": iso(self.stale_at, zone)}


@dataclass(frozen=True, slots=True)
class PauseReport:
    """``icc pause`` in force."""

    since: float
    until: float | None
    reason: str | None
    queues: bool

    @classmethod
    def of(cls, pause: Pause | None) -> PauseReport | None:
        return None if pause is None else cls(pause.since, pause.until, pause.reason, pause.queues)

    def to_json(self, zone: str) -> dict[str, Any]:
        return {
            "since": iso(self.since, zone),
            "until": iso(self.until, zone),
            "reason": self.reason,
            "queues": self.queues,
        }


@dataclass(frozen=True, slots=True)
class HostReport:
    """A host ticking on a shared store: last seen on the server's clock, its clock's offset (host minus
    server, seconds), ``skewed`` past the warning bound, ``refused`` past the one ticks refuse at."""

    host_id: str
    hostname: str
    last_seen: float
    clock_offset: float
    skewed: bool
    refused: bool
    this_host: bool

    def to_json(self, zone: str) -> dict[str, Any]:
        return {
            "host_id": self.host_id,
            "hostname": self.hostname,
            "last_seen": iso(self.last_seen, zone),
            "clock_offset": round(self.clock_offset, 3),
            "skewed": self.skewed,
            "refused": self.refused,
            "this_host": self.this_host,
        }


@dataclass(frozen=True, slots=True)
class TickLockReport:
    """The tick lock while a process holds it (:func:`icc.tickwatch.tick_lock_held`); ``stuck`` past a minute,
    when a tick says so."""

    pid: int | None  # None: its holder record cannot be read
    host: str | None
    since: float
    held_seconds: float

    @property
    def stuck(self) -> bool:

        return self.held_seconds > LOCK_HELD_NOTICE

    def to_json(self, zone: str) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "host": self.host,
            "since": iso(self.since, zone),
            "held_seconds": round(self.held_seconds, 1),
            "stuck": self.stuck,
        }


@dataclass(frozen=True, slots=True)
class PluginReport:
    name: str
    distribution: str | None
    version: str | None
    source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class PluginErrorReport:
    plugin: str
    distribution: str | None
    hook: str | None
    error: str

    def to_json(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin,
            "distribution": self.distribution,
            "hook": self.hook,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Everything ``icc status`` shows; ``to_json()`` is ``icc status --json``."""

    generated_at: datetime
    timezone: str
    environment: str
    state_dir: str
    last_tick: float | None
    plugins_changed: bool  # the installed plugin distributions differ from the last scan's
    never_scanned: bool
    drift: str | None  # why the plugins changed since the last scan (icc.tick.idle.plugins_drift)
    tick_lock: TickLockReport | None
    paused: PauseReport | None
    plugins: tuple[PluginReport, ...]
    plugin_errors: tuple[PluginErrorReport, ...]
    jobs: tuple[JobReport, ...]
    hosts: tuple[HostReport, ...]

    def job(self, name: str) -> JobReport | None:
        return next((j for j in self.jobs if j.name == name), None)

    def to_json(self) -> dict[str, Any]:
        zone = self.timezone
        return {
            "schema": 1,
            "generated_at": self.generated_at.astimezone(ZoneInfo(zone)).isoformat(),
            "timezone": zone,
            "environment": self.environment,
            "state_dir": self.state_dir,
            "last_tick": iso(self.last_tick, zone),
            "plugins_changed": self.plugins_changed,
            "never_scanned": self.never_scanned,
            "drift": self.drift,
            "tick_lock": None if self.tick_lock is None else self.tick_lock.to_json(zone),
            "paused": None if self.paused is None else self.paused.to_json(zone),
            "plugins": [p.to_json() for p in self.plugins],
            "plugin_errors": [f.to_json() for f in self.plugin_errors],
            "jobs": [j.to_json(zone) for j in self.jobs],
            "hosts": [h.to_json(zone) for h in self.hosts],
        }


@dataclass(frozen=True, slots=True)
class PingFailureReport:
    """A job's last failed heartbeat ping (URLs redacted); ``ok_since``: a later ping worked."""

    at: float | None
    event: object
    error: object
    ok_since: bool

    def to_json(self, zone: str) -> dict[str, Any]:
        return {"at": iso(self.at, zone), "event": self.event, "error": self.error, "ok_since": self.ok_since}


@dataclass(frozen=True, slots=True)
class JobDetailReport:
    """``icc status JOB``: the job, its last runs (output included), its last failed ping, its next runs."""

    job: JobReport
    runs: tuple[RunReport, ...]
    ping_failure: PingFailureReport | None
    paused: PauseReport | None
    next_runs: tuple[datetime, ...] | None  # with --next: the next N runs (none while disabled or removed)
    start_offset: int  # seconds its runs start after their slot (jitter)

    def to_json(self, zone: str) -> dict[str, Any]:
        data = self.job.to_json(zone)
        data["runs"] = [r.to_json(zone, full=True) for r in self.runs]
        data["ping_failure"] = None if self.ping_failure is None else self.ping_failure.to_json(zone)
        if self.next_runs is not None:
            data["next_runs"] = [u.astimezone(ZoneInfo(zone)).isoformat() for u in self.next_runs]
            data["start_offset"] = self.start_offset
        return data


def current_pause(store: StateStore, now: float) -> Pause | None:
    from icc.pause import current  # lazy: see the module docstring

    return current(store, now)


_T = TypeVar("_T", bound="DataclassInstance")


def _keyword_constructor(cls: type[_T]) -> type[_T]:
    """A keyword-only constructor of the frozen, slotted dataclass ``cls`` that sets each slot through its
    descriptor: the dataclass's own ``__init__`` goes through ``object.__setattr__`` field by field, which at
    10,000 jobs is a tenth of ``icc status`` (issue 17). Same fields, same values; no defaults (every field is
    given). Typed as the class, so that calls are checked as the class's are."""
    names = [f.name for f in fields(cls)]
    setters = {f"_set_{name}": getattr(cls, name).__set__ for name in names}
    body = "".join(f"    _set_{name}(obj, {name})\n" for name in names)
    source = (
        f"def new(*, {', '.join(names)}, _new=object.__new__, _cls=_cls, "
        f"{', '.join(f'{k}={k}' for k in setters)}):\n    obj = _new(_cls)\n{body}    return obj\n"
    )
    namespace: dict[str, Any] = {"_cls": cls, **setters}
    exec(source, namespace)  # noqa: S102 (code made here from the field names alone, as dataclasses does)
    return cast("type[_T]", namespace["new"])


class _Shared(NamedTuple):
    """What :func:`status` reads once per distinct stored schedule for the jobs that share it."""

    schedule: Schedule
    words: str
    computed: list[int | None]  # the next run from the schedule, once computed
    background: bool
    args: dict[str, Any] | None
    words_only: bool
    between: tuple[str, str] | None
    environments: tuple[str, ...] | None
    on_each_host: bool


def status(
    config: Config, at: datetime | None, *, with_plugins: bool = True, store: StateStore | None = None
) -> StatusReport:
    """Everything ``icc status`` shows, from the store and the plugins (loaded to report their errors).

    ``with_plugins=False`` (the dashboard, which never imports a plugin): the plugins and their errors are left
    out (empty); the rest is the same. ``store``: an open store to read (default: a new connection).

    Built for 10,000 jobs (issue 17): the plugins' ``schedule`` hooks are called only when the plugins may have
    changed since the last scan (it called them, and refuses to store what fails); a schedule is rebuilt once
    per distinct stored schedule, not per job; a job's next run is its stored next slot when the last tick's
    evaluation still stands (it was at or before this moment and the next slot is after it), else computed."""
    from icc.plugins import installed_fingerprint, load_plugins  # lazy: plugin host: see the docstring
    from icc.schedule import Schedule  # lazy: see the module docstring
    from icc.store import open_store  # lazy: see the module docstring
    from icc.tick.coordinator import next_due, slot_of  # lazy: the tick, ~100 ms: see the docstring
    from icc.tick.idle import plugins_drift  # lazy: see the module docstring

    zone = config.timezone
    store = store or open_store(config)
    now = at or datetime.now(UTC)
    slot = slot_of(now)
    host = load_plugins(config) if with_plugins else None
    scanned = store.get_meta("plugins_fingerprint")
    changed = scanned is not None and scanned != installed_fingerprint(config)
    stamp = store.get_meta(DRIFT_META_KEY)
    drift = plugins_drift(config, stamp, scanned)
    if host is not None:
        if scanned is None or stamp is None or changed or drift is not None:
            host.collect_jobs()  # reports failing schedule hooks and job names two plugins use
        host.collect_handlers()
    latest = store.latest_runs()
    last_outcomes = store.last_outcomes()
    running: dict[str, list[RunningReport]] = {}
    unfinished = store.unfinished()
    dead = dead_runs(config, store, unfinished)
    for run in unfinished:
        if run.outcome == "running" and run.id not in dead:
            running.setdefault(run.job, []).append(
                RunningReport(run.id, run.task_pid or run.pid, run.started_at)
            )
    missed = store.missed_counts(slot - config.missed_window * 60, slot)
    watermark = store.get_meta("watermark")
    evaluated = int(watermark) if watermark else None
    # By the stored schedule: the store decodes each distinct one once, and the jobs that share it share the object.
    schedules: dict[int, _Shared] = {}
    no_runs: dict[str, RunRecord] = {}
    jobs: list[JobReport] = []
    new_job_report = _keyword_constructor(JobReport)
    summaries = store.job_summaries()
    fresh = _freshness(store, now.timestamp(), summaries, last_outcomes)
    for rec in summaries:
        # Read in the project's zone: a job shows a zone only where it differs from the project's.
        definition = rec.schedule
        key = id(definition)
        built = schedules.get(key)
        if built is None:
            schedule = Schedule.from_definition(dict(definition), default_timezone=zone)
            between = definition.get("between")
            environments = definition.get("environments")
            # What the jobs sharing the schedule share in their reports, read once (10,000 jobs: issue 17).
            built = schedules[key] = _Shared(
                schedule,
                schedule.describe(),
                [],
                bool(definition.get("background", False)),
                definition.get("args"),
                schedule.every_minutes_count is not None or schedule.one_off,
                None if between is None else tuple(between),
                None if environments is None else tuple(environments),
                bool(definition.get("on_each_host")),
            )
        schedule = built.schedule
        computed = built.computed
        name = rec.name
        last = latest.get(name)
        kept = last_outcomes.get(name, no_runs)
        nxt: int | None = None
        if rec.enabled and rec.removed_at is None:
            stored = rec.next_due
            if (
                stored  # 0: never evaluated; None: no slot left, or not known
                and evaluated is not None
                and evaluated <= slot < stored
                and not built.on_each_host  # each host's own progress
            ):
                nxt = stored
            else:
                if not computed:
                    computed.append(next_due(schedule, slot))
                nxt = computed[0]
        jobs.append(
            new_job_report(
                name=name,
                kind=rec.kind,
                plugin=rec.plugin,
                distribution=rec.distribution,
                version=rec.version,
                description=rec.description,
                cron=schedule.expression,
                schedule_text=built.words,
                zone=schedule.zone,
                background=built.background,
                enabled=rec.enabled,
                removed=rec.removed_at is not None,
                next_run=nxt,
                last_run=None if last is None else RunReport.of(last, dead),
                last_success=RunReport.of(kept["success"], dead) if "success" in kept else None,
                last_failure=RunReport.of(kept["failure"], dead) if "failure" in kept else None,
                running=tuple(running.get(name, ())),
                missed=missed.get(name, 0),
                args=built.args,
                freshness=fresh.get(name),
                words_only=built.words_only,
                between=built.between,
                environments=built.environments,
            )
        )
    return StatusReport(
        generated_at=now,
        timezone=zone,
        environment=config.environment,
        state_dir=str(config.state_dir),
        last_tick=evaluated,
        plugins_changed=changed,
        never_scanned=scanned is None,
        drift=drift or ("installed plugin distributions changed" if changed else None),
        tick_lock=tick_lock(config),
        paused=PauseReport.of(current_pause(store, now.timestamp())),
        plugins=()
        if host is None
        else tuple(PluginReport(p.name, p.distribution, p.version, p.source) for p in host.plugins),
        plugin_errors=()
        if host is None
        else tuple(PluginErrorReport(f.plugin, f.distribution, f.hook, f.error) for f in host.failures),
        jobs=tuple(jobs),
        hosts=hosts(config, store),
    )


def _freshness(
    store: StateStore,
    now: float,
    summaries: Sequence[JobSummary],
    last: dict[str, dict[str, RunRecord]],
) -> dict[str, FreshnessReport]:
    """The jobs with ``expect_success_within`` (removed ones left out): how fresh each is at ``now``. One meta
    read per such job; nothing for the others."""
    from icc.notify.freshness import freshness_of, schedule_within  # lazy: a notify plugin: see the docstring

    checked = [(r.name, w) for r in summaries if r.removed_at is None and (w := schedule_within(r.schedule))]
    if not checked:
        return {}
    return {
        f.job: FreshnessReport(f.within, f.stale, f.stale_at, f.last_success)
        for f in freshness_of(store, now, checked, last)
    }


def job_status(
    config: Config, store: StateStore, name: str, at: datetime | None = None
) -> StatusReport | None:
    """:func:`status` for one job (the dashboard's job page): the same records, read through the indexes of that
    job's runs, so it costs the same with 10 or 10,000 jobs; no plugin is loaded. None: no such job."""
    from icc.schedule import Schedule  # lazy: see the module docstring
    from icc.tick.coordinator import next_due, slot_of  # lazy: the tick, ~100 ms: see the docstring

    record = store.job(name)
    if record is None:
        return None
    zone = config.timezone
    now = at or datetime.now(UTC)
    slot = slot_of(now)
    unfinished = [run for run in store.unfinished() if run.job == name]
    dead = dead_runs(config, store, unfinished)
    running = tuple(
        RunningReport(run.id, run.task_pid or run.pid, run.started_at)
        for run in unfinished
        if run.outcome == "running" and run.id not in dead
    )
    definition = record.definition.get("schedule", {})
    schedule = Schedule.from_definition(dict(definition), default_timezone=zone)
    last = store.last_runs_of(name)
    present = record.enabled and record.removed_at is None
    watermark = store.get_meta("watermark")

    def shown_run(key: str) -> RunReport | None:
        found = last.get(key)
        return None if found is None else RunReport.of(found, dead)

    job = JobReport(
        name=name,
        kind=record.kind,
        plugin=record.plugin,
        distribution=record.distribution,
        version=record.version,
        description=record.definition.get("description"),
        cron=schedule.expression,
        schedule_text=schedule.describe(),
        zone=schedule.zone,
        background=bool(definition.get("background", False)),
        enabled=record.enabled,
        removed=record.removed_at is not None,
        next_run=next_due(schedule, slot) if present else None,
        last_run=shown_run("last"),
        last_success=shown_run("success"),
        last_failure=shown_run("failure"),
        running=running,
        missed=store.missed_count(name, slot - config.missed_window * 60, slot),
        args=definition.get("args"),
        between=None if definition.get("between") is None else tuple(definition["between"]),
        environments=None if definition.get("environments") is None else tuple(definition["environments"]),
    )
    return StatusReport(
        generated_at=now,
        timezone=zone,
        environment=config.environment,
        state_dir=str(config.state_dir),
        last_tick=int(watermark) if watermark else None,
        plugins_changed=False,
        never_scanned=False,
        drift=None,
        tick_lock=tick_lock(config),
        paused=PauseReport.of(current_pause(store, now.timestamp())),
        plugins=(),
        plugin_errors=(),
        jobs=(job,),
        hosts=(),
    )


def job_detail(
    config: Config,
    report: StatusReport,
    job: str,
    limit: int,
    next_count: int | None,
    after: datetime,
    *,
    store: StateStore | None = None,
) -> JobDetailReport | None:
    """``icc status JOB``: the job of ``report``, its last ``limit`` runs, its last failed ping and, with
    ``next_count``, its next runs after ``after``; None when there is no such job."""
    from icc.schedule import Schedule  # lazy: see the module docstring
    from icc.store import open_store  # lazy: see the module docstring

    found = report.job(job)
    if found is None:
        return None
    store = store or open_store(config)
    dead = dead_runs(config, store, store.unfinished())
    runs = tuple(RunReport.of(r, dead) for r in store.runs(job, limit=limit))
    upcoming: tuple[datetime, ...] | None = None
    offset = 0
    record = store.job(job)
    if next_count is not None:
        upcoming = ()
        if record is not None:
            schedule = Schedule.from_definition(
                record.definition["schedule"], default_timezone=config.timezone
            )
            offset = schedule.start_offset(job)
            if record.enabled and record.removed_at is None:
                # A slot that already has a row (a sub-minute offset recorded skipped when its tick was stopped,
                # or one that ran) is not listed: it will not run again.
                count = min(next_count, 1000)
                since = after.timestamp()
                recorded = {
                    r.slot for r in store.runs(job, limit=200) if r.slot is not None and r.slot > since
                }
                found_runs = schedule.next_runs(after, count + len(recorded))
                upcoming = tuple(u for u in found_runs if int(u.timestamp()) not in recorded)[:count]
    return JobDetailReport(
        job=found,
        runs=runs,
        ping_failure=ping_failure(store.get_meta(f"ping:{job}")),
        paused=report.paused,
        next_runs=upcoming,
        start_offset=offset,
    )


def tick_lock(config: Config, now: float | None = None) -> TickLockReport | None:
    """Who holds the tick lock now and for how long (:func:`icc.tickwatch.tick_lock_held`), or None when it is
    free. Never takes the lock."""

    held = tick_lock_held(str(config.state_dir))
    if held is None:
        return None
    since, pid, host = held
    moment = datetime.now(UTC).timestamp() if now is None else now
    return TickLockReport(pid=pid, host=host, since=since, held_seconds=max(0.0, moment - since))


def hosts(config: Config, store: StateStore) -> tuple[HostReport, ...]:
    """The hosts ticking on a shared store (empty on SQLite)."""
    from icc.hosts import REFUSE_SECONDS, skewed  # lazy: see the module docstring
    from icc.tick.coordinator import run_host  # lazy: the tick, ~100 ms: see the docstring

    me = run_host(config)
    return tuple(
        HostReport(
            host_id=h.host_id,
            hostname=h.hostname,
            last_seen=h.last_seen,
            clock_offset=h.clock_offset,
            skewed=skewed(h.clock_offset),
            refused=abs(h.clock_offset) > REFUSE_SECONDS,
            this_host=h.host_id == me,
        )
        for h in store.hosts()
    )


def ping_failure(meta: str | None) -> PingFailureReport | None:
    """The job's last failed heartbeat ping (URLs redacted), from its ``ping:<job>`` meta value."""
    from icc.notify.pings import last_failure  # lazy: a notify plugin: see the docstring

    failed = last_failure(meta)
    if failed is None:
        return None
    at = failed.get("at")
    return PingFailureReport(
        at=at if isinstance(at, int | float) else None,
        event=failed.get("event"),
        error=failed.get("error"),
        ok_since=bool(failed["ok_since"]),
    )


# -- timeline ---------------------------------------------------------------------------------------------------

TIMELINE_HOURS = 24
FAILED_OUTCOMES = ("failed", "timed_out", "abandoned", "stopped")
# Which outcome a cell shows when it holds several runs: the one that needs looking at.
CELL_PRIORITY = ("failed", "missed", "running", "skipped", "succeeded")


def cell_outcome(outcome: str) -> str | None:
    """A run's outcome as a timeline cell shows it: failed, missed, running, skipped or succeeded."""
    if outcome in FAILED_OUTCOMES:
        return "failed"
    if outcome in ("running", "pending", "started"):
        return "running"
    return outcome if outcome in CELL_PRIORITY else None


def timeline(
    config: Config,
    at: datetime | None,
    cell_minutes: int,
    *,
    hours: int = TIMELINE_HOURS,
    store: StateStore | None = None,
) -> dict[str, Any]:
    """The last ``hours`` (24) of every job's runs in cells of ``cell_minutes`` (dividing 60 or a whole number of
    hours), ending with the cell that holds ``at`` (default now); cells start on the project zone's clock.
    Each cell is the outcome that most needs looking at among its runs (``CELL_PRIORITY``), or None."""
    from icc.store import open_store  # lazy: see the module docstring

    zone = ZoneInfo(config.timezone)
    now = (at or datetime.now(UTC)).astimezone(zone)
    into_day = now.hour * 60 + now.minute
    first = now.replace(hour=0, minute=0, second=0, microsecond=0)
    cell = cell_minutes * 60
    end = first.timestamp() + (into_day // cell_minutes + 1) * cell
    count = hours * 60 // cell_minutes
    start = end - count * cell
    store = store or open_store(config)
    dead = dead_runs(config, store, store.unfinished())
    cells: dict[str, list[str | None]] = {rec.name: [None] * count for rec in store.jobs()}
    for run_id, job, when, outcome in store.outcomes_between(start, end):
        shown_as = cell_outcome("abandoned" if run_id in dead else outcome)
        row = cells.get(job)
        if row is None or shown_as is None:
            continue
        i = int((when - start) // cell)
        if row[i] is None or CELL_PRIORITY.index(shown_as) < CELL_PRIORITY.index(row[i] or "succeeded"):
            row[i] = shown_as
    return {
        "start": iso(start, config.timezone),
        "end": iso(end, config.timezone),
        "start_epoch": start,
        "cell_minutes": cell_minutes,
        "jobs": [{"name": name, "cells": row} for name, row in cells.items()],
    }


# -- queues ---------------------------------------------------------------------------------------------------


def queue_stats(config: Config, now: float) -> dict[str, QueueStats]:
    """Every known queue (configured or holding messages), known ones first; a missing queue database is
    read as empty and not created."""
    from icc.queue.dispatch import known_queues  # lazy: icc.queue, ~55 ms: see the docstring
    from icc.queue.transport import QueueStats  # lazy: icc.queue, ~55 ms: see the docstring
    from icc.store import open_transport, queues_present  # lazy: see the module docstring

    found: dict[str, QueueStats] = {}
    if queues_present(config):
        found = open_transport(config).stats(now)
    return {name: found.get(name) or QueueStats() for name in (*known_queues(config), *sorted(found))}


@dataclass(frozen=True, slots=True)
class QueueReport:
    """One queue now (``icc queue stats``): messages not yet acknowledged (ready, delayed, in flight), which
    consumers hold how many, the oldest one's age in seconds, and the failed ones."""

    queue: str
    messages: int
    ready: int
    delayed: int
    in_flight: int
    owners: Mapping[str, int]
    oldest_age: float | None
    failed: int
    handled_last_hour: int = 0  # acknowledged in the last hour: the throughput

    def to_json(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "messages": self.messages,
            "ready": self.ready,
            "delayed": self.delayed,
            "in_flight": self.in_flight,
            "owners": dict(self.owners),
            "oldest_age": self.oldest_age,
            "failed": self.failed,
            "handled_last_hour": self.handled_last_hour,
        }


def queues(config: Config, now: float) -> tuple[QueueReport, ...]:
    """:func:`queue_stats` as records."""
    return tuple(
        QueueReport(
            queue=name,
            messages=s.messages,
            ready=s.ready,
            delayed=s.delayed,
            in_flight=s.in_flight,
            owners=MappingProxyType(dict(sorted(s.owners.items()))),
            oldest_age=s.oldest_age,
            failed=s.failed,
            handled_last_hour=s.handled_last_hour,
        )
        for name, s in queue_stats(config, now).items()
    )


# -- metrics ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobMetrics:
    """A job's figures for ``icc metrics``."""

    name: str
    last_success: float | None = None
    last_run: float | None = None
    last_duration: float | None = None
    runs: Mapping[str, int] = field(default_factory=dict)  # outcome -> count, kept apart from the history
    running: int = 0
    ping_failing: bool = False  # its last heartbeat ping failed and none worked since
    ping_failed_at: float | None = None  # when a heartbeat ping of it last failed
    last_failure: float | None = None  # when its last failed, timed-out or abandoned run ended
    durations: DurationHistogram | None = None  # its runs' durations (icc_job_duration_seconds)
    stale: bool | None = None  # expect_success_within overdue; None: the job has no freshness check


@dataclass(frozen=True, slots=True)
class Metrics:
    """Everything ``icc metrics`` exports; no plugin is loaded to make it."""

    jobs: tuple[JobMetrics, ...]
    queues: tuple[QueueReport, ...]
    paused: bool
    last_tick: float | None
    clock_offsets: dict[str, float] = field(default_factory=dict)  # host id -> seconds (a shared store)
    plugins_drifted: bool = False  # the plugins changed since the last scan (icc.tickwatch.drift)
    tick_lock_held: float = 0.0  # seconds the tick lock has been held (0: free)


def metrics(config: Config, now: float) -> Metrics:
    """The facts ``icc metrics`` exports; no plugin is loaded."""
    from icc.store import open_store  # lazy: see the module docstring

    store = open_store(config)
    latest = store.latest_runs()
    kept = store.last_outcomes()
    counts = store.run_counts()
    durations = store.duration_counts()
    unfinished = store.unfinished()
    dead = dead_runs(config, store, unfinished)
    running: dict[str, int] = {}
    for run in unfinished:
        if run.outcome == "running" and run.id not in dead:
            running[run.job] = running.get(run.job, 0) + 1
    from icc.notify.freshness import freshness  # lazy: a notify plugin: see the docstring
    from icc.notify.pings import META_PREFIX, last_failure  # lazy: a notify plugin: see the docstring
    from icc.store.protocol import duration_histogram  # lazy: see the module docstring

    records = store.jobs()
    stale = {item.job: item.stale for item in freshness(store, now, records)}
    jobs = []
    for rec in records:
        last = latest.get(rec.name)
        success = kept.get(rec.name, {}).get("success")
        failure = kept.get(rec.name, {}).get("failure")
        job_counts = counts.get(rec.name, {})
        ping = last_failure(store.get_meta(META_PREFIX + rec.name))
        ping_at = ping.get("at") if ping is not None else None
        jobs.append(
            JobMetrics(
                rec.name,
                last_success=None if success is None else (success.ended_at or success.started_at),
                last_run=None if last is None else (last.started_at or last.ended_at),
                last_duration=None if last is None else last.duration,
                runs=job_counts,
                running=running.get(rec.name, 0),
                ping_failing=ping is not None and not ping["ok_since"],
                ping_failed_at=float(ping_at) if isinstance(ping_at, int | float) else None,
                last_failure=None if failure is None else (failure.ended_at or failure.started_at),
                durations=duration_histogram(durations.get(rec.name, {})),
                stale=stale.get(rec.name),
            )
        )
    from icc.tick.idle import plugins_drift  # lazy: see the module docstring

    watermark = store.get_meta("watermark")
    held = tick_lock_held(str(config.state_dir))
    return Metrics(
        jobs=tuple(jobs),
        plugins_drifted=plugins_drift(
            config, store.get_meta(DRIFT_META_KEY), store.get_meta("plugins_fingerprint")
        )
        is not None,
        tick_lock_held=0.0 if held is None else max(0.0, now - held[0]),
        queues=queues(config, now),
        paused=current_pause(store, now) is not None,
        last_tick=float(watermark) if watermark else None,
        clock_offsets={h.host_id: h.clock_offset for h in store.hosts()},
    )


# -- icc check ----------------------------------------------------------------------------------------------------

RECENT_TICK = 120.0  # seconds: cron starts `icc run` every minute, so one missed minute passes and two fail


@dataclass(frozen=True, slots=True)
class StaleJobReport:
    job: str
    within: int
    last_success: float | None
    stale_since: float | None

    def line(self, zone: str) -> str:
        last = "never" if self.last_success is None else _short_time(self.last_success, zone)
        return f"stale: {self.job} has not succeeded within {self.within}s (last success: {last})"

    def to_json(self, zone: str) -> dict[str, Any]:
        return {
            "job": self.job,
            "within": self.within,
            "last_success": iso(self.last_success, zone),
            "stale_since": iso(self.stale_since, zone),
        }


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What ``icc check`` says: healthy when ``problems`` is empty (exit 0), else exit 2, one line each."""

    checked_at: float
    store_error: str | None  # the store could not be opened or read
    last_tick: float | None  # when a tick last ran on this host (icc.tickwatch.TICK_STAMP)
    tick_lock: TickLockReport | None
    stale: tuple[StaleJobReport, ...]
    jobs_checked: int  # jobs with expect_success_within

    @property
    def tick_age(self) -> float | None:
        return None if self.last_tick is None else max(0.0, self.checked_at - self.last_tick)

    def problems(self, zone: str) -> list[str]:
        found: list[str] = []
        if self.store_error is not None:
            found.append(f"store: {self.store_error}")
        age = self.tick_age
        if age is None:
            found.append(
                "tick: no `icc run` has ticked on this host yet; install the line `icc crontab` prints"
            )
        elif age > RECENT_TICK:
            found.append(
                f"tick: the last tick ran {_ago(age)} ago (more than {RECENT_TICK:g}s): is cron running the line "
                "`icc crontab` prints?"
            )
        if self.tick_lock is not None and self.tick_lock.stuck:
            who = f"pid {self.tick_lock.pid}" if self.tick_lock.pid is not None else "an unknown process"
            found.append(
                f"tick lock: held for {_ago(self.tick_lock.held_seconds)} by {who}"
                f"{' on ' + self.tick_lock.host if self.tick_lock.host else ''}: a tick is stuck"
            )
        found += [item.line(zone) for item in self.stale]
        return found

    def to_json(self, zone: str) -> dict[str, Any]:
        problems = self.problems(zone)
        return {
            "ok": not problems,
            "problems": problems,
            "checked_at": iso(self.checked_at, zone),
            "store": "ok" if self.store_error is None else self.store_error,
            "last_tick": iso(self.last_tick, zone),
            "last_tick_age_seconds": None if self.tick_age is None else round(self.tick_age, 1),
            "recent_tick_seconds": RECENT_TICK,
            "tick_lock": None if self.tick_lock is None else self.tick_lock.to_json(zone),
            "freshness_checked": self.jobs_checked,
            "stale": [item.to_json(zone) for item in self.stale],
        }


def _ago(seconds: float) -> str:

    return held_for(seconds)


def _short_time(epoch: float, zone: str) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def check(config: Config, now: float) -> CheckReport:
    """``icc check``'s facts: the store answers, a tick ran recently on this host, the tick lock is not stuck,
    and no job with ``expect_success_within`` is stale. No plugin is loaded; nothing is written."""
    from icc.notify.freshness import freshness  # lazy: a notify plugin: see the docstring
    from icc.store import open_store  # lazy: see the module docstring

    store_error: str | None = None
    stale: tuple[StaleJobReport, ...] = ()
    checked = 0
    try:
        store = open_store(config)
        try:
            found = freshness(store, now)
        finally:
            store.close()
        checked = len(found)
        stale = tuple(StaleJobReport(f.job, f.within, f.last_success, f.stale_at) for f in found if f.stale)
    except IccError as exc:
        store_error = " ".join(str(exc).split())
    return CheckReport(
        checked_at=now,
        store_error=store_error,
        last_tick=last_tick(str(config.state_dir)),
        tick_lock=tick_lock(config, now),
        stale=stale,
        jobs_checked=checked,
    )
