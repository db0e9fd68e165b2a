"""every(), once(), unless_between() and args() through real scans and ticks (`icc run --at`), on SQLite and a
PostgreSQL store: what runs, what is stored, what status shows."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from projectkit import BASE, Project, at

PLUGIN = f"""
import json
from datetime import datetime

BASE = datetime.fromisoformat({BASE.isoformat()!r})

def mark(name):
    def task(*args, **kwargs):
        with open(os.path.join(os.environ["MARKER_DIR"], name), "a") as f:
            f.write(json.dumps([args, kwargs]) + "\\n")
    task.__name__ = task.__qualname__ = name
    return task
"""


def scanned(project: Project, body: str) -> None:
    project.write_plugin(PLUGIN + body)
    project.icc("scan", check=True)


def ticks(project: Project, *minutes: float) -> None:
    for minute in minutes:
        project.icc("run", "--at", at(minute), "--quiet", check=True)


def succeeded_slots(project: Project, job: str) -> list[int]:
    return [int(r["slot"]) for r in project.runs(job) if r["outcome"] == "succeeded"]


def minutes_after_base(project: Project, job: str) -> list[int]:
    return [(s - int(BASE.timestamp())) // 60 for s in succeeded_slots(project, job)]


@pytest.mark.both_stores
def test_args_are_stored_shown_by_status_and_passed_to_the_callable(project: Project) -> None:
    scanned(
        project,
        """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("greet"), name="greet").every_minute().args("world", 2, (3, 4), loud=True, opts={"a": None})
""",
    )
    ticks(project, 0)
    assert project.marker_lines("greet") == [
        json.dumps([["world", 2, [3, 4]], {"loud": True, "opts": {"a": None}}])
    ]
    job = next(j for j in project.status()["jobs"] if j["name"] == "greet")
    assert job["args"] == {"args": ["world", 2, [3, 4]], "kwargs": {"loud": True, "opts": {"a": None}}}
    detail = project.icc("status", "greet", check=True).stdout
    assert 'args: ("world", 2, [3, 4], loud=true, opts={"a": null})' in detail


@pytest.mark.both_stores
def test_every_90_minutes_runs_on_its_utc_count_from_starting(project: Project) -> None:
    scanned(
        project,
        """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("ninety"), name="ninety").every(minutes=90).starting(BASE)
""",
    )
    ticks(project, 0, 1, 30, 89, 90, 91, 180)
    assert minutes_after_base(project, "ninety") == [0, 90, 180]
    shown = json.loads(project.icc("status", "--json", "--at", at(180), check=True).stdout)
    job = next(j for j in shown["jobs"] if j["name"] == "ninety")
    assert job["schedule"]["description"] == f"every 90 minutes from {BASE:%Y-%m-%d %H:%M} UTC"
    assert job["next_run"] is not None and job["next_run"].startswith(f"{BASE:%Y-%m-%d}T14:30")


@pytest.mark.both_stores
def test_every_36_hours_runs_on_its_utc_count_and_status_says_so(project: Project) -> None:
    scanned(
        project,
        """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("long"), name="long").every(hours=36).starting(BASE)
""",
    )
    ticks(project, 0, 1, 60, 35 * 60 + 59, 36 * 60, 36 * 60 + 1)
    assert minutes_after_base(project, "long") == [0, 36 * 60]
    shown = json.loads(project.icc("status", "--json", "--at", at(36 * 60 + 1), check=True).stdout)
    job = next(j for j in shown["jobs"] if j["name"] == "long")
    assert job["schedule"]["description"] == f"every 36 hours from {BASE:%Y-%m-%d %H:%M} UTC"
    assert job["next_run"] == (BASE + timedelta(hours=72)).isoformat()
    table = project.icc("status", "--at", at(36 * 60 + 1), check=True).stdout
    [row] = [line for line in table.splitlines() if line.startswith("long ")]
    # In words, not the "* * * * *" grid the period is counted on, which would read as every minute
    assert f"every 36 hours from {BASE:%Y-%m-%d %H:%M} UTC" in row and "* * * * *" not in row
    assert f"{BASE + timedelta(hours=72):%Y-%m-%d %H:%M}" in row
    detail = project.icc("status", "long", check=True).stdout.splitlines()[0]
    assert detail == f"long: every 36 hours from {BASE:%Y-%m-%d %H:%M} UTC, plugin tasks_plugin, enabled"


@pytest.mark.both_stores
def test_once_runs_at_starting_and_never_again_even_after_a_rescan(project: Project) -> None:
    body = """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("one"), name="one").once().starting(BASE.replace(minute=2)){extra}
