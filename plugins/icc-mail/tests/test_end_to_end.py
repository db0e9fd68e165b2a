"""The whole path in real processes: `send_mail` in the application -> `icc scan` -> `icc run` (cron mode)
starts the `consume:mail` job -> the SMTP server receives the mail; and a mail server that is down."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import StartServer

# Ticks run `--at` minutes well after the real clock, so each is a new slot after the scan.
BASE = (datetime.now(UTC) + timedelta(days=2)).replace(second=0, microsecond=0)


class Project:
    def __init__(self, root: Path, smtp_port: int) -> None:
        self.root = root
        root.mkdir()
        (root / "icc.toml").write_text(
            textwrap.dedent(
                f"""
                [icc]
                state_dir = "state"

                [icc.consumers]
                mode = "cron"
                time_limit = 2

                [icc.queues.mail]
                retries = 50
                delay = 0.2
                multiplier = 1

                [icc.mail]
                dsn = "smtp://127.0.0.1:{smtp_port}?timeout=2"
                sender = "Shop <shop@example.org>"
                """
            )
        )

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")}
        env["ICC_PLUGINS"] = "icc-mail"  # this plugin (and icc's built-ins), no other installed one
        return env

    def run(self, *argv: str) -> str:
        proc = subprocess.run(
            argv, cwd=self.root, env=self.env(), capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, f"{argv} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def icc(self, *args: str) -> str:
        return self.run(sys.executable, "-m", "icc", *args)

    def send_mail(self) -> int:
        """`send_mail` as application code calls it: its own process, config found from the working dir."""
        code = (
            "import icc_mail\n"
            "print(icc_mail.send_mail('Jürgen <jane@example.org>', 'Grüße aus Köln ✓',"
            " 'Hallo Jürgen,\\nwie geht es? 5 €\\n', bcc=['hidden@example.org']))"
        )
        return int(self.run(sys.executable, "-c", code))

    def consumer_running(self) -> bool:
        status = json.loads(self.icc("status", "--json"))
        [job] = [j for j in status["jobs"] if j["name"] == "consume:mail"]
        return bool(job["running"])

    def attempts(self) -> list[int]:
        db = sqlite3.connect(self.root / "state" / "queue.sqlite3")
        try:
            return [row[0] for row in db.execute("SELECT attempts FROM messages WHERE name = 'mail.send'")]
        finally:
            db.close()


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def tick(project: Project, minute: int) -> None:
    out = project.icc("run", "--at", (BASE + timedelta(minutes=minute)).isoformat())
    assert "consume:mail" in out


@pytest.fixture
def scanned(tmp_path: Path) -> Callable[[int], Project]:
    def make(port: int) -> Project:
        project = Project(tmp_path / "proj", port)
        out = project.icc("scan")
        assert "consume:mail" in out
        return project

    return make


def test_send_mail_then_icc_run_delivers_it(
    start_smtp: StartServer, scanned: Callable[[int], Project]
) -> None:
    server = start_smtp()
    project = scanned(server.port)
    assert project.send_mail() >= 1
    tick(project, 0)
    wait_for(lambda: server.received, "the SMTP server to receive the mail")
    wait_for(lambda: not project.consumer_running(), "the consumer to reach its time limit")

    [got] = server.received
    assert got.mail_from == "shop@example.org"
    assert got.rcpt_tos == ["jane@example.org", "hidden@example.org"]
    message = got.message
    assert message["Subject"] == "Grüße aus Köln ✓"
    assert message["From"] == "Shop <shop@example.org>"
    assert message["To"] == "Jürgen <jane@example.org>"
    assert message["Message-ID"].endswith("@example.org>")
    assert "Bcc" not in message
    body = message.get_body(("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == "Hallo Jürgen,\nwie geht es? 5 €\n"
    assert project.attempts() == []  # delivered messages leave the queue


def test_mail_server_down_is_retried_then_delivered_when_it_is_back(
    start_smtp: StartServer, scanned: Callable[[int], Project], unused_port: int
) -> None:
    project = scanned(unused_port)
    project.send_mail()
    tick(project, 0)
    wait_for(lambda: project.attempts() and project.attempts()[0] >= 2, "two failed attempts")
    wait_for(lambda: not project.consumer_running(), "the consumer to reach its time limit")
    assert project.attempts()[0] >= 2  # still queued, not failed
    assert "no failed messages" in project.icc("failed", "list")

    server = start_smtp(port=unused_port)
    tick(project, 1)
    wait_for(lambda: server.received, "the SMTP server to receive the mail")
    assert server.received[0].message["Subject"] == "Grüße aus Köln ✓"
    wait_for(lambda: project.attempts() == [], "the message to leave the queue")


def test_mail_queue_retries_outlive_an_smtp_outage_of_a_day_by_default(tmp_path: Path) -> None:
    from icc.config import load_config
    from icc.queue.retry import backoff, max_attempts

    (tmp_path / "icc.toml").write_text('[icc.mail]\nsender = "shop@example.org"\n')
    mail = load_config(cwd=tmp_path, environ={}).queue("mail")
    for key in (None, "mail:1", "mail:2", "mail:3"):  # without jitter, and three messages' jitters
        waits = [backoff(mail, attempt, key) for attempt in range(1, max_attempts(mail))]
        assert waits[0] >= 45  # a minute, less up to a quarter of jitter: not 1 s
        assert max(waits) <= 4 * 3600  # never a wait of more than 4 hours
        assert 18 * 3600 <= sum(waits) <= 26 * 3600  # about a day before the mail goes to `icc failed`
    # A table changes only what it sets; other queues keep 1 s, 2 s, 4 s.
    (tmp_path / "icc.toml").write_text("[icc.queues.mail]\nretries = 2\n")
    config = load_config(cwd=tmp_path, environ={})
    assert (config.queue("mail").retries, config.queue("mail").delay) == (2, 60.0)
    assert [backoff(config.queue("async"), n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_mail_server_down_keeps_the_mail_queued_for_a_minute_not_seconds(
    tmp_path: Path, unused_port: int
) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "icc.toml").write_text(
        f'[icc]\nstate_dir = "state"\n\n[icc.mail]\ndsn = "smtp://127.0.0.1:{unused_port}?timeout=2"\n'
        'sender = "shop@example.org"\n'
    )
    project = Project.__new__(Project)
    project.root = root
    project.send_mail()
    before = time.time()
    project.icc("consume", "mail", "--time-limit", "4")
    db = sqlite3.connect(root / "state" / "queue.sqlite3")
    try:
        [(attempts, available_at)] = db.execute("SELECT attempts, available_at FROM messages").fetchall()
    finally:
        db.close()
    assert attempts == 1  # one delivery in 4 s: the retry waits about a minute
    assert available_at - before >= 45
    assert "no failed messages" in project.icc("failed", "list")
