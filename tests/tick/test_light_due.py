"""The light minute's plain foreground jobs (icc.tick.plain): `icc run --quiet` runs a minute whose due jobs
are foreground jobs the last scan vouched for, without the coordinator, click or pluggy, in one light
foreground supervisor, and records exactly what the full tick records."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import time
from typing import Any

import pytest
from icc.locks import pid_alive
from projectkit import Project, at, slot

# Each task notes which process ran it and whether the tick that forked it had imported the coordinator or
# pluggy (a forked task inherits its tick's modules): the light minute imports neither.
TASKS = """
def note(name):
    seen = int("icc.tick.coordinator" in sys.modules), int("pluggy" in sys.modules), int("click" in sys.modules)
    with open(os.path.join(os.environ["MARKER_DIR"], "ran"), "a") as f:
        f.write(f"{name} {seen[0]}{seen[1]}{seen[2]} {os.getcwd()} {os.environ.get('ICC_CONFIG')}\\n")


def ok():
    note("ok")
    print("hello from ok")


def boom():
    note("boom")
    print("about to fail")
    raise ValueError("bad thing")


def exits():
    note("exits")
    sys.stdout.flush()
    os._exit(7)


def later():
    note("later")
"""

PLAIN = (
    TASKS
    + """

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(ok, name="ok").every_minute()
    scheduler.add(boom, name="boom").every_minute()
    scheduler.add(exits, name="exits").every_minute()
    scheduler.add(later, name="later").every_minute()
