"""Mail about runs: failure alerts (``mail.alert_to``, ``email_output_on_failure``) and output mail
(``email_output_to``), queued on the ``mail`` queue from icc's ``after_run`` hook.

Flood control, per job: the first failure is mailed at once; further failures within ``mail.alert_interval`` are
only counted; the first failure after the interval is mailed with that count; the first success after a
failure mail sends a "recovered" mail and ends the episode. The state lives in the state store (meta key
``mail.alert:<job>``) and is changed in one write transaction per run, so concurrent background supervisors
see each other's decisions: two failures at once never send two first mails. The mail is queued inside that
transaction: should queueing fail, the state is not changed and the next failure tries again (at-least-once).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from icc_mail.addresses import _LINE_BREAKS
from icc_mail.send import MESSAGE_NAME, QUEUE

if TYPE_CHECKING:
    from icc.config import Config
    from icc.jobs import Job, RunContext, RunResult

    from icc_mail.config import MailConfig

__all__ = ["FAILED", "META_PREFIX", "RAN", "Decision", "decide", "notify"]

FAILED = frozenset({"failed", "timed_out", "abandoned"})
RAN = frozenset({"succeeded", "failed", "timed_out", "abandoned", "stopped"})  # runs that ended, not missed
META_PREFIX = "mail.alert:"

Kind = Literal["first", "repeat", "recovered"]


@dataclass(frozen=True)
class Decision:
    """What one run means for a job's failure mails: ``kind`` None sends nothing; ``state`` is stored next."""

    kind: Kind | None
    state: dict[str, Any] | None
    unsent: int = 0  # failures since the last mail, this one included (repeat) or not mailed (recovered)
    total: int = 0  # failures since the episode began
    since: float | None = None  # when the episode began
    last_mail: float | None = None  # the previous failure mail


def decide(state: dict[str, Any] | None, outcome: str, now: float, interval: float) -> Decision:
    """The flood-control rule, pure: ``state`` is None or ``{"since", "last_mail", "unsent", "total"}``."""
    if outcome in FAILED:
        if state is None:
            return Decision("first", {"since": now, "last_mail": now, "unsent": 0, "total": 1}, 1, 1, now)
        total = int(state.get("total", 0)) + 1
        unsent = int(state.get("unsent", 0)) + 1
        since = float(state.get("since", now))
        last_mail = float(state.get("last_mail", since))
        if now - last_mail >= interval:
            new = {"since": since, "last_mail": now, "unsent": 0, "total": total}
            return Decision("repeat", new, unsent, total, since, last_mail)
        return Decision(None, {**state, "unsent": unsent, "total": total}, unsent, total, since, last_mail)
    if outcome == "succeeded" and state is not None:
        since = float(state.get("since", now))
        last_mail = float(state.get("last_mail", since))
        total, unsent = int(state.get("total", 0)), int(state.get("unsent", 0))
        return Decision("recovered", None, unsent, total, since, last_mail)
    return Decision(None, state)


def _header_text(text: str) -> str:
    return "".join(" " if c in _LINE_BREAKS else c for c in text)


def _when(moment: datetime | float | None, zone: str) -> str:
    if moment is None:
        return "-"
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, tz=UTC)
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _body(job: Job, run: RunContext, result: RunResult, host: str, zone: str, headline: str) -> str:
    duration = "-" if result.duration is None else f"{result.duration:.1f}s"
    lines = [
        headline,
        "",
        f"job:       {job.name}",
        f"outcome:   {result.outcome}",
        f"host:      {host}",
        f"slot:      {_when(run.slot, zone) if run.slot is not None else 'none (run by icc exec)'}",
        f"run:       {run.run_id} ({run.kind})",
        f"started:   {_when(result.started_at, zone)}",
        f"ended:     {_when(result.ended_at, zone)}",
        f"took:      {duration}",
        f"exit code: {'-' if result.exit_code is None else result.exit_code}",
    ]
    if result.error:
        lines += ["", "Error:", result.error.rstrip("\n")]
    output = (result.output or "").rstrip("\n")
    lines += ["", "Output (the stored tail):", output] if output else ["", "No output."]
    lines += ["", f"More: icc status {job.name}", ""]
    return "\n".join(lines)


