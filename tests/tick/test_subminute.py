"""Sub-minute jobs (`every_seconds`), `jitter`, per-job `missed_window` and `icc status JOB --next`, end to end
through real `icc` processes; the arithmetic as properties."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from icc import Schedule, ScheduleError
from icc.schedule import SECOND_INTERVALS, jitter_offset
from projectkit import Project, at, slot

MARK = """
def mark(name, pause=0.0):
    def task(ctx):
        with open(os.path.join(os.environ["MARKER_DIR"], name), "a") as f:
            f.write(f"{int(ctx.slot.timestamp())}\\n")
        time.sleep(pause)
    task.__name__ = task.__qualname__ = name
    return task
"""


def scanned(project: Project, body: str) -> None:
    project.write_plugin(MARK + textwrap.dedent(body))
    project.icc("scan", check=True)


def slots_of(project: Project, job: str, outcome: str | None = None) -> list[int]:
    return sorted(r["slot"] for r in project.runs(job) if outcome is None or r["outcome"] == outcome)


# --- every_seconds ---------------------------------------------------------------------------------------------


def test_a_fifteen_second_job_runs_four_times_in_one_tick_at_its_second_slots(project: Project) -> None:
    scanned(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(mark("quarter"), name="quarter").every_seconds(15)
            scheduler.add(mark("minute"), name="minute").every_minute()
        """,
    )
    proc = project.icc("run", "--at", at(0), check=True)
    minute = slot(0)
    assert slots_of(project, "quarter", "succeeded") == [minute, minute + 15, minute + 30, minute + 45]
    assert sorted(map(int, project.marker_lines("quarter"))) == [minute + k for k in (0, 15, 30, 45)]
    assert slots_of(project, "minute") == [minute]
    assert "10:00:15" in proc.stdout  # the table shows a second slot with its seconds


def test_two_overlapping_ticks_run_each_second_slot_once(project: Project) -> None:
    scanned(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(mark("quarter", 0.3), name="quarter").every_seconds(15)
            scheduler.add(mark("bg", 0.3), name="bg").every_seconds(20).in_background().allow_overlapping()
        """,
    )
    procs = [project.popen("run", "--at", at(0, 7)) for _ in range(3)]
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    minute = slot(0)
    project.wait_for(lambda: len(project.marker_lines("bg")) == 3, what="three background runs")
    time.sleep(0.5)
    assert sorted(map(int, project.marker_lines("quarter"))) == [minute + k for k in (0, 15, 30, 45)]
    assert sorted(map(int, project.marker_lines("bg"))) == [minute, minute + 20, minute + 40]
    assert slots_of(project, "quarter") == [minute, minute + 15, minute + 30, minute + 45]


def test_a_second_tick_in_the_same_minute_runs_no_offset_again(project: Project) -> None:
    scanned(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(mark("half"), name="half").every_seconds(30)
        """,
    )
    project.icc("run", "--at", at(0), check=True)
    project.icc("run", "--at", at(0, 40), check=True)
    minute = slot(0)
    assert sorted(map(int, project.marker_lines("half"))) == [minute, minute + 30]


def test_sub_minute_job_keeps_the_rest_of_its_schedule(project: Project) -> None:
    scanned(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(mark("tens"), name="tens").every_seconds(10).set_minute("*/2")
            scheduler.add(mark("never"), name="never").every_seconds(10).environments("staging")
            scheduler.add(mark("off"), name="off").every_seconds(10).when(lambda: False)
        """,
    )
    project.icc("run", "--at", at(1), check=True)
    assert project.marker_lines("tens") == []
    project.icc("run", "--at", at(2), check=True)
    assert len(project.marker_lines("tens")) == 6
    assert project.marker_lines("never") == [] and project.marker_lines("off") == []


def test_background_sub_minute_offset_is_skipped_while_the_previous_run_still_runs(project: Project) -> None:
    scanned(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(mark("slow", 30), name="slow").every_seconds(30).in_background()
        """,
    )
    project.icc("run", "--at", at(0), check=True)  # --at: both offsets start at once
    minute = slot(0)
    project.wait_for(
        lambda: any(r["outcome"] == "skipped" for r in project.runs("slow")), what="the overlapping offset"
    )
    runs = {r["slot"]: r for r in project.runs("slow")}
    assert set(runs) == {minute, minute + 30}
    skipped = [r for r in runs.values() if r["outcome"] == "skipped"]
    assert len(skipped) == 1 and "still running" in skipped[0]["error"]