"""
)


def ran(project: Project) -> list[tuple[str, str]]:
    """(task, which of coordinator/pluggy/click its tick had imported) of each task run so far."""
    return [(line.split()[0], line.split()[1]) for line in project.marker_lines("ran")]


def minute(project: Project, n: int) -> list[dict[str, Any]]:
    return [r for r in project.runs() if r["slot"] == slot(n)]


def comparable(run: dict[str, Any]) -> dict[str, Any]:
    """What a light minute and the full tick record alike (ids, slots, times and pids aside). A traceback's
    frames differ (the full supervisor calls the task through one more function): its last line is compared."""
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


def next_dues(project: Project) -> dict[str, int]:
    db = sqlite3.connect(project.db)
    try:
        return dict(db.execute("SELECT name, next_due FROM jobs"))
    finally:
        db.close()


def counts(project: Project) -> dict[tuple[str, str], int]:
    db = sqlite3.connect(project.db)
    try:
        return {(j, o): n for j, o, n in db.execute("SELECT job, outcome, n FROM run_counts")}
    finally:
        db.close()


def scanned(project: Project, plugin: str) -> None:
    project.write_plugin(plugin)
    project.icc("scan", check=True)


def test_plain_jobs_run_light_and_record_what_the_full_tick_records(project: Project) -> None:
    scanned(project, PLAIN)
    full = project.icc("run", "--at", at(0))  # not quiet: the full tick, which prints its table
    assert full.returncode == 1, full.stdout + full.stderr  # boom and exits failed
    full_counts = counts(project)
    light = project.icc("run", "--quiet", "--at", at(1))
    assert light.returncode == 1 and light.stderr == "", light.stdout + light.stderr
    # --quiet with a failed run: the tick table, as the full tick prints it
    lines = light.stdout.splitlines()
    assert lines[0].startswith("icc run ") and lines[1].split() == [
        "job",
        "outcome",
        "slot",
        "took",
        "next",
        "run",
        "detail",
    ]
    assert [line.split()[:2] for line in lines[2:]] == [
        ["ok", "succeeded"],
        ["boom", "failed"],
        ["exits", "failed"],
        ["later", "succeeded"],
    ]
    assert "ValueError: bad thing" in lines[3] and "exit code 7" in lines[4]

    marks = ran(project)
    assert marks[:4] == [(name, "110") for name in ("ok", "boom", "exits", "later")]  # the full tick's
    assert marks[4:] == [(name, "000") for name in ("ok", "boom", "exits", "later")]  # light: none of them
    for line in project.marker_lines("ran"):  # the run's context: the project root, ICC_CONFIG
        assert line.split()[2:] == [str(project.root), str(project.config)]

    light_runs, full_runs = minute(project, 1), minute(project, 0)
    assert [comparable(r) for r in light_runs] == [comparable(r) for r in full_runs]
    assert [r["id"] for r in light_runs] == sorted(
        r["id"] for r in light_runs
    )  # claimed in declaration order
    by_job = {r["job"]: r for r in light_runs}
    assert by_job["boom"]["error"] == "ValueError: bad thing"
    assert by_job["boom"]["output"].startswith("about to fail\nTraceback")
    assert (by_job["exits"]["outcome"], by_job["exits"]["exit_code"]) == ("failed", 7)
    assert by_job["exits"]["error"] == "exit code 7"
    assert by_job["ok"]["output"] == "hello from ok\n"
    assert len({r["pid"] for r in light_runs}) == 1  # one supervisor for all of them
    assert by_job["later"]["started_at"] >= by_job["exits"]["ended_at"]  # one after another
    assert not any(pid_alive(r["task_pid"]) for r in light_runs)
    assert next_dues(project) == dict.fromkeys(("ok", "boom", "exits", "later"), slot(2))
    # outcomes and duration buckets alike (the milliseconds' sum aside)
    assert {k: n for k, n in counts(project).items() if k[1] != "~sum_ms"} == {
        key: 2 * n for key, n in full_counts.items() if key[1] != "~sum_ms"
    }

    status = project.status()
    jobs = {j["name"]: j for j in status["jobs"]}
    assert {name: jobs[name]["last_run"]["outcome"] for name in jobs} == {
        "ok": "succeeded",
        "boom": "failed",
        "exits": "failed",
        "later": "succeeded",
    }
    assert jobs["boom"]["last_run"]["error"] == "ValueError: bad thing"


def test_a_minute_of_plain_jobs_that_all_succeed_prints_nothing_and_exits_0(project: Project) -> None:
    scanned(
        project,
        TASKS
        + "\n@icc.hookimpl\ndef schedule(scheduler):\n    scheduler.add(ok, name='ok').cron('0 * * * *')\n",
    )
    project.icc("run", "--at", at(0), check=True)
    light = project.icc("run", "--quiet", "--at", at(60))
    assert (light.returncode, light.stdout, light.stderr) == (0, "", "")
    assert ran(project)[-1] == ("ok", "000")
    assert [r["outcome"] for r in minute(project, 60)] == ["succeeded"]
    assert next_dues(project) == {"ok": slot(120)}


ODD = {
    "a callback": "scheduler.add(ok, name='odd').every_minute().after(lambda result: None)",
    "a condition": "scheduler.add(ok, name='odd').every_minute().when(lambda: True)",
    "between": "scheduler.add(ok, name='odd').every_minute().between('00:00', '23:59')",
    "pings": "scheduler.add(ok, name='odd').every_minute().ping_on_failure('http://127.0.0.1:9/x')",
    "a task that takes the context": "scheduler.add(lambda ctx: None, name='odd').every_minute()",
    "a background job with a callback": (
        "scheduler.add(ok, name='odd').every_minute().in_background().after(lambda result: None)"
    ),
    "a background job that takes the context": (
        "scheduler.add(lambda ctx: None, name='odd').every_minute().in_background()"
    ),
}


@pytest.mark.parametrize("odd", list(ODD))
def test_a_minute_with_a_job_that_is_not_plain_goes_to_the_full_tick(project: Project, odd: str) -> None:
    scanned(
        project,
        TASKS
        + f"\n@icc.hookimpl\ndef schedule(scheduler):\n    scheduler.add(later, name='plain').every_minute()\n"
        f"    {ODD[odd]}\n",
    )
    project.icc("run", "--at", at(0), check=True)
    project.icc("run", "--quiet", "--at", at(1), check=True)
    project.wait_for(
        lambda: (
            len(minute(project, 1)) == 2
            and all(r["outcome"] not in ("pending", "running") for r in minute(project, 1))
        ),
        what="the minute's runs",
    )
    assert ("later", "110") in ran(project)[-2:]  # the plain job ran in the full tick's supervisor
    assert ("later", "000") not in ran(project)


def test_a_failing_run_is_notified_when_a_notification_url_is_set_and_the_minute_stays_light(
    project: Project,
) -> None:
    project.write_config('\n[icc.notify]\nurls = ["json://127.0.0.1:9/hook"]\n')
    scanned(
        project,
        TASKS
        + "\n@icc.hookimpl\ndef schedule(scheduler):\n    scheduler.add(boom, name='boom').every_minute()\n",
    )
    project.icc("run", "--at", at(0))
    light = project.icc("run", "--quiet", "--at", at(1))
    assert light.returncode == 1
    # the first minute full, the second light: no coordinator, and the notifications plugin (it declares its
    # episode key) loaded after the task, for the failure (tests/tick/test_light_hooks.py compares it with the
    # full tick's)
    assert ran(project) == [("boom", "110"), ("boom", "000")]
    db = sqlite3.connect(project.state_dir / "queue.sqlite3")
    try:
        queued = [row[0] for row in db.execute("SELECT payload FROM messages WHERE name = 'notify.send'")]
    finally:
        db.close()
    assert len(queued) == 1 and '"boom"' in queued[0]  # the first failure notified (then flood control)


def test_a_hanging_task_times_out_at_its_timeout_and_the_next_runs_still_run(project: Project) -> None:
    scanned(
        project,
        TASKS
        + """
