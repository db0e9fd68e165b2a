"""Freshness, a dead man's switch: ``Schedule.expect_success_within(seconds)`` makes a job stale when its last
success is older than that, counted from the job's first scan when it never succeeded. That catches what no
failure alert can: the crontab line was removed, the host is down, the job was disabled and forgotten.

What is stored (meta keys of the state store, so every host sharing it agrees):

- ``fresh:<job>``: ``{"seen": first scan, "alerted": the stale moment of the episode already alerted, "by":
  who claimed it}``. A new episode begins with each success (its stale moment moves on).
- ``stale.next``: the earliest moment some job not yet alerted goes stale. The idle tick reads it with its one
  query and hands the minute to the full tick once it has passed; nothing else of this runs on the idle path.

The full tick (:func:`check`) then claims each newly stale job's episode with one atomic meta update
(:meth:`icc.store.protocol.StateStore.update_meta`): of several hosts ticking the same minute one claims it, so
an episode is alerted once. The alert is queued, never sent by the tick: notification URLs as
:mod:`icc.notify.notifications` does (flood control included), and one ``notify.stale`` message for the
pings' ``/fail`` and the plugins' ``job_stale`` hook (icc-mail's alert mail), which the mail consumer handles.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from icc import logs
from icc.hookspecs import hookimpl
from icc.plugins import loaded_host
from icc.store import open_store, open_transport

if TYPE_CHECKING:
    from icc.config import Config
    from icc.hookspecs import RegisterHandler
    from icc.jobs import Job, RunContext, RunResult
    from icc.store.protocol import JobRecord, RunRecord, StateStore

__all__ = [
    "FRESH_PREFIX",
    "NEXT_KEY",
    "STALE_MESSAGE",
    "Freshness",
    "check",
    "freshness",
    "freshness_of",
    "handle_stale",
    "record_scan",
    "schedule_within",
]

log = logs.get(__name__)

# A built-in plugin: its after_run acts only for a job with expect_success_within, which icc's consumer jobs
# never have, so the light minute (icc.tick.light) may run those without it.
ICC_RUN_HOOK_SETTINGS: tuple[str, ...] = ()

_config: Config | None = None

FRESH_PREFIX = "fresh:"
NEXT_KEY = "stale.next"
STALE_MESSAGE = "notify.stale"


@dataclass(frozen=True)
class Freshness:
    """One job with ``expect_success_within``: how fresh it is at ``now``."""

    job: str
    within: int  # seconds
    last_success: float | None  # when its last success ended
    seen: float | None  # when it was first scanned with the check
    stale_at: float | None  # when it goes (or went) stale; None: not known yet (never scanned with it)
    stale: bool
    alerted: bool  # this episode was alerted already


def within(record: JobRecord) -> int | None:
    """The job's ``expect_success_within`` seconds, from its stored definition."""
    return schedule_within(record.definition.get("schedule"))


def schedule_within(schedule: object) -> int | None:
    """``expect_success_within`` seconds of a stored schedule definition, or None."""
    value = schedule.get("expect_success_within") if isinstance(schedule, Mapping) else None
    return (
        int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None
    )


def _state(value: str | None) -> dict[str, Any]:
    try:
        state = json.loads(value) if value else {}
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def freshness(store: StateStore, now: float, records: Iterable[JobRecord] | None = None) -> list[Freshness]:
    """Every job with a freshness check (removed jobs left out; disabled ones kept: a forgotten job is stale)."""
    checked = [
        (r.name, w)
        for r in (records if records is not None else store.jobs())
        if r.removed_at is None and (w := within(r))
    ]
    return freshness_of(store, now, checked) if checked else []