"""
    scanned(project, body.format(extra=""))
    before = json.loads(project.icc("status", "--json", "--at", at(0), check=True).stdout)
    job = next(j for j in before["jobs"] if j["name"] == "one")
    assert job["next_run"] == BASE.replace(minute=2).isoformat()  # its one run, before it ran
    detail = project.icc("status", "one", "--next", "3", "--at", at(0), check=True).stdout
    assert "next 1 run:" in detail and f"{BASE:%Y-%m-%d} 10:02" in detail
    [row] = [
        line for line in project.icc("status", check=True).stdout.splitlines() if line.startswith("one ")
    ]
    assert f"once at {BASE:%Y-%m-%d} 10:02 UTC" in row and "* * * * *" not in row
    ticks(project, 0, 1, 2, 3)
    assert minutes_after_base(project, "one") == [2]
    # A rescan, unchanged and then changed (its next slot is evaluated afresh): the one run stays the only one.
    project.icc("scan", check=True)
    ticks(project, 4)
    scanned(project, body.format(extra=".timeout(60)"))
    ticks(project, 5, 6, 2 * 60)
    assert minutes_after_base(project, "one") == [2]
    shown = json.loads(project.icc("status", "--json", "--at", at(2 * 60), check=True).stdout)
    job = next(j for j in shown["jobs"] if j["name"] == "one")
    assert job["next_run"] is None
    assert job["schedule"]["description"] == f"once at {BASE:%Y-%m-%d} 10:02 UTC"
    detail = project.icc("status", "one", "--next", "3", "--at", at(2 * 60), check=True).stdout
    assert "next runs: none left" in detail


@pytest.mark.both_stores
def test_once_missed_while_nothing_ticked_runs_once_late(project: Project) -> None:
    scanned(
        project,
        """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("late"), name="late").once().starting(BASE.replace(minute=2))
""",
    )
    ticks(project, 0, 30, 31)  # down from 10:01 to 10:29: the 10:02 run catches up at 10:30
    runs = [r for r in project.runs("late") if r["outcome"] == "succeeded"]
    assert len(runs) == 1 and len(project.marker_lines("late")) == 1


@pytest.mark.both_stores
def test_unless_between_keeps_runs_out_of_the_window(project: Project) -> None:
    scanned(
        project,
        """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("quiet"), name="quiet").every_minutes(5).unless_between("10:05", "10:10")
""",
    )
    ticks(project, 0, 5, 10, 15)
    assert minutes_after_base(project, "quiet") == [0, 15]
    shown = json.loads(project.icc("status", "--json", "--at", at(15), check=True).stdout)
    job = next(j for j in shown["jobs"] if j["name"] == "quiet")
    assert job["schedule"]["description"] == "every 5 minutes, not between 10:05 and 10:10"
    assert job["next_run"] is not None and job["next_run"].startswith(f"{BASE:%Y-%m-%d}T10:20")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'scheduler.add(mark("x"), name="x").once()',
            "job 'x': once() needs starting(datetime): the moment of its one run",
        ),
        (
            'scheduler.add(["true"], name="x").args(1)',
            "job 'x': args() is for callable tasks; put a command's arguments in its argv list",
        ),
        (
            'scheduler.add(mark("x"), name="x").args(object())',
            "args(): argument 0 (object) is not JSON-serialisable",
        ),
        ('scheduler.add(mark("x"), name="x").daily().every(hours=36)', "every() cannot be combined with"),
    ],
)
def test_scan_refuses_bad_counted_schedules_with_one_line_and_writes_nothing(
    project: Project, line: str, message: str
) -> None:
    project.write_plugin(PLUGIN + f"\n@icc.hookimpl\ndef schedule(scheduler):\n    {line}\n")
    proc = project.icc("scan")
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert [ln for ln in (proc.stdout + proc.stderr).splitlines() if message in ln]
    assert not project.has_store() or not project.runs()


@pytest.mark.both_stores
def test_once_whose_moment_passed_before_its_first_tick_runs_at_the_next_slot_once(project: Project) -> None:
    body = """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("past"), name="past").once().starting(BASE.replace(year=2020)){extra}
"""
    scanned(project, body.format(extra=""))
    ticks(project, 0, 1)
    assert minutes_after_base(project, "past") == [0]
    # Changed: evaluated afresh as a new job would be; the stored decision keeps it from running again.
    scanned(project, body.format(extra=".timeout(60)"))
    ticks(project, 2, 3)
    assert minutes_after_base(project, "past") == [0]
    assert len(project.marker_lines("past")) == 1


def test_once_whose_moment_passed_with_missed_skip_does_not_run(project: Project) -> None:
    scanned(
        project,
        """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("never"), name="never").once().starting(BASE.replace(year=2020)).missed("skip")
""",
    )
    ticks(project, 0, 1)
    assert project.marker_lines("never") == []


def test_once_missed_beyond_its_window_stays_decided_after_a_changed_rescan(project: Project) -> None:
    body = """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("gone"), name="gone").once().starting(BASE.replace(minute=2)){extra}
"""
    scanned(project, body.format(extra=""))
    ticks(project, 0, 200)  # down from 10:01 to 13:19: past the missed window (120 minutes)
    scanned(project, body.format(extra=".timeout(60)"))
    ticks(project, 201, 202)
    assert project.marker_lines("gone") == []
