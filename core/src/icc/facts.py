"""What ``icc status``, ``icc metrics`` and ``icc queue stats`` report, gathered in one place.

The commands only render these facts (a table, JSON, the Prometheus text format); nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from icc.config import Config
    from icc.queue.sqlite import QueueStats
    from icc.state.base import RunRecord, StateStore
    from icc.state.pause import Pause


def iso(epoch: float | None, zone: str) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).astimezone(ZoneInfo(zone)).isoformat()


def dead_runs(config: Config, store: StateStore, unfinished: list[RunRecord]) -> dict[int, str]:
    """Unfinished runs whose process is gone, with why: shown as the ``abandoned`` the next tick records."""
    from icc.runner import run_host, why_abandoned

    host_name = run_host(config)
    expired = store.expired_leases() if unfinished else {}
    return {
        run.id: f"{why} (the next tick records it)"
        for run in unfinished
        if (why := why_abandoned(run, store.job(run.job), config.state_dir, host_name, expired)) is not None
    }


def shown(run: RunRecord, dead: dict[int, str]) -> tuple[str, str | None]:
    """A run's outcome and error as status shows them."""
    return ("abandoned", dead[run.id]) if run.id in dead else (run.outcome, run.error)


def run_data(run: RunRecord, zone: str, dead: dict[int, str], *, full: bool = False) -> dict[str, Any]:
    outcome, error = shown(run, dead)
    data: dict[str, Any] = {
        "id": run.id,
        "kind": run.kind,
        "outcome": outcome,
        "slot": iso(run.slot, zone),
        "started_at": iso(run.started_at, zone),
        "ended_at": iso(run.ended_at, zone),
        "duration": run.duration,
        "exit_code": run.exit_code,
        "error": error,
    }
    if full:
        data |= {"pid": run.task_pid or run.pid, "output": run.output}
    return data


def current_pause(store: StateStore, now: float) -> Pause | None:
    from icc.state.pause import current

    return current(store, now)


def pause_data(pause: Pause | None, zone: str) -> dict[str, Any] | None:
    if pause is None:
        return None
    return {
        "since": iso(pause.since, zone),
        "until": iso(pause.until, zone),
        "reason": pause.reason,
        "queues": pause.queues,
    }


def status_data(config: Config, at: datetime | None) -> dict[str, Any]:
    """Everything ``icc status`` shows (``--json`` prints it as it is)."""
    from icc.plugins import installed_fingerprint, load_plugins
    from icc.runner import next_due, slot_of
    from icc.schedule import Schedule
    from icc.stores import open_store

    zone = config.timezone
    store = open_store(config)
    now = at or datetime.now(UTC)
    slot = slot_of(now)
    host = load_plugins(config)
    host.collect_jobs()  # reports failing schedule hooks and job names two plugins use
    host.collect_handlers()
    latest = store.latest_runs()
    last_outcomes = store.last_outcomes()
    running: dict[str, list[dict[str, Any]]] = {}
    unfinished = store.unfinished()
    dead = dead_runs(config, store, unfinished)
    for run in unfinished:
        if run.outcome == "running" and run.id not in dead:
            running.setdefault(run.job, []).append(
                {"run_id": run.id, "pid": run.task_pid or run.pid, "since": iso(run.started_at, zone)}
            )
    missed = store.missed_counts(slot - config.missed_window * 60, slot)
    jobs = []
    for rec in store.jobs(include_removed=True):
        # Read in the project's zone: a job shows a zone only where it differs from the project's.
        schedule = Schedule.from_definition(rec.definition["schedule"], default_timezone=zone)
        last = latest.get(rec.name)
        kept = last_outcomes.get(rec.name, {})
        nxt = next_due(schedule, slot) if rec.enabled and rec.removed_at is None else None
        jobs.append(
            {
                "name": rec.name,
                "kind": rec.kind,
                "plugin": rec.plugin,
                "distribution": rec.distribution,
                "version": rec.version,
                "description": rec.definition.get("description"),
                "schedule": {
                    "cron": schedule.expression,
                    "description": schedule.describe(),
                    "timezone": schedule.zone,
                    "background": schedule.background,
                },
                "enabled": rec.enabled,
                "removed": rec.removed_at is not None,
                "next_run": iso(nxt, zone),
                "last_run": None if last is None else run_data(last, zone, dead),
                "last_success": run_data(kept["success"], zone, dead) if "success" in kept else None,
                "last_failure": run_data(kept["failure"], zone, dead) if "failure" in kept else None,
                "running": running.get(rec.name, []),
                "missed": missed.get(rec.name, 0),
            }
        )
    watermark = store.get_meta("watermark")
    scanned = store.get_meta("plugins_fingerprint")
    return {
        "schema": 1,
        "generated_at": now.astimezone(ZoneInfo(zone)).isoformat(),
        "timezone": zone,
        "environment": config.environment,
        "state_dir": str(config.state_dir),
        "last_tick": iso(int(watermark), zone) if watermark else None,
        "plugins_changed": scanned is not None and scanned != installed_fingerprint(config),
        "never_scanned": scanned is None,
        "paused": pause_data(current_pause(store, now.timestamp()), zone),
        "plugins": [
            {"name": p.name, "distribution": p.distribution, "version": p.version, "source": p.source}
            for p in host.plugins
        ],
        "plugin_errors": [
            {"plugin": f.plugin, "distribution": f.distribution, "hook": f.hook, "error": f.error}
            for f in host.failures
        ],
        "jobs": jobs,
        "hosts": hosts_data(config, store, zone),
    }


