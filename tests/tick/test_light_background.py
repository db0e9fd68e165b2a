"""The light minute's background jobs (icc.tick.background): `icc run --quiet` starts a minute's
`in_background()` jobs that the last scan vouched for, without the coordinator, click or pluggy, in one
detached supervisor that watches all of their tasks, and records exactly what the full tick records."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import time
from typing import Any

import pytest
from icc.locks import job_lock_name, pid_alive
from projectkit import Project, at, slot

# Each task notes which process ran it and whether the process that forked it had imported the
# coordinator, pluggy or click (a forked task inherits its supervisor's modules): the light minute imports none.
# The tasks are closures (made by make()), as a plugin that makes its jobs in a loop has them.
TASKS = """
import signal


def note(name):
    seen = int("icc.tick.coordinator" in sys.modules), int("pluggy" in sys.modules), int("click" in sys.modules)
    with open(os.path.join(os.environ["MARKER_DIR"], "ran"), "a") as f:
        f.write(f"{name} {seen[0]}{seen[1]}{seen[2]} {os.getcwd()} {os.environ.get('ICC_CONFIG')} {os.getpid()}\\n")


def slow_now():
    return os.path.exists(os.path.join(os.environ["MARKER_DIR"], "slow"))


def make(kind):
    def task():
        if kind == "stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        note(kind)
        if kind in ("hang", "stubborn") or (kind in ("ok", "later") and slow_now()):
            time.sleep(60)
        if kind == "ok":
            print("hello from ok")
        elif kind == "boom":
            print("about to fail")
            raise ValueError("bad thing")
        elif kind == "exits":
            sys.stdout.flush()
            os._exit(7)
    return task
"""

BACKGROUND = (
    TASKS
    + """

@icc.hookimpl
def schedule(scheduler):
    for kind in ("ok", "boom", "exits", "later"):
        scheduler.add(make(kind), name=kind).every_minute().in_background()
