"""The tick runs no user code, and the run's context reaches the task.

User code (a plugin's import, ``when()``/``skip()``, callbacks, ``before_run``/``after_run`` hooks) runs in the
run's supervisor, a process forked from the tick, each piece in a bounded child of its own whose output goes
to the run's stored output. A task, callback or hook starts in the project root with ``ICC_CONFIG`` set. A
callable that raised is recorded with its exception's text.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from projectkit import Project, at


def scanned(project: Project, plugin: str, extra: str = "") -> None:
    project.write_config(extra)
    project.write_plugin(plugin)
    project.icc("scan", check=True)


def run_at(
    project: Project, minutes: float, *flags: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return project.icc("run", "--at", at(minutes), *flags, timeout=timeout)


def test_callable_that_raised_is_recorded_with_its_exception_text(project: Project) -> None:
    scanned(
        project,
        """
        def boom():
            raise ValueError("boom")

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(boom, name="boom").every_minute()
        """,
    )
    proc = run_at(project, 0, "--json")
    assert proc.returncode != 0
    (run,) = project.runs("boom")
    assert run["outcome"] == "failed"
    assert run["error"] == "ValueError: boom"
    assert "Traceback" in run["output"] and 'raise ValueError("boom")' in run["output"]
    shown = json.loads(proc.stdout)
    assert "ValueError: boom" in json.dumps(shown)
    status = project.status()
    assert "ValueError: boom" in json.dumps(status)


@pytest.mark.parametrize("ending", ["return", "raise", "sys.exit(3)"])
def test_the_atexit_handlers_a_task_registers_run_when_it_ends_and_print_into_its_output(
    project: Project, ending: str
) -> None:
    # As at a Python program's exit (an error reporter flushes what it queued): the task's own handlers run,
    # those its process inherited from the supervisor do not (tests/supervise/test_background_preload.py).
    body = {"return": "return", "raise": 'raise ValueError("late")', "sys.exit(3)": "sys.exit(3)"}[ending]
    scanned(
        project,
        f"""
        import atexit, sys

        def flush():
            print("flushed at exit")
            with open(os.path.join(os.environ["MARKER_DIR"], "flushed"), "w") as f:
                f.write(str(os.getpid()))

        def job():
            atexit.register(flush)
            {body}

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(job, name="job").every_minute()
        """,
    )
    run_at(project, 0)
    (run,) = project.runs("job")
    assert run["outcome"] == ("succeeded" if ending == "return" else "failed"), run
    assert "flushed at exit" in run["output"]
    assert (project.root / "flushed").read_text() == str(run["task_pid"])
    assert run["exit_code"] == {"return": 0, "raise": 1, "sys.exit(3)": 3}[ending]


def test_callable_that_exits_non_zero_is_recorded_with_its_exit_code(project: Project) -> None:
    scanned(
        project,
        """
        def bye():
            raise SystemExit(3)

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(bye, name="bye").every_minute()
        """,
    )
    run_at(project, 0)
    (run,) = project.runs("bye")
    assert (run["outcome"], run["exit_code"], run["error"]) == ("failed", 3, "exit code 3")


DISPATCHING = """
def send():
    print("cwd", os.getcwd())
    print("config", os.environ.get("ICC_CONFIG"))
    icc.dispatch("x", {"n": 1})

def command_env():
    pass

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(send, name="send").every_minute()
    scheduler.add(["sh", "-c", 'echo "cwd $(pwd)"; echo "config $ICC_CONFIG"'], name="cmd").every_minute()
"""


def test_dispatch_from_a_job_of_a_tick_started_in_root_reaches_the_projects_queue(
    project: Project, tmp_path_factory: object
) -> None:
    import pytest

    assert isinstance(tmp_path_factory, pytest.TempPathFactory)
    home = tmp_path_factory.mktemp("home")
    scanned(project, DISPATCHING)
    env = project.environ()
    env["HOME"] = str(home)
    proc = subprocess.run(
        project.argv("run", "--at", at(0)), cwd="/", env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (send,) = project.runs("send")
    assert send["outcome"] == "succeeded", send
    assert f"cwd {project.root}" in send["output"]
    assert f"config {project.config}" in send["output"]
    (cmd,) = project.runs("cmd")
    assert f"cwd {project.root}" in cmd["output"] and f"config {project.config}" in cmd["output"]
    queue_db = project.state_dir / "queue.sqlite3"
    assert queue_db.exists()
    db = sqlite3.connect(queue_db)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = [
            row
            for table in tables
            for row in db.execute(f"SELECT * FROM {table}")
            if any(
                isinstance(v, (str, bytes)) and b'"n"' in (v if isinstance(v, bytes) else v.encode())
                for v in row
            )
        ]
    finally:
        db.close()
    assert found, "the message is not in the project's queue"
    assert list(home.iterdir()) == [], "something was created under HOME"


def wait_until(predicate: object, timeout: float = 30.0, what: str = "condition") -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


FAST_LIMIT = "callback_timeout = 1\n"  # [icc]: a hanging callback, hook or predicate is killed after 1 s

MARK = """
def mark(name, text="ran"):
    with open(os.path.join(os.environ["MARKER_DIR"], name), "a") as f:
        f.write(f"{text}\\n")
