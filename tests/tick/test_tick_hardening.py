"""Nothing a user or the machine does may stop scheduling silently: `--at` far ahead, a lost or never-scanned
state store, a tick lock whose holder record is missing, `--quiet` with two crontab lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from projectkit import Project, at, slot

ONE_JOB = """
def a():
    with open(os.path.join(os.environ["MARKER_DIR"], "a"), "a") as f:
        f.write(f"{int(time.time())}\\n")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(a, name="a").every_minute()
"""


def scanned(project: Project, plugin: str = ONE_JOB) -> None:
    project.write_plugin(plugin)
    project.icc("scan", check=True)


def real_slots_around(before: float, after: float) -> set[int]:
    """The minute slots a tick started between the two instants can have taken."""
    first = int(before) - int(before) % 60
    return set(range(first, int(after) + 1, 60))


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- 1. `--at` ahead of the clock ----------------------------------------------------------------------------


def test_future_at_tick_then_a_real_tick_runs_an_every_minute_job(project: Project) -> None:
    scanned(project)
    future = (datetime.now(UTC) + timedelta(days=400)).replace(second=0, microsecond=0)
    project.icc("run", "--at", future.isoformat(), "--quiet", check=True)
    project.icc("scan", check=True)  # a scan in between leaves the cache usable too
    before = time.time()
    proc = project.icc("run", "--quiet")
    after = time.time()
    assert proc.returncode == 0, proc.stderr
    real = [r for r in project.runs("a") if r["slot"] < future.timestamp()]
    assert [r["outcome"] for r in real] == ["succeeded"]
    assert real[0]["slot"] in real_slots_around(before, after)
    assert len(project.marker_lines("a")) == 2


def test_year_9999_at_tick_does_not_stop_later_ticks(project: Project) -> None:
    scanned(project)
    project.icc("run", "--at", at(0), "--quiet", check=True)
    project.icc("run", "--at", "9999-12-31T23:59", "--quiet", check=True)  # records missed slots too
    before = time.time()
    project.icc("run", "--quiet", check=True)
    after = time.time()
    real = [r for r in project.runs("a") if r["outcome"] == "succeeded" and r["slot"] < slot(0)]
    assert len(real) == 1 and real[0]["slot"] in real_slots_around(before, after)
    # The slots the year-9999 tick recorded missed are not "missed" now.
    (job,) = project.status()["jobs"]
    assert job["missed"] == 0


def test_at_outside_the_times_icc_can_schedule_is_one_clear_error(project: Project) -> None:
    scanned(project)
    for when in ("0001-01-01T00:00", "9999-12-31T23:59-12:00"):
        for command in ("run", "status"):
            proc = project.icc(command, "--at", when, "--quiet" if command == "run" else "--json")
            assert proc.returncode == 2, (command, when, proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stderr
            assert "--at" in proc.stderr and "outside the times icc can schedule" in proc.stderr
    assert project.runs() == []


def test_tick_earlier_than_the_last_one_evaluates_its_own_slot_and_later_ticks_resume(
    project: Project,
) -> None:
    scanned(project)
    project.icc("run", "--at", at(600), check=True)  # ten hours ahead of the ticks below
    # Status at minute 0 shows the run the tick at minute 1 makes (the tick at minute 0 runs its own slot).
    status = project.icc("status", "--json", "--at", at(0, 30), check=True).stdout
    assert f'"next_run": "{datetime.fromtimestamp(slot(1), UTC).isoformat()}"' in status
    for minute in (0, 1):
        proc = project.icc("run", "--at", at(minute), check=True)
        assert "nothing due" not in proc.stdout, minute
    project.icc("run", "--at", at(3), check=True)  # minute 2 was missed: recorded as such, as always
    rows = {r["slot"]: r["outcome"] for r in project.runs("a")}
    assert rows == {
        slot(0): "succeeded",
        slot(1): "succeeded",
        slot(2): "missed",
        slot(3): "succeeded",
        slot(600): "succeeded",
    }
    # A tick at an already evaluated slot still runs nothing twice.
    project.icc("run", "--at", at(1), check=True)
    assert len(project.marker_lines("a")) == 4


def test_slots_a_later_tick_recorded_missed_run_when_the_clock_reaches_them(project: Project) -> None:
    scanned(project)
    project.icc("run", "--at", at(0), check=True)
    project.icc("run", "--at", at(100), check=True)  # records minutes 1 to 99 missed
    for minute in (50, 51):  # the clock went back (NTP), or --at ran ahead of it
        proc = project.icc("run", "--at", at(minute), check=True)
        assert "nothing due" not in proc.stdout, minute
    project.icc("run", "--at", at(53), check=True)
    rows = {r["slot"]: r["outcome"] for r in project.runs("a")}
    assert [rows.get(slot(m)) for m in (49, 50, 51, 52, 53, 54, 99, 100)] == [
        "missed",  # before the step back: stays missed
        "succeeded",
        "succeeded",
        "missed",
        "succeeded",
        None,  # not reached yet: no longer recorded missed
        None,
        "succeeded",  # ran: still claimed, so it does not run again when the clock gets there
    ]
    project.icc("run", "--at", at(100), check=True)
    assert len(project.marker_lines("a")) == 5


def test_slots_skipped_while_paused_never_run_after_an_earlier_tick_even_under_missed_all(
    project: Project,
) -> None:
    scanned(project, ONE_JOB.replace(".every_minute()", '.every_minute().missed("all")'))
    project.icc("run", "--at", at(9), check=True)
    project.icc("pause", check=True)
    for minute in (10, 11, 12):
        project.icc("run", "--at", at(minute), check=True)
    project.icc("resume", check=True)
    project.icc("run", "--at", at(10), check=True)  # an earlier slot: a clock stepped back, an earlier --at
    assert len(project.marker_lines("a")) == 1
    project.icc("run", "--at", at(13), check=True)  # missed("all") catches up nothing that was skipped
    rows = {r["slot"]: (r["outcome"], r["error"]) for r in project.runs("a")}
    assert rows == {
        slot(9): ("succeeded", None),
        slot(10): ("skipped", "paused"),
        slot(11): ("skipped", "paused"),
        slot(12): ("skipped", "paused"),
        slot(13): ("succeeded", None),
    }
    assert len(project.marker_lines("a")) == 2


def test_a_late_tick_deletes_no_missed_row_and_runs_no_missed_slot(project: Project) -> None:
    scanned(project)
    now = int(time.time())
    base = now - now % 60 - 20 * 60  # twenty minutes ago: every slot below is in the past
    minute = lambda m: datetime.fromtimestamp(base + m * 60, UTC).isoformat()  # noqa: E731
    project.icc("run", "--at", minute(0), check=True)
    project.icc("run", "--at", minute(5), check=True)  # minutes 1 to 4 missed: facts
    project.icc("run", "--at", minute(2), check=True)  # late (an --at in the past, a frozen host)
    rows = {r["slot"]: r["outcome"] for r in project.runs("a")}
    assert rows == {base + m * 60: o for m, o in enumerate(["succeeded"] + ["missed"] * 4 + ["succeeded"])}
    assert len(project.marker_lines("a")) == 2
    project.icc("run", "--at", minute(6), check=True)  # the cache was left as the on-time tick wrote it
    assert project.runs("a")[-1]["slot"] == base + 6 * 60 and len(project.marker_lines("a")) == 3


# -- 3. a state store that was never scanned, or is lost -------------------------------------------------------


def test_tick_on_a_never_scanned_store_exits_non_zero_and_says_to_run_scan(project: Project) -> None:
    project.write_plugin(ONE_JOB)
    for args in (("run", "--quiet"), ("run",), ("run", "--at", at(0), "--quiet")):
        line = one_line_error(project.icc(*args))
        assert "never scanned" in line and "icc scan" in line and str(project.state_dir) in line
    assert not project.state_dir.exists()  # a tick creates no store
    project.icc("status", check=True)  # creates an empty store, still never scanned
    line = one_line_error(project.icc("run", "--quiet"))
    assert "never scanned" in line and "icc scan" in line


def test_tick_after_the_state_directory_was_deleted_exits_non_zero_and_says_to_run_scan(
    project: Project,
) -> None:
    scanned(project)
    project.icc("run", "--at", at(0), check=True)
    subprocess.run(["rm", "-rf", str(project.state_dir)], check=True)
    for minute in (1, 2):
        line = one_line_error(project.icc("run", "--at", at(minute), "--quiet"))
        assert "icc scan" in line
    assert not project.state_dir.exists()


def test_state_directory_deleted_during_a_tick_is_reported_naming_what_was_claimed(project: Project) -> None:
    scanned(
        project,
        """
        import shutil

        def wipe():
            shutil.rmtree(os.path.join(os.environ["MARKER_DIR"], "state"))

        def later():
            open(os.path.join(os.environ["MARKER_DIR"], "later"), "a").close()

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(wipe, name="wipe").every_minute()
            scheduler.add(later, name="later").every_minute()
        """,
    )
    line = one_line_error(project.icc("run", "--at", at(0), "--quiet"))
    assert "deleted or replaced" in line and str(project.db) in line
    assert "wipe at " in line and "ran: succeeded, not recorded" in line
    assert "later at " in line and "was not run" in line
    assert not (project.root / "later").exists()  # its claim is gone: running it could run it twice
    assert not project.state_dir.exists()  # nothing made a new, empty store in its place
    assert "icc scan" in one_line_error(project.icc("run", "--at", at(1), "--quiet"))


# -- 5. and 6. the tick lock's holder record, and --quiet -------------------------------------------------------


@contextmanager
def tick_lock_held(project: Project, record: str) -> Iterator[None]:
    """Another process holds the tick lock, having written `record` (formatted with its pid) into it."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600);"
            " fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0);"
            " os.write(fd, sys.argv[2].replace('PID', str(os.getpid())).encode());"
            " print('ok', flush=True); time.sleep(60)",
            str(project.state_dir / "tick.lock"),
            record,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_tick_lock_held_without_a_readable_holder_record_is_another_tick_not_nothing_due(
    project: Project,
) -> None:
    scanned(project)
    for record in ("", '{"pid": 12'):
        with tick_lock_held(project, record):
            proc = project.icc("run", "--at", at(0))
        assert proc.returncode == 0, proc.stderr
        assert "nothing due" not in proc.stdout
        assert "another tick is running (its holder did not say who it is)" in proc.stdout
    assert not project.marker_lines("a")