def freshness_of(
    store: StateStore,
    now: float,
    checked: Iterable[tuple[str, int]],
    last: Mapping[str, Mapping[str, RunRecord]] | None = None,
) -> list[Freshness]:
    """How fresh each of ``checked`` (job name, ``expect_success_within`` seconds) is at ``now``; ``last``:
    :meth:`StateStore.last_outcomes` when the caller has read it already (``icc status``)."""
    if last is None:
        last = store.last_outcomes()
    found: list[Freshness] = []
    for name, seconds in checked:
        success = last.get(name, {}).get("success")
        ended = None if success is None else (success.ended_at or success.started_at)
        state = _state(store.get_meta(FRESH_PREFIX + name))
        seen = _number(state.get("seen"))
        start = ended if ended is not None else seen
        stale_at = None if start is None else start + seconds
        found.append(
            Freshness(
                job=name,
                within=seconds,
                last_success=ended,
                seen=seen,
                stale_at=stale_at,
                stale=stale_at is not None and now >= stale_at,
                alerted=stale_at is not None and _number(state.get("alerted")) == stale_at,
            )
        )
    return found


def _next(found: Iterable[Freshness]) -> str | None:
    waiting = [f.stale_at for f in found if f.stale_at is not None and not f.alerted]
    return repr(min(waiting)) if waiting else None


def record_scan(
    store: StateStore,
    records: Iterable[JobRecord],
    now: float,
    current: Iterable[JobRecord] | None = None,
) -> None:
    """At scan: the first-seen time of each job with a freshness check, and ``stale.next``.

    ``records``: the records the scan wrote. ``current``: every job the store holds after the scan (or at least
    each one with a freshness check), when the scan knows them; None reads them from the store (issue 17: a
    scan of 10,000 unchanged jobs reads no row it need not)."""
    checked = [r for r in records if within(r)]
    for record in checked:

        def seen(old: str | None) -> str | None:
            state = _state(old)
            if _number(state.get("seen")) is not None:
                return old
            return json.dumps({**state, "seen": now}, sort_keys=True)

        store.update_meta(FRESH_PREFIX + record.name, seen)
    value = _next(freshness(store, now, current))
    store.update_meta(NEXT_KEY, lambda _old: value)


def due(store: StateStore, now: float) -> bool:
    """Whether ``stale.next`` has passed: the full tick then runs :func:`check`."""
    value = _number(_loads(store.get_meta(NEXT_KEY)))
    return value is not None and now >= value


def _loads(value: str | None) -> object:
    try:
        return json.loads(value) if value else None
    except ValueError:
        return None


def check(config: Config, store: StateStore, now: float) -> list[str]:
    """Alert each job that went stale and whose episode no host has alerted yet; returns their names.

    Called by the full tick when :func:`due`. Recomputes ``stale.next``. An alert that cannot be queued gives
    its claim back, so a later tick tries again (at least once)."""
    import socket  # lazy: only once stale.next has passed (every due tick imports this module for due())
    import uuid  # lazy: as above (uuid loads platform and OpenSSL: about 5 ms)

    before = store.get_meta(NEXT_KEY)
    found = freshness(store, now)
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    claimed: list[Freshness] = []
    for item in found:
        if not item.stale or item.alerted or item.stale_at is None:
            continue
        stale_at = item.stale_at

        def claim(old: str | None, stale_at: float = stale_at) -> str | None:
            state = _state(old)
            if _number(state.get("alerted")) == stale_at:
                return old  # another host claimed this episode
            return json.dumps({**state, "alerted": stale_at, "by": token}, sort_keys=True)

        if _state(store.update_meta(FRESH_PREFIX + item.job, claim)).get("by") == token:
            claimed.append(item)
    alerted: list[Freshness] = []
    for item in claimed:
        try:
            _alert(config, store, item, now)
            alerted.append(item)
        except Exception as exc:  # never breaks the tick: the claim is given back, a later tick tries again
            log.warning("could not queue the stale alert of %s: %s; the next tick tries again", item.job, exc)

            def unclaim(old: str | None) -> str | None:
                state = _state(old)
                if state.get("by") != token:
                    return old
                return json.dumps(
                    {k: v for k, v in state.items() if k not in ("alerted", "by")}, sort_keys=True
                )

            store.update_meta(FRESH_PREFIX + item.job, unclaim)
    value = _next(f for f in found if f not in alerted)

    def recompute(old: str | None) -> str | None:
        # A success recorded meanwhile may have brought stale.next forward (after_success): keep the earlier.
        moved = _number(_loads(old)) if old != before else None
        if moved is None:
            return value
        return repr(moved) if value is None or moved < float(value) else value

    store.update_meta(NEXT_KEY, recompute)
    return [item.job for item in alerted]