"""


def hanging(kind: str) -> str:
    """A plugin whose first job hangs in a callback, hook or predicate (``kind``); a later job marks 'later'."""
    first = {
        "after": 'scheduler.add(first, name="first").every_minute().after(lambda result: time.sleep(3600))',
        "after_run": 'scheduler.add(first, name="first").every_minute()',
        "when": 'scheduler.add(first, name="first").every_minute().when(lambda: time.sleep(3600))',
        "exit_callback": 'scheduler.add(first, name="first").every_minute().after(lambda result: os._exit(7))',
        "exit_hook": 'scheduler.add(first, name="first").every_minute()',
    }[kind]
    hook = {
        "after_run": "time.sleep(3600)",
        "exit_hook": "os._exit(7)",
    }.get(kind, "pass")
    return (
        MARK
        + f"""
def first():
    mark("first")

def later():
    mark("later")

@icc.hookimpl
def schedule(scheduler):
    {first}
    scheduler.add(later, name="later").every_minute()

@icc.hookimpl
def after_run(job, run, result):
    if job.name == "first":
        {hook}
"""
    )


@pytest.mark.parametrize("kind", ["after", "after_run", "when"])
def test_hanging_callback_hook_or_predicate_is_killed_at_its_limit_and_the_tick_goes_on(
    project: Project, kind: str
) -> None:
    scanned(project, hanging(kind), FAST_LIMIT)
    proc = run_at(project, 0, timeout=60)  # bounded: the tick does not wait for the hanging code
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert project.marker_lines("later") == ["ran"]
    (run,) = project.runs("first")
    if kind == "when":
        assert (run["outcome"], project.marker_lines("first")) == ("skipped", [])
        assert run["error"] == "a when/skip condition said no"
        assert "killed at its time limit of 1s" in run["output"]
    else:
        assert run["outcome"] == "succeeded"
        assert "killed at its time limit of 1s" in run["error"]
    # The next tick runs as usual.
    assert run_at(project, 1, timeout=60).returncode == 0
    assert project.marker_lines("later") == ["ran", "ran"]


@pytest.mark.parametrize("kind", ["exit_callback", "exit_hook"])
def test_callback_or_hook_calling_os_exit_only_adds_a_note(project: Project, kind: str) -> None:
    scanned(project, hanging(kind))
    proc = run_at(project, 0, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    json.loads(proc.stdout)
    assert project.marker_lines("later") == ["ran"]
    (run,) = project.runs("first")
    assert run["outcome"] == "succeeded"
    # A hook's os._exit is caught by icc's plugin guard, a callback's ends its own child: a note either way.
    assert "exited with code 7" in run["error"] or "called os._exit(7)" in run["error"]


PRINTING = """
def job():
    pass

def yes():
    print("WHEN-SAYS-YES")
    return True

def no():
    print("SKIP-SAYS-NO")
    return False

@icc.hookimpl
def schedule(scheduler):
    (
        scheduler.add(job, name="chatty")
        .every_minute()
        .when(yes)
        .skip(no)
        .before(lambda ctx: print("BEFORE-CALLBACK"))
        .after(lambda result: print("AFTER-CALLBACK", result.outcome))
    )

@icc.hookimpl
def after_run(job, run, result):
    print("AFTER-RUN-HOOK")
"""
PRINTED = ("WHEN-SAYS-YES", "SKIP-SAYS-NO", "BEFORE-CALLBACK", "AFTER-CALLBACK", "AFTER-RUN-HOOK")


def test_printing_predicates_and_callbacks_go_to_the_runs_output_not_to_icc_run(project: Project) -> None:
    scanned(project, PRINTING)
    proc = run_at(project, 0, "--json")
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)  # valid JSON: nothing printed into it
    for text in PRINTED:
        assert text not in proc.stdout + proc.stderr
    quiet = run_at(project, 1, "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    logs = project.icc("logs", "chatty", check=True).stdout
    for text in PRINTED:
        assert text in logs, (text, logs)
    assert "AFTER-CALLBACK succeeded" in logs


def test_missed_slots_collapsed_make_one_after_run_call_with_the_count(project: Project) -> None:
    scanned(
        project,
        MARK
        + """
