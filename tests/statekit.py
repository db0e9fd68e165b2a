"""Helpers of the state directory tests: a two-job project, the one-line error check, icc without root's powers."""

from __future__ import annotations

import os
import shutil
import subprocess

from projectkit import Project

NOBODY = 65534  # another user's uid, for files "planted" by someone else (root can chown to it)

TWO_JOBS = """
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
"""

IS_ROOT = os.geteuid() == 0
# Root ignores file modes; without these capabilities it obeys them like any user (files it owns included).
DROP_ROOT_POWERS = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
CAN_DROP = not IS_ROOT or shutil.which("setpriv") is not None


def scanned(project: Project, plugin: str = TWO_JOBS) -> None:
    project.write_plugin(plugin)
    project.icc("scan", check=True)


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The single stderr line of an icc that refused with exit 2 (no traceback), checked for ``needles``."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def icc_unprivileged(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """``icc ARGS`` as a plain user would run it: as root, without the capabilities that bypass file modes."""
    prefix = DROP_ROOT_POWERS if IS_ROOT else []
    return subprocess.run(
        [*prefix, *project.argv(*args)],
        cwd=project.root,
        env=project.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