"""
)


def ran(project: Project) -> list[tuple[str, str]]:
    return [(line.split()[0], line.split()[1]) for line in project.marker_lines("ran")]


def minute(project: Project, n: int) -> list[dict[str, Any]]:
    return [r for r in project.runs() if r["slot"] == slot(n)]


def done(project: Project, n: int, count: int) -> bool:
    runs = minute(project, n)
    return len(runs) == count and all(
        r["outcome"] not in ("pending", "running") and not pid_alive(r["pid"]) for r in runs
    )


def wait_done(project: Project, n: int, count: int, timeout: float = 30) -> None:
    project.wait_for(
        lambda: done(project, n, count), timeout=timeout, what=f"minute {n}'s {count} runs to end"
    )


def comparable(run: dict[str, Any]) -> dict[str, Any]:
    """What a light minute and the full tick record alike (ids, slots, times and pids aside)."""
    output = run["output"]
    if "Traceback" in output:
        output = [line for line in output.splitlines() if line.strip()][-1]
    return {
        "job": run["job"],
        "kind": run["kind"],
        "outcome": run["outcome"],
        "exit_code": run["exit_code"],
        "error": run["error"],
        "output": output,
        "host": run["host"],
        "pids": (run["pid"] is not None, run["task_pid"] is not None, run["pid"] != run["task_pid"]),
        "timed": run["started_at"] is not None and run["ended_at"] >= run["started_at"],
    }


def query(project: Project, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(project.db)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def next_dues(project: Project) -> dict[str, int]:
    return dict(query(project, "SELECT name, next_due FROM jobs"))  # type: ignore[arg-type]


def counts(project: Project) -> dict[tuple[str, str], int]:
    return {(j, o): n for j, o, n in query(project, "SELECT job, outcome, n FROM run_counts")}


def status_view(project: Project) -> dict[str, Any]:
    """What ``icc status --json`` says of the last runs (their times and ids aside)."""
    status = project.status()
    keep = ("kind", "outcome", "exit_code", "error")

    def run(found: dict[str, Any] | None) -> tuple[Any, ...] | None:
        return None if found is None else tuple(found[k] for k in keep)

    return {
        "drift": (status["plugins_changed"], status["drift"], status["plugin_errors"]),
        "jobs": {
            job["name"]: (
                run(job["last_run"]),
                run(job["last_success"]),
                run(job["last_failure"]),
                job["running"],
                job["missed"],
            )
            for job in status["jobs"]
        },
    }


def scanned(project: Project, plugin: str) -> None:
    project.write_plugin(plugin)
    project.icc("scan", check=True)


def test_background_jobs_start_light_and_record_what_the_full_tick_records(project: Project) -> None:
    scanned(project, BACKGROUND)
    assert query(project, "SELECT name, background FROM light_jobs ORDER BY ord") == [
        ("ok", 1),
        ("boom", 1),
        ("exits", 1),
        ("later", 1),
    ]
    full = project.icc("run", "--at", at(0))  # not quiet: the full tick
    assert full.returncode == 0, full.stdout + full.stderr  # background runs started: not a failure
    wait_done(project, 0, 4)
    full_counts = counts(project)
    full_status = status_view(project)
    light = project.icc("run", "--quiet", "--at", at(1))
    assert (light.returncode, light.stdout, light.stderr) == (0, "", "")
    wait_done(project, 1, 4)
    full_runs, light_runs = minute(project, 0), minute(project, 1)
    assert [comparable(r) for r in light_runs] == [comparable(r) for r in full_runs]
    assert [(r["job"], r["outcome"], r["error"]) for r in light_runs] == [
        ("ok", "succeeded", None),
        ("boom", "failed", "ValueError: bad thing"),
        ("exits", "failed", "exit code 7"),
        ("later", "succeeded", None),
    ]
    assert light_runs[0]["output"] == "hello from ok\n"
    # one supervisor for the minute's background runs, each task a process of its own
    assert len({r["pid"] for r in light_runs}) == 1 and len({r["task_pid"] for r in light_runs}) == 4
    assert sorted(ran(project)[:4]) == sorted((kind, "110") for kind in ("ok", "boom", "exits", "later"))
    assert sorted(ran(project)[4:]) == sorted((kind, "000") for kind in ("ok", "boom", "exits", "later"))
    for line in project.marker_lines("ran"):  # the run's context: the project root, ICC_CONFIG
        assert line.split()[2:4] == [str(project.root), str(project.config)]
    timed = {key: n for key, n in counts(project).items() if key[1] != "~sum_ms"}  # durations differ
    assert timed == {key: 2 * n for key, n in full_counts.items() if key[1] != "~sum_ms"}
    assert next_dues(project) == dict.fromkeys(("ok", "boom", "exits", "later"), slot(2))
    assert (
        status_view(project) == full_status
    )  # icc status --json says of each job what it said after the full


def test_a_background_task_that_hangs_times_out_as_on_the_full_path(project: Project) -> None:
    scanned(
        project,
        TASKS
        + """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(make("hang"), name="hang").every_minute().in_background().timeout(1)
    scheduler.add(make("later"), name="later").every_minute().in_background()