def hosts_data(config: Config, store: StateStore, zone: str) -> list[dict[str, Any]]:
    """The hosts ticking on a shared store (empty on SQLite): last seen on the server's clock, clock offset
    (host minus server, seconds), ``skewed`` past the warning bound, ``refused`` past the one ticks refuse at."""
    from icc.hostclock import REFUSE_SECONDS, skewed
    from icc.runner import run_host

    me = run_host(config)
    return [
        {
            "host_id": h.host_id,
            "hostname": h.hostname,
            "last_seen": iso(h.last_seen, zone),
            "clock_offset": round(h.clock_offset, 3),
            "skewed": skewed(h.clock_offset),
            "refused": abs(h.clock_offset) > REFUSE_SECONDS,
            "this_host": h.host_id == me,
        }
        for h in store.hosts()
    ]


def ping_failure(meta: str | None, zone: str) -> dict[str, Any] | None:
    """The job's last failed heartbeat ping (URLs redacted), from its ``ping:<job>`` meta value."""
    from icc.pings import last_failure

    failed = last_failure(meta)
    if failed is None:
        return None
    at = failed.get("at")
    return {
        "at": iso(at if isinstance(at, int | float) else None, zone),
        "event": failed.get("event"),
        "error": failed.get("error"),
        "ok_since": failed["ok_since"],
    }


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


def timeline(config: Config, at: datetime | None, cell_minutes: int) -> dict[str, Any]:
    """The last 24 hours of every job's runs in cells of ``cell_minutes`` (dividing 60 or a whole number of
    hours), ending with the cell that holds ``at`` (default now); cells start on the project zone's clock.
    Each cell is the outcome that most needs looking at among its runs (``CELL_PRIORITY``), or None."""
    from icc.stores import open_store

    zone = ZoneInfo(config.timezone)
    now = (at or datetime.now(UTC)).astimezone(zone)
    into_day = now.hour * 60 + now.minute
    first = now.replace(hour=0, minute=0, second=0, microsecond=0)
    cell = cell_minutes * 60
    end = first.timestamp() + (into_day // cell_minutes + 1) * cell
    count = TIMELINE_HOURS * 60 // cell_minutes
    start = end - count * cell
    store = open_store(config)
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
    from icc.queue.dispatch import known_queues
    from icc.queue.sqlite import QueueStats
    from icc.stores import open_transport, queues_present

    found: dict[str, QueueStats] = {}
    if queues_present(config):
        found = open_transport(config).stats(now)
    return {name: found.get(name) or QueueStats() for name in (*known_queues(config), *sorted(found))}


def queue_stats_data(stats: dict[str, QueueStats]) -> list[dict[str, Any]]:
    return [
        {
            "queue": name,
            "messages": s.messages,
            "ready": s.ready,
            "delayed": s.delayed,
            "in_flight": s.in_flight,
            "owners": dict(sorted(s.owners.items())),
            "oldest_age": s.oldest_age,
            "failed": s.failed,
        }
        for name, s in stats.items()
    ]


# -- metrics ----------------------------------------------------------------------------------------------------


@dataclass
class JobMetrics:
    name: str
    last_success: float | None = None
    last_run: float | None = None
    last_duration: float | None = None
    runs: dict[str, int] = field(default_factory=dict)
    running: int = 0
    ping_failing: bool = False  # its last heartbeat ping failed and none worked since
    ping_failed_at: float | None = None  # when a heartbeat ping of it last failed


@dataclass
class Metrics:
    jobs: list[JobMetrics]
    queues: dict[str, QueueStats]
    paused: bool
    last_tick: float | None
    clock_offsets: dict[str, float] = field(default_factory=dict)  # host id -> seconds (a shared store)


def metrics(config: Config, now: float) -> Metrics:
    """The facts ``icc metrics`` exports; no plugin is loaded."""
    from icc.stores import open_store

    store = open_store(config)
    latest = store.latest_runs()
    kept = store.last_outcomes()
    counts = store.run_counts()
    unfinished = store.unfinished()
    dead = dead_runs(config, store, unfinished)
    running: dict[str, int] = {}
    for run in unfinished:
        if run.outcome == "running" and run.id not in dead:
            running[run.job] = running.get(run.job, 0) + 1
    from icc.pings import META_PREFIX, last_failure

    jobs = []
    for rec in store.jobs():
        last = latest.get(rec.name)
        success = kept.get(rec.name, {}).get("success")
        ping = last_failure(store.get_meta(META_PREFIX + rec.name))
        ping_at = ping.get("at") if ping is not None else None
        jobs.append(
            JobMetrics(
                rec.name,
                last_success=None if success is None else (success.ended_at or success.started_at),
                last_run=None if last is None else (last.started_at or last.ended_at),
                last_duration=None if last is None else last.duration,
                runs=counts.get(rec.name, {}),
                running=running.get(rec.name, 0),
                ping_failing=ping is not None and not ping["ok_since"],
                ping_failed_at=float(ping_at) if isinstance(ping_at, int | float) else None,
            )
        )
    watermark = store.get_meta("watermark")
    return Metrics(
        jobs=jobs,
        queues=queue_stats(config, now),
        paused=current_pause(store, now) is not None,
        last_tick=float(watermark) if watermark else None,
        clock_offsets={h.host_id: h.clock_offset for h in store.hosts()},
    )
