"""Runs that never started (missed, skipped, refused by the job lock) have no start time and no duration."""

from __future__ import annotations

import json
from typing import Any

from projectkit import Project, at

PLUGIN = """
def mark(name):
    def task():
        with open(os.path.join(os.environ["MARKER_DIR"], name), "a") as f:
            f.write(f"{os.getpid()}\\n")
    task.__name__ = task.__qualname__ = name
    return task

def slow():
    with open(os.path.join(os.environ["MARKER_DIR"], "slow"), "a") as f:
        f.write("started\\n")
    time.sleep(60)

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("q"), name="q").every_minute()
    scheduler.add(mark("never"), name="never").every_minute().when(lambda: False)
    scheduler.add(slow, name="slow").every_minute().in_background().timeout(120)
    scheduler.add(["/nonexistent/icc-test-command"], name="ghost").every_minute()
"""


def not_started(run: dict[str, Any]) -> None:
    assert run["started_at"] is None, run
    assert run["duration"] is None, run
    assert run["ended_at"] is not None, run


def test_missed_skipped_and_lock_refused_runs_have_no_start_and_no_duration(project: Project) -> None:
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    project.icc("run", "--at", at(0))  # ghost fails: its command cannot start
    project.wait_for(lambda: project.marker_lines("slow"), what="the slow background run")
    project.icc("run", "--at", at(5))  # q misses 1-4; slow's supervisor finds it still running
    manual = project.icc("exec", "slow")  # refused by the job lock
    assert manual.returncode == 1
    assert "skipped" in manual.stdout and "0.0s" not in manual.stdout
    project.wait_for(
        lambda: sum(r["outcome"] == "skipped" for r in project.runs("slow")) == 2, what="slow's skipped runs"
    )

    # status JOB --json and the runs table: nothing for the runs that never started.
    runs = json.loads(project.icc("status", "q", "--json", check=True).stdout)["runs"]
    missed = [r for r in runs if r["outcome"] == "missed"]
    assert len(missed) == 4
    for run in missed:
        not_started(run)
    assert all(r["started_at"] is not None for r in runs if r["outcome"] == "succeeded")
    slow = json.loads(project.icc("status", "slow", "--json", check=True).stdout)["runs"]
    skipped = [r for r in slow if r["outcome"] == "skipped"]
    assert len(skipped) == 2  # the tick's and the manual one
    for run in skipped:
        not_started(run)

    never = json.loads(project.icc("status", "never", "--json", check=True).stdout)["runs"]
    assert sorted({r["outcome"] for r in never}) == ["missed", "skipped"]  # a when() condition said no
    for run in never:
        not_started(run)

    # icc status --json: the last run of a job whose command could not start.
    ghost = next(j for j in project.status()["jobs"] if j["name"] == "ghost")
    assert ghost["last_run"]["outcome"] == "failed"
    not_started(ghost["last_run"])

    # The tables show no start time and no duration for them.
    text = project.icc("status", "q", check=True).stdout
    missed_lines = [line for line in text.splitlines() if " missed " in line]
    assert len(missed_lines) == 4
    assert all("0.0s" not in line for line in missed_lines)
    overview = project.icc("status", check=True).stdout
    ghost_line = next(line for line in overview.splitlines() if line.startswith("ghost "))
    assert "failed slot" in ghost_line and "0.0s" not in ghost_line