def hang():
    note("hang")
    time.sleep(60)


@icc.hookimpl
def schedule(scheduler):
    scheduler.add(hang, name="hang").every_minute().timeout(1)
    scheduler.add(later, name="later").every_minute()
""",
    )
    project.icc("run", "--at", at(0))
    started = time.monotonic()
    light = project.icc("run", "--quiet", "--at", at(1))
    assert time.monotonic() - started < 15
    assert light.returncode == 1 and "timed_out" in light.stdout
    runs = {r["job"]: r for r in minute(project, 1)}
    hang = runs["hang"]
    assert hang["outcome"] == "timed_out"
    assert hang["error"] == "timed out after 1s; its process group was killed"
    assert 1.0 <= hang["ended_at"] - hang["started_at"] < 5.0
    assert not pid_alive(hang["task_pid"])
    assert runs["later"]["outcome"] == "succeeded"
    assert ran(project)[-2:] == [("hang", "000"), ("later", "000")], (
        light.stdout + light.stderr + repr(project.runs())
    )


BROKEN_PLUGIN = """
if os.path.exists(os.path.join(os.environ["MARKER_DIR"], "break")):
    raise RuntimeError("broken on purpose")
if os.path.exists(os.path.join(os.environ["MARKER_DIR"], "hang")):
    time.sleep(60)


def fragile():
    pass


@icc.hookimpl
def schedule(scheduler):
    scheduler.add(fragile, name="fragile").every_minute().timeout(2)
