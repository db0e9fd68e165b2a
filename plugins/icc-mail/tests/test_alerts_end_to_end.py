"""Failure alerts end to end: a real `icc run` (a foreground and a background job fail), the real `mail` queue,
a real `icc consume mail` and a real SMTP server (aiosmtpd) that receives one alert per failed job."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import StartServer

PLUGIN = """
import time

import icc

def boom():
    print("about to fail")
    raise ZeroDivisionError("division by zero")

def bg_boom():
    raise RuntimeError("the background job broke")

def fine():
    pass

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(boom, name="probe.boom")
    # Slow on purpose: the supervisor records the outcome, then calls this callback, then the plugins'
    # after_run hooks (icc-mail's queues the alert): the test must wait for the supervisor, not the outcome.
    scheduler.add(bg_boom, name="probe.bg").in_background().after(lambda result: time.sleep(2))
    scheduler.add(fine, name="probe.fine")
"""


def icc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")} | {
        "ICC_PLUGINS": "icc-mail,tasks_plugin"
    }
    return subprocess.run(
        [sys.executable, "-m", "icc", *args], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def finished(root: Path, job: str) -> bool:
    """The job's last run has an outcome AND its supervisor has exited: a supervisor records the outcome first
    and calls the ``after_run`` hooks (which queue the alert) after."""
    db = sqlite3.connect(root / "state" / "state.sqlite3")
    try:
        row = db.execute("SELECT outcome, pid FROM runs WHERE job = ? ORDER BY id DESC", (job,)).fetchone()
    finally:
        db.close()
    return row is not None and row[0] not in ("pending", "running") and not (row[1] and pid_alive(row[1]))


def test_failed_foreground_and_background_runs_of_a_real_tick_each_send_one_alert(
    tmp_path: Path, start_smtp: StartServer
) -> None:
    smtp = start_smtp()
    root = tmp_path / "proj"
    root.mkdir()
    (root / "tasks_plugin.py").write_text(PLUGIN)
    (root / "icc.toml").write_text(
        textwrap.dedent(
            f"""
            [icc]
            timezone = "UTC"
            state_dir = "state"
            plugins = ["tasks_plugin"]

            [icc.consumers]
            mode = "service"

            [icc.mail]
            dsn = "smtp://127.0.0.1:{smtp.port}?timeout=5"
            sender = "icc <icc@example.org>"
            alert_to = ["ops@example.org"]
            """
        )
    )
    scan = icc(root, "scan")
    assert scan.returncode == 0, scan.stderr
    slot = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0).isoformat()
    tick = icc(root, "run", "--at", slot)
    assert tick.returncode == 1, tick.stderr  # probe.boom failed
    deadline = time.monotonic() + 30
    while not finished(root, "probe.bg") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert finished(root, "probe.bg")

    consume = icc(root, "consume", "mail", "--stop-when-empty")
    assert consume.returncode == 0, consume.stderr

    host = socket.gethostname()
    by_subject = {str(r.message["Subject"]): r for r in smtp.received}
    assert set(by_subject) == {f"[icc] probe.boom failed on {host}", f"[icc] probe.bg failed on {host}"}
    assert all(r.rcpt_tos == ["ops@example.org"] for r in smtp.received)
    boom = by_subject[f"[icc] probe.boom failed on {host}"].message.get_body(("plain",))
    assert boom is not None
    text = str(boom.get_content())
    assert "ZeroDivisionError: division by zero" in text and "about to fail" in text
    bg = by_subject[f"[icc] probe.bg failed on {host}"].message.get_body(("plain",))
    assert bg is not None and "the background job broke" in str(bg.get_content())
