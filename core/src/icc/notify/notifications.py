"""icc's built-in notification plugin: failures and stale jobs to apprise URLs (``json://``, ``slack://``,
``mailto://``, ...), queued and sent by a consumer, never by the tick or the run.

Where the URLs come from: ``[icc.notify] urls`` (every job) and ``Schedule.notify_on_failure(*urls)`` (one
job). apprise is the ``icc-runner[notify]`` extra; without it a configured URL is a one-line configuration
error (:func:`icc.urls.apprise_missing`), and a job's URL fails its scan (:func:`check_urls`).

What is sent: a notification for each failed, timed-out or abandoned run, with the same flood control as
icc-mail's alert mail (:func:`decide`): the first failure at once; further failures within ``[icc.notify]
interval`` (1 h) only counted; the first failure after it with that count; the first success after a
notification a "recovered" one. The state lives in the state store (meta key ``notify.alert:<job>``), changed
in one write transaction per run, and the messages are queued inside it: should queueing fail, nothing
changes and the next failure tries again. A job gone stale (``expect_success_within``, :mod:`icc.notify.
freshness`) is notified once per episode the same way.

How: :func:`after_run` (in the run's supervisor or concluder) queues one ``notify.send`` message per URL on
the ``mail`` queue (icc's alert queue: durable, retried with back-off for a day, see ``MAIL_QUEUE_DEFAULTS``);
the ``consume:mail`` consumer sends it with apprise. A notifier that is down fails the message, which is
retried later: it never delays a run or a tick. Payload: job, outcome, slot, error, the output's tail, host.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from icc import logs
from icc.hookspecs import hookimpl
from icc.store import open_store, open_transport
from icc.urls import apprise_missing, redact

if TYPE_CHECKING:
    from icc.config import Config
    from icc.hookspecs import RegisterHandler
    from icc.jobs import Job, RunContext, RunResult

__all__ = [
    "FAILED",
    "MESSAGE_NAME",
    "META_PREFIX",
    "QUEUE",
    "Decision",
    "after_run",
    "check_urls",
    "decide",
    "handle_send",
    "queue_notifications",
]

log = logs.get(__name__)

FAILED = frozenset({"failed", "timed_out", "abandoned"})
MESSAGE_NAME = "notify.send"
QUEUE = "mail"  # icc's alert queue: consumed by default, retried for a day (icc.config.MAIL_QUEUE_DEFAULTS)
META_PREFIX = "notify.alert:"
OUTPUT_TAIL = 2000  # characters of the output's tail a notification carries (chat services cap a message)
ERROR_CHARS = 1000

# Without it (and without a job's own notify_on_failure) after_run does nothing: icc's light minute runs the
# consumer jobs without loading the plugins (docs/plugins.md).
ICC_RUN_HOOK_SETTINGS = ("notify.urls",)
# For such a job after_run acts only on a failed, timed-out or abandoned run, or on a success while this meta
# key holds its episode (META_PREFIX): the light minute loads the plugin for those runs only.
ICC_RUN_HOOK_EPISODE = "notify.alert:{job}"

Kind = Literal["first", "repeat", "recovered"]

_config: Config | None = None


@hookimpl
def configure(config: Config) -> None:
    global _config
    _config = config


@dataclass(frozen=True)
class Decision:
    """What one run means for a job's notifications: ``kind`` None sends nothing; ``state`` is stored next."""

    kind: Kind | None
    state: dict[str, Any] | None
    unsent: int = 0
    total: int = 0
    since: float | None = None


def decide(state: dict[str, Any] | None, outcome: str, now: float, interval: float) -> Decision:
    """The flood-control rule (icc-mail's alert rule), pure: ``state`` is None or ``{"since", "last",
    "unsent", "total"}``."""
    if outcome in FAILED or outcome == "stale":
        if state is None:
            return Decision("first", {"since": now, "last": now, "unsent": 0, "total": 1}, 1, 1, now)
        total = int(state.get("total", 0)) + 1
        unsent = int(state.get("unsent", 0)) + 1
        since = float(state.get("since", now))
        last = float(state.get("last", since))
        if now - last >= interval:
            return Decision(
                "repeat", {"since": since, "last": now, "unsent": 0, "total": total}, unsent, total, since
            )
        return Decision(None, {**state, "unsent": unsent, "total": total}, unsent, total, since)
    if outcome == "succeeded" and state is not None:
        since = float(state.get("since", now))
        return Decision("recovered", None, int(state.get("unsent", 0)), int(state.get("total", 0)), since)
    return Decision(None, state)


def urls_for(config: Config | None, job_urls: Sequence[str]) -> tuple[str, ...]:
    """The configured URLs and the job's own, each once."""
    configured = config.notify.urls if config is not None else ()
    return tuple(dict.fromkeys((*configured, *job_urls)))