"""


@pytest.mark.parametrize("how", ["break", "hang"])
def test_a_plugin_whose_import_raises_or_hangs_fails_its_runs_and_the_others_run(
    project: Project, how: str
) -> None:
    project.write_config(plugins=("tasks_plugin", "fragile_plugin"))
    project.write_plugin(BROKEN_PLUGIN, name="fragile_plugin")
    scanned(
        project,
        TASKS
        + "\n@icc.hookimpl\ndef schedule(scheduler):\n    scheduler.add(later, name='later').every_minute()\n",
    )
    project.icc("run", "--at", at(0), check=True)
    (project.root / how).write_text("")  # from now on its import raises or hangs (no plugin file changed)
    full = project.icc("run", "--at", at(1))  # the full tick, for comparison
    started = time.monotonic()
    light = project.icc("run", "--quiet", "--at", at(2))
    assert time.monotonic() - started < 20  # the tick exits
    assert light.returncode == 1, light.stdout + light.stderr
    full_runs, light_runs = minute(project, 1), minute(project, 2)
    assert [comparable(r) for r in light_runs] == [comparable(r) for r in full_runs]
    fragile = next(r for r in light_runs if r["job"] == "fragile")
    if how == "break":
        said = "warning: plugin fragile_plugin: RuntimeError: broken on purpose"
        assert said in full.stderr.splitlines() and said in light.stderr.splitlines(), light.stderr
        assert fragile["error"] == (
            "job 'fragile' could not be loaded from its plugin (fragile_plugin: RuntimeError: broken on purpose); "
            "run `icc scan`"
        )
    else:
        assert fragile["error"].startswith("its plugins did not load within 2s (an import hangs?)")
    assert fragile["outcome"] == "failed" and fragile["task_pid"] is None
    assert ran(project)[-1] == ("later", "000")  # the other plugin's job ran, light


def test_a_hundred_plain_jobs_run_in_declaration_order_and_are_all_recorded(project: Project) -> None:
    scanned(
        project,
        TASKS
        + """
@icc.hookimpl
def schedule(scheduler):
    for i in range(100):
        scheduler.add(ok, name=f"j{i:03d}").every_minute()
""",
    )
    project.icc("run", "--at", at(0), check=True)
    light = project.icc("run", "--quiet", "--at", at(1))
    assert (light.returncode, light.stdout, light.stderr) == (0, "", "")
    runs = minute(project, 1)
    assert [r["job"] for r in runs] == [f"j{i:03d}" for i in range(100)]
    assert all(r["outcome"] == "succeeded" and r["output"] == "hello from ok\n" for r in runs)
    starts = [r["started_at"] for r in runs]
    assert starts == sorted(starts)
    assert all(b["started_at"] >= a["ended_at"] for a, b in itertools.pairwise(runs))
    assert ran(project)[100:] == [("ok", "000")] * 100
    assert set(next_dues(project).values()) == {slot(2)}


def test_when_the_precomputed_slots_run_out_the_full_tick_runs_the_minute_and_makes_new_ones(
    project: Project,
) -> None:
    from icc.schedule import Schedule
    from icc.tick.ahead import SLOTS_AHEAD
    from icc.tick.coordinator import next_due

    scanned(
        project,
        TASKS
        + "\n@icc.hookimpl\ndef schedule(scheduler):\n    scheduler.add(ok, name='ok').cron('*/7 * * * *')\n",
    )
    schedule = Schedule().cron("*/7 * * * *")
    first = next_due(schedule, slot(0) - 60)
    assert first is not None
    project.icc("run", "--at", at((first - slot(0)) / 60), check=True)  # full: makes the list
    listed = stored_slots(project)
    expected = [next_due(schedule, first)]
    while len(expected) < SLOTS_AHEAD:
        expected.append(next_due(schedule, expected[-1]))
    assert listed == expected  # the schedule's own next slots
    # Cut the list to two: the light minute runs the first, and leaves the last (the list ran out) to the full tick.
    set_slots(project, ",".join(f"{s}@00:00" for s in listed[:2]))
    for index, expect_light in ((0, True), (1, False)):
        minute_at = (listed[index] - slot(0)) / 60
        project.icc("run", "--quiet", "--at", at(minute_at), check=True)
        assert ran(project)[-1] == ("ok", "000" if expect_light else "110")
        assert next_dues(project) == {"ok": listed[index + 1]}
    assert stored_slots(project)[0] == listed[2]  # a new list, from the next slot on
    assert stored_slots(project) == [listed[2], *(next_due(schedule, s) for s in stored_slots(project)[:-1])]
    project.icc("run", "--quiet", "--at", at((listed[2] - slot(0)) / 60), check=True)
    assert ran(project)[-1] == ("ok", "000")  # light again


def stored_slots(project: Project) -> list[int]:
    db = sqlite3.connect(project.db)
    try:
        (text,) = db.execute("SELECT slots FROM light_jobs WHERE name = 'ok'").fetchone()
    finally:
        db.close()
    return [int(part.partition("@")[0]) for part in text.split(",")]


def set_slots(project: Project, text: str) -> None:
    db = sqlite3.connect(project.db)
    try:
        db.execute("UPDATE light_jobs SET slots = ? WHERE name = 'ok'", (text,))
        db.commit()
    finally:
        db.close()


def test_a_killed_light_supervisor_leaves_its_run_abandoned_and_a_new_one_runs_the_rest(
    project: Project,
) -> None:
    scanned(
        project,
        TASKS
        + """