""",
    )
    project.icc("run", "--at", at(0), check=True)
    wait_done(project, 0, 2)
    light = project.icc("run", "--quiet", "--at", at(1))
    assert (light.returncode, light.stdout, light.stderr) == (0, "", "")
    wait_done(project, 1, 2)
    full_runs, light_runs = minute(project, 0), minute(project, 1)
    assert [comparable(r) for r in light_runs] == [comparable(r) for r in full_runs]
    hang = light_runs[0]
    assert (hang["outcome"], hang["error"]) == (
        "timed_out",
        "timed out after 1s; its process group was killed",
    )
    assert 1.0 <= hang["ended_at"] - hang["started_at"] < 5.0
    assert not pid_alive(hang["task_pid"])
    assert light_runs[1]["outcome"] == "succeeded"
    assert ran(project)[-2:] in ([("hang", "000"), ("later", "000")], [("later", "000"), ("hang", "000")])


def test_a_background_run_whose_job_lock_is_held_is_skipped_as_on_the_full_path(project: Project) -> None:
    scanned(project, BACKGROUND)
    lock_path = project.state_dir / "locks" / job_lock_name("ok")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run of the job elsewhere holds it
        project.icc("run", "--at", at(0), check=True)
        wait_done(project, 0, 4)
        project.icc("run", "--quiet", "--at", at(1), check=True)
        wait_done(project, 1, 4)
    finally:
        os.close(fd)
    full_ok, light_ok = minute(project, 0)[0], minute(project, 1)[0]
    assert (light_ok["outcome"], light_ok["error"]) == (full_ok["outcome"], full_ok["error"])
    assert light_ok["outcome"] == "skipped" and light_ok["error"].startswith(
        "skipped: the previous run is still running"
    )
    assert [r["outcome"] for r in minute(project, 1)[1:]] == ["failed", "failed", "succeeded"]


FRAGILE = """
def mode(name):
    return os.path.exists(os.path.join(os.environ["MARKER_DIR"], name))


if mode("raise"):
    raise RuntimeError("broken on purpose")
if mode("hang"):
    time.sleep(60)
if mode("exit"):
    os._exit(3)


def make():
    def fragile():
        pass
    return fragile


@icc.hookimpl
def schedule(scheduler):
    if mode("schedule"):
        raise RuntimeError("bad schedule")
    scheduler.add(make(), name="fragile").every_minute().in_background().timeout(2)