def job():
    pass

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(job, name="job").every_minute().missed("skip")

@icc.hookimpl
def after_run(job, run, result):
    if result.outcome == "missed":
        mark("missed-calls", result.error)
""",
    )
    run_at(project, 0)
    run_at(project, 6)  # minutes 1 to 5 were missed
    assert len([r for r in project.runs("job") if r["outcome"] == "missed"]) == 5
    wait_until(lambda: project.marker_lines("missed-calls"), what="the concluder's after_run call")
    wait_until(lambda: not concluder_running(project), what="the concluder to exit")
    (line,) = project.marker_lines("missed-calls")
    assert line.startswith("missed 5 slots (skip policy)"), line


def concluder_running(project: Project) -> bool:
    import os

    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        try:
            mine = os.readlink(f"/proc/{pid}/cwd") == str(project.root)  # not another xdist worker's test
        except OSError:
            continue
        if b"icc: conclude" in cmdline and mine:
            return True
    return False


def test_plugin_import_that_hangs_fails_only_that_run_and_the_next_tick_goes_on(project: Project) -> None:
    scanned(
        project,
        """
        def job():
            pass

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(job, name="job").every_minute().timeout(2)
        """,
    )
    # The plugin is changed to hang on import after the scan (a deploy, a network mount).
    project.write_plugin(
        """
        if os.environ.get("ICC_CONFIG"):
            time.sleep(3600)
        """
    )
    proc = run_at(project, 0, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (run,) = project.runs("job")
    assert run["outcome"] == "failed"
    assert "did not load within 2s" in run["error"]
    assert run_at(project, 1, timeout=60).returncode == 1
    assert len(project.runs("job")) == 2


def test_a_run_that_leaves_nothing_behind_does_not_scan_proc(tmp_path: Path) -> None:
    # In a fresh process, as a supervisor is: the test's own process may have children of earlier tests left
    # (pytest-xdist workers do), and a supervisor with a child left scans /proc, rightly.
    code = f"""
from pathlib import Path

from icc.store.sqlite.state import SQLiteStateStore
from icc.supervise import supervisor as execution

scans = []
real_children = execution._children

def counted():
    scans.append("scan")
    return real_children()

execution._children = counted
store = SQLiteStateStore(Path({str(tmp_path / "state")!r}))
try:
    run_id = store.start_manual("job", pid=0, host="here")
    spec = execution.RunSpec(job="job", run_id=run_id, argv=["true"], overlapping=True)
    result = execution.supervise(store, spec, grace=1)
finally:
    store.close()
print(result.outcome, len(scans))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    # Nothing was left: waitid said so, no listing of /proc before or after the run.
    assert done.stdout.split() == ["succeeded", "0"], done.stdout + done.stderr


TITLES = """
def title(pid="self"):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\\0", b" ").decode().strip()

def note(name, text):
    with open(os.path.join(os.environ["MARKER_DIR"], name), "a") as f:
        f.write(text + "\\n")

def job():
    note("titles", title())
    note("titles", title(os.getppid()))

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(job, name="nightly").every_minute().after(lambda result: note("titles", title()))
    scheduler.add(job, name="bg").every_minute().in_background()
"""


def test_processes_of_a_run_are_titled_with_their_role_job_and_slot(project: Project) -> None:
    scanned(project, TITLES)
    assert run_at(project, 0).returncode == 0
    wait_until(lambda: len(project.marker_lines("titles")) == 5, what="every title")
    titles = project.marker_lines("titles")
    for expected in (
        "icc: job nightly (slot 10:00)",
        "icc: supervise nightly (slot 10:00)",
        "icc: callback after nightly (slot 10:00)",
        "icc: job bg (slot 10:00)",
        "icc: supervise bg (slot 10:00)",
    ):
        assert expected in titles, (expected, titles)


def test_a_callback_that_leaves_a_process_holding_its_output_does_not_hold_the_run(project: Project) -> None:
    scanned(
        project,
        MARK
        + """
import subprocess

def job():
    pass

def spawn(result):
    subprocess.Popen(["sleep", "3600"])  # inherits the callback's stdout and stderr
    mark("spawned")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(job, name="job").every_minute().after(spawn)
    scheduler.add(job, name="later").every_minute()
""",
        "callback_timeout = 3600\n",
    )
    proc = run_at(project, 0, timeout=90)  # far less than the callback's limit: its exit ended the wait
    assert proc.returncode == 0, proc.stderr
    (run,) = project.runs("job")
    assert run["outcome"] == "succeeded" and run["error"] is None
    assert [r["outcome"] for r in project.runs("later")] == ["succeeded"]
