"""`icc work`, the foreground scheduler: real processes, real signals, real SQLite.

Most tests run it with the hidden `--tick-every SECONDS` (a minute lasts that long, on a scaled clock every
process agrees on); one slow test crosses a real minute boundary.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from icc.cli.work import scaled
from icc.locks import tick_lock
from icc.tick.coordinator import slot_of
from projectkit import Project

JOBS = """
def mark(name, seconds=0.0, once=False):
    def task(ctx):
        path = os.path.join(os.environ["MARKER_DIR"], name)
        first = not os.path.exists(path)
        with open(path + ".started", "a") as f:
            f.write(f"{ctx.slot.isoformat()}\\n")
        if seconds and (first or not once):
            time.sleep(seconds)
        with open(path, "a") as f:
            f.write(f"{ctx.slot.isoformat()}\\n")
    task.__name__ = task.__qualname__ = name
    return task
"""


def scanned(project: Project, body: str, grace: float = 1) -> None:
    project.config.write_text(project.config.read_text().replace("grace = 1\n", f"grace = {grace}\n"))
    project.write_plugin(JOBS + body)
    project.icc("scan", check=True)


class Worker:
    """A running `icc work`, its stdout and stderr going to files the test can read while it runs."""

    def __init__(self, project: Project, *args: str) -> None:
        self.out, self.err = project.root / f"work-{id(self)}.out", project.root / f"work-{id(self)}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                project.argv("work", *args), cwd=project.root, env=project.environ(), stdout=out, stderr=err
            )

    def stdout(self) -> str:
        return self.out.read_text()

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
        """Signal it, wait for its exit; its exit code and everything it printed."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        return code, self.stdout() + self.err.read_text()


def per_slot(project: Project) -> collections.Counter[tuple[str, int]]:
    """How many run rows each scheduled (job, slot) has."""
    return collections.Counter((r["job"], r["slot"]) for r in project.runs() if r["kind"] != "manual")


def test_sigterm_lets_the_running_job_finish_within_grace_starts_nothing_new_and_exits_0(
    project: Project,
) -> None:
    scanned(
        project,
        """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("slow", 2), name="slow").every_minute()
    scheduler.add(mark("next"), name="next").every_minute()
""",
        grace=20,
    )
    work = Worker(project)
    project.wait_for(lambda: project.marker_lines("slow.started"), what="the slow job to start")
    code, out = work.stop()
    assert code == 0, out
    assert "icc work: stopped (SIGTERM)" in out
    slow, after = project.runs("slow")[0], project.runs("next")[0]
    assert (slow["outcome"], slow["error"]) == ("succeeded", None)  # finished, not signalled
    assert len(project.marker_lines("slow")) == 1
    assert after["outcome"] == "skipped"
    assert after["error"] == "not started: icc work received SIGTERM"
    assert project.marker_lines("next") == []


ENDLESS = """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("endless", 600), name="endless").every_minute()
"""


def test_sigterm_stops_a_job_that_outlasts_the_grace_as_icc_run_does(project: Project) -> None:
    scanned(
        project,
        ENDLESS,
    )
    work = Worker(project)
    project.wait_for(lambda: project.marker_lines("endless.started"), what="the job to start")
    code, out = work.stop()
    assert code == 0, out
    [run] = project.runs("endless")
    assert run["outcome"] == "stopped"
    assert run["error"] == "stopped: icc work received SIGTERM"
    assert project.marker_lines("endless") == []


def test_a_second_signal_stops_the_running_job_at_once(project: Project) -> None:
    scanned(
        project,
        ENDLESS,
        grace=600,
    )
    work = Worker(project)
    project.wait_for(lambda: project.marker_lines("endless.started"), what="the job to start")
    work.send(signal.SIGINT)
    project.wait_for(
        lambda: "received SIGINT: starting nothing new" in work.stdout(), what="the first signal"
    )
    code, out = work.stop(signal.SIGINT)
    assert code == 0, out
    assert "icc work: received SIGINT again: stopping the running job now" in out
    assert project.runs("endless")[0]["outcome"] == "stopped"


def test_background_runs_outlive_icc_work(project: Project) -> None:
    scanned(
        project,
        """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("bg", 2), name="bg").every_minute().in_background()
""",
    )
    work = Worker(project)
    project.wait_for(lambda: project.marker_lines("bg.started"), what="the background job to start")
    code, out = work.stop()
    assert code == 0, out
    project.wait_for(
        lambda: project.runs("bg")[0]["outcome"] == "succeeded", what="the background run to end"
    )
    assert len(project.marker_lines("bg")) == 1


