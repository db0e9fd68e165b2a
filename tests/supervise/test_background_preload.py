"""The background runs' plugins are loaded once, by the intermediate that forks their supervisors.

The intermediate (a process forked by the tick, in a session apart) imports the plugins and builds the jobs of
all the minute's background runs before it forks their supervisors, which take their job from there instead
of each importing the plugin and calling its ``schedule`` hook again. A plugin that misbehaves there (its
import or its hook raises, calls ``os._exit``, hangs or kills the process) fails only its own runs, with the
error each run's supervisor records when it loads the plugin itself (as a foreground run's does), and the
tick returns at once.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from icc.locks import pid_alive
from projectkit import Project, at

MISBEHAVE = {
    "import-raises": 'raise RuntimeError("the import broke")',
    "import-exits": "os._exit(3)",
    "import-hangs": "time.sleep(3600)",
    "import-kills-the-process": "os.kill(os.getpid(), 9)",
    "hook-raises": 'raise RuntimeError("the hook broke")',
    "hook-exits": "os._exit(3)",
}

GOOD = """
def make(name):
    def task():
        with open(os.path.join(os.environ["MARKER_DIR"], name), "w") as f:
            f.write("ran")
    return task

@icc.hookimpl
def schedule(scheduler):
    for name in ("good-1", "good-2"):
        scheduler.add(make(name), name=name).every_minute().in_background()
"""

BAD = """
MODE = os.path.join(os.environ["MARKER_DIR"], "misbehave")

def misbehave(where):
    if os.path.exists(MODE):
        with open(MODE) as f:
            mode = f.read()
        if mode.startswith(where):
            exec(MODES[mode])

MODES = {modes!r}
misbehave("import")

def task():
    pass

@icc.hookimpl
def schedule(scheduler):
    misbehave("hook")
    for name in ("bad-1", "bad-2"):
        scheduler.add(task, name=name).every_minute().in_background().timeout(3)
    {foreground}
"""


def two_plugins(project: Project, mode: str, foreground: bool) -> None:
    project.write_config(plugins=("good_plugin", "bad_plugin"))
    project.write_plugin(GOOD, "good_plugin")
    line = 'scheduler.add(task, name="bad-fg").every_minute().timeout(3)' if foreground else "pass"
    project.write_plugin(BAD.format(modes=MISBEHAVE, foreground=line), "bad_plugin")
    project.icc("scan", check=True)
    (project.root / "misbehave").write_text(mode)  # after the scan: no plugin file changed


def finished(project: Project, name: str) -> bool:
    runs = project.runs(name)
    return bool(runs) and runs[0]["outcome"] not in ("pending", "running")


@pytest.mark.parametrize("mode", ["import-raises", "import-exits", "hook-raises", "hook-exits"])
def test_a_plugin_that_fails_to_load_fails_only_its_background_runs_with_the_foreground_runs_error(
    project: Project, mode: str
) -> None:
    two_plugins(project, mode, foreground=True)
    started = time.monotonic()
    proc = project.icc("run", "--at", at(0))
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert took < 20, took
    for name in ("good-1", "good-2", "bad-1", "bad-2"):
        project.wait_for(lambda n=name: finished(project, n), what=f"{name} recorded")
    for name in ("good-1", "good-2"):
        (run,) = project.runs(name)
        assert run["outcome"] == "succeeded", run
        assert (project.root / name).read_text() == "ran"
    # The foreground run's supervisor loads the plugin itself: its error is the one every run records.
    (foreground,) = project.runs("bad-fg")
    assert foreground["outcome"] == "failed", foreground
    assert "could not be loaded from its plugin" in foreground["error"], foreground
    for name in ("bad-1", "bad-2"):
        (run,) = project.runs(name)
        assert run["outcome"] == "failed", run
        assert run["error"] == foreground["error"].replace("'bad-fg'", f"'{name}'")


def test_a_plugin_import_that_hangs_fails_only_its_background_runs_and_the_tick_returns_at_once(
    project: Project,
) -> None:
    two_plugins(project, "import-hangs", foreground=False)
    started = time.monotonic()
    proc = project.icc("run", "--at", at(0), timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The intermediate gives the plugins PRELOAD_LIMIT (2 s) at the most, then the supervisors load alone.
    assert took < 2 + 5, took
    for name in ("good-1", "good-2"):
        project.wait_for(lambda n=name: finished(project, n), what=f"{name} recorded")
        assert project.runs(name)[0]["outcome"] == "succeeded"
    for name in ("bad-1", "bad-2"):
        project.wait_for(lambda n=name: finished(project, n), timeout=30, what=f"{name} recorded")
        (run,) = project.runs(name)
        assert run["outcome"] == "failed", run
        assert run["error"] == (
            "its plugins did not load within 3s (an import hangs?); the task was not started. "
            "Run `icc scan` to see which plugin"
        )


def test_a_plugin_import_that_kills_the_intermediate_fails_only_its_background_runs(project: Project) -> None:
    two_plugins(project, "import-kills-the-process", foreground=False)
    proc = project.icc("run", "--at", at(0))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The supervisors were started again, each loading for itself: the good plugin's runs go on.
    for name in ("good-1", "good-2"):
        project.wait_for(lambda n=name: finished(project, n), what=f"{name} recorded")
        assert project.runs(name)[0]["outcome"] == "succeeded"
    # The bad plugin's supervisors die loading it, as before: the next tick records their runs abandoned.
    for name in ("bad-1", "bad-2"):
        assert project.runs(name)[0]["outcome"] in ("running", "abandoned")
    time.sleep(0.5)
    project.icc("run", "--at", at(1))
    for name in ("bad-1", "bad-2"):
        (first, *_rest) = project.runs(name)
        assert first["outcome"] == "abandoned", first
        assert "died without recording an outcome" in first["error"], first


def test_the_background_runs_of_one_plugin_import_it_once(project: Project) -> None:
    project.write_config(plugins=("good_plugin",))
    project.write_plugin(
        GOOD
        + """
