"""The light cron minute (icc.tick.light): when only the consumer cron jobs are due, `icc run --quiet` claims,
records and starts them without loading the plugins, and records exactly what the full tick records; its
consumer loads the plugins only when a message arrives."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from icc.config import load_config
from icc.locks import pid_alive
from icc.queue.dispatch import dispatch
from projectkit import Project, at, slot

# The plugin module notes every import of itself: a tick that loads the plugins leaves a line.
PLUGIN = """
with open(os.path.join(os.environ["MARKER_DIR"], "loaded"), "a") as f:
    f.write(f"{os.getpid()}\\n")


def record(payload):
    with open(os.path.join(os.environ["MARKER_DIR"], "handled"), "a") as f:
        f.write(f"{payload['i']} {os.getpid()}\\n")


@icc.hookimpl
def register_handlers(register):
    register("record", record, queue="async")
"""

# The hook is slow on purpose: the supervisor calls it after recording the outcome, so a test must wait for it.
AFTER_RUN = """

@icc.hookimpl
def after_run(job, run, result):
    __import__("time").sleep(0.3)
    with open(os.path.join(os.environ["MARKER_DIR"], "after_run"), "a") as f:
        f.write(f"{job.name} {result.outcome}\\n")
"""


def cron_project(
    project: Project, consumers: str = "time_limit = 1", plugin: str = PLUGIN, extra: str = ""
) -> None:
    project.write_config(f'[icc.consumers]\nmode = "cron"\nqueues = ["mail", "async"]\n{consumers}\n{extra}')
    project.write_plugin(plugin)
    project.icc("scan", check=True)


def ended(project: Project, minute: int) -> list[dict[str, Any]]:
    """The consumer runs of the tick at ``minute`` once they have all ended and their supervisors have exited.

    A supervisor records the outcome first and calls the ``after_run`` hooks after: a test that counts what
    the hooks wrote waits for the supervisors, not only for the outcomes."""

    def mine() -> list[dict[str, Any]]:
        return [r for r in project.runs() if r["slot"] == slot(minute)]

    try:
        project.wait_for(
            lambda: bool(mine()) and all(r["outcome"] not in ("pending", "running") for r in mine()),
            timeout=60,
            what=f"the consumer runs of minute {minute} to end",
        )
    except AssertionError as exc:  # say what the runs were, and whether their processes live
        alive = [(r["job"], pid_alive(r["pid"]), pid_alive(r["task_pid"])) for r in mine()]
        raise AssertionError(f"{exc}: {mine()!r}; (job, supervisor alive, task alive): {alive}") from None
    project.wait_for(
        lambda: not any(pid_alive(r["pid"]) for r in mine()),
        timeout=60,
        what=f"the supervisors of minute {minute} to exit",
    )
    return mine()


def running(project: Project, minute: int, job: str) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [
            r
            for r in project.runs(job)
            if r["slot"] == slot(minute) and r["outcome"] == "running" and r["task_pid"]
        ]

    project.wait_for(lambda: bool(found()), timeout=30, what=f"{job} of minute {minute} to run")
    return found()[0]


def meta(project: Project, key: str) -> str | None:
    db = sqlite3.connect(project.db)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])
    finally:
        db.close()


def next_dues(project: Project) -> dict[str, int]:
    db = sqlite3.connect(project.db)
    try:
        return dict(db.execute("SELECT name, next_due FROM jobs"))
    finally:
        db.close()


def comparable(run: dict[str, Any]) -> dict[str, Any]:
    """What the full and the light tick must record alike (ids, slots, times and pids aside)."""
    return {
        "job": run["job"],
        "kind": run["kind"],
        "outcome": run["outcome"],
        "exit_code": run["exit_code"],
        "host": run["host"],
        "error": run["error"],
        "output": re.sub(r"in \d+\.\ds;", "in N.Ns;", run["output"]),
        "pids": (run["pid"] is not None, run["task_pid"] is not None, run["pid"] != run["task_pid"]),
        "timed": run["started_at"] is not None and run["ended_at"] - run["started_at"] >= 1.0,
    }


def counts(project: Project) -> dict[tuple[str, str], int]:
    db = sqlite3.connect(project.db)
    try:
        # "~..." rows are icc_job_duration_seconds' buckets and sum, kept beside the outcome counts
        rows = db.execute("SELECT job, outcome, n FROM run_counts WHERE outcome NOT LIKE '~%'")
        return {(j, o): n for j, o, n in rows}
    finally:
        db.close()


def durations(project: Project) -> dict[str, int]:
    """Per job, how many runs icc_job_duration_seconds counted (its buckets' rows, ``~le:...``)."""
    db = sqlite3.connect(project.db)
    try:
        rows = db.execute("SELECT job, SUM(n) FROM run_counts WHERE outcome LIKE '~le:%' GROUP BY job")
        return {j: n for j, n in rows}
    finally:
        db.close()


def test_the_light_minute_records_the_runs_the_full_tick_records_without_loading_the_plugins(
    project: Project,
) -> None:
    cron_project(project)
    project.icc("run", "--at", at(0), check=True)  # not quiet: the full tick, which prints its table
    full = ended(project, 0)
    loaded = len(project.marker_lines("loaded"))
    assert loaded >= 1

    light = project.icc("run", "--quiet", "--at", at(1), check=True)
    assert light.stdout == "" and light.stderr == ""
    runs = ended(project, 1)
    assert (
        len(project.marker_lines("loaded")) == loaded
    )  # no plugin was imported, by the tick or its consumers
    assert [comparable(r) for r in runs] == [comparable(r) for r in full]
    assert [r["job"] for r in runs] == ["consume:mail", "consume:async"]  # claimed in consumers.queues order
    for run in runs:
        assert run["outcome"] == "succeeded", run
        assert run["output"].endswith("stopped: time limit of 1s reached\n"), run["output"]
        assert not pid_alive(run["task_pid"])
    assert next_dues(project) == {"consume:mail": slot(2), "consume:async": slot(2)}
    assert meta(project, "watermark") == str(slot(1))
    assert counts(project) == {("consume:mail", "succeeded"): 2, ("consume:async", "succeeded"): 2}
    # The duration histogram counts the light minute's runs as the full tick's (it used to count only the full)
    assert durations(project) == {"consume:mail": 2, "consume:async": 2}


def test_skip_empty_in_the_light_minute_records_what_the_full_tick_records(project: Project) -> None:
    cron_project(project, "time_limit = 1\nskip_empty = true")
    project.icc("run", "--at", at(0), check=True)
    first = ended(project, 0)  # the full tick's supervisors evaluate the condition (they load the plugins)
    loaded = len(project.marker_lines("loaded"))  # icc scan's and the full tick's supervisors'
    project.icc("run", "--quiet", "--at", at(1), check=True)
    runs = first + ended(project, 1)
    # (The full tick claims a run and its supervisor evaluates the condition, so its row keeps the claim's pid;
    # the light minute records the skip itself: the pids are not compared.)
    assert [(r["job"], r["slot"], r["outcome"], r["error"]) for r in runs] == [
        (job, slot(minute), "skipped", "a when/skip condition said no")
        for minute in (0, 1)
        for job in ("consume:mail", "consume:async")
    ]
    assert [r["pid"] for r in runs if r["slot"] == slot(1)] == [None, None]
    assert not (project.state_dir / "queue.sqlite3").exists()
    assert len(project.marker_lines("loaded")) == loaded  # the light minute loaded no plugin


def test_a_message_dispatched_mid_minute_is_handled_by_the_light_consumer_with_the_plugins_handler(
    project: Project,
) -> None:
    cron_project(project, "time_limit = 4")
    project.icc("run", "--at", at(0), check=True)
    ended(project, 0)
    loaded = len(project.marker_lines("loaded"))
    project.icc("run", "--quiet", "--at", at(1), check=True)
    consumer = running(project, 1, "consume:async")
    assert len(project.marker_lines("loaded")) == loaded  # waiting on an empty queue: no plugin loaded

    dispatch("record", {"i": 42}, queue="async", config=load_config(project.config))
    project.wait_for(lambda: project.marker_lines("handled"), timeout=30, what="the message to be handled")
    [line] = project.marker_lines("handled")
    assert line == f"42 {consumer['task_pid']}"  # by the consumer the light minute started, in its process
    runs = {r["job"]: r for r in ended(project, 1)}
    run = runs["consume:async"]
    assert run["outcome"] == "succeeded", run
    # The time limit counts from the consumer's start, not from when it loaded the plugins.
    assert "consumed 1 message (1 handled, 0 retried, 0 failed)" in run["output"], run["output"]
    assert run["output"].endswith("stopped: time limit of 4s reached\n"), run["output"]
    assert runs["consume:mail"]["output"].startswith("consumed 0 messages"), runs["consume:mail"]


def test_a_killed_light_supervisor_is_recorded_abandoned_by_the_next_tick_and_a_killed_consumer_failed(
    project: Project,
) -> None:
    cron_project(project, "time_limit = 60")
    project.icc("run", "--at", at(0), check=True)
    running(project, 0, "consume:async")
    project.icc("consume", "--stop", check=True)  # end the full tick's consumers early
    ended(project, 0)

    project.icc("run", "--quiet", "--at", at(1), check=True)
    run = running(project, 1, "consume:async")
    os.kill(run["pid"], signal.SIGKILL)
    project.wait_for(lambda: not pid_alive(run["pid"]), what="the supervisor to die")
    # kill -9 of a consumer (not its supervisor): its supervisor records it, as for any background task.
    mail = running(project, 1, "consume:mail")
    os.kill(mail["task_pid"], signal.SIGKILL)
    project.wait_for(
        lambda: project.runs("consume:mail")[-1]["outcome"] != "running", what="consume:mail to end"
    )
    killed = project.runs("consume:mail")[-1]
    assert (killed["outcome"], killed["exit_code"], killed["error"]) == ("failed", -9, "killed by SIGKILL")

    project.icc("run", "--quiet", "--at", at(2), check=True)  # a run is unfinished: the full tick
    [abandoned] = [r for r in project.runs("consume:async") if r["slot"] == slot(1)]
    assert abandoned["outcome"] == "abandoned", abandoned
    assert abandoned["error"] == f"its supervisor (pid {run['pid']}) died without recording an outcome"
    project.wait_for(lambda: not pid_alive(run["task_pid"]), what="its consumer to be killed")


def test_a_plugin_whose_run_hooks_may_act_on_any_run_keeps_the_full_tick(project: Project) -> None:
    cron_project(project, plugin=PLUGIN + AFTER_RUN)
    project.icc("run", "--at", at(0), check=True)
    ended(project, 0)
    project.icc("run", "--quiet", "--at", at(1), check=True)
    ended(project, 1)
    seen = project.marker_lines("after_run")
    assert sorted(seen) == ["consume:async succeeded"] * 2 + ["consume:mail succeeded"] * 2


@pytest.mark.parametrize("set_it", [True, False])
def test_a_plugins_run_hook_settings_decide_whether_the_minute_is_light(
    project: Project, set_it: bool
) -> None:
    plugin = 'ICC_RUN_HOOK_SETTINGS = ("tasks.notify",)\n' + PLUGIN + AFTER_RUN
    cron_project(project, plugin=plugin, extra="[icc.tasks]\nnotify = true\n" if set_it else "")
    project.icc("run", "--at", at(0), check=True)
    ended(project, 0)
    project.icc("run", "--quiet", "--at", at(1), check=True)
    ended(project, 1)
    # Set, its hook may act: the light minute's supervisors call it for every consumer run, as the full
    # tick's do. Unset, the light minute does not load it; the full tick's consumer supervisors load every
    # plugin (consumer jobs are defined from all of them), so they call it for their runs as before.
    assert len(project.marker_lines("after_run")) == (4 if set_it else 2)
    # icc scan, then in the full tick the intermediate that forks its two consumer runs' supervisors, once for
    # both (the tick itself imports no plugin); set, in the light minute each consumer run's supervisor, for
    # its hooks (the minute's runs' pids).
    loaded = project.marker_lines("loaded")
    assert len(loaded) == (4 if set_it else 2)
    if set_it:
        supervisors = {str(r["pid"]) for r in project.runs() if r["slot"] == slot(1)}
        assert set(loaded[2:]) == supervisors and len(supervisors) == 2


def test_the_light_minutes_defaults_are_icc_configs(tmp_path: Path) -> None:
    from icc.tick.light import CONSUMER_DEFAULTS, DEFAULTS

    (tmp_path / "icc.toml").write_text("[icc]\n")
    config = load_config(tmp_path / "icc.toml", environ={})
    assert {
        "grace": config.grace,
        "keep_runs": config.keep_runs,
        "keep_skipped": config.keep_skipped,
        "output_limit": config.output_limit,
    } == DEFAULTS
    consumers = config.consumers
    assert {
        "mode": consumers.mode,
        "queues": list(consumers.queues),
        "time_limit": consumers.time_limit,
        "skip_empty": consumers.skip_empty,
        "notify": consumers.notify,
    } == CONSUMER_DEFAULTS


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


def test_sigterm_to_a_light_supervisor_stops_its_consumer_as_the_full_ticks_supervisor_does(
    project: Project,
) -> None:
    cron_project(project, "time_limit = 60")
    stopped = {}
    for minute, argv in ((0, ("run", "--at", at(0))), (1, ("run", "--quiet", "--at", at(1)))):
        project.icc(*argv, check=True)
        runs = [running(project, minute, job) for job in ("consume:mail", "consume:async")]
        # A consumer catches SIGTERM once it is consuming; before, the signal's default action kills it
        # without its summary line. Wait for the handler, as an operator's SIGTERM would come minutes later.
        project.wait_for(
            lambda runs=runs: all(catches_sigterm(r["task_pid"]) for r in runs),
            what="the consumers to catch SIGTERM",
        )
        supervisors = [r["pid"] for r in runs]
        for pid in supervisors:
            os.kill(pid, signal.SIGTERM)
        stopped[minute] = ended(project, minute)
    # icc scan and the intermediate of the full tick's two supervisors (once for both): minute 1 was light.
    assert len(project.marker_lines("loaded")) == 2

    def seen(run: dict[str, Any]) -> tuple[Any, ...]:
        # Not the exit code. The full tick's supervisor used to send SIGTERM twice (its signal handler, then its
        # loop), and its consumer sometimes died of the second one inside its handler, before its summary line:
        # the output differed (seen in a CI dry run). Now the loop sends none after the handler did.
        output = re.sub(r"in \d+\.\ds;", "in N.Ns;", run["output"]).rstrip("\n")
        return run["job"], run["outcome"], run["error"], output

    assert [seen(r) for r in stopped[1]] == [seen(r) for r in stopped[0]]
    assert stopped[1][0]["outcome"] == "stopped", stopped[1]
    assert stopped[1][0]["error"] == "stopped: its background supervisor received SIGTERM"
    assert stopped[1][0]["output"].endswith("; stopped: SIGTERM\n"), stopped[1]


def test_queues_changed_since_the_scan_keep_the_full_tick(project: Project) -> None:
    cron_project(project)
    project.icc("run", "--at", at(0), check=True)
    ended(project, 0)
    loaded = len(project.marker_lines("loaded"))
    project.write_config('[icc.consumers]\nmode = "cron"\nqueues = ["async"]\ntime_limit = 1\n')  # no scan
    tick = project.icc("run", "--quiet", "--at", at(1))
    # The full tick, whose background supervisors load the plugins and say what is wrong: the tick itself no
    # longer knows (it imports no plugin), so it exits 0 having started them.
    assert tick.returncode == 0, tick.stderr
    [mail] = [r for r in ended(project, 1) if r["job"] == "consume:mail"]
    assert len(project.marker_lines("loaded")) > loaded
    assert mail["outcome"] == "failed" and "run `icc scan`" in mail["error"], mail


def test_the_light_minute_leaves_a_configured_store_to_the_full_tick(project: Project) -> None:
    from icc.tick.light import try_light_minute

    cron_project(project)
    project.icc("run", "--at", at(0), check=True)
    ended(project, 0)
    before = project.runs()
    text = project.config.read_text()
    project.config.write_text(text + '\n[icc.store]\nurl = "postgresql://icc@127.0.0.1:9/icc"\n')
    cwd = os.getcwd()
    os.chdir(project.root)
    try:
        found = try_light_minute(str(project.config), slot(1), str(project.state_dir), str(project.db))
    finally:
        os.chdir(cwd)
    assert found is None
    assert project.runs() == before and meta(project, "watermark") == str(slot(0))


def test_a_plugin_that_failed_at_the_scan_keeps_the_full_tick(project: Project) -> None:
    project.write_config(
        '[icc.consumers]\nmode = "cron"\ntime_limit = 1\n', plugins=("tasks_plugin", "no_such_plugin")
    )
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    assert (meta(project, "light_minute") or "").endswith("refused\ta plugin failed to load")
    project.icc("run", "--at", at(0), check=True)
    ended(project, 0)
    loaded = len(project.marker_lines("loaded"))
    tick = project.icc("run", "--quiet", "--at", at(1), check=True)
    ended(project, 1)
    # The full tick: its supervisors load the plugins (the light minute would not). (The tick no longer names
    # the failed plugin here: it imports none, and these background supervisors load them after it returned.)
    assert len(project.marker_lines("loaded")) > loaded
    assert tick.returncode == 0


CONTEXT_PLUGIN = """
def where(payload):
    with open(os.path.join(os.environ["MARKER_DIR"], "where"), "a") as f:
        f.write(f"{os.getcwd()} {os.environ.get('ICC_CONFIG')}\\n")

@icc.hookimpl
def register_handlers(register):
    register("where", where, queue="async")
"""


def test_the_light_consumer_of_a_tick_started_in_root_handles_messages_in_the_project_root_with_icc_config(
    project: Project,
) -> None:
    import subprocess

    cron_project(project, "time_limit = 4", plugin=CONTEXT_PLUGIN)
    project.icc("run", "--at", at(0), check=True)
    ended(project, 0)
    tick = subprocess.run(
        project.argv("run", "--quiet", "--at", at(1)), cwd="/", env=project.environ(), capture_output=True
    )
    assert tick.returncode == 0, tick.stderr
    running(project, 1, "consume:async")
    dispatch("where", {}, queue="async", config=load_config(project.config))
    project.wait_for(lambda: project.marker_lines("where"), timeout=30, what="the message to be handled")
    assert project.marker_lines("where") == [f"{project.root} {project.config}"]
    ended(project, 1)


FREEZING_PLUGIN = """
def freeze(payload):
    with open(os.path.join(os.environ["MARKER_DIR"], "frozen"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    os.kill(os.getpid(), __import__("signal").SIGSTOP)  # a consumer nothing but SIGKILL ends: the job timeout's


@icc.hookimpl
def register_handlers(register):
    register("freeze", freeze, queue="async")
"""


def voluntary_switches(pid: int) -> int | None:
    """How many times process ``pid`` went to sleep (its voluntary context switches); None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("voluntary_ctxt")))


def test_a_light_supervisor_waiting_out_the_grace_of_its_timed_out_consumer_sleeps_rather_than_spins(
    project: Project,
) -> None:
    # consume:async's job timeout: time_limit 1 + grace 3 + 5 = 9 s; then SIGTERM, which a stopped process
    # does not take, and SIGKILL after the 3 s grace.
    cron_project(project, "time_limit = 1", plugin=FREEZING_PLUGIN)
    project.config.write_text(project.config.read_text().replace("grace = 1", "grace = 3"))
    project.icc("scan", check=True)
    project.icc("run", "--at", at(0), check=True)
    ended(project, 0)
    dispatch("freeze", {}, queue="async", config=load_config(project.config))
    project.icc("run", "--quiet", "--at", at(1), check=True)
    supervisor = running(project, 1, "consume:async")["pid"]
    seen = 0
    while (
        switches := voluntary_switches(supervisor)
    ) is not None:  # until it has recorded the run and exited
        seen = max(seen, switches)
        time.sleep(0.05)  # between two looks: how often does not change what is counted
    [run] = [r for r in ended(project, 1) if r["job"] == "consume:async"]
    assert len(project.marker_lines("frozen")) == 1  # by the light minute's consumer, handed over
    assert (run["outcome"], run["exit_code"]) == ("timed_out", -9), run
    assert run["error"] == "timed out after 9s; its process group was killed"
    # Its supervisor slept until the timeout, then until the kill, then woke at the exit (a pidfd); before
    # the one supervise loop, it woke every 10 ms through the grace (about 300 times here).
    assert seen < 100, seen


def test_the_light_minute_waits_for_no_process_itself() -> None:
    """Its supervisors' loop, forks and reports are icc.supervise.process's: the one supervise loop."""
    import ast

    import icc.tick.light

    tree = ast.parse(Path(icc.tick.light.__file__).read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    calls = {
        f"{node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
    }
    assert not {"os.waitpid", "os.pidfd_open", "selectors.DefaultSelector"} & calls
    assert {"Watch", "detach", "run_child", "task_outcome"} <= names