def test_two_workers_and_cron_ticks_on_one_store_run_nothing_twice(project: Project) -> None:
    scanned(
        project,
        """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("fg"), name="fg").every_minute()
    scheduler.add(mark("bg"), name="bg").every_minute().in_background()
""",
    )
    period = 2.0
    workers = [Worker(project, "--tick-every", str(period)) for _ in range(2)]
    deadline = time.monotonic() + 5 * period
    while time.monotonic() < deadline:  # cron ticks at the workers' (scaled) minute, racing them
        moment = datetime.fromtimestamp(scaled(time.time(), period), tz=UTC)
        project.icc("run", "--quiet", "--at", moment.isoformat(), check=True)
    for worker in workers:
        code, out = worker.stop()
        assert code == 0, out
    project.wait_for(
        lambda: all(r["outcome"] not in ("running", "pending") for r in project.runs()), what="runs to end"
    )
    counts = per_slot(project)
    assert len({s for (job, s) in counts if job == "fg"}) >= 3  # several minutes, each contested
    assert [key for key, n in counts.items() if n > 1] == []
    for name in ("fg", "bg"):
        lines = project.marker_lines(name)
        assert len(lines) == len(set(lines)) >= 3, name


@pytest.mark.parametrize("policy", ["skip", "all"])
def test_a_long_foreground_job_makes_work_skip_boundaries_and_the_next_tick_applies_the_missed_policy(
    project: Project, policy: str
) -> None:
    scanned(
        project,
        f"""
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("long", 7, once=True), name="long").every_minute()
    scheduler.add(mark("job"), name="job").every_minute().missed("{policy}")
""",
    )
    period = 2.0
    work = Worker(project, "--tick-every", str(period))
    # The first tick's long job (7 s: 3.5 scaled minutes) runs past three boundaries.

    def ran_after_the_gap() -> bool:
        runs = project.runs("job")
        return any(r["kind"] == "scheduled" and r["outcome"] == "succeeded" for r in runs[1:])

    project.wait_for(ran_after_the_gap, timeout=60, what="the tick after the long job")
    code, out = work.stop()
    assert code == 0, out
    first, *then = project.runs("job")  # the job's run in the long tick, after the long job
    assert (first["kind"], first["outcome"]) == ("scheduled", "succeeded")
    missed = [r for r in then if r["kind"] == "missed"]
    after = next(r for r in then if r["kind"] == "scheduled")
    # The boundaries it ran past are missed slots but the last: that minute is ticked at once, late, when the job
    # ends (so it is not missed too).
    assert len(missed) >= 2
    assert [r["slot"] for r in missed] == [first["slot"] + 60 * i for i in range(1, len(missed) + 1)]
    assert after["slot"] == missed[-1]["slot"] + 60
    # At once: in the scaled minute the long tick ended in (its last run, `first`), not at the boundary after.
    assert after["slot"] <= slot_of(datetime.fromtimestamp(scaled(first["ended_at"] + 0.5, period), tz=UTC))
    assert after["outcome"] == "succeeded"
    expected = "missed" if policy == "skip" else "succeeded"  # recorded, or run late
    assert {r["outcome"] for r in missed} == {expected}


def test_work_waits_for_the_next_minute_while_a_cron_tick_holds_the_tick_lock(project: Project) -> None:
    scanned(
        project,
        """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("job"), name="job").every_minute()
""",
    )
    lock = tick_lock(project.state_dir)
    assert lock.try_acquire()
    work = Worker(project, "--tick-every", "2")
    try:
        # At least one tick while the lock is held (waited for: a loaded machine starts `icc work` slowly).
        project.wait_for(
            lambda: "another tick is running" in work.stdout() + work.err.read_text(),
            timeout=60,
            what="a tick to find the tick lock held",
        )
        assert project.runs("job") == []
    finally:
        lock.release()
    project.wait_for(lambda: project.marker_lines("job"), what="a tick after the lock was released")
    code, out = work.stop()
    assert code == 0, out
    assert "icc work: another tick is running (pid" in out
    assert "waiting for the next minute" in out


