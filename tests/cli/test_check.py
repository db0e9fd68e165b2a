"""``icc check [--json]``: a health check for Docker, Nagios and Kubernetes, through real ``icc`` processes on
SQLite and PostgreSQL: exit 0 when all is well, 2 with one line per problem."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from projectkit import Project, at

FRESH = """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(["true"], name="ok").every_minute().expect_success_within(3600)
"""
STALE = """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(["true"], name="ok").every_minute()
    scheduler.add(["true"], name="nightly").daily().at(3).expect_success_within(1)
"""


def evidence(title: str, proc: subprocess.CompletedProcess[str]) -> None:
    """Kept for the session note: what `icc check` printed (only when NOTIFY_EVIDENCE names a file)."""
    path = os.environ.get("NOTIFY_EVIDENCE")
    if path:
        with open(path, "a") as out:
            out.write(
                f"### {title}\n\n```console\n$ icc check\n{proc.stdout}$ echo $?\n{proc.returncode}\n```\n\n"
            )


@pytest.mark.both_stores
def test_check_exits_0_with_one_ok_line_when_the_ticks_run_and_every_job_is_fresh(project: Project) -> None:
    project.write_plugin(FRESH)
    project.icc("scan", check=True)
    project.icc("run", "--at", at(1), check=True)
    proc = project.icc("check")
    evidence(f"healthy ({'postgres' if project.store_url else 'sqlite'})", proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok: store answers, last tick ")
    assert "1 freshness check passed" in proc.stdout
    document = json.loads(project.icc("check", "--json").stdout)
    assert document["ok"] is True and document["problems"] == []
    assert document["store"] == "ok" and document["freshness_checked"] == 1
    assert document["last_tick_age_seconds"] < 120


@pytest.mark.both_stores
def test_check_exits_2_naming_a_stale_job_even_one_that_never_ran(project: Project) -> None:
    project.write_plugin(STALE)
    project.icc("scan", check=True)
    scanned = time.time()
    project.icc("run", "--at", at(1), check=True)
    project.wait_for(lambda: time.time() > scanned + 1.5, what="nightly's second to pass")
    proc = project.icc("check")
    evidence(f"stale ({'postgres' if project.store_url else 'sqlite'})", proc)
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == ["stale: nightly has not succeeded within 1s (last success: never)"]
    document = json.loads(project.icc("check", "--json").stdout)
    assert document["ok"] is False
    assert [s["job"] for s in document["stale"]] == ["nightly"]


def test_check_exits_2_when_no_tick_ran_or_the_last_one_is_old(project: Project) -> None:
    project.write_plugin(FRESH)
    project.icc("scan", check=True)
    proc = project.icc("check")
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        "tick: no `icc run` has ticked on this host yet; install the line `icc crontab` prints"
    ]
    project.icc("run", "--quiet", "--at", at(1), check=True)
    assert project.icc("check").returncode == 0
    stamp = project.state_dir / "tick.stamp"
    assert stamp.stat().st_mode & 0o777 == 0o600
    os.utime(stamp, (time.time() - 300, time.time() - 300))  # cron stopped five minutes ago
    proc = project.icc("check")
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        "tick: the last tick ran 5m00s ago (more than 120s): is cron running the line `icc crontab` prints?"
    ]


def test_the_idle_tick_stamps_its_minute_too(project: Project) -> None:
    project.write_plugin(FRESH.replace(".every_minute()", ".daily().at(3)"))
    project.icc("scan", check=True)
    project.icc("run", "--quiet", "--at", at(1), check=True)  # evaluates: full
    stamp = project.state_dir / "tick.stamp"
    os.utime(stamp, (time.time() - 300, time.time() - 300))
    idle = project.icc("run", "--at", at(2), check=True)
    assert "nothing due" in idle.stdout  # the idle tick, without click
    assert time.time() - stamp.stat().st_mtime < 120
    assert project.icc("check").returncode == 0


@contextmanager
def tick_lock_held_since(project: Project, since: float) -> Iterator[int]:
    """A process of this host holds the tick lock, its holder record saying it took it at ``since``."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, json, os, socket, sys, time;"
            " fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); fcntl.flock(fd, fcntl.LOCK_EX);"
            " record = {'pid': os.getpid(), 'host': socket.gethostname(), 'since': float(sys.argv[2])};"
            " os.pwrite(fd, json.dumps(record).encode().ljust(1024), 0);"
            " print('ok', flush=True); time.sleep(120)",
            str(project.state_dir / "tick.lock"),
            repr(since),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_check_exits_2_on_a_stuck_tick_lock(project: Project) -> None:
    project.write_plugin(FRESH)
    project.icc("scan", check=True)
    project.icc("run", "--at", at(1), check=True)
    with tick_lock_held_since(project, time.time() - 3600) as pid:
        proc = project.icc("check")
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        f"tick lock: held for 1h00m by pid {pid} on {socket.gethostname()}: a tick is stuck"
    ]


def test_check_exits_2_with_one_line_when_the_store_does_not_answer(project: Project, tmp_path: Path) -> None:
    project.write_plugin(FRESH)
    project.icc("scan", check=True)
    project.icc("run", "--at", at(1), check=True)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    project.config.write_text(
        project.config.read_text()
        + f'\n[icc.store]\nurl = "postgresql://icc@127.0.0.1:{port}/icc"\nhost_id = "a"\n'
    )
    proc = project.icc("check", timeout=120)
    assert proc.returncode == 2
    [line] = proc.stdout.splitlines()
    assert line.startswith("store: ")
    assert str(port) in line