def slow():
    note("slow")
    time.sleep(60)


@icc.hookimpl
def schedule(scheduler):
    scheduler.add(ok, name="first").every_minute()
    scheduler.add(slow, name="slow").every_minute().timeout(120)
    scheduler.add(later, name="after").every_minute()
""",
    )
    project.icc("run", "--at", at(0), check=False)  # full (slow runs its minute: killed below)
    tick = project.popen("run", "--quiet", "--at", at(1))
    try:
        project.wait_for(
            lambda: any(r["job"] == "slow" and r["task_pid"] for r in minute(project, 1)),
            timeout=30,
            what="the slow run to start",
        )
        slow = next(r for r in minute(project, 1) if r["job"] == "slow")
        os.kill(slow["pid"], signal.SIGKILL)  # its light supervisor
        out, err = tick.communicate(timeout=30)
    finally:
        if tick.poll() is None:
            tick.kill()
    assert tick.returncode == 0, out + err  # abandoned is not a failure of the tick (as the full tick)
    runs = {r["job"]: r for r in minute(project, 1)}
    assert runs["first"]["outcome"] == "succeeded"
    assert runs["slow"]["outcome"] == "abandoned"
    assert runs["slow"]["error"] == "its supervisor exited with code -9 without recording an outcome"
    project.wait_for(lambda: not pid_alive(slow["task_pid"]), timeout=10, what="its task to be killed")
    assert runs["after"]["outcome"] == "succeeded"  # run by a new supervisor
    assert runs["after"]["pid"] != slow["pid"]
    assert [name for name, _ in ran(project) if _ == "000"] == ["ok", "slow", "later"]
    assert next_dues(project) == dict.fromkeys(("first", "slow", "after"), slot(2))


def test_a_stop_to_the_light_tick_stops_the_running_task_and_skips_the_rest(project: Project) -> None:
    scanned(
        project,
        TASKS
        + """
def slow():
    note("slow")
    time.sleep(60)


@icc.hookimpl
def schedule(scheduler):
    scheduler.add(slow, name="slow").every_minute()
    scheduler.add(later, name="after").every_minute()
""",
    )
    first = project.popen("run", "--at", at(0))
    project.wait_for(lambda: bool(project.marker_lines("ran")), what="the full tick's slow run")
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    full_runs = minute(project, 0)
    tick = project.popen("run", "--quiet", "--at", at(1))
    try:
        project.wait_for(lambda: len(project.marker_lines("ran")) >= 2, timeout=30, what="the slow run")
        tick.send_signal(signal.SIGTERM)
        out, err = tick.communicate(timeout=30)
    finally:
        if tick.poll() is None:
            tick.kill()
    assert tick.returncode == 1 and "stopped" in out, out + err
    light_runs = minute(project, 1)
    assert [comparable(r) for r in light_runs] == [comparable(r) for r in full_runs]
    assert [(r["job"], r["outcome"], r["error"]) for r in light_runs] == [
        ("slow", "stopped", "stopped: icc run received SIGTERM"),
        ("after", "skipped", "not started: icc run received SIGTERM"),
    ]


def test_the_light_paths_copies_of_the_stores_constants_are_the_same() -> None:
    from icc import plugins
    from icc.store import protocol
    from icc.tick import coordinator, light, plain

    assert plain.PLUGIN_LOAD_LIMIT == coordinator.PLUGIN_LOAD_LIMIT
    assert light.DURATION_BUCKETS == protocol.DURATION_BUCKETS
    assert set(light.TIMED_OUTCOMES) == protocol.TIMED_OUTCOMES
    assert (light.DURATION_PREFIX, light.DURATION_SUM_KEY) == (
        protocol.DURATION_PREFIX,
        protocol.DURATION_SUM_KEY,
    )
    assert set(plain.FAILED_OUTCOMES) == {"failed", "timed_out", "stopped"}
    assert set(plain._FALSE) == plugins._FALSE


def test_a_job_changed_without_a_rescan_of_the_table_goes_full(project: Project) -> None:
    """The light minute joins on the job's stored definition: a row edited since (or a scan by an icc that
    keeps no light_jobs row) is the full tick's."""
    scanned(
        project,
        TASKS
        + "\n@icc.hookimpl\ndef schedule(scheduler):\n    scheduler.add(ok, name='ok').every_minute()\n",
    )
    project.icc("run", "--at", at(0), check=True)
    db = sqlite3.connect(project.db)
    try:
        db.execute("UPDATE light_jobs SET definition = definition || ' '")
        db.commit()
    finally:
        db.close()
    project.icc("run", "--quiet", "--at", at(1), check=True)
    assert ran(project)[-1] == ("ok", "110")