def test_a_real_time_tick_runs_offsets_on_time_skips_passed_ones_and_waits_for_jitter(
    project: Project,
) -> None:
    scanned(
        project,
        """
        def first_is_slow(ctx):
            with open(os.path.join(os.environ["MARKER_DIR"], "slow"), "a") as f:
                f.write(f"{int(ctx.slot.timestamp())}\\n")
            if ctx.slot.second == 0:
                time.sleep(12)  # past offset 10: that one is skipped, never started late

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(first_is_slow, name="slow").every_seconds(10)
            scheduler.add(mark("half"), name="half").every_seconds(30).in_background()
            scheduler.add(mark("late_fg"), name="late_fg").every_minute().jitter(40)
            scheduler.add(mark("hourly_bg"), name="hourly_bg").every_minute().jitter(40).in_background()
        """,
    )
    # Offsets 29 and 38 (sha256 of the names): ahead of the tick when it starts early in its minute.
    assert (jitter_offset("late_fg", 40), jitter_offset("hourly_bg", 40)) == (29, 38)
    if time.time() % 60 > 10:  # start early in a minute
        time.sleep(60 - time.time() % 60 + 0.2)
    project.icc("run", "--quiet", check=True)
    minute = project.runs("slow")[0]["slot"]
    assert minute % 60 == 0
    slow = {r["slot"] - minute: r for r in project.runs("slow")}
    assert sorted(slow) == [0, 10, 20, 30, 40, 50]  # one row per offset: run or skipped, never twice
    assert slow[0]["outcome"] == "succeeded"
    assert slow[10]["outcome"] == "skipped" and "never started late" in slow[10]["error"]
    ran = [offset for offset, r in slow.items() if r["outcome"] == "succeeded"]
    assert sorted(map(int, project.marker_lines("slow"))) == [minute + k for k in ran]
    assert all(slow[k]["started_at"] >= minute + k for k in ran)  # never started early
    project.wait_for(lambda: len(project.runs("half")) == 2, what="both offsets of the background job")
    project.wait_for(
        lambda: project.marker_lines("hourly_bg"), timeout=90, what="the jittered background run"
    )
    project.wait_for(
        lambda: project.runs("hourly_bg")[0]["outcome"] == "succeeded", what="its recorded outcome"
    )
    half = project.runs("half")
    assert [r["slot"] for r in half] == [minute, minute + 30]
    assert all(r["started_at"] >= r["slot"] for r in half if r["started_at"])
    for name, offset in (("late_fg", 29), ("hourly_bg", 38)):
        (run,) = project.runs(name)
        assert run["slot"] == minute and run["outcome"] == "succeeded"
        assert run["started_at"] >= minute + offset


def test_background_offsets_start_on_time_while_a_long_foreground_run_holds_the_tick(
    project: Project,
) -> None:
    scanned(
        project,
        """
        def long_fg(ctx):
            with open(os.path.join(os.environ["MARKER_DIR"], "long_fg"), "a") as f:
                f.write(f"{int(ctx.slot.timestamp())}\\n")
            time.sleep(17)  # past the background job's offsets 5, 10 and 15

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(long_fg, name="long_fg").every_minute()
            scheduler.add(mark("fives"), name="fives").every_seconds(5).in_background()
        """,
    )
    if time.time() % 60 > 3:  # start early in a minute
        time.sleep(60 - time.time() % 60 + 0.2)
    project.icc("run", "--quiet", check=True)
    minute = project.runs("long_fg")[0]["slot"]
    project.wait_for(
        lambda: len([r for r in project.runs("fives") if r["outcome"] not in ("pending", "running")]) == 12,
        timeout=90,
        what="every offset of the minute recorded",
    )
    fives = {r["slot"] - minute: r for r in project.runs("fives")}
    assert sorted(fives) == list(range(0, 60, 5))
    assert {k: r["outcome"] for k, r in fives.items() if r["outcome"] != "succeeded"} == {}
    assert all(r["started_at"] >= r["slot"] for r in fives.values())  # never early
    (fg,) = project.runs("long_fg")
    assert [k for k in (5, 10, 15) if fives[k]["started_at"] < fg["ended_at"]] == [5, 10, 15]