"""


@pytest.mark.parametrize("how", ["raise", "hang", "exit", "schedule"])
def test_a_plugin_that_fails_at_import_or_in_schedule_fails_its_runs_as_on_the_full_path_and_the_others_run(
    project: Project, how: str
) -> None:
    project.write_config(plugins=("tasks_plugin", "fragile_plugin"))
    project.write_plugin(FRAGILE, name="fragile_plugin")
    scanned(
        project,
        TASKS + "\n@icc.hookimpl\ndef schedule(scheduler):\n"
        "    scheduler.add(make('later'), name='later').every_minute().in_background()\n",
    )
    project.icc("run", "--at", at(0), check=True)
    wait_done(project, 0, 2)
    (project.root / how).write_text("")  # from now on it fails (no plugin file changed)
    project.icc("run", "--at", at(1), check=True)  # the full tick, for comparison
    wait_done(project, 1, 2)
    started = time.monotonic()
    light = project.icc("run", "--quiet", "--at", at(2))
    assert time.monotonic() - started < 10  # the tick does not wait for the plugin
    assert (light.returncode, light.stdout, light.stderr) == (0, "", "")
    wait_done(project, 2, 2)
    full_runs, light_runs = minute(project, 1), minute(project, 2)
    assert [comparable(r) for r in light_runs] == [comparable(r) for r in full_runs]
    fragile = next(r for r in light_runs if r["job"] == "fragile")
    assert fragile["outcome"] == "failed" and fragile["task_pid"] is None
    expected = {
        "raise": "(fragile_plugin: RuntimeError: broken on purpose)",
        "exit": "(fragile_plugin: the plugin called os._exit(3); icc went on without it)",
        "schedule": "(fragile_plugin: RuntimeError: bad schedule)",
    }
    if how == "hang":
        assert fragile["error"].startswith("its plugins did not load within 2s (an import hangs?)")
    else:
        assert (
            fragile["error"]
            == f"job 'fragile' could not be loaded from its plugin {expected[how]}; run `icc scan`"
        )
    assert ran(project)[-1] == ("later", "000")  # the other plugin's job ran, light


def running(project: Project, n: int, count: int) -> list[dict[str, Any]]:
    runs = minute(project, n)
    return (
        runs if len(runs) == count and all(r["task_pid"] and r["outcome"] == "running" for r in runs) else []
    )


def test_a_killed_background_supervisor_leaves_its_runs_abandoned_and_their_tasks_are_killed(
    project: Project,
) -> None:
    scanned(project, BACKGROUND)
    project.icc("run", "--at", at(0), check=True)
    wait_done(project, 0, 4)
    (project.root / "slow").write_text("")  # ok and later now sleep
    project.icc("run", "--quiet", "--at", at(1), check=True)
    project.wait_for(
        lambda: (
            [r["outcome"] for r in minute(project, 1)] == ["running", "failed", "failed", "running"]
            and all(r["task_pid"] for r in minute(project, 1) if r["outcome"] == "running")
        ),
        timeout=30,
        what="the slow runs to run",
    )
    slow = [r for r in minute(project, 1) if r["outcome"] == "running"]
    (supervisor,) = {r["pid"] for r in slow}
    os.kill(supervisor, signal.SIGKILL)
    project.wait_for(lambda: not pid_alive(supervisor), what="the supervisor to die")
    (project.root / "slow").unlink()
    project.icc("run", "--quiet", "--at", at(2))  # a full tick: runs are unfinished
    for run in slow:
        project.wait_for(
            lambda run=run: not pid_alive(run["task_pid"]), timeout=10, what="its task to be killed"
        )
    after = {r["job"]: r for r in minute(project, 1)}
    assert after["ok"]["outcome"] == after["later"]["outcome"] == "abandoned"
    wait_done(project, 2, 4)


def test_a_supervisor_killed_while_it_loads_the_plugin_leaves_its_runs_abandoned(project: Project) -> None:
    project.write_config(plugins=("tasks_plugin", "fragile_plugin"))
    project.write_plugin(FRAGILE, name="fragile_plugin")
    scanned(project, BACKGROUND)
    project.icc("run", "--at", at(0), check=True)
    wait_done(project, 0, 5)
    (project.root / "hang").write_text("")  # its import hangs (2 s): killed meanwhile
    light = project.icc("run", "--quiet", "--at", at(1))
    assert (light.returncode, light.stdout, light.stderr) == (0, "", "")
    runs = minute(project, 1)
    assert {r["outcome"] for r in runs} == {"running"} and len({r["pid"] for r in runs}) == 1
    os.kill(runs[0]["pid"], signal.SIGKILL)
    project.wait_for(lambda: not pid_alive(runs[0]["pid"]), what="the supervisor to die")
    (project.root / "hang").unlink()
    project.icc("run", "--quiet", "--at", at(2))  # a full tick
    assert {r["outcome"] for r in minute(project, 1)} == {"abandoned"}
    wait_done(project, 2, 5)


def test_sigterm_to_the_background_supervisor_stops_its_tasks_as_on_the_full_path(project: Project) -> None:
    scanned(
        project,
        TASKS
        + """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(make("ok"), name="first").every_minute().in_background()
    scheduler.add(make("later"), name="second").every_minute().in_background()
""",
    )
    project.icc("run", "--at", at(0), check=True)
    wait_done(project, 0, 2)
    (project.root / "slow").write_text("")
    project.icc("run", "--at", at(1), check=True)  # the full tick: a supervisor per run
    project.wait_for(lambda: bool(running(project, 1, 2)), timeout=30, what="the full tick's runs")
    for pid in {r["pid"] for r in running(project, 1, 2)}:
        os.kill(pid, signal.SIGTERM)
    wait_done(project, 1, 2)
    project.icc("run", "--quiet", "--at", at(2), check=True)
    project.wait_for(lambda: bool(running(project, 2, 2)), timeout=30, what="the light minute's runs")
    (supervisor,) = {r["pid"] for r in running(project, 2, 2)}
    os.kill(supervisor, signal.SIGTERM)
    wait_done(project, 2, 2)
    full_runs, light_runs = minute(project, 1), minute(project, 2)

    def alike(run: dict[str, Any]) -> dict[str, Any]:
        # SIGTERM, or SIGKILL after the grace when the stop reached a task still starting (its supervisor's
        # handler not yet reset): on either path, as the load decides
        assert run["exit_code"] in (-15, -9)
        return {**comparable(run), "exit_code": None}

    assert [alike(r) for r in light_runs] == [alike(r) for r in full_runs]
    assert [(r["outcome"], r["error"]) for r in light_runs] == [
        ("stopped", "stopped: its background supervisor received SIGTERM")
    ] * 2
    assert not any(pid_alive(r["task_pid"]) for r in light_runs)


def test_background_plain_foreground_and_consumer_jobs_due_together_run_in_one_light_minute(
    project: Project,
) -> None:
    project.write_config('[icc.consumers]\nmode = "cron"\nqueues = ["mail", "async"]\ntime_limit = 1\n')
    scanned(
        project,
        TASKS
        + """
