"""A task that daemonizes (setsid, double fork) cannot outlive its run: the supervisor is a child subreaper.

The escaped process is found with psutil, by a token in its command line; whatever a failing run leaves
behind is killed at the end of each test.
"""

from __future__ import annotations

import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from projectkit import Project, at

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER is Linux"
)

# The task double-forks a daemon in a session of its own, which writes its pid and becomes a long sleep
# (carrying TOKEN in its argv); the task then waits until the daemon is there and exits, or hangs.
ESCAPE = """
import os, sys, time
token, marker, then = sys.argv[1], sys.argv[2], sys.argv[3]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open(marker + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(marker + ".tmp", marker)
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(1000)", token])
    os._exit(0)
os.wait()
while not os.path.exists(marker):
    time.sleep(0.01)
if then == "hang":
    time.sleep(300)
"""


@pytest.fixture
def token() -> Iterator[str]:
    value = f"icc-escapee-{uuid.uuid4().hex}"
    yield value
    for proc in escapees(value):  # a failing run's leftovers
        proc.kill()


def escapees(token: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if token in (proc.info["cmdline"] or []):
            found.append(proc)
    return found


def plugin(token: str, marker: Path, then: str, extra: str = "") -> str:
    argv = [sys.executable, "-c", ESCAPE, token, str(marker), then]
    return f"""
@icc.hookimpl
def schedule(scheduler):
    scheduler.add({argv!r}, name="escape").every_minute(){extra}
"""


def assert_gone(token: str, marker: Path) -> None:
    pid = int(marker.read_text())
    assert not psutil.pid_exists(pid), f"the daemonized process {pid} outlived its run"
    assert escapees(token) == []


@pytest.mark.parametrize("then", ["exit", "hang"])
def test_a_daemonized_child_is_killed_and_reaped_when_a_foreground_run_ends(
    project: Project, token: str, then: str
) -> None:
    marker = project.root / "escaped"
    project.write_plugin(plugin(token, marker, then, ".timeout(1)" if then == "hang" else ""))
    project.icc("scan", check=True)
    tick = project.icc("run", "--at", at(0))
    (run,) = project.runs("escape")
    assert run["outcome"] == ("succeeded" if then == "exit" else "timed_out"), tick.stdout + tick.stderr
    assert_gone(token, marker)


def test_a_daemonized_child_is_killed_when_icc_run_is_stopped(project: Project, token: str) -> None:
    marker = project.root / "escaped"
    project.write_plugin(plugin(token, marker, "hang"))
    project.icc("scan", check=True)
    tick = project.popen("run", "--at", at(0))
    project.wait_for(marker.exists, what="the daemonized child")
    tick.send_signal(signal.SIGTERM)
    tick.communicate(timeout=60)
    (run,) = project.runs("escape")
    assert run["outcome"] == "stopped" and "SIGTERM" in run["error"]
    assert_gone(token, marker)


def test_a_daemonized_child_is_killed_when_icc_exec_ends(project: Project, token: str) -> None:
    marker = project.root / "escaped"
    project.write_plugin(plugin(token, marker, "exit"))
    project.icc("scan", check=True)
    project.icc("exec", "escape", check=True)
    assert_gone(token, marker)


@pytest.mark.parametrize("then", ["exit", "hang"])
def test_a_daemonized_child_is_killed_and_reaped_when_a_background_run_ends(
    project: Project, token: str, then: str
) -> None:
    marker = project.root / "escaped"
    extra = ".in_background()" + (".timeout(1)" if then == "hang" else "")
    project.write_plugin(plugin(token, marker, then, extra))
    project.icc("scan", check=True)
    project.icc("run", "--at", at(0), check=True)
    project.wait_for(
        lambda: project.runs("escape")[0]["outcome"] not in ("pending", "running"), what="the run recorded"
    )
    assert project.runs("escape")[0]["outcome"] == ("succeeded" if then == "exit" else "timed_out")
    assert_gone(token, marker)


BOTH = """
def wait_for(name):
    path = os.path.join(os.environ["MARKER_DIR"], name)
    while not os.path.exists(path):
        time.sleep(0.02)

def fg():
    open(os.path.join(os.environ["MARKER_DIR"], "fg-running"), "w").close()
    wait_for("release-fg")

def bg():
    wait_for("release-bg")
    open(os.path.join(os.environ["MARKER_DIR"], "bg-done"), "w").close()

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(bg, name="bg").every_minute().in_background()
    scheduler.add(fg, name="fg").every_minute()
"""


def test_background_supervisors_are_not_adopted_by_the_subreaper_tick_and_outlive_it(
    project: Project,
) -> None:
    project.write_plugin(BOTH)
    project.icc("scan", check=True)
    tick = project.popen("run", "--at", at(0))
    # The tick is a subreaper while its foreground run lasts; its background supervisor is not its child.
    project.wait_for(lambda: (project.root / "fg-running").exists(), what="the foreground run")
    project.wait_for(lambda: project.runs("bg")[0]["outcome"] == "running", what="the background run")
    supervisor = psutil.Process(project.runs("bg")[0]["pid"])
    assert supervisor.ppid() != tick.pid
    assert supervisor.pid not in [child.pid for child in psutil.Process(tick.pid).children(recursive=True)]
    (project.root / "release-fg").touch()
    tick.communicate(timeout=60)
    assert tick.returncode == 0
    # The tick is gone; its background run goes on and ends on its own.
    assert supervisor.is_running()
    (project.root / "release-bg").touch()
    project.wait_for(
        lambda: project.runs("bg")[0]["outcome"] == "succeeded", what="the background run to end"
    )
    assert (project.root / "bg-done").exists()