def test_work_on_a_store_never_scanned_says_so_and_exits_2(project: Project) -> None:
    proc = project.icc("work", timeout=60)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: no state store at ")
    assert "icc scan" in line
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_work_ticks_at_the_real_minute_boundary_and_runs_a_15_second_job_4_times_in_it(
    project: Project,
) -> None:
    scanned(
        project,
        """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("job"), name="job").every_minute()
    scheduler.add(mark("fast"), name="fast").every_seconds(15)
""",
    )
    if time.time() % 60 > 45:  # leave a gap before the boundary, which a drifting loop would carry over
        time.sleep(65 - time.time() % 60)
    work = Worker(project)
    project.wait_for(lambda: len(project.runs("job")) == 1, what="the tick at start")
    start_slot = project.runs("job")[0]["slot"]
    project.wait_for(lambda: len(project.runs("job")) == 2, timeout=90, what="the tick at the boundary")
    # The 15-second job runs at each offset of that minute: 4 runs, one per second slot, all succeeded.
    minute = start_slot + 60

    def fast_runs() -> list[dict[str, object]]:
        return [r for r in project.runs("fast") if minute <= r["slot"] < minute + 60]

    project.wait_for(
        lambda: len([r for r in fast_runs() if r["outcome"] == "succeeded"]) == 4,
        timeout=90,
        what="4 runs of the 15-second job in the minute",
    )
    assert sorted(r["slot"] for r in fast_runs()) == [minute, minute + 15, minute + 30, minute + 45]
    code, out = work.stop()  # SIGTERM: exit 0
    assert code == 0, out
    run = project.runs("job")[1]
    assert run["slot"] == minute
    assert run["outcome"] == "succeeded"
    assert run["started_at"] - run["slot"] < 10  # at second 0, not at the start's second offset


def zombies_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_bytes().rpartition(b")")[2].split()
            except OSError:
                continue
            if fields[0] == b"Z" and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(
    subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True).returncode != 0
    if shutil.which("unshare")
    else True,
    reason="needs unshare and the right to make a pid namespace",
)
def test_as_a_containers_pid_1_work_reaps_the_background_supervisors_it_adopts(project: Project) -> None:
    scanned(
        project,
        """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("bg"), name="bg").every_minute().in_background()
""",
    )
    # `unshare --fork` makes icc work pid 1 of a new pid namespace, as in a container without an init.
    out = project.root / "pid1.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", *project.argv("work", "--tick-every", "1")],
            cwd=project.root,
            env=project.environ(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    work_pid = -1
    try:
        project.wait_for(
            lambda: len(project.marker_lines("bg")) >= 3, timeout=60, what="three background runs"
        )
        # A new run starts every (scaled) minute, so wait for three ended ones, not for a moment with none running.
        project.wait_for(
            lambda: sum(r["outcome"] == "succeeded" for r in project.runs("bg")) >= 3,
            timeout=60,
            what="three runs to end",
        )
        [work_pid] = [
            int(e.name)
            for e in Path("/proc").iterdir()
            if e.name.isdigit() and int(e.name) != proc.pid and _parent(int(e.name)) == proc.pid
        ]
        # Each supervisor, orphaned, was adopted by pid 1: icc work collects it between ticks.
        project.wait_for(lambda: zombies_of(work_pid) == [], timeout=10, what="no zombie child of icc work")
    finally:
        if work_pid > 0:
            os.kill(work_pid, signal.SIGTERM)  # unshare ignores SIGTERM itself
        else:
            proc.kill()
        proc.wait(timeout=60)
    assert "icc work: stopped (SIGTERM)" in out.read_text()


def _parent(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_bytes().rpartition(b")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_sighup_stops_work_like_sigterm_with_its_stop_line_and_exit_0(project: Project) -> None:
    scanned(project, ENDLESS)
    work = Worker(project)
    project.wait_for(lambda: project.marker_lines("endless.started"), what="the job to start")
    code, out = work.stop(signal.SIGHUP)
    assert code == 0, out
    assert "icc work: received SIGHUP: starting nothing new" in out
    assert "icc work: stopped (SIGHUP), exiting" in out
    [run] = project.runs("endless")
    assert (run["outcome"], run["error"]) == ("stopped", "stopped: icc work received SIGHUP")


def test_sub_minute_offsets_skipped_by_a_stop_name_icc_work_not_icc_run(project: Project) -> None:
    scanned(
        project,
        """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("slow", 3), name="slow").every_minute()
    scheduler.add(mark("poll"), name="poll").every_seconds(15)
""",
        grace=20,
    )
    work = Worker(project, "--tick-every", "600")  # one tick only: the scaled minute outlasts the test
    project.wait_for(lambda: project.marker_lines("slow.started"), what="the slow job to start")
    code, out = work.stop()
    assert code == 0, out
    errors = {r["error"] for r in project.runs("poll") if r["outcome"] == "skipped"}
    assert errors, project.runs("poll")
    assert all("icc work" in e and "icc run" not in e for e in errors), errors