with open(os.path.join(os.environ["MARKER_DIR"], "imported"), "a") as f:
    f.write(f"{os.getpid()}\\n")
""",
        "good_plugin",
    )
    project.icc("scan", check=True)
    (project.root / "imported").unlink()
    project.icc("run", "--at", at(0), check=True)
    for name in ("good-1", "good-2"):
        project.wait_for(lambda n=name: finished(project, n), what=f"{name} recorded")
        assert project.runs(name)[0]["outcome"] == "succeeded"
    (importer,) = project.marker_lines("imported")
    assert importer not in {str(project.runs(name)[0]["pid"]) for name in ("good-1", "good-2")}


SITECUSTOMIZE = """
import atexit, os

MARKS = os.environ["EXIT_MARKS"]

def mark(what):
    with open(MARKS, "a") as f:
        f.write(f"{what} {os.getpid()}\\n")

atexit.register(mark, "atexit")

class Finalized:
    def __del__(self, _open=open, _marks=MARKS, _pid=os.getpid):  # bound now: builtins may be gone by then
        with _open(_marks, "a") as f:
            f.write(f"finalized {_pid()}\\n")

kept = Finalized()  # a module global: deleted when an interpreter tears its modules down
"""

EVERY_PROCESS = """
def job():
    print("ran")

def after(result):
    print("after", result.outcome)

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(job, name="fg").every_minute().after(after)
    scheduler.add(job, name="bg").every_minute().in_background().after(after)
"""


def test_no_process_of_a_tick_tears_its_interpreter_down(project: Project, tmp_path: Path) -> None:
    # A forked child that exits through Python's own exit touches (copies) every page it shares with its parent
    # (about 9 ms against 1.3 ms). The keeper, the foreground supervisor, the background runs' intermediate and
    # supervisor, the tasks and the callbacks' children all end with os._exit: a child that exited through
    # Python's exit would run the atexit handlers it inherited. Only the tick runs them (icc.__main__.leave).
    project.write_config()
    project.write_plugin(EVERY_PROCESS)
    project.icc("scan", check=True)
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marks = tmp_path / "marks"
    env = {**project.environ(), "PYTHONPATH": str(tmp_path), "EXIT_MARKS": str(marks)}
    proc = subprocess.run(
        project.argv("run", "--at", at(0)), cwd=project.root, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("fg", "bg"):
        project.wait_for(lambda n=name: finished(project, n), what=f"{name} recorded")
        (run,) = project.runs(name)
        assert run["outcome"] == "succeeded" and "ran" in run["output"], run
        project.wait_for(lambda r=run: not pid_alive(r["pid"]), what=f"{name}'s supervisor to exit")
    lines = marks.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("atexit "), lines
