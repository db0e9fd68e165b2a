"""`icc run` end to end: real processes, real SQLite, time controlled with `--at`; the tests marked
``both_stores`` run on a PostgreSQL store too."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import pytest
from projectkit import Project, at, slot

EVERY_MINUTE = """
def mark(name):
    def task():
        with open(os.path.join(os.environ["MARKER_DIR"], name), "a") as f:
            f.write(f"{os.getpid()}\\n")
    task.__name__ = task.__qualname__ = name
    return task

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("a"), name="a").every_minute()
    scheduler.add(mark("b"), name="b").every_minute()
    scheduler.add(mark("c"), name="c").every_minute().in_background()
"""


def scanned(project: Project, plugin: str) -> None:
    project.write_plugin(plugin)
    project.icc("scan", check=True)


@pytest.mark.both_stores
def test_scan_registers_jobs_and_first_tick_runs_due_jobs_in_order(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    proc = project.icc("run", "--at", at(0), check=True)
    assert "a" in proc.stdout and "succeeded" in proc.stdout
    project.wait_for(lambda: project.marker_lines("c"), what="background job c")
    assert len(project.marker_lines("a")) == 1
    assert len(project.marker_lines("b")) == 1
    rows = [r for r in project.runs() if r["outcome"] == "succeeded"]
    assert [r["job"] for r in rows][:2] == ["a", "b"]


@pytest.mark.both_stores
def test_two_ticks_started_together_run_every_due_job_once(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    procs = [project.popen("run", "--at", at(0, 5)) for _ in range(2)]
    for p in procs:
        p.communicate(timeout=60)
        assert p.returncode == 0
    project.wait_for(lambda: project.marker_lines("c"), what="background job c")
    time.sleep(0.5)
    for name in "abc":
        assert len(project.marker_lines(name)) == 1, name


def test_ticking_every_second_for_a_minute_runs_nothing_twice(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    for second in range(0, 60, 1):
        project.icc("run", "--at", at(0, second), "--quiet", check=True)
    project.icc("run", "--at", at(1), "--quiet", check=True)
    project.wait_for(lambda: len(project.marker_lines("c")) == 2, what="two background runs")
    assert len(project.marker_lines("a")) == 2
    assert len(project.marker_lines("b")) == 2
    slots = [(r["job"], r["slot"]) for r in project.runs()]
    assert len(slots) == len(set(slots))


def test_idle_tick_prints_one_line_and_loads_no_plugin(project: Project) -> None:
    scanned(
        project,
        """
        with open(os.path.join(os.environ["MARKER_DIR"], "imported"), "a") as f:
            f.write("x\\n")

        def nightly():
            pass

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(nightly, name="nightly").daily().at(3)
        """,
    )
    before = len(project.marker_lines("imported"))
    proc = project.icc("run", "--at", at(0), check=True)
    assert len(proc.stdout.strip().splitlines()) == 1
    assert "nothing due" in proc.stdout
    assert len(project.marker_lines("imported")) == before
    assert project.icc("run", "--at", at(0), "--quiet", check=True).stdout == ""


@pytest.mark.both_stores
def test_tick_killed_mid_job_leaves_no_stuck_lock_and_next_tick_records_abandoned(project: Project) -> None:
    scanned(
        project,
        """
        def slow():
            started = os.path.join(os.environ["MARKER_DIR"], "started")
            first = not os.path.exists(started)
            open(started, "a").close()
            if first:
                time.sleep(60)

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(slow, name="slow").every_minute()
        """,
    )
    tick = project.popen("run", "--at", at(0))
    # The task is forked before its run is recorded running: wait for both, or the kill may come in between.
    project.wait_for(
        lambda: (
            (project.root / "started").exists()
            and any(r["outcome"] == "running" for r in project.runs("slow"))
        ),
        what="slow job to start and be recorded running",
    )
    tick.send_signal(signal.SIGKILL)
    tick.communicate(timeout=10)
    running = [r for r in project.runs("slow") if r["outcome"] == "running"]
    assert len(running) == 1
    proc = project.icc("run", "--at", at(1))
    assert "abandoned" in proc.stdout
    runs = project.runs("slow")
    assert runs[0]["outcome"] == "abandoned"
    assert "died" in runs[0]["error"]
    # The job lock was released by the kernel: the job runs again at its next slot.
    assert (runs[1]["slot"], runs[1]["outcome"]) == (slot(1), "succeeded")


def test_tick_that_overruns_does_not_stop_other_jobs_from_starting_on_time(project: Project) -> None:
    scanned(
        project,
        """
        def slow():  # runs until the test has ticked minutes 1-3 (not a fixed time: a loaded machine is slow)
            release = os.path.join(os.environ["MARKER_DIR"], "release")
            deadline = time.monotonic() + 60
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.05)

        def quick():
            with open(os.path.join(os.environ["MARKER_DIR"], "quick"), "a") as f:
                f.write("x\\n")

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(slow, name="slow").every_minute()
            scheduler.add(quick, name="quick").every_minute()
        """,
    )
    first = project.popen("run", "--at", at(0))
    project.wait_for(
        lambda: any(r["outcome"] == "running" for r in project.runs("slow")), what="slow running"
    )
    # Three more minutes tick while the first tick is still busy with `slow`.
    for minute in (1, 2, 3):
        proc = project.icc("run", "--at", at(minute))
        assert proc.returncode == 0, proc.stderr
    quick_slots = {r["slot"] for r in project.runs("quick") if r["outcome"] == "succeeded"}
    assert {slot(1), slot(2), slot(3)} <= quick_slots
    # `slow` is still running from minute 0, so its later slots were skipped, not run twice at once.
    slow = project.runs("slow")
    assert [r["outcome"] for r in slow if r["slot"] != slot(0)] == ["skipped"] * 3
    (project.root / "release").touch()
    first.communicate(timeout=30)
    assert first.returncode == 0


@pytest.mark.parametrize(
    ("policy", "ran", "missed"),
    [("skip", [60], [15, 30, 45]), ("once", [60], [15, 30, 45]), ("all", [15, 30, 45, 60], [])],
)
@pytest.mark.both_stores
def test_missed_hour_follows_the_jobs_missed_policy(
    project: Project, policy: str, ran: list[int], missed: list[int]
) -> None:
    scanned(
        project,
        f"""
        def quarter():
            pass

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(quarter, name="quarter").every_minutes(15).missed("{policy}")
        """,
    )
    project.icc("run", "--at", at(0), check=True)  # baseline
    baseline = {r["id"] for r in project.runs()}
    out = project.icc("run", "--at", at(60), check=True).stdout  # nothing ticked for an hour
    rows = [r for r in project.runs("quarter") if r["id"] not in baseline]
    assert sorted(r["slot"] for r in rows if r["outcome"] == "succeeded") == [slot(m) for m in ran]
    assert sorted(r["slot"] for r in rows if r["outcome"] == "missed") == [slot(m) for m in missed]
    # The tick's table sums the missed slots up in one line per job.
    missed_lines = [line for line in out.splitlines() if line.split()[:2] == ["quarter", "missed"]]
    assert len(missed_lines) == (1 if missed else 0)
    if missed:
        assert f"{len(missed)} slots" in missed_lines[0]


@pytest.mark.both_stores
def test_missed_once_runs_the_latest_missed_slot_when_the_current_one_is_not_due(project: Project) -> None:
    scanned(
        project,
        """
        def quarter():
            pass

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(quarter, name="quarter").every_minutes(15).missed("once")
        """,
    )
    project.icc("run", "--at", at(0), check=True)
    baseline = {r["id"] for r in project.runs()}
    project.icc("run", "--at", at(50), check=True)
    rows = [r for r in project.runs("quarter") if r["id"] not in baseline]
    assert [(r["slot"], r["kind"]) for r in rows if r["outcome"] == "succeeded"] == [(slot(45), "missed")]
    assert sorted(r["slot"] for r in rows if r["outcome"] == "missed") == [slot(15), slot(30)]


@pytest.mark.both_stores
def test_job_over_its_timeout_is_killed_with_its_children(project: Project) -> None:
    scanned(
        project,
        """
        CHILD = (
            "import subprocess, os, time;"
            "p = subprocess.Popen(['sleep', '300']);"
            "open(os.path.join(os.environ['MARKER_DIR'], 'child'), 'w').write(str(p.pid));"
            "time.sleep(300)"
        )

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add([sys.executable, "-c", CHILD], name="hang").every_minute().timeout(1)
        """,
    )
    started = time.monotonic()
    proc = project.icc("run", "--at", at(0))
    assert proc.returncode == 1
    assert time.monotonic() - started < 30
    run = project.runs("hang")[0]
    assert run["outcome"] == "timed_out"
    child = int((project.root / "child").read_text())
    project.wait_for(lambda: not pid_alive(child), timeout=5, what="the task's child to die")


def test_sigterm_to_icc_run_stops_the_job_and_starts_nothing_new(project: Project) -> None:
    scanned(
        project,
        """
        def slow():
            open(os.path.join(os.environ["MARKER_DIR"], "started"), "w").close()
            time.sleep(60)

        def later():
            open(os.path.join(os.environ["MARKER_DIR"], "later"), "w").close()

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(slow, name="slow").every_minute()
            scheduler.add(later, name="later").every_minute()
        """,
    )
    tick = project.popen("run", "--at", at(0))
    project.wait_for(lambda: (project.root / "started").exists(), what="slow job to start")
    tick.send_signal(signal.SIGTERM)
    tick.communicate(timeout=20)
    assert tick.returncode == 1
    slow = project.runs("slow")[0]
    assert slow["outcome"] == "stopped"
    assert "SIGTERM" in slow["error"]
    project.wait_for(lambda: not pid_alive(slow["task_pid"]), timeout=5, what="the stopped task to die")
    later = project.runs("later")[0]
    assert later["outcome"] == "skipped"
    assert not (project.root / "later").exists()


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting for its (re)parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_task_that_segfaults_or_exits_affects_only_its_own_run(project: Project) -> None:
    scanned(
        project,
        """
        import signal

        def segfault():
            os.kill(os.getpid(), signal.SIGSEGV)

        def hard_exit():
            os._exit(7)

        def soft_exit():
            sys.exit(3)

        def raises():
            raise RuntimeError("boom")

        def fine():
            print("fine")

        @icc.hookimpl
        def schedule(scheduler):
            for f in (segfault, hard_exit, soft_exit, raises, fine):
                scheduler.add(f, name=f.__name__).every_minute()
        """,
    )
    proc = project.icc("run", "--at", at(0))
    assert proc.returncode == 1
    runs = {r["job"]: r for r in project.runs()}
    assert runs["segfault"]["outcome"] == "failed"
    assert runs["segfault"]["exit_code"] == -signal.SIGSEGV
    assert "SIGSEGV" in runs["segfault"]["error"]
    assert (runs["hard_exit"]["outcome"], runs["hard_exit"]["exit_code"]) == ("failed", 7)
    assert (runs["soft_exit"]["outcome"], runs["soft_exit"]["exit_code"]) == ("failed", 3)
    assert runs["raises"]["outcome"] == "failed"
    assert "RuntimeError: boom" in runs["raises"]["output"]
    assert runs["fine"]["outcome"] == "succeeded"
    assert runs["fine"]["output"].strip() == "fine"


@pytest.mark.both_stores
def test_command_tasks_run_without_a_shell_and_record_exit_code_and_output(project: Project) -> None:
    scanned(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["echo", "$HOME", ";", "false"], name="echo").every_minute()
            scheduler.add([sys.executable, "-c", "import sys; print('out'); sys.exit(4)"], name="four").every_minute()
        """,
    )
    project.icc("run", "--at", at(0))
    runs = {r["job"]: r for r in project.runs()}
    assert runs["echo"]["output"].strip() == "$HOME ; false"
    assert runs["echo"]["outcome"] == "succeeded"
    assert (runs["four"]["outcome"], runs["four"]["exit_code"], runs["four"]["output"].strip()) == (
        "failed",
        4,
        "out",
    )


