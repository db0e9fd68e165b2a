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
5. Start background runs, then run foreground jobs in declaration order. Each background run gets a detached
   supervisor forked from the tick (plugins already loaded; the tick's SQLite connection is closed around the
   forks, since a connection must never cross one). A ``jitter()`` job starts its offset after the minute: a
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
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from icc import hosts as hostclock
from icc.errors import IccError, StateError
from icc.locks import Holder, job_lock, pid_alive, tick_lock
from icc.statedir import state_dir_problem
from icc.store import open_store, store_label
from icc.store.protocol import FAILURES, FINISHED, Claim, JobRecord, Outcome, RunKind, RunRecord, StateStore
from icc.store.sqlite.state import FILENAME, SQLiteStateStore
from icc.supervise.supervisor import (
    STOP,
    RunSpec,
    conclude,
    sleep_until,
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

if TYPE_CHECKING:
    from icc.config import Config
    from icc.jobs import Job, RunContext, RunResult
    from icc.pause import Pause
    from icc.plugins import PluginHost
    from icc.schedule import Schedule
    from icc.supervise.leases import Leases


NOT_EVALUATED = 0  # next_due of a job no tick has evaluated yet
LATE_OFFSET = 1.0  # seconds: a sub-minute offset the tick reaches this late (its second is over) is skipped
AHEAD_OFFSETS = 12  # offsets a minute (every_seconds(5)) up to which a busy tick hands them out ahead


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
        from icc.store import host_id

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
    lock_held_for: float | None = None  # locked out: seconds the holder has held the tick lock, when known
    drift: str | None = None  # why the plugins changed since the last scan (icc.tickwatch.drift)
    rescan: str | None = None  # [icc] scan = "auto": why the tick's own scan failed ("" when it worked)

    @property
    def failed(self) -> bool:
        return any(r.outcome in ("failed", "timed_out", "stopped") for r in self.rows)


def rescan(config: Config) -> str:
    """``icc scan`` in a child process of its own session, killed with its group after ``scan_timeout``
    seconds (a plugin import that hangs cannot hang the tick): "" when it worked, else why not, in one line."""
    import signal
    import subprocess
    import sys

    argv = [sys.executable, "-m", "icc"]
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
        try:  # a shared store: this host's row and its clock's offset; refused when far off (icc.hosts)
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
        self._journal: OutcomeJournal | None = None  # while its runs run: outcomes the store could not take
        self._pid = os.getpid()

    def _open_store(self) -> StateStore:
        """A new connection to the store this tick opened; never to a new one made in its place."""
        if not self._store_intact():
            raise StateError(f"the state database {self.db_path} was deleted or replaced")
        store = open_store(self.config)
        if self._journal is not None and os.getpid() == self._pid:  # the tick's own, not a supervisor's
            return cast("StateStore", _Journaled(store, self._journal))
        return store

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
        self._report_recorded(report)
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
        return report

    def _check_drift(self, report: TickReport) -> None:
        """Whether the plugins changed since the last scan (stat calls against the scan's stamp); with
        ``[icc] scan = "auto"`` the tick then rescans in a child process, bounded by ``scan_timeout``, and
        goes on with the stored jobs when that scan fails. A package directory that changed without a plugin
        distribution changing (an unrelated install) refreshes the stamp, so the idle tick stays idle."""
        from icc.tick.idle import plugins_drift, refreshed_stamp
        from icc.tickwatch import DRIFT_META_KEY

        stamp = self.store.get_meta(DRIFT_META_KEY)
        if stamp is None:  # scanned by an icc that wrote no stamp: `icc status` compares the fingerprint
            return
        why = plugins_drift(self.config, stamp, self.store.get_meta("plugins_fingerprint"))
        if why is None:
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
        from icc.slots import fmt_time

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
        from icc.slots import fmt_time

        reason = _reason(exc)
        zone = self.config.timezone
        rows = {(r.job, r.slot) for r in report.rows}
        kept = {int(e["run"]): e for e in (journal.entries if journal is not None else [])}
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
        from icc.cron import compiled_matches
        from icc.schedule import Schedule

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
            nxt = next_due(schedule, self.slot)
            if nxt != record.next_due:
                next_dues[record.name] = nxt
            if per_host:
                own[record.name] = [nxt, fingerprint]
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
        if rewind or not backwards:
            self.store.save_evaluation(next_dues, self.slot)
        if progress is not None and (own or progress.get("jobs")):
            self._save_host_progress(own)
        return [p for p in planned if p.run_id]

    def _progress_key(self) -> str:
        return f"progress:{self.host_name}"

    def _host_progress(self) -> dict[str, Any]:
        """This host's progress through its ``on_each_host()`` jobs on a shared store: ``{"watermark": slot,
        "jobs": {name: [next slot, schedule fingerprint]}}`` (empty when it has none, or it cannot be read)."""
        import json

        text = self.store.get_meta(self._progress_key())
        try:
            found = json.loads(text) if text else {}
        except ValueError:
            found = {}
        return found if isinstance(found, dict) else {}

    def _save_host_progress(self, jobs: dict[str, list[Any]]) -> None:
        """Keep this host's progress: at a slot earlier than its own watermark only the jobs it evaluated move."""
        import json

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
        from icc import pause

        if self.store.get_meta(pause.META_KEY) is None:
            return None
        found = pause.current(self.store, self.slot)
        if found is None:
            pause.clear_expired(self.store, min(self.slot, time.time()))
        return found

    def _skip_paused(self, name: str, schedule: Schedule, slots: list[int], report: TickReport) -> None:
        from icc.pause import PAUSED_ERROR

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
            state_dir=self.config.state_dir,
            output_limit=self.config.output_limit,
        )
        if (problem := set_output_file(spec, item.schedule, self.config.root)) is not None:
            return problem
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
        from icc.supervise.leases import Leases

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
        try:
            result = supervise(self.store, spec, grace=self.config.grace, leases=self._leases)
        except OSError:  # e.g. its job lock's directory went with the state directory
            if self._store_intact():
                raise
            return False
        outcome, detail = result.outcome, result.error or ""
        if result.outcome == "stopped" and self.store.lease is not None:
            # A host frozen past its lease stops its task when it wakes, but another host recorded the run
            # first (abandoned) and its record stays: the row says what the store says.
            with contextlib.suppress(StateError):
                stored = self.store.run(item.run_id)
                if stored is not None and stored.outcome not in ("stopped", "pending", "running"):
                    outcome = stored.outcome
                    detail = f"{stored.error or stored.outcome}; this host stopped its task when it woke"
        report.rows.append(
            TickRow(
                item.record.name,
                outcome,
                item.slot,
                duration=result.duration,
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
        from icc.slots import fmt_slot

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
            live = self._live.get(name)
            late: list[int] = []
            for offset in item.schedule.offsets()[1:]:
                when = item.slot + offset
                if stop_requested() or not self._store_intact():
                    stopped = True  # the offsets not handled yet are _run_offsets' to record
                    break
                if time.time() >= when + LATE_OFFSET:
                    late.append(when)
                    continue
                if (
                    live is not None
                    and live.schedule.has_callbacks
                    and not live.schedule.check_conditions(self.config.environment)
                ):
                    recorded = self.store.record(
                        name,
                        [when],
                        "skipped",
                        "scheduled",
                        error="a when/skip condition said no",
                        scope=scope,
                    )
                    self._note_recorded(name, recorded, scope)
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
        self._report_recorded(report, first)
        return handled

    def _run_offsets(self, owned: list[_Planned], report: TickReport) -> None:
        """The later offsets of the sub-minute jobs whose minute this tick owns, each claimed and started at its
        time (at once when not in real time), until the minute ends. An offset whose time passed while the tick
        was busy is recorded skipped: a sub-minute run never starts late."""
        from icc.slots import fmt_slot

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
                why = f"not started: {STOP.who} was asked to stop"
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


def set_output_file(spec: RunSpec, schedule: Schedule, root: Path) -> str | None:
    """``send_output_to`` / ``append_output_to``: the file, relative to the project root; why the run must not
    start when the path is unsafe (a FIFO, another user's link or directory, inside the state directory)."""
    if schedule.output_to is not None:
        from icc.statedir import output_file_problem

        path, append = schedule.output_to
        spec.output_to = root / Path(path).expanduser()
        spec.output_append = append
        problem = output_file_problem(spec.output_to, spec.state_dir)
        if problem is not None:
            return f"not started: {problem}"
    return None


def _fingerprint(schedule: Mapping[str, Any]) -> int:
    """A short checksum of a stored schedule definition: a host's progress through a changed one is void."""
    import json
    import zlib

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
        from icc.slots import fmt_slot

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
        state_dir=config.state_dir,
        before=before,
        after=after,
        output_limit=config.output_limit,
        echo=echo,
    )
    if (problem := set_output_file(spec, schedule, config.root)) is not None:
        store.finish(run_id, "failed", now=time.time(), error=problem)
        store.close()
        return TickRow(name, "failed", None, detail=problem), run_id
    if job.kind == "command":
        spec.argv = job.argv
    else:
        spec.func = _bind(job, ctx)
    from icc.supervise.supervisor import install_stop_handlers

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