@hookimpl
def configure(config: Config) -> None:
    global _config
    _config = config


@hookimpl
def register_handlers(register: RegisterHandler) -> None:
    register(STALE_MESSAGE, handle_stale, queue="mail")


@hookimpl
def after_run(job: Job, run: RunContext, result: RunResult) -> None:
    if _config is not None and result.outcome == "succeeded" and job.schedule.stale_after is not None:
        after_success(_config, job.name, job.schedule.stale_after, result)


def after_success(config: Config, job: str, seconds: int, result: RunResult) -> None:
    """A success of a job whose episode was alerted begins a new one: ``stale.next`` is brought forward to
    its new stale moment (a job not alerted is already counted there). One read on most runs."""

    ended = result.ended_at.timestamp() if result.ended_at is not None else time.time()
    store = open_store(config)
    try:
        if "alerted" not in _state(store.get_meta(FRESH_PREFIX + job)):
            return
        moment = ended + seconds

        def bring_forward(old: str | None) -> str | None:
            current = _number(_loads(old))
            return repr(moment) if current is None or moment < current else old

        store.update_meta(NEXT_KEY, bring_forward)
    finally:
        store.close()


def _when(moment: float | None) -> str | None:
    from icc.notify.notifications import _when as iso  # lazy: a due tick imports this module without it

    return iso(moment)


def _alert(config: Config, store: StateStore, item: Freshness, now: float) -> None:
    import socket  # lazy: as in check()

    from icc.notify.notifications import (  # lazy: only a stale alert; as in _when
        queue_notifications,
        urls_for,
    )
    from icc.notify.pings import fail_urls  # lazy: as above

    record = store.job(item.job)
    definition = record.definition.get("schedule", {}) if record is not None else {}
    notify = definition.get("notify", {}) if isinstance(definition, Mapping) else {}
    host = socket.gethostname()
    since = _when(item.stale_at)
    last = _when(item.last_success) or "never"
    error = f"no success within {item.within}s (last success: {last}); stale since {since}"
    fields = {
        "job": item.job,
        "outcome": "stale",
        "slot": None,
        "run": None,
        "error": error,
        "output": "",
        "host": host,
        "stale_since": since,
    }
    urls = urls_for(config, tuple(notify.get("notify_on_failure", ())))
    if urls:
        queue_notifications(config, urls, item.job, "stale", fields, now=now)
    pings = fail_urls(item.job, notify, config.monitor.ping_url)
    payload = {**fields, "pings": pings, "last_success": item.last_success, "within": item.within}
    open_transport(config).send("mail", STALE_MESSAGE, json.dumps(payload, allow_nan=False), delay=0.0)


def handle_stale(payload: dict[str, Any]) -> None:
    """The consumer's part of a stale alert: the pings' ``/fail`` (best effort, as after a run) and the
    plugins' ``job_stale`` hook (icc-mail queues its alert mail there)."""
    from icc.notify import pings  # lazy: the consumer's side; as in _when

    urls = [str(u) for u in payload.get("pings", ()) if isinstance(u, str)]
    if urls:
        from icc.urls import redact  # lazy: as above (icc.urls: urllib.parse, ipaddress)

        body = str(payload.get("error", "")).encode()
        ping_config = pings._config
        timeout = ping_config.monitor.timeout if ping_config is not None else 5.0
        failures = pings.send([pings.Ping(u, redact(u)) for u in urls], body, timeout=timeout)
        for failure in failures:
            log.warning(
                "stale ping %s for %s failed: %s", failure.ping.shown, payload.get("job"), failure.error
            )

    config = _config
    if config is not None:
        job = str(payload.get("job", ""))
        for problem in loaded_host(config).call_job_stale(job, payload):
            log.warning("%s", problem)
