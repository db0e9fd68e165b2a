"""Failure alerts and output mail: icc-mail's ``after_run`` through a real plugin host, the real ``mail`` queue,
a real ``icc consume mail`` process and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from icc.config import Config, load_config
from icc.errors import ConfigError
from icc.jobs import Job, RunContext, RunResult
from icc.plugins import PluginHost, load_plugins
from icc.schedule import Schedule
from icc.store.sqlite.state import SQLiteStateStore
from icc_mail.alerts import decide
from icc_mail.config import parse_config

if TYPE_CHECKING:
    from conftest import Received, StartServer

BASE = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
HOST = socket.gethostname()
TRACEBACK = 'Traceback (most recent call last):\n  File "probe.py", line 3, in boom\nZeroDivisionError: division by zero'


def project(root: Path, smtp_port: int, mail: str = "") -> Config:
    root.mkdir(exist_ok=True)
    (root / "icc.toml").write_text(
        textwrap.dedent(
            f"""
            [icc]
            state_dir = "state"

            [icc.consumers]
            mode = "service"

            [icc.mail]
            dsn = "smtp://127.0.0.1:{smtp_port}?timeout=5"
            sender = "icc <icc@example.org>"
            """
        )
        + mail
    )
    config = load_config(cwd=root, environ={})
    SQLiteStateStore(config.state_dir).close()
    return config


def host_for(config: Config) -> PluginHost:
    host = load_plugins(config, environ={"ICC_PLUGINS": "icc-mail"})
    assert "icc-mail" in [p.name for p in host.plugins], host.failures
    return host


def ran(
    host: PluginHost, job: Job, outcome: str, minute: int, *, output: str = "", error: str | None = None
) -> None:
    started = BASE + timedelta(minutes=minute)
    result = RunResult(
        outcome,
        exit_code=None if outcome == "abandoned" else (0 if outcome == "succeeded" else 1),
        error=error,
        output=output,
        duration=None if outcome == "abandoned" else 2.0,
        started_at=None if outcome == "abandoned" else started,
        ended_at=started + timedelta(seconds=2),
    )
    host.call_after_run(job, RunContext(job.name, 100 + minute, started, "scheduled", "production"), result)
    assert host.failures == []


def queued(config: Config) -> int:
    db = sqlite3.connect(config.state_dir / "queue.sqlite3")
    try:
        return int(db.execute("SELECT COUNT(*) FROM messages WHERE name = 'mail.send'").fetchone()[0])
    finally:
        db.close()


def consume(config: Config) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")} | {"ICC_PLUGINS": "icc-mail"}
    proc = subprocess.run(
        [sys.executable, "-m", "icc", "consume", "mail", "--stop-when-empty"],
        cwd=config.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def text_of(received: Received) -> str:
    body = received.message.get_body(("plain",))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


def test_a_job_failing_every_minute_mails_once_per_interval_then_recovered(
    tmp_path: Path, start_smtp: StartServer
) -> None:
    server = start_smtp()
    config = project(
        tmp_path / "proj", server.port, 'alert_to = ["Ops <ops@example.org>"]\nalert_interval = "1h"\n'
    )
    host = host_for(config)
    job = Job("probe.boom", lambda: None, Schedule())
    for minute in range(61):  # minutes 0..60: the first mail, 59 counted, the 61st an hour after the first
        ran(host, job, "failed", minute, output=f"line {minute}\n" * 3, error=TRACEBACK)
    ran(host, job, "succeeded", 61, output="fine\n")
    ran(host, job, "succeeded", 62)  # nothing more: the episode ended
    assert queued(config) == 3
    consume(config)

    assert [r.message["Subject"] for r in server.received] == [
        f"[icc] probe.boom failed on {HOST}",
        f"[icc] probe.boom failed on {HOST} (60 failures since the last mail)",
        f"[icc] probe.boom recovered on {HOST}",
    ]
    first, repeat, recovered = server.received
    assert first.rcpt_tos == ["ops@example.org"] and first.mail_from == "icc@example.org"
    assert first.message["Auto-Submitted"] == "auto-generated"
    body = text_of(first)
    assert "slot:      2026-11-22 10:00:00 UTC" in body
    assert "ZeroDivisionError: division by zero" in body and 'File "probe.py", line 3' in body
    assert "line 0\nline 0\nline 0" in body  # the output tail
    assert "at most one mail per 1h" in body
    assert "60 failures since the last mail at 2026-11-22 10:00:02 UTC" in text_of(repeat)
    assert "line 60" in text_of(repeat)
    assert f"succeeded again on {HOST} after 61 failures since 2026-11-22 10:00:02 UTC" in text_of(recovered)


def _fail_together(root: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    config = load_config(cwd=Path(root), environ={})
    host = load_plugins(config, environ={"ICC_PLUGINS": "icc-mail"})
    job = Job("bg.boom", lambda: None, Schedule())
    barrier.wait(30)
    ran(host, job, "failed", 0, error="boom")


def test_concurrent_background_failures_send_one_first_mail(tmp_path: Path, start_smtp: StartServer) -> None:
    server = start_smtp()
    config = project(tmp_path / "proj", server.port, 'alert_to = ["ops@example.org"]\n')
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    processes = [context.Process(target=_fail_together, args=(str(config.root), barrier)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    assert queued(config) == 1
    consume(config)
    assert [r.message["Subject"] for r in server.received] == [f"[icc] bg.boom failed on {HOST}"]


def test_email_output_to_every_run_and_on_failure_survive_the_stored_definition(
    tmp_path: Path, start_smtp: StartServer
) -> None:
    server = start_smtp()
    config = project(tmp_path / "proj", server.port)  # no alert_to: only the job's own addresses
    host = host_for(config)
    schedule = Schedule().email_output_to("dev@example.org").email_output_on_failure("oncall@example.org")
    # As a later tick or a background supervisor knows the job: rebuilt from what the state store keeps.
    job = Job("report", lambda: None, Schedule.from_definition(schedule.definition()))
    ran(host, job, "succeeded", 0, output="42 rows\n")
    ran(host, job, "abandoned", 1, error="its supervisor (pid 4242) died without recording an outcome")
    ran(host, job, "timed_out", 2, output="slow\n", error="timed out after 60s")  # within the interval
    ran(host, job, "skipped", 3)  # not a run: nothing
    consume(config)
    got = [(r.rcpt_tos, r.message["Subject"]) for r in server.received]
    assert got == [
        (["dev@example.org"], f"[icc] report succeeded on {HOST}"),
        (["oncall@example.org"], f"[icc] report abandoned on {HOST}"),
        (["dev@example.org"], f"[icc] report abandoned on {HOST}"),
        (["dev@example.org"], f"[icc] report timed out on {HOST}"),
    ]
    assert "42 rows" in text_of(server.received[0])
    abandoned = text_of(server.received[1])
    assert "its supervisor (pid 4242) died" in abandoned and "started:   -" in abandoned


def test_flood_rule() -> None:
    d = decide(None, "failed", 0, 3600)
    assert d.kind == "first"
    d = decide(d.state, "timed_out", 60, 3600)
    assert (d.kind, d.unsent, d.total) == (None, 1, 2)
    assert decide(d.state, "skipped", 120, 3600).state == d.state
    d = decide(d.state, "failed", 3600, 3600)
    assert (d.kind, d.unsent, d.total) == ("repeat", 2, 3)
    d = decide(d.state, "succeeded", 3700, 3600)
    assert (d.kind, d.state, d.total) == ("recovered", None, 3)
    assert decide(None, "succeeded", 0, 3600).kind is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"alert_to": ["ops@example.org"]}, "mail.alert_to needs mail.sender"),
        ({"sender": "icc@example.org", "alert_to": ["ops@example.org, dev@example.org"]}, "not one e-mail"),
        ({"sender": "icc@example.org", "alert_to": 5}, "mail.alert_to must be a list"),
        ({"alert_interval": "soon"}, "mail.alert_interval must be a positive duration"),
        ({"alert_interval": 0}, "mail.alert_interval must be a positive duration"),
    ],
)
def test_alert_settings_are_validated(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(table, Path("icc.toml"))


def test_alert_settings_from_variables() -> None:
    config = parse_config(
        {
            "sender": "icc@example.org",
            "alert_to": "ops@example.org, dev@example.org",
            "alert_interval": "1h30m",
        }
    )
    assert config.alert_to == ("ops@example.org", "dev@example.org")
    assert config.alert_interval == 5400


def test_an_alert_for_output_past_the_queue_limit_is_mailed_with_its_head_and_tail(
    tmp_path: Path, start_smtp: StartServer
) -> None:
    server = start_smtp()
    config = project(tmp_path / "proj", server.port, 'alert_to = ["ops@example.org"]\nalert_interval = 60\n')
    host = host_for(config)
    job = Job("probe.noisy", lambda: None, Schedule())
    output = "HEAD\n" + "\x01" * 70_000 + "\nTAIL"  # 420 kB of JSON escapes: past the 256 KiB a message holds
    ran(host, job, "failed", 0, output=output, error="E" * 50_000)
    ran(host, job, "failed", 2, output=output)  # the state moved on: the next alert is mailed too
    assert queued(config) == 2
    consume(config)
    assert len(server.received) == 2
    body = text_of(server.received[0])
    assert body.startswith(f"probe.noisy failed on {HOST}")
    assert "HEAD" in body and "TAIL" in body
    assert f"the stored output is {len(output)} characters ({len(output)} bytes)" in body
    assert "the error is 50000 characters" in body
    assert "icc logs probe.noisy shows all that icc stored" in body
    assert body.count("\x01") < 20_000


def test_an_alert_the_queue_refuses_is_mailed_without_its_output(
    tmp_path: Path, start_smtp: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import icc_mail.alerts

    server = start_smtp()
    config = project(tmp_path / "proj", server.port, 'alert_to = ["ops@example.org"]\n')
    host = host_for(config)
    monkeypatch.setattr(icc_mail.alerts, "ALERT_OUTPUT_CHARS", 10**6)  # the capped mail is too big still
    ran(host, Job("probe.noisy", lambda: None, Schedule()), "failed", 0, output="\x01" * 70_000)
    consume(config)
    [got] = server.received
    assert got.message["Subject"] == f"[icc] probe.noisy failed on {HOST}"
    body = text_of(got)
    assert "The error and the output are left out: the mail with them could not be queued." in body
    assert "\x01" not in body


def test_an_alert_that_cannot_be_queued_is_recorded_on_the_run_and_tried_again(
    tmp_path: Path, start_smtp: StartServer
) -> None:
    server = start_smtp()
    config = project(tmp_path / "proj", server.port, 'alert_to = ["ops@example.org"]\n')
    (config.state_dir / "queue.sqlite3").write_bytes(b"")  # a truncated queue database: icc refuses it
    host = host_for(config)
    job = Job("probe.boom", lambda: None, Schedule())
    started = BASE
    result = RunResult("failed", exit_code=1, output="x\n", started_at=started, ended_at=started)
    notes = host.call_after_run(job, RunContext(job.name, 1, started, "scheduled", "production"), result)
    [note] = notes
    assert note.startswith("after_run hook of plugin 'icc-mail' failed: MailError: the mail about probe.boom")
    assert "could not be queued" in note and "queue.sqlite3" in note
    (config.state_dir / "queue.sqlite3").unlink()  # the queue is back: the next failure sends the first alert
    host = host_for(config)
    ran(host, job, "failed", 1)
    consume(config)
    assert [r.message["Subject"] for r in server.received] == [f"[icc] probe.boom failed on {HOST}"]


def test_a_stale_job_mails_alert_to_once_through_the_job_stale_hook(
    tmp_path: Path, start_smtp: StartServer
) -> None:
    server = start_smtp()
    config = project(tmp_path / "proj", server.port, 'alert_to = ["Ops <ops@example.org>"]\n')
    host = host_for(config)
    alert = {
        "job": "nightly.export",
        "outcome": "stale",
        "error": "no success within 3600s (last success: never); stale since 2026-11-22T11:00:00Z",
        "host": HOST,
        "stale_since": "2026-11-22T11:00:00Z",
        "last_success": None,
        "within": 3600,
    }
    assert host.call_job_stale("nightly.export", alert) == []
    assert queued(config) == 1
    consume(config)
    [mail] = server.received
    assert mail.message["Subject"] == f"[icc] nightly.export is stale (noticed on {HOST})"
    assert mail.message["X-Icc-Outcome"] == "stale"
    body = text_of(mail)
    assert "no success within 3600s (last success: never)" in body
    assert "stale since:  2026-11-22T11:00:00Z" in body