def test_plugin_with_import_error_does_not_stop_healthy_plugins(project: Project) -> None:
    project.write_config(plugins=("tasks_plugin", "broken_plugin"))
    project.write_plugin("import no_such_module_anywhere\n", name="broken_plugin")
    scanned(
        project,
        """
        def healthy():
            open(os.path.join(os.environ["MARKER_DIR"], "healthy"), "w").close()

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(healthy, name="healthy").every_minute()
        """,
    )
    proc = project.icc("run", "--at", at(0))
    assert proc.returncode == 0, proc.stderr
    assert (project.root / "healthy").exists()
    assert "broken_plugin" in proc.stderr
    status = project.status()
    errors = status["plugin_errors"]
    assert [e["plugin"] for e in errors] == ["broken_plugin"]
    assert "no_such_module_anywhere" in errors[0]["error"]
    assert project.icc("scan", "--strict").returncode != 0


def test_truncated_state_database_is_an_error_and_is_left_untouched(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    project.icc("run", "--at", at(0), check=True)
    project.icc("run", "--at", at(1), check=True)
    for suffix in ("-wal", "-shm"):
        side = project.db.with_name(project.db.name + suffix)
        if side.exists():
            side.unlink()
    data = project.db.read_bytes()
    project.db.write_bytes(data[: len(data) // 3])
    before = project.db.read_bytes()
    for args in (("run", "--at", at(2)), ("status",), ("scan",)):
        proc = project.icc(*args)
        assert proc.returncode != 0, args
        assert "state database" in proc.stderr and "unreadable" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert project.db.read_bytes() == before


def test_emptied_state_database_is_not_read_as_a_new_one(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    project.db.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        project.db.with_name(project.db.name + suffix).unlink(missing_ok=True)
    proc = project.icc("run", "--at", at(0))
    assert proc.returncode != 0
    assert "state database" in proc.stderr
    assert project.db.read_bytes() == b""


def test_state_directory_writable_by_others_is_refused(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    project.state_dir.chmod(0o777)
    proc = project.icc("status")
    assert proc.returncode != 0
    assert "writable by other users" in proc.stderr and "chmod 700" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a directory's owner needs root")
def test_state_directory_owned_by_another_user_is_refused(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    os.chown(project.state_dir, 65534, 65534)
    try:
        proc = project.icc("run", "--at", at(0))
        assert proc.returncode != 0
        assert "owned by uid 65534" in proc.stderr
    finally:
        os.chown(project.state_dir, 0, 0)


def test_state_files_are_private(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    project.icc("run", "--at", at(0), check=True)
    assert project.state_dir.stat().st_mode & 0o777 == 0o700
    for path in project.state_dir.rglob("*"):
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0, path


def stored_jobs(project: Project) -> list[tuple[Any, ...]]:
    """The jobs table and the last scan's time as stored: unlike `icc status`, nothing in it is computed from the clock (a next run
    read on both sides of a minute boundary would differ)."""
    import sqlite3

    db = sqlite3.connect(project.db)
    try:
        jobs = db.execute("SELECT * FROM jobs ORDER BY name").fetchall()
        return jobs + db.execute("SELECT * FROM meta WHERE key = 'scanned_at'").fetchall()
    finally:
        db.close()


def test_scan_with_one_invalid_schedule_writes_nothing(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    before = stored_jobs(project)
    project.write_plugin(
        """
        def fine():
            pass

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(fine, name="new-job").daily()
            scheduler.add(fine, name="bad").set_minute(60)
        """
    )
    proc = project.icc("scan")
    assert proc.returncode != 0
    assert "minute" in proc.stderr
    assert stored_jobs(project) == before


@pytest.mark.both_stores
def test_scan_marks_vanished_jobs_removed_keeps_history_and_prune_deletes(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    project.icc("run", "--at", at(0), check=True)
    project.icc("disable", "b", check=True)
    project.write_plugin(
        """
        def a():
            pass

        def b():
            pass

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(a, name="a").every_minute()
            scheduler.add(b, name="b").every_minutes(5)
        """
    )
    proc = project.icc("scan", check=True)
    assert "removed" in proc.stdout and "changed" in proc.stdout
    jobs = {j["name"]: j for j in project.status()["jobs"]}
    assert jobs["c"]["removed"] is True
    assert jobs["b"]["enabled"] is False  # kept across scans
    assert project.runs("c")
    project.icc("scan", "--prune", check=True)
    assert "c" not in {j["name"] for j in project.status()["jobs"]}
    assert not project.runs("c")


@pytest.mark.both_stores
def test_exec_runs_a_job_now_as_a_manual_run(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    proc = project.icc("exec", "a", check=True)
    assert "succeeded" in proc.stdout
    assert [r["kind"] for r in project.runs("a")] == ["manual"]
    missing = project.icc("exec", "nope")
    assert missing.returncode != 0 and "no job named 'nope'" in missing.stderr


@pytest.mark.both_stores
def test_disabled_job_does_not_run(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    project.icc("disable", "a", check=True)
    project.icc("run", "--at", at(0), check=True)
    assert not project.marker_lines("a")
    project.icc("enable", "a", check=True)
    project.icc("run", "--at", at(1), check=True)
    assert len(project.marker_lines("a")) == 1


def test_crontab_prints_one_line_with_absolute_paths(project: Project) -> None:
    proc = project.icc("crontab", check=True)
    line = proc.stdout.strip()
    assert line.startswith("* * * * * /")
    assert str(project.config) in line and line.endswith("run --quiet")


@pytest.mark.both_stores
def test_status_json_schema(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    project.icc("run", "--at", at(0), check=True)
    data = project.status()
    assert data["schema"] == 1
    job = next(j for j in data["jobs"] if j["name"] == "a")
    assert job["plugin"] == "tasks_plugin"
    assert job["schedule"]["cron"] == "* * * * *"
    assert job["last_run"]["outcome"] == "succeeded"
    assert set(job) >= {
        "name",
        "plugin",
        "distribution",
        "version",
        "schedule",
        "enabled",
        "next_run",
        "running",
        "missed",
    }


def test_status_plain_text_when_not_a_terminal(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    out = project.icc("status", check=True).stdout
    assert "\x1b[" not in out
    assert "a" in out and "* * * * *" in out


@pytest.mark.both_stores
def test_timeout_kill_of_callable_records_timed_out(project: Project) -> None:
    scanned(
        project,
        """
        def hang():
            time.sleep(300)

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(hang, name="hang").every_minute().timeout(0.5)
        """,
    )
    proc = project.icc("run", "--at", at(0))
    assert proc.returncode == 1
    assert project.runs("hang")[0]["outcome"] == "timed_out"


@pytest.mark.both_stores
def test_background_job_does_not_hold_up_the_tick(project: Project) -> None:
    scanned(
        project,
        """
        def slow():  # runs until the test releases it (at most 60 s): a tick waiting for it would not return
            release = os.path.join(os.environ["MARKER_DIR"], "release")
            deadline = time.monotonic() + 60
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.05)
            open(os.path.join(os.environ["MARKER_DIR"], "bg-done"), "w").close()

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(slow, name="slow").every_minute().in_background()
        """,
    )
    proc = project.icc("run", "--at", at(0), check=True)
    assert "started" in proc.stdout
    # The tick has returned while its background run goes on, recorded as running under a live supervisor.
    assert not (project.root / "bg-done").exists()
    (run,) = project.runs("slow")
    assert run["outcome"] == "running"
    os.kill(run["pid"], 0)
    (project.root / "release").touch()
    project.wait_for(lambda: (project.root / "bg-done").exists(), timeout=20, what="background run")
    project.wait_for(lambda: project.runs("slow")[0]["outcome"] == "succeeded", what="recorded")


BACKGROUND_TRIO = """
with open(os.path.join(os.environ["MARKER_DIR"], "imported"), "a") as f:
    f.write(f"{os.getpid()}\\n")

def report(name):
    def task():
        supervisor = os.getppid()
        with open(os.path.join(os.environ["MARKER_DIR"], name), "a") as f:
            f.write(f"{supervisor} {os.getsid(supervisor)}\\n")
    task.__name__ = task.__qualname__ = name
    return task

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(report("fg"), name="fg").every_minute()
    for name in ("bg1", "bg2", "bg3"):
        scheduler.add(report(name), name=name).every_minute().in_background()

# Slow on purpose: a background supervisor records the outcome first and calls the hooks after, so a test
# waits for the supervisor to exit.
@icc.hookimpl
def after_run(job, run, result):
    if job.name != "fg":
        time.sleep(1)
    with open(os.path.join(os.environ["MARKER_DIR"], "after-" + job.name), "a") as f:
        f.write(f"{result.outcome}\\n")
"""


def test_background_runs_are_detached_supervisors_forked_from_the_tick(project: Project) -> None:
    scanned(project, BACKGROUND_TRIO)
    (project.root / "imported").unlink()  # imported by the scan
    project.icc("run", "--at", at(0), check=True)
    for name in ("bg1", "bg2", "bg3"):
        project.wait_for(lambda n=name: project.runs(n)[0]["outcome"] == "succeeded", what=f"{name} recorded")
        # The supervisor calls the after_run hooks after recording the outcome: wait for it to exit.
        project.wait_for(lambda n=name: not pid_alive(project.runs(n)[0]["pid"]), what=f"{name}'s supervisor")
    # The tick imports no plugin: the foreground run's supervisor (forked from the tick) imports it, and the
    # background runs' intermediate imports it once for their three supervisors, which import nothing.
    background = {str(project.runs(name)[0]["pid"]) for name in ("bg1", "bg2", "bg3")}
    imported = project.marker_lines("imported")
    assert len(imported) == 2 and str(project.runs("fg")[0]["pid"]) in imported, imported
    assert not background & set(imported), imported
    own_session = os.getsid(0)
    for name in ("bg1", "bg2", "bg3"):
        ((supervisor, session),) = [line.split() for line in project.marker_lines(name)]
        (run,) = project.runs(name)
        # The supervisor that recorded the run is the task's parent, in a session apart from the tick's.
        assert run["pid"] == int(supervisor)
        assert int(session) not in (own_session, int(supervisor))
        # The hooks run in the supervisor, with the plugin objects the tick loaded.
        assert project.marker_lines("after-" + name) == ["succeeded"]
    assert project.marker_lines("after-fg") == ["succeeded"]
    # Every run of the tick is recorded, foreground and background, although the tick closed its database
    # connection around the forks and each supervisor wrote through its own.
    assert sorted(r["job"] for r in project.runs() if r["outcome"] == "succeeded") == [
        "bg1",
        "bg2",
        "bg3",
        "fg",
    ]


def _slow_background_run(project: Project) -> dict[str, Any]:
    """Tick a job that sleeps in the background; its run once the task has started."""
    scanned(
        project,
        """
        def slow():
            time.sleep(120)

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(slow, name="slow").every_hour().in_background()
        """,
    )
    project.icc("run", "--at", at(0), check=True)
    project.wait_for(lambda: project.runs("slow")[0]["task_pid"], what="the task to start")
    (run,) = project.runs("slow")
    return run


@pytest.mark.both_stores
def test_killed_background_supervisor_is_abandoned_and_its_task_stopped(project: Project) -> None:
    run = _slow_background_run(project)
    os.kill(run["pid"], signal.SIGKILL)
    project.wait_for(lambda: not pid_alive(run["pid"]), what="the supervisor to die")
    assert pid_alive(run["task_pid"])
    # Before any tick records it, status already tells the truth: not running, abandoned.
    job = next(j for j in project.status()["jobs"] if j["name"] == "slow")
    assert job["running"] == []
    assert job["last_run"]["outcome"] == "abandoned"
    assert "next tick" in job["last_run"]["error"]
    assert project.runs("slow")[0]["outcome"] == "running"  # status wrote nothing
    proc = project.icc("run", "--at", at(1))
    assert "abandoned" in proc.stdout
    (run_after,) = project.runs("slow")
    assert run_after["outcome"] == "abandoned"
    assert f"supervisor (pid {run['pid']}) died" in run_after["error"]
    project.wait_for(lambda: not pid_alive(run["task_pid"]), what="the orphaned task to be killed")


def test_sigterm_to_a_background_supervisor_stops_its_task(project: Project) -> None:
    run = _slow_background_run(project)
    os.kill(run["pid"], signal.SIGTERM)
    project.wait_for(lambda: project.runs("slow")[0]["outcome"] != "running", what="the run to be recorded")
    (stopped,) = project.runs("slow")
    assert stopped["outcome"] == "stopped"
    assert stopped["error"] == "stopped: its background supervisor received SIGTERM"
    assert not pid_alive(run["task_pid"])


def test_other_tick_holding_the_lock_is_reported(project: Project) -> None:
    scanned(project, EVERY_MINUTE)
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            'f.write(\'{"pid": 4242, "host": "h", "since": 0}\'); f.flush(); print(\'ok\', flush=True); time.sleep(30)',
            str(project.state_dir / "tick.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        proc = project.icc("run", "--at", at(0))
        assert proc.returncode == 0
        assert "another tick is running (pid 4242" in proc.stdout
        assert not project.marker_lines("a")
    finally:
        holder.kill()
        holder.wait()


def test_overlap_skip_names_the_holders_start_with_its_date_in_the_projects_zone(project: Project) -> None:
    import json
    import re
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    project.config.write_text(
        project.config.read_text().replace('timezone = "UTC"', 'timezone = "Asia/Kathmandu"')
    )
    project.env["TZ"] = "UTC"  # the host's own zone is another one
    scanned(
        project,
        """
        def slow():
            open(os.path.join(os.environ["MARKER_DIR"], "started"), "w").close()
            while not os.path.exists(os.path.join(os.environ["MARKER_DIR"], "release")):
                time.sleep(0.05)

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(slow, name="slow").every_minute().in_background()
        """,
    )
    project.icc("run", "--at", at(0), check=True)
    try:
        project.wait_for(lambda: (project.root / "started").exists(), what="the first run to start")
        [lock] = [p for p in (project.state_dir / "locks").iterdir() if p.read_bytes().strip()]
        since = json.loads(lock.read_bytes().decode().strip())["since"]
        project.icc("run", "--at", at(1), check=True)
        project.wait_for(
            lambda: any(r["outcome"] == "skipped" for r in project.runs("slow")), what="the overlap skip"
        )
    finally:
        (project.root / "release").touch()
    [skipped] = [r for r in project.runs("slow") if r["outcome"] == "skipped"]
    shown = datetime.fromtimestamp(since, tz=UTC).astimezone(ZoneInfo("Asia/Kathmandu"))
    expected = shown.strftime("%Y-%m-%d %H:%M:%S") + " +0545"
    assert re.fullmatch(
        rf"skipped: the previous run is still running \(pid \d+ since {re.escape(expected)}\)",
        skipped["error"],
    ), skipped["error"]
