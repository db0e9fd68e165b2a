"""What a tick notices cheaply: plugins changed since the last scan (drift) and a tick lock held too long."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest
from projectkit import Project, at
from prometheus_client.parser import text_string_to_metric_families
from statekit import TWO_JOBS, scanned

NIGHTLY = """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(lambda: None, name="nightly").cron("0 3 * * *")
"""

# A job that writes a marker, scheduled by a cron expression the test replaces.
MARKING = """
def nightly():
    with open(os.path.join(os.environ["MARKER_DIR"], "ran"), "a") as f:
        f.write("x\\n")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(nightly, name="nightly").cron("CRON")
"""


def metric(project: Project, name: str) -> float:
    text = project.icc("metrics", check=True).stdout
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in {text}")


def bump(path: os.PathLike[str] | str, text: str = "\n# changed\n") -> None:
    """Change a file as an edit does: new content, a later mtime (even on a coarse clock)."""
    with open(path, "a") as f:
        f.write(text)
    later = time.time() + 5
    os.utime(path, (later, later))


# -- drift ------------------------------------------------------------------------------------------------


@pytest.mark.both_stores
def test_drift_after_a_local_plugin_file_changes_is_shown_by_tick_status_and_metrics(
    project: Project,
) -> None:
    scanned(project, NIGHTLY)
    assert project.status()["drift"] is None
    assert metric(project, "icc_plugins_drifted") == 0
    idle = project.icc("run", "--at", at(1), check=True)
    assert "plugins changed" not in idle.stdout

    bump(project.root / "tasks_plugin.py")
    idle = project.icc("run", "--at", at(2), check=True)  # nothing due: the idle path
    assert "icc run: plugins changed since the last scan (" in idle.stdout, idle.stdout
    assert "tasks_plugin.py changed" in idle.stdout
    if project.store_url is None:  # the SQLite idle path's line: it noticed, not only the full tick
        assert "UTC; next slot" in idle.stdout
    else:  # on PostgreSQL the idle path prints the full tick's line
        assert "nothing due at" in idle.stdout
    quiet = project.icc("run", "--quiet", "--at", at(3), check=True)
    assert (quiet.stdout, quiet.stderr) == ("", "")
    status = project.status()
    assert status["drift"] is not None and "tasks_plugin.py changed" in status["drift"]
    table = project.icc("status", check=True)
    assert "plugins changed since the last scan" in table.stderr
    assert metric(project, "icc_plugins_drifted") == 1

    project.icc("scan", check=True)
    assert project.status()["drift"] is None
    assert metric(project, "icc_plugins_drifted") == 0


def test_drift_after_the_config_file_changes_is_shown_by_the_full_tick_too(project: Project) -> None:
    scanned(project, TWO_JOBS)
    bump(project.config, "\n# a comment\n")
    full = project.icc("run", "--at", at(0), check=True)  # two jobs due: the full tick
    assert "icc run: plugins changed since the last scan (" in full.stdout, full.stdout
    assert "icc.toml changed" in full.stdout
    as_json = json.loads(project.icc("run", "--json", "--at", at(1), check=True).stdout)
    assert "icc.toml changed" in as_json["drift"]
    assert "icc.toml changed" in project.status()["drift"]
    assert metric(project, "icc_plugins_drifted") == 1


@pytest.mark.both_stores
def test_scan_auto_rescans_when_the_plugin_changed_and_the_tick_uses_the_new_schedule(
    project: Project,
) -> None:
    text = project.config.read_text().replace("grace = 1\n", 'grace = 1\nscan = "auto"\n')
    project.config.write_text(text)
    scanned(project, MARKING.replace("CRON", "0 3 * * *"))
    plugin = project.root / "tasks_plugin.py"
    plugin.write_text(plugin.read_text().replace("0 3 * * *", "* * * * *"))
    later = time.time() + 5
    os.utime(plugin, (later, later))

    proc = project.icc("run", "--quiet", "--at", at(0), check=True)
    assert proc.stderr == "", proc.stderr
    assert project.marker_lines("ran") == ["x"]
    status = project.status()
    assert status["drift"] is None
    (job,) = status["jobs"]
    assert job["schedule"]["cron"] == "* * * * *"


def test_scan_auto_that_hangs_is_stopped_and_the_tick_goes_on_with_the_stored_jobs(project: Project) -> None:
    text = project.config.read_text().replace("grace = 1\n", 'grace = 1\nscan = "auto"\nscan_timeout = 2\n')
    project.config.write_text(text)
    scanned(project, NIGHTLY)
    bump(project.root / "tasks_plugin.py", "\ntime.sleep(600)\n")  # its import now hangs

    proc = project.icc("run", "--at", at(1), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "the tick's own scan failed: `icc scan` did not finish within scan_timeout (2 s)" in proc.stderr
    assert "icc run: plugins changed since the last scan (" in proc.stdout
    assert "nothing due" in proc.stdout
    db = sqlite3.connect(project.db)  # not `icc status`: it imports the plugins, and this one hangs
    try:
        (definition,) = db.execute("SELECT definition FROM jobs WHERE name = 'nightly'").fetchone()
    finally:
        db.close()
    assert json.loads(definition)["schedule"]["expression"] == "0 3 * * *"


def test_scan_setting_rejects_an_unknown_mode(project: Project) -> None:
    text = project.config.read_text().replace("grace = 1\n", 'grace = 1\nscan = "sometimes"\n')
    project.config.write_text(text)
    proc = project.icc("status")
    assert proc.returncode == 2
    assert "scan" in proc.stderr and '"manual"' in proc.stderr and '"auto"' in proc.stderr


# -- a tick lock held too long -------------------------------------------------------------------------------


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


@pytest.mark.both_stores
def test_tick_lock_held_for_an_hour_is_reported_by_tick_idle_tick_status_and_metrics(
    project: Project,
) -> None:
    scanned(project, TWO_JOBS)
    project.icc("run", "--at", at(0), check=True)
    assert project.status()["tick_lock"] is None
    assert metric(project, "icc_tick_lock_held_seconds") == 0
    host = socket.gethostname()
    with tick_lock_held_since(project, time.time() - 3600) as pid:
        full = project.icc("run", "--at", at(1), check=True)  # both jobs due: the full tick, locked out
        assert f"another tick is running (pid {pid} on {host}" in full.stdout
        assert "it has held the tick lock for 1h00m: is it stuck?" in full.stdout, full.stdout
        quiet = project.icc("run", "--quiet", "--at", at(1), check=True)
        assert (quiet.stdout, quiet.stderr) == ("", "")

        status = project.status()
        lock = status["tick_lock"]
        assert (lock["pid"], lock["host"], lock["stuck"]) == (pid, host, True)
        assert lock["held_seconds"] >= 3600
        table = project.icc("status", check=True)
        assert f"the tick lock has been held for 1h00m by pid {pid} on {host}" in table.stderr
        assert metric(project, "icc_tick_lock_held_seconds") >= 3600
    assert project.status()["tick_lock"] is None
    assert metric(project, "icc_tick_lock_held_seconds") == 0


@pytest.mark.both_stores
def test_idle_tick_reports_a_tick_lock_held_for_an_hour(project: Project) -> None:
    scanned(project, NIGHTLY)
    project.icc("run", "--at", at(0), check=True)  # the first tick after a scan is a full one
    with tick_lock_held_since(project, time.time() - 3600) as pid:
        idle = project.icc("run", "--at", at(1), check=True)
    assert (
        f"icc run: the tick lock has been held for 1h00m by pid {pid} on {socket.gethostname()}"
        in idle.stdout
    )
    assert ("UTC; next slot" if project.store_url is None else "nothing due at") in idle.stdout


def test_tick_lock_taken_moments_ago_is_not_reported_as_stuck(project: Project) -> None:
    scanned(project, NIGHTLY)
    project.icc("run", "--at", at(0), check=True)
    with tick_lock_held_since(project, time.time()):
        idle = project.icc("run", "--at", at(1), check=True)
        lock = project.status()["tick_lock"]
    assert "tick lock" not in idle.stdout
    assert lock is not None and lock["stuck"] is False


def test_tick_lock_record_of_a_finished_tick_is_not_a_held_lock(project: Project) -> None:
    scanned(project, TWO_JOBS)
    project.icc("run", "--at", at(0), check=True)  # leaves its holder record in the released lock file
    assert project.status()["tick_lock"] is None


# -- the report records -----------------------------------------------------------------------------------


def test_status_json_is_the_frozen_report_records_to_json(project: Project) -> None:
    import dataclasses

    from icc import report as facts
    from icc.config import load_config

    scanned(project, TWO_JOBS)
    project.icc("run", "--at", at(0), check=True)
    shown = json.loads(project.icc("status", "--json", "--at", at(1), check=True).stdout)
    old = dict(os.environ)
    os.environ.update(project.environ())
    try:
        report = facts.status(load_config(project.config), datetime.fromisoformat(at(1)))
    finally:  # leave this process as it was: the plugin module imported, the root on sys.path
        os.environ.clear()
        os.environ.update(old)
        sys.modules.pop("tasks_plugin", None)
        while str(project.root) in sys.path:
            sys.path.remove(str(project.root))
    assert report.to_json() == shown
    job = report.job("a")
    assert job is not None and job.last_run is not None and job.last_run.outcome == "succeeded"
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.missed = 3  # type: ignore[misc]


def test_an_unrelated_install_into_site_packages_is_not_drift_and_the_tick_refreshes_the_stamp(
    project: Project,
) -> None:
    scanned(project, NIGHTLY)
    project.icc("run", "--at", at(0), check=True)

    def stamp() -> str:
        db = sqlite3.connect(project.db)
        try:
            (value,) = db.execute("SELECT value FROM meta WHERE key = 'drift_stamp'").fetchone()
        finally:
            db.close()
        return str(value)

    packages = next(line.split("\t")[1] for line in stamp().splitlines() if line.startswith("dir\t"))
    before = os.stat(packages)
    try:  # as an install of some other distribution does: the directory's mtime moves, no plugin changes
        os.utime(packages, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        tick = project.icc("run", "--at", at(1), check=True)
        assert "plugins changed" not in tick.stdout, tick.stdout
        assert f"dir\t{packages}\t{before.st_mtime_ns + 1_000_000_000}" in stamp()
        assert project.status()["drift"] is None
        assert metric(project, "icc_plugins_drifted") == 0
    finally:
        os.utime(packages, ns=(before.st_atime_ns, before.st_mtime_ns))