def test_sigterm_ends_a_real_time_tick_and_records_the_offsets_left_skipped(project: Project) -> None:
    scanned(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(mark("each"), name="each").every_second()
        """,
    )
    if time.time() % 60 > 45:  # leave the minute time to run a few offsets first
        time.sleep(60 - time.time() % 60 + 0.2)
    proc = project.popen("run", "--quiet")
    project.wait_for(lambda: len(project.marker_lines("each")) >= 3, what="three offsets run")
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 1) and "Traceback" not in err
    runs = project.runs("each")
    minute = min(r["slot"] for r in runs)
    assert sorted(r["slot"] for r in runs) == list(range(minute, minute + 60))  # each second once
    stopped = [r for r in runs if r["outcome"] == "skipped" and "asked to stop" in (r["error"] or "")]
    assert stopped and stopped[-1]["slot"] == minute + 59
    succeeded = {r["slot"] for r in runs if r["outcome"] == "succeeded"}
    started = {
        r["slot"] for r in runs if r["outcome"] in ("succeeded", "stopped")
    }  # stopped: SIGTERM mid-run
    assert succeeded <= set(map(int, project.marker_lines("each"))) <= started


@given(
    n=st.sampled_from(SECOND_INTERVALS),
    moment=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
def test_sub_minute_runs_are_the_offsets_of_each_minute(n: int, moment: datetime) -> None:
    runs = Schedule().every_seconds(n).next_runs(moment, 60 // n + 1)
    assert all(r > moment for r in runs)
    assert all(b - a == timedelta(seconds=n) for a, b in itertools.pairwise(runs))
    assert all(r.second % n == 0 and r.microsecond == 0 for r in runs)
    assert runs[0] - moment <= timedelta(seconds=n)


def test_every_seconds_refuses_intervals_that_do_not_divide_the_minute() -> None:
    for bad in (0, 3, 7, 45, 60, 1.5, True, "15"):
        with pytest.raises(ScheduleError, match="every_seconds"):
            Schedule().every_seconds(bad)  # type: ignore[arg-type]


def test_definitions_without_the_new_settings_are_unchanged() -> None:
    plain = Schedule().daily().definition()
    assert not {"seconds", "jitter", "missed_window"} & set(plain)
    full = Schedule().every_seconds(5).missed_window(30).definition()
    assert (full["seconds"], full["missed_window"]) == (5, 30)
    assert Schedule.from_definition(full).definition() == full


# --- jitter ------------------------------------------------------------------------------------------------------


@given(name=st.text(min_size=1, max_size=40), seconds=st.integers(min_value=1, max_value=59))
def test_jitter_offset_is_within_its_range(name: str, seconds: int) -> None:
    offset = jitter_offset(name, seconds)
    assert 0 <= offset < seconds
    assert Schedule().jitter(seconds).start_offset(name) == offset


def test_jitter_offsets_are_stable_across_processes_and_spread_over_names() -> None:
    names = [f"app.tasks:job_{i}" for i in range(200)]
    here = [jitter_offset(name, 59) for name in names]
    code = (
        "import json, sys; from icc.schedule import jitter_offset; "
        "print(json.dumps([jitter_offset(n, 59) for n in json.load(sys.stdin)]))"
    )
    for seed in ("0", "1"):  # a different hash seed: Python's hash() would differ
        proc = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(names),
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        )
        assert json.loads(proc.stdout) == here
    assert len(set(here)) >= 45  # 200 names over 59 seconds
    assert jitter_offset("app.tasks:job_0", 0) == 0


def test_jitter_refuses_a_minute_or_more_and_sub_minute_jobs() -> None:
    for bad in (-1, 60, 90, 2.5, True):
        with pytest.raises(ScheduleError, match="jitter"):
            Schedule().jitter(bad)  # type: ignore[arg-type]
    with pytest.raises(ScheduleError, match="cannot be combined"):
        Schedule().every_seconds(10).jitter(5)
    with pytest.raises(ScheduleError, match="cannot be combined"):
        Schedule().jitter(5).every_seconds(10)


def test_jittered_runs_keep_their_minute_slot(project: Project) -> None:
    scanned(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(mark("fg"), name="fg").every_minute().jitter(50)
            scheduler.add(mark("bg"), name="bg").every_minute().jitter(50).in_background()
        """,
    )
    project.icc("run", "--at", at(0), check=True)  # --at: no sleeping for jitter
    project.wait_for(lambda: project.marker_lines("bg"), what="the background run")
    assert slots_of(project, "fg", "succeeded") == [slot(0)]
    assert project.marker_lines("fg") == [str(slot(0))]