def test_quiet_tick_prints_nothing_when_another_tick_holds_the_lock(project: Project) -> None:
    scanned(project)
    record = '{"pid": PID, "host": "elsewhere", "since": 0}'
    with tick_lock_held(project, record):
        loud = project.icc("run", "--at", at(0))
        quiet = project.icc("run", "--at", at(0), "--quiet")
    assert "another tick is running (pid" in loud.stdout
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_tick_lock_holder_record_is_never_seen_empty_or_torn(project: Project, tmp_path: Path) -> None:
    """A process taking and releasing a lock over and over, read all the while: every read is a whole record."""
    path = tmp_path / "some.lock"
    churn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from icc.locks import Lock\n"
            "lock = Lock(Path(sys.argv[1]))\n"
            "lock.try_acquire(); lock.release(); print('ok', flush=True)\n"
            "for _ in range(20000):\n"
            "    lock.try_acquire(); lock.release()\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert churn.stdout is not None and churn.stdout.readline().strip() == "ok"
    reads = bad = 0
    while churn.poll() is None:
        reads += 1
        try:
            record, _end = json.JSONDecoder().raw_decode(path.read_text().lstrip())
            assert {"pid", "host", "since"} <= set(record)
        except (ValueError, AssertionError):
            bad += 1
    churn.wait()
    assert reads > 100
    assert bad == 0, f"{bad} of {reads} reads found no whole holder record"
    assert os.stat(path).st_size >= 1024