def _queue(config: Config, to: Sequence[str], subject: str, text: str, job: str, outcome: str) -> int:
    from icc.queue.dispatch import dispatch

    from icc_mail.message import Mail

    mail = Mail.from_payload(
        {
            "to": list(to),
            "subject": _header_text(subject),
            "text": text,
            "headers": {
                "Auto-Submitted": "auto-generated",  # RFC 3834: no vacation replies to alerts
                "X-Icc-Job": _header_text(job),
                "X-Icc-Outcome": outcome,
            },
        }
    )
    message_id: int = dispatch(MESSAGE_NAME, mail.to_payload(), queue=QUEUE, config=config)
    return message_id


def _failure_mail(
    config: Config,
    to: Sequence[str],
    interval: float,
    job: Job,
    run: RunContext,
    result: RunResult,
    d: Decision,
) -> int:
    host, zone = socket.gethostname(), config.timezone
    what = result.outcome.replace("_", " ")
    every = f"at most one mail per {_duration(interval)} while it keeps failing"
    if d.kind == "first":
        subject = f"[icc] {job.name} {what} on {host}"
        headline = (
            f"{job.name} {what} on {host}. Further failures are counted: {every}, "
            "and one when it succeeds again."
        )
    elif d.kind == "repeat":
        subject = f"[icc] {job.name} {what} on {host} ({d.unsent} failures since the last mail)"
        headline = (
            f"{job.name} {what} on {host}: {d.unsent} failures since the last mail at {_when(d.last_mail, zone)}, "
            f"{d.total} since it began failing at {_when(d.since, zone)}. This is the latest; {every}."
        )
    else:
        subject = f"[icc] {job.name} recovered on {host}"
        not_mailed = f"; {d.unsent} of them after the last mail" if d.unsent else ""
        headline = (
            f"{job.name} succeeded again on {host} after {d.total} failures since {_when(d.since, zone)}"
            f"{not_mailed}."
        )
    return _queue(
        config, to, subject, _body(job, run, result, host, zone, headline), job.name, result.outcome
    )


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def notify(config: Config, mail: MailConfig, job: Job, run: RunContext, result: RunResult) -> list[int]:
    """Queue the mails this run calls for; returns their message ids."""
    notes = job.schedule.notifications
    outcome = result.outcome
    alert_to = tuple(dict.fromkeys((*mail.alert_to, *notes.email_output_on_failure)))
    queued: list[int] = []
    alerted: tuple[str, ...] = ()
    if alert_to and (outcome in FAILED or outcome == "succeeded"):
        now = result.ended_at.timestamp() if result.ended_at is not None else time.time()

        def change(old: str | None) -> str | None:
            try:
                state = json.loads(old) if old else None
            except ValueError:
                state = None
            decision = decide(state if isinstance(state, dict) else None, outcome, now, mail.alert_interval)
            if decision.kind is not None:  # queued inside the transaction: no state change without the mail
                queued.append(
                    _failure_mail(config, alert_to, mail.alert_interval, job, run, result, decision)
                )
            return None if decision.state is None else json.dumps(decision.state, sort_keys=True)

        from icc.store import open_store

        store = open_store(config)
        try:
            # A success with no failure mail behind it changes nothing: a read, not a write, on most runs.
            if outcome in FAILED or store.get_meta(META_PREFIX + job.name) is not None:
                store.update_meta(META_PREFIX + job.name, change)
        finally:
            store.close()
        if queued:
            alerted = alert_to
    output_to = [a for a in notes.email_output_to if a not in alerted]
    if output_to and outcome in RAN:
        host = socket.gethostname()
        what = outcome.replace("_", " ")
        text = _body(
            job, run, result, host, config.timezone, f"Output of {job.name}, which {what} on {host}."
        )
        queued.append(
            _queue(config, output_to, f"[icc] {job.name} {what} on {host}", text, job.name, outcome)
        )
    return queued