# --- missed_window and --next ---------------------------------------------------------------------------------


def test_a_jobs_own_missed_window_replaces_the_configured_one(project: Project) -> None:
    scanned(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(mark("short"), name="short").every_minute().missed_window(5)
            scheduler.add(mark("long"), name="long").every_minute()
        """,
    )
    project.icc("run", "--at", at(0), check=True)
    project.icc("run", "--at", at(30), check=True)  # config: missed_window = 120
    missed = {
        job: len([r for r in project.runs(job) if r["outcome"] == "missed"]) for job in ("short", "long")
    }
    assert missed == {"short": 5, "long": 29}


def test_status_next_lists_the_schedules_next_runs(project: Project) -> None:
    scanned(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(mark("quarter"), name="quarter").every_seconds(15).set_hour(10)
            scheduler.add(mark("hourly"), name="hourly").every_hour().jitter(30)
        """,
    )
    when = at(0, 20)
    moment = datetime.fromisoformat(when)
    proc = project.icc("status", "quarter", "--next", "5", "--at", when, "--json", check=True)
    expected = Schedule().every_seconds(15).set_hour(10).next_runs(moment, 5)
    assert json.loads(proc.stdout)["next_runs"] == [r.isoformat() for r in expected]
    text = project.icc("status", "quarter", "--next", "5", "--at", when, check=True).stdout
    assert "10:00:30" in text and "10:01:15" in text
    hourly = json.loads(
        project.icc("status", "hourly", "--next", "2", "--at", when, "--json", check=True).stdout
    )
    assert hourly["start_offset"] == jitter_offset("hourly", 30)
    assert hourly["next_runs"] == [r.isoformat() for r in Schedule().every_hour().next_runs(moment, 2)]
    bad = project.icc("status", "--next", "5")
    assert bad.returncode == 2 and "--next" in bad.stderr and "Traceback" not in bad.stderr


def test_status_next_leaves_out_offsets_already_recorded_skipped(project: Project) -> None:
    project.config.write_text(project.config.read_text().replace("grace = 1\n", "grace = 0\n"))
    scanned(
        project,
        """
        def hold():
            open(os.path.join(os.environ["MARKER_DIR"], "holding"), "w").close()
            time.sleep(600)

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(hold, name="hold").every_minute()
            scheduler.add(mark("quarter"), name="quarter").every_seconds(15)
        """,
    )
    proc = project.popen("run", "--at", at(0))
    try:
        project.wait_for(lambda: (project.root / "holding").exists(), what="the foreground job to start")
        proc.send_signal(signal.SIGTERM)  # the tick stops: the minute's later offsets are recorded skipped
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    skipped = slots_of(project, "quarter", "skipped")
    assert {slot(0) + 15, slot(0) + 30, slot(0) + 45} <= set(skipped)
    shown = project.icc("status", "quarter", "--next", "3", "--at", at(0, 1), "--json", check=True)
    expected = [datetime.fromtimestamp(slot(1) + s, tz=UTC).isoformat() for s in (0, 15, 30)]
    assert json.loads(shown.stdout)["next_runs"] == expected