def _when(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tail(text: str | None, limit: int) -> str:
    # A lone surrogate (output decoded with surrogateescape) is no JSON a PostgreSQL jsonb column takes.
    text = (text or "").rstrip("\n").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else "..." + text[-limit:]


def _title(job: str, outcome: str, host: str, decision: Decision) -> str:
    what = "is stale" if outcome == "stale" else outcome.replace("_", " ")
    if decision.kind == "recovered":
        return f"[icc] {job} recovered on {host} after {decision.total} failures"
    if decision.kind == "repeat":
        return f"[icc] {job} {what} on {host} ({decision.unsent} failures since the last notification)"
    return f"[icc] {job} {what} on {host}"


def _body(fields: dict[str, Any]) -> str:
    lines = [
        f"{key}: {'-' if fields[key] is None else fields[key]}" for key in ("job", "outcome", "slot", "host")
    ]
    if fields.get("run") is not None:
        lines.append(f"run: {fields['run']}")
    if fields.get("stale_since") is not None:
        lines.append(f"stale since: {fields['stale_since']}")
    if fields.get("count"):
        lines.append(f"failures: {fields['count']}")
    lines.append(f"error: {fields.get('error') or '-'}")
    output = fields.get("output") or ""
    lines += ["output (tail):", output] if output else ["output: -"]
    lines.append(f"more: icc status {fields['job']}")
    return "\n".join(lines)


def queue_notifications(
    config: Config,
    urls: Sequence[str],
    job: str,
    outcome: str,
    fields: dict[str, Any],
    *,
    now: float,
) -> list[int]:
    """Apply the flood control to ``outcome`` of ``job`` and queue what it calls for: one ``notify.send``
    message per URL, inside the state's write transaction. Returns the message ids (none: nothing to send)."""

    host = fields.get("host") or socket.gethostname()
    queued: list[int] = []

    def change(old: str | None) -> str | None:
        try:
            state = json.loads(old) if old else None
        except ValueError:
            state = None
        decision = decide(state if isinstance(state, dict) else None, outcome, now, config.notify.interval)
        if decision.kind is not None:
            payload = {
                **fields,
                "host": host,
                "kind": decision.kind,
                "count": decision.unsent if decision.kind != "first" else 1,
                "title": _title(job, outcome, host, decision),
                "type": "success" if decision.kind == "recovered" else "failure",
            }
            transport = open_transport(
                config
            )  # icc.queue's dispatch() is a sibling layer: the transport itself
            for url in urls:
                text = json.dumps({**payload, "url": url}, allow_nan=False)
                queued.append(transport.send(QUEUE, MESSAGE_NAME, text, delay=0.0))
        return None if decision.state is None else json.dumps(decision.state, sort_keys=True)

    store = open_store(config)
    try:
        # A success with no notification behind it changes nothing: a read, not a write, on most runs.
        if outcome in FAILED or outcome == "stale" or store.get_meta(META_PREFIX + job) is not None:
            store.update_meta(META_PREFIX + job, change)
    finally:
        store.close()
    return queued


@hookimpl
def after_run(job: Job, run: RunContext, result: RunResult) -> None:
    """Queue the notifications of a failed, timed-out or abandoned run, or of a success after them."""
    config = _config
    if config is None:
        return
    urls = urls_for(config, job.schedule.notifications.notify_on_failure)
    if not urls or not (result.outcome in FAILED or result.outcome == "succeeded"):
        return
    fields = {
        "job": job.name,
        "outcome": result.outcome,
        "slot": _when(run.slot.timestamp()) if run.slot is not None else None,
        "run": run.run_id,
        "error": _tail(result.error, ERROR_CHARS) or None,
        "output": _tail(result.output, OUTPUT_TAIL),
        "host": socket.gethostname(),
    }
    now = result.ended_at.timestamp() if result.ended_at is not None else time.time()
    queue_notifications(config, urls, job.name, result.outcome, fields, now=now)


@hookimpl
def register_handlers(register: RegisterHandler) -> None:
    register(MESSAGE_NAME, handle_send, queue=QUEUE)


class NotifyFailed(Exception):
    """apprise could not deliver a notification: the consumer retries the message later."""


def handle_send(payload: dict[str, Any]) -> None:
    """Send one ``notify.send`` message with apprise; raise (the consumer retries) when it is not delivered."""
    import apprise  # lazy: only the consumer sending a notification pays for it

    url = str(payload.get("url", ""))
    notifier = apprise.Apprise()
    if not notifier.add(url):
        raise NotifyFailed(f"apprise does not accept the notification URL {redact(url)}")
    notify_type = (
        apprise.NotifyType.SUCCESS if payload.get("type") == "success" else apprise.NotifyType.FAILURE
    )
    body = _body(payload)
    if not notifier.notify(body=body, title=str(payload.get("title", "")), notify_type=notify_type):
        raise NotifyFailed(f"the notification to {redact(url)} was not delivered (apprise); retried later")


def check_urls(urls: Sequence[str]) -> str | None:
    """Why one of ``urls`` is not an apprise URL apprise can use, or None: at scan, one line."""

    if not urls:
        return None
    missing = apprise_missing()
    if missing is not None:
        return missing
    import apprise  # lazy: at scan, only with notification URLs

    for url in urls:
        if not apprise.Apprise().add(url):
            return f"notification URL {redact(url)} is not one apprise knows: see https://github.com/caronc/apprise/wiki"
    return None
