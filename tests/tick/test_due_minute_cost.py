"""What a due minute costs (issue 17, bench/bench_minute.py), and that the cuts keep the behaviour.

A due `icc run` on SQLite keeps its state database open in a keeper process while it runs
(icc.tick.coordinator.hold_database), so that each run's supervisor neither opens it as the first connection
nor closes it as the last (which checkpoints and deletes the WAL). The keeper ends with the tick, not with the
background runs the tick started, and the database is left checkpointed. A due minute imports neither the light
minute (a job other than a consumer is due), nor icc.pause, nor icc.notify.freshness when they have nothing to
do (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from icc import pause
from icc.notify import freshness
from icc.tick import coordinator
from projectkit import Project, at

TITLE = "icc: hold the state database open for a tick"

PLUGIN = f"""
def keepers():
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{{pid}}/cmdline", "rb") as f:
                mine = os.readlink(f"/proc/{{pid}}/cwd") == os.environ["MARKER_DIR"]  # this project's tick
                if f.read().startswith({TITLE!r}.encode()) and mine:
                    found.append(pid)
        except OSError:
            pass
    return found

def foreground():
    found = keepers()
    with open(os.path.join(os.environ["MARKER_DIR"], "keepers"), "w") as f:
        f.write(" ".join(found))
    with open(os.path.join(os.environ["MARKER_DIR"], "keeper-stdio"), "w") as f:
        f.write(" ".join(os.readlink(f"/proc/{{pid}}/fd/{{fd}}") for pid in found for fd in (0, 1, 2)))

def background():
    time.sleep(4)
    with open(os.path.join(os.environ["MARKER_DIR"], "background-done"), "w") as f:
        f.write("done")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(background, name="background").every_minute().in_background()
    scheduler.add(foreground, name="foreground").every_minute()
"""


def keeper_alive(pids: list[str], root: Path) -> bool:
    """Whether one of ``pids`` is a keeper of the project at ``root`` (its cwd: another test's tick, on another
    xdist worker, may have a keeper of its own running meanwhile)."""
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(TITLE.encode()) and os.readlink(
                f"/proc/{pid}/cwd"
            ) == str(root):
                return True
        except OSError:
            pass
    return False


def test_the_keeper_holds_the_database_during_the_tick_and_ends_with_it(project: Project) -> None:
    pytest.importorskip("setproctitle")  # the keeper is found by its process title
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    proc = project.icc("run", "--at", at(0), check=True)
    assert "foreground" in proc.stdout
    held = (project.root / "keepers").read_text().split()
    assert len(held) == 1, "a foreground run sees exactly one keeper of its tick"
    # It holds none of the tick's stdio: a pipe's reader (cron's mail) waits for the tick alone.
    assert (project.root / "keeper-stdio").read_text().split() == [os.devnull] * 3
    # The background run sleeps on; the keeper does not wait for it (no forked process keeps its pipe), and the
    # tick waits for the keeper: once icc run has returned, nothing of the tick holds the state directory (a
    # tmpfs under it failed to unmount in a CI dry run while the keeper was still closing).
    assert not keeper_alive(held, project.root), "the keeper outlived its tick"
    assert not (project.root / "background-done").exists(), "the background run is still running"
    project.wait_for(lambda: (project.root / "background-done").exists(), what="the background run")
    project.wait_for(
        lambda: {r["outcome"] for r in project.runs()} == {"succeeded"}, what="both runs recorded"
    )
    # The last connection to close checkpointed the WAL into the database and removed it.
    project.wait_for(lambda: not Path(f"{project.db}-wal").exists(), what="the WAL checkpointed")


def test_a_tick_on_a_store_that_is_not_there_starts_no_keeper(project: Project) -> None:
    project.write_plugin(PLUGIN)
    before = {p for p in os.listdir("/proc") if p.isdigit()}
    proc = project.icc("run", "--at", at(0))
    assert proc.returncode != 0 and "icc scan" in proc.stderr
    assert not project.db.exists(), "the keeper never creates a database"
    new = [p for p in os.listdir("/proc") if p.isdigit() and p not in before]
    assert not keeper_alive(new, project.root)


def test_the_meta_keys_the_tick_reads_without_importing_their_modules_are_theirs() -> None:
    assert coordinator.PAUSE_META_KEY == pause.META_KEY
    assert coordinator.STALE_NEXT_META_KEY == freshness.NEXT_KEY


def imported_by_a_tick(project: Project, minute: int) -> set[str]:
    """The icc modules `icc run --quiet` imports at ``minute`` (python -X importtime)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *project.argv("run", "--quiet", "--at", at(minute))[1:]],
        cwd=project.root,
        env=project.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if "import time:" in line}


CRON_MODE = """
[icc.consumers]
mode = "cron"
"""

DUE_JOB = """
def task():
    pass

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(task, name="due").every_minute()
"""


def test_a_due_minute_imports_no_light_minute_pause_or_freshness_it_does_not_need(project: Project) -> None:
    project.write_config(CRON_MODE)  # the consumer jobs are due every minute too
    project.write_plugin(DUE_JOB)
    project.icc("scan", check=True)
    project.icc("run", "--quiet", "--at", at(0), check=True)
    modules = imported_by_a_tick(project, 1)
    assert "icc.tick.coordinator" in modules, "a full tick ran the minute"
    assert not {"icc.tick.light", "icc.pause", "icc.notify.freshness"} & modules
    assert {r["outcome"] for r in project.runs("due")} == {"succeeded"}
    project.icc("pause", check=True)
    paused = imported_by_a_tick(project, 2)
    assert "icc.pause" in paused
    assert project.runs("due")[-1]["outcome"] == "skipped", "a paused minute still skips the job"


# A task made by a closure: not one icc scan vouches for as plain (icc.tick.plain), so every minute is the full
# tick's, with its coordinator and supervisor.
FULL_DUE_JOB = """
def make():
    def task():
        pass
    return task

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(make(), name="due").every_minute()
"""


def test_a_due_minute_that_logs_nothing_never_imports_logging(project: Project) -> None:
    # logging (about 4 ms) is imported when a line is logged at an enabled level; setproctitle's extension is
    # loaded without its package, which imports logging. The foreground run's supervisor writes to the same
    # stderr, so its imports are counted too.
    project.write_plugin(FULL_DUE_JOB)
    project.icc("scan", check=True)
    project.icc("run", "--quiet", "--at", at(0), check=True)
    modules = imported_by_a_tick(project, 1)
    assert "icc.tick.coordinator" in modules
    assert "logging" not in modules
    assert project.runs("due")[-1]["outcome"] == "succeeded"
