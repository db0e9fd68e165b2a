"""Hostile files and values (issue 18): output files that are FIFOs or another user's links, a planted metrics
temp file, NUL bytes and lone surrogates in jobs, numbers without bounds, and escape sequences on a terminal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from projectkit import Project, at
from statekit import IS_ROOT, NOBODY

needs_root = pytest.mark.skipif(not IS_ROOT, reason="planting a file owned by another user needs root")

OUTPUT_JOBS = """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(["sh", "-c", "echo written"], name="logged").every_minute().timeout(5).send_output_to({path!r})
    scheduler.add(["sh", "-c", "echo later > later.txt"], name="later").every_minute()
"""


def output_project(project: Project, path: str) -> None:
    project.write_plugin(OUTPUT_JOBS.format(path=path))
    project.icc("scan", check=True)


def last_run(project: Project, job: str) -> dict[str, object]:
    return project.runs(job)[-1]


# -- item 1: an output file that is a FIFO ------------------------------------------------------------------------
def test_output_file_that_is_a_fifo_fails_that_run_alone_and_the_tick_ends(project: Project) -> None:
    output_project(project, "out.log")
    os.mkfifo(project.root / "out.log")
    proc = project.icc("run", "--at", at(0), timeout=60)  # before: blocked in open() for ever
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    run = last_run(project, "logged")
    assert run["outcome"] == "failed"
    assert "is a FIFO, not a regular file" in str(run["error"]), run["error"]
    assert last_run(project, "later")["outcome"] == "succeeded"
    assert (project.root / "later.txt").read_text() == "later\n"
    assert stat.S_ISFIFO(os.lstat(project.root / "out.log").st_mode)


def test_icc_exec_refuses_an_output_file_that_is_a_fifo(project: Project) -> None:
    output_project(project, "out.log")
    os.mkfifo(project.root / "out.log")
    proc = project.icc("exec", "logged", timeout=60)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "is a FIFO" in proc.stdout + proc.stderr
    assert last_run(project, "logged")["outcome"] == "failed"


def test_output_file_opened_by_the_supervisor_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    """The open itself, for a FIFO that appears after the check: it fails at once instead of waiting for a reader."""
    from icc.errors import StateError
    from icc.state.dirs import open_output_file

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="No such device or address"):  # ENXIO: no reader; never a wait
        open_output_file(fifo, append=False)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(StateError, match="is a FIFO, not a regular file"):
            open_output_file(fifo, append=True)
    finally:
        os.close(reader)


# -- item 2: another user's link or directory, the state directory -------------------------------------------------
@needs_root
def test_output_file_symlink_planted_by_another_user_is_refused_and_its_target_kept(
    project: Project, tmp_path: Path
) -> None:
    victim = tmp_path / "important.txt"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    output_project(project, "job.log")
    (project.root / "job.log").symlink_to(victim)
    os.lchown(project.root / "job.log", NOBODY, NOBODY)
    project.icc("run", "--at", at(0), timeout=60)
    assert victim.read_text() == "precious\n"
    run = last_run(project, "logged")
    assert run["outcome"] == "failed"
    assert "symbolic link owned by uid 65534" in str(run["error"]), run["error"]
    assert last_run(project, "later")["outcome"] == "succeeded"


def test_output_file_symlink_of_your_own_is_followed(project: Project, tmp_path: Path) -> None:
    target = tmp_path / "mine.log"
    output_project(project, "job.log")
    (project.root / "job.log").symlink_to(target)
    project.icc("run", "--at", at(0), check=True)
    assert target.read_text() == "written\n"


@needs_root
def test_output_file_in_a_directory_another_user_owns_is_refused(project: Project) -> None:
    shared = project.root / "shared"
    shared.mkdir(mode=0o755)
    os.chown(shared, NOBODY, NOBODY)
    output_project(project, "shared/job.log")
    project.icc("run", "--at", at(0), timeout=60)
    run = last_run(project, "logged")
    assert run["outcome"] == "failed"
    assert "is owned by uid 65534" in str(run["error"]), run["error"]
    assert not (shared / "job.log").exists()


def test_output_file_in_a_directory_others_may_write_is_refused_unless_sticky(project: Project) -> None:
    shared = project.root / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    output_project(project, "shared/job.log")
    project.icc("run", "--at", at(0), timeout=60)
    run = last_run(project, "logged")
    assert run["outcome"] == "failed"
    assert "writable by other users (mode 777)" in str(run["error"]), run["error"]
    assert "chmod go-w" in str(run["error"])
    shared.chmod(0o1777)  # /tmp's mode: others cannot replace a file of yours
    project.icc("run", "--at", at(1), check=True)
    assert (shared / "job.log").read_text() == "written\n"


def test_output_file_inside_the_state_directory_is_refused_at_scan(project: Project) -> None:
    project.icc("scan", check=True)  # the store exists
    project.write_plugin(OUTPUT_JOBS.format(path="state/state.sqlite3"))
    before = project.db.read_bytes()
    proc = project.icc("scan")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "job 'logged': send_output_to('state/state.sqlite3') is inside the state directory" in proc.stderr
    assert project.db.read_bytes() == before


def test_output_file_inside_the_state_directory_is_refused_at_run_time(tmp_path: Path) -> None:
    """What scan cannot see: a state directory reached through a link, or moved by ICC_STATE_DIR since."""
    from icc.state.dirs import output_file_problem

    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "alias").symlink_to(state)
    problem = output_file_problem(tmp_path / "alias" / "state.sqlite3", state)
    assert problem is not None and "is inside the state directory" in problem
    assert output_file_problem(tmp_path / "out.log", state) is None


def test_output_file_that_is_a_directory_fails_the_run(project: Project) -> None:
    output_project(project, "out.log")
    (project.root / "out.log").mkdir()
    project.icc("run", "--at", at(0), timeout=60)
    run = last_run(project, "logged")
    assert run["outcome"] == "failed" and "is a directory, not a regular file" in str(run["error"])


# -- item 3: icc metrics --textfile ---------------------------------------------------------------------------------
def test_metrics_textfile_never_follows_a_link_planted_at_a_predictable_temp_name(tmp_path: Path) -> None:
    from icc.metrics import write_textfile

    directory = tmp_path / "textfile"
    directory.mkdir()
    victim = tmp_path / "secret.txt"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    for name in (f".icc.prom.{os.getpid()}.tmp", f".icc.prom.{os.getpid()}"):  # the old name, and a guess
        (directory / name).symlink_to(victim)
    target = directory / "icc.prom"
    write_textfile(target, "icc_paused 0\n")
    assert victim.read_text() == "secret\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert target.read_text() == "icc_paused 0\n"
    assert not target.is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o644
    leftovers = sorted(p.name for p in directory.iterdir() if not p.is_symlink())
    assert leftovers == ["icc.prom"]


# -- items 5 and 11: what add() refuses ----------------------------------------------------------------------------
def _scan_refuses(project: Project, plugin: str, *needles: str) -> None:
    project.write_plugin(plugin)
    proc = project.icc("scan")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    line = next((x for x in proc.stderr.splitlines() if "failed:" in x), "")
    for needle in needles:
        assert needle in line, (needle, proc.stderr)
    assert not project.db.exists() or project.runs() == []


def test_command_argument_with_a_nul_byte_is_refused_at_add(project: Project) -> None:
    _scan_refuses(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["echo", "a\\x00b"], name="nul").every_minute()
        """,
        "job 'nul': command argument 1 'a\\x00b' contains a NUL byte",
    )


def test_job_name_with_a_lone_surrogate_is_refused_at_add(project: Project) -> None:
    _scan_refuses(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["true"], name="sur\\udc80x").every_minute()
        """,
        "job name 'sur\\udc80x' is not valid",
        "lone surrogate",
    )


@pytest.mark.parametrize("name", ["bell\\x07", "esc\\x1b[2J", "line\\nbreak", "del\\x7f", "c1\\x9b"])
def test_job_name_with_a_control_character_is_refused_at_add(project: Project, name: str) -> None:
    _scan_refuses(
        project,
        f"""
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["true"], name="{name}").every_minute()
        """,
        "is not valid: control character",
    )