def test_a_job_whose_own_plugin_has_run_hooks_goes_to_the_full_tick_which_calls_them(
    project: Project,
) -> None:
    """A plugin's own after_run acts on its jobs (the full supervisor always loads the job's plugin), even when
    its ICC_RUN_HOOK_SETTINGS are unset: its jobs are not plain."""
    scanned(
        project,
        TASKS
        + """
ICC_RUN_HOOK_SETTINGS = ("nothing.set",)


@icc.hookimpl
def after_run(job, run, result):
    with open(os.path.join(os.environ["MARKER_DIR"], "after_run"), "a") as f:
        f.write(f"{job.name} {result.outcome}\\n")


@icc.hookimpl
def schedule(scheduler):
    scheduler.add(ok, name="ok").every_minute()
""",
    )
    project.icc("run", "--at", at(0), check=True)
    project.icc("run", "--quiet", "--at", at(1), check=True)
    assert ran(project) == [("ok", "110"), ("ok", "110")]
    assert project.marker_lines("after_run") == ["ok succeeded", "ok succeeded"]


def test_consumer_jobs_and_plain_jobs_due_together_run_in_one_light_minute(project: Project) -> None:
    project.write_config('[icc.consumers]\nmode = "cron"\nqueues = ["mail", "async"]\ntime_limit = 1\n')
    scanned(
        project,
        TASKS
        + "\n@icc.hookimpl\ndef schedule(scheduler):\n    scheduler.add(ok, name='ok').every_minute()\n",
    )

    def done(n: int) -> bool:
        runs = minute(project, n)
        return len(runs) == 3 and all(
            r["outcome"] not in ("pending", "running") and not pid_alive(r["pid"]) for r in runs
        )

    project.icc("run", "--at", at(0), check=True)
    project.wait_for(lambda: done(0), timeout=30, what="the full tick's consumer runs to end")
    light = project.icc("run", "--quiet", "--at", at(1))
    assert (light.returncode, light.stdout, light.stderr) == (0, "", "")
    assert ran(project)[-1] == ("ok", "000")
    project.wait_for(lambda: done(1), timeout=30, what="the consumer runs to end")
    runs = minute(project, 1)
    # claimed in declaration order, as the full tick: the consumer jobs (icc's built-in plugin) last
    assert [(r["job"], r["outcome"]) for r in runs] == [
        ("ok", "succeeded"),
        ("consume:mail", "succeeded"),
        ("consume:async", "succeeded"),
    ]
    assert [(r["job"], r["outcome"]) for r in minute(project, 0)] == [(r["job"], r["outcome"]) for r in runs]
    assert next_dues(project) == dict.fromkeys(("consume:mail", "consume:async", "ok"), slot(2))
