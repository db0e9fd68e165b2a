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
import time

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
