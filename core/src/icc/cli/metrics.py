"""``icc metrics``: the Prometheus text exposition format (version 0.0.4), written by hand.

Written to stdout, or with ``--textfile`` atomically (a temporary file in the same directory made by ``mkstemp``,
then a rename) for node_exporter's textfile collector, which must never read half a file. The file is made 0644: node_exporter
usually runs as its own user, and the metrics hold job and queue names only, no output or payloads.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from icc.errors import IccError

if TYPE_CHECKING:
    from icc.report import Metrics

# (name, type, help) in the order they are written.
_FAMILIES = (
    ("icc_job_last_success_timestamp_seconds", "gauge", "When the job's last successful run ended."),
    ("icc_job_last_run_timestamp_seconds", "gauge", "When the job's last run started."),
    ("icc_job_last_duration_seconds", "gauge", "How long the job's last run took."),
    ("icc_job_runs_total", "counter", "Finished runs and recorded slots of the job, by outcome."),
    ("icc_job_missed_total", "counter", "Slots of the job recorded missed."),
    ("icc_job_running", "gauge", "Runs of the job running now."),
    ("icc_job_ping_failing", "gauge", "1 when the job's last heartbeat ping failed and none worked since."),
    ("icc_job_ping_last_failure_timestamp_seconds", "gauge", "When a heartbeat ping of the job last failed."),
    (
        "icc_job_last_failure_timestamp_seconds",
        "gauge",
        "When the job's last failed, timed-out or abandoned run ended.",
    ),
    ("icc_job_duration_seconds", "histogram", "How long the job's runs took (every run whose task started)."),
    ("icc_job_stale", "gauge", "1 when the job's expect_success_within is overdue (jobs with one only)."),
    (
        "icc_queue_messages",
        "gauge",
        "Messages of the queue not yet acknowledged (ready, delayed, in flight).",
    ),
    (
        "icc_queue_oldest_message_age_seconds",
        "gauge",
        "Age of the queue's oldest unacknowledged message (0 when empty).",
    ),
    ("icc_failed_messages", "gauge", "Messages of the queue that used up their retries."),
    ("icc_paused", "gauge", "1 while `icc pause` is in force."),
    ("icc_last_tick_timestamp_seconds", "gauge", "The minute the last full tick evaluated the schedules."),
    (
        "icc_host_clock_offset_seconds",
        "gauge",
        "A host's clock minus the database server's, measured by its last full tick (a shared store).",
    ),
    ("icc_plugins_drifted", "gauge", "1 when the plugins or the config file changed since the last scan."),
    ("icc_tick_lock_held_seconds", "gauge", "How long the tick lock has been held (0 when it is free)."),
)


def escape_label(value: str) -> str:
    """A label value as the format wants it: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def _bound(value: float) -> str:
    """A histogram bucket's ``le`` as Prometheus's own clients write it: ``0.1``, ``60.0``, ``+Inf``."""
    return "+Inf" if math.isinf(value) else repr(float(value))


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items()) + "}"


def render(facts: Metrics) -> str:
    samples: dict[str, list[str]] = {name: [] for name, _, _ in _FAMILIES}

    def add(name: str, value: float | None, **labels: str) -> None:
        if value is not None:
            samples[name].append(f"{name}{_labels(**labels) if labels else ''} {_number(value)}")

    for job in facts.jobs:
        add("icc_job_last_success_timestamp_seconds", job.last_success, job=job.name)
        add("icc_job_last_run_timestamp_seconds", job.last_run, job=job.name)
        add("icc_job_last_duration_seconds", job.last_duration, job=job.name)
        for outcome, count in sorted(job.runs.items()):
            add("icc_job_runs_total", count, job=job.name, outcome=outcome)
        add("icc_job_missed_total", job.runs.get("missed", 0), job=job.name)
        add("icc_job_running", job.running, job=job.name)
        add("icc_job_ping_failing", 1 if job.ping_failing else 0, job=job.name)
        add("icc_job_ping_last_failure_timestamp_seconds", job.ping_failed_at, job=job.name)
        add("icc_job_last_failure_timestamp_seconds", job.last_failure, job=job.name)
        if job.durations is not None:
            family = "icc_job_duration_seconds"
            for bound, cumulative in job.durations.buckets:
                samples[family].append(
                    f"{family}_bucket{_labels(job=job.name, le=_bound(bound))} {_number(cumulative)}"
                )
            samples[family].append(
                f"{family}_sum{_labels(job=job.name)} {_number(round(job.durations.sum, 3))}"
            )
            samples[family].append(f"{family}_count{_labels(job=job.name)} {_number(job.durations.count)}")
        if job.stale is not None:
            add("icc_job_stale", 1 if job.stale else 0, job=job.name)
    for q in facts.queues:
        add("icc_queue_messages", q.messages, queue=q.queue)
        add("icc_queue_oldest_message_age_seconds", q.oldest_age or 0.0, queue=q.queue)
        add("icc_failed_messages", q.failed, queue=q.queue)
    add("icc_paused", 1 if facts.paused else 0)
    add("icc_last_tick_timestamp_seconds", facts.last_tick)
    for host, offset in sorted(facts.clock_offsets.items()):
        add("icc_host_clock_offset_seconds", round(offset, 3), host=host)
    add("icc_plugins_drifted", 1 if facts.plugins_drifted else 0)
    add("icc_tick_lock_held_seconds", round(facts.tick_lock_held, 3))
    lines: list[str] = []
    for name, kind, text in _FAMILIES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples[name]]
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (node_exporter reads ``*.prom`` files at any moment).

    The temporary file is made by :func:`tempfile.mkstemp` (``O_EXCL``, a random name): never a file or link
    someone planted at a name they could predict, in a directory others may write to."""

    directory = path.parent
    tmp: str | None = None
    try:
        # Not *.prom: the collector skips it.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(fd, 0o644)  # not mkstemp's 0600: node_exporter reads it as another user
            out.write(text)
            out.flush()
            os.fsync(fd)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise IccError(
            f"icc metrics --textfile {path}: cannot write it ({exc.strerror or exc}); give a file in an "
            "existing directory you can write to, e.g. node_exporter's --collector.textfile.directory"
        ) from None
