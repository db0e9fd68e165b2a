"""``icc status`` at scale (issue 17): the plugins' ``schedule`` hooks only when the plugins may have changed since
the scan, each distinct stored schedule rebuilt once, a job's next run from its stored next slot while the last
tick's evaluation stands."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from projectkit import Project

PLUGIN = """
def a():
    pass

@icc.hookimpl
def schedule(scheduler):
    with open(os.path.join(os.environ["MARKER_DIR"], "scheduled.txt"), "a") as f:
        f.write("called\\n")
    scheduler.add(a, name="a", description="first").daily().at(3)
    scheduler.add(a, name="b").daily().at(3).in_background()
    scheduler.add(a, name="c", description="third").every_minutes(5)
"""


@pytest.mark.both_stores
def test_status_calls_no_schedule_hook_while_the_plugins_are_as_the_last_scan_saw_them(
    project: Project,
) -> None:
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    assert project.marker_lines("scheduled.txt") == ["called"]
    jobs = project.status()["jobs"]
    assert [j["name"] for j in jobs] == ["a", "b", "c"]
    assert project.marker_lines("scheduled.txt") == ["called"]  # as scanned: not called again
    plugin = project.root / "tasks_plugin.py"
    stat = plugin.stat()
    os.utime(plugin, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # drift
    proc = project.icc("status")
    assert proc.returncode == 0 and "plugins changed since the last scan" in proc.stdout + proc.stderr
    assert project.marker_lines("scheduled.txt") == ["called", "called"]  # may have changed: called


@pytest.mark.both_stores
def test_status_shows_each_job_of_a_shared_schedule_with_its_own_settings_and_next_run(
    project: Project,
) -> None:
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    before = {j["name"]: j for j in project.status()["jobs"]}
    assert [(j["description"], j["schedule"]["background"]) for j in before.values()] == [
        ("first", False),
        (None, True),
        ("third", False),
    ]
    assert (
        before["a"]["schedule"]["description"] == before["b"]["schedule"]["description"] == "daily at 03:00"
    )
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    assert before["a"]["next_run"] == before["b"]["next_run"]
    # A tick a minute ago stored each job's next slot; status reads it, and says the same as computing it.
    ticked = now - timedelta(minutes=1)
    project.icc("run", "--quiet", "--at", ticked.isoformat(), check=True)
    after = {j["name"]: j for j in project.status()["jobs"]}
    daily = datetime.fromisoformat(after["a"]["next_run"])
    assert after["b"]["next_run"] == after["a"]["next_run"]
    assert (daily.hour, daily.minute) == (3, 0) and timedelta(0) < daily - ticked <= timedelta(
        days=1, minutes=1
    )
    five = datetime.fromisoformat(after["c"]["next_run"])
    assert five > ticked and five.minute % 5 == 0 and five - ticked <= timedelta(minutes=6)
