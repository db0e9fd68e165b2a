"""Mail about runs: failure alerts (``mail.alert_to``, ``email_output_on_failure``) and output mail
(``email_output_to``), queued on the ``mail`` queue from icc's ``after_run`` hook.

Flood control, per job: the first failure is mailed at once; further failures within ``mail.alert_interval`` are
only counted; the first failure after the interval is mailed with that count; the first success after a
failure mail sends a "recovered" mail and ends the episode. The state lives in the state store (meta key
``mail.alert:<job>``) and is changed in one write transaction per run, so concurrent background supervisors
see each other's decisions: two failures at once never send two first mails. The mail is queued inside that
transaction: should queueing fail, the state is not changed and the next failure tries again (at-least-once).

An alert always fits in a queue message: it carries the head and the tail of the run's output and error (with
their total size), and should it still be refused (too big, or text the mail cannot carry) a minimal alert
without them is queued instead. Only a queue that cannot be written at all leaves an alert unqueued: the hook
then fails with one line saying so, which icc records on the run (``icc status JOB``), and logs it.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
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
# The most of a run's output and of its error an alert carries: half from the head, half from the tail. Even as
# control characters (6 bytes of JSON each) that is far below the queue's 256 KiB per message.
ALERT_OUTPUT_CHARS = 16 * 1024
ALERT_ERROR_CHARS = 8 * 1024

log = logging.getLogger("icc_mail")

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


def _capped(text: str, limit: int, what: str, job: str) -> str:
    """``text`` whole, or its head and tail with a line saying how much is left out of how much."""
    if len(text) <= limit:
        return text
    half = limit // 2
    size = len(text.encode("utf-8", "surrogatepass"))
    return (
        f"{text[:half]}\n[... {len(text) - 2 * half} characters left out here: the {what} is {len(text)} "
        f"characters ({size} bytes); icc logs {job} shows all that icc stored ...]\n{text[-half:]}"
    )


def _body(
    job: Job, run: RunContext, result: RunResult, host: str, zone: str, headline: str, *, full: bool = True
) -> str:
    """The mail's text; ``full`` False leaves out the error and the output (an alert the queue refused)."""
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
    if not full:
        lines += ["", "The error and the output are left out: the mail with them could not be queued."]
        lines += ["", f"More: icc status {job.name}", ""]
        return "\n".join(lines)
    if result.error:
        lines += ["", "Error:", _capped(result.error.rstrip("\n"), ALERT_ERROR_CHARS, "error", job.name)]
    output = _capped((result.output or "").rstrip("\n"), ALERT_OUTPUT_CHARS, "stored output", job.name)
    lines += ["", "Output (the stored tail):", output] if output else ["", "No output."]
    lines += ["", f"More: icc status {job.name}", ""]
    return "\n".join(lines)


def _queue(
    config: Config,
    to: Sequence[str],
    subject: str,
    text: Callable[[bool], str],
    job: str,
    outcome: str,
) -> int:
    """Queue the mail with ``text(True)``; should the queue or the mail refuse it (too big, a lone surrogate),
    the minimal ``text(False)``. Raises :class:`MailError` saying so when neither could be queued."""
    from icc.errors import QueueError
    from icc.queue.dispatch import dispatch

    from icc_mail.errors import MailError
    from icc_mail.message import Mail

    def queue(body: str) -> int:
        mail = Mail.from_payload(
            {
                "to": list(to),
                "subject": _header_text(subject),
                "text": body,
                "headers": {
                    "Auto-Submitted": "auto-generated",  # RFC 3834: no vacation replies to alerts
                    "X-Icc-Job": _header_text(job),
                    "X-Icc-Outcome": outcome,
                },
            }
        )
        message_id: int = dispatch(MESSAGE_NAME, mail.to_payload(), queue=QUEUE, config=config)
        return message_id

    try:
        return queue(text(True))
    except (QueueError, MailError) as exc:
        log.warning("mail about %s: sending it without its output and error, as it was refused: %s", job, exc)
        first = exc
    try:
        return queue(text(False))
    except (QueueError, MailError) as exc:
        problem = f"the mail about {job} ({outcome}) to {', '.join(to)} could not be queued: {exc}"
        if str(exc) != str(first):
            problem += f" (with its output: {first})"
        log.error("%s", problem)
        raise MailError(problem) from None


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
        config,
        to,
        subject,
        lambda full: _body(job, run, result, host, zone, headline, full=full),
        job.name,
        result.outcome,
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
        headline = f"Output of {job.name}, which {what} on {host}."

        def text(full: bool) -> str:
            return _body(job, run, result, host, config.timezone, headline, full=full)

        queued.append(
            _queue(config, output_to, f"[icc] {job.name} {what} on {host}", text, job.name, outcome)
        )
    return queued


def stale_mail(config: Config, mail: MailConfig, job: str, alert: Mapping[str, Any]) -> int:
    """Queue the mail about a job gone stale (no success within its ``expect_success_within``)."""
    host = str(alert.get("host") or socket.gethostname())
    subject = f"[icc] {job} is stale (noticed on {host})"
    lines = [
        f"{job} is stale: {alert.get('error')}.",
        "",
        f"job:          {job}",
        "outcome:      stale",
        f"stale since:  {alert.get('stale_since')}",
        f"noticed on:   {host}",
        "",
        "One mail per episode: the next comes after it succeeds and goes stale again.",
        f"More: icc status {job}; icc check",
        "",
    ]
    text = "\n".join(lines)
    return _queue(config, mail.alert_to, subject, lambda _full: text, job, "stale")