def fg():
    note("fg")


@icc.hookimpl
def schedule(scheduler):
    scheduler.add(make("ok"), name="bg").every_minute().in_background()
    scheduler.add(fg, name="fg").every_minute()
""",
    )
    project.icc("run", "--at", at(0), check=True)
    wait_done(project, 0, 4)
    light = project.icc("run", "--quiet", "--at", at(1))
    assert (light.returncode, light.stdout, light.stderr) == (0, "", "")
    wait_done(project, 1, 4)
    runs = minute(project, 1)
    assert [(r["job"], r["outcome"]) for r in runs] == [(r["job"], r["outcome"]) for r in minute(project, 0)]
    assert {(r["job"], r["outcome"]) for r in runs} == {
        ("bg", "succeeded"),
        ("fg", "succeeded"),
        ("consume:mail", "succeeded"),
        ("consume:async", "succeeded"),
    }
    assert sorted(ran(project)[-2:]) == [("fg", "000"), ("ok", "000")]
    assert next_dues(project) == dict.fromkeys(("consume:mail", "consume:async", "bg", "fg"), slot(2))


def test_the_first_minute_after_a_scan_has_its_next_slots(project: Project) -> None:
    """The scan makes the first list of next slots of the rows it vouched for, from the stored next_due."""
    scanned(project, BACKGROUND)
    rows = query(project, "SELECT l.slots, j.next_due FROM light_jobs l JOIN jobs j ON j.name = l.name")
    assert rows and all(text.startswith(f"{due}@") and text.count(",") == 31 for text, due in rows)


def test_the_light_schedulers_copies_are_the_real_ones() -> None:
    from icc.jobs import default_name
    from icc.schedule import FLUENT_METHODS
    from icc.tick import background

    assert frozenset(FLUENT_METHODS) == background.FLUENT

    def closure() -> None:
        pass

    class Callable:
        def __call__(self) -> None:
            pass

    for task in (closure, Callable(), len, test_the_light_schedulers_copies_are_the_real_ones):
        assert background.default_name(task) == default_name(task)


def test_a_task_that_ignores_the_stop_is_killed_after_the_grace(project: Project) -> None:
    scanned(
        project,
        TASKS
        + """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(make("stubborn"), name="stubborn").every_minute().in_background().timeout(120)
""",
    )
    project.icc("run", "--quiet", "--at", at(0))  # full: its run killed below
    project.wait_for(lambda: bool(running(project, 0, 1)) and len(ran(project)) == 1, timeout=30, what="full")
    os.kill(running(project, 0, 1)[0]["pid"], signal.SIGTERM)
    wait_done(project, 0, 1)
    project.icc("run", "--quiet", "--at", at(1), check=True)
    project.wait_for(
        lambda: bool(running(project, 1, 1)) and len(ran(project)) == 2, timeout=30, what="light"
    )
    started = time.monotonic()
    os.kill(running(project, 1, 1)[0]["pid"], signal.SIGTERM)
    wait_done(project, 1, 1, timeout=15)
    assert time.monotonic() - started < 10  # SIGKILL after the grace (1 s), not the task's 60 s
    full, light = minute(project, 0)[0], minute(project, 1)[0]
    assert comparable(light) == comparable(full)
    assert (light["outcome"], light["exit_code"]) == ("stopped", -9)
