"""The state directory can't be hijacked: no foreign symlink is followed, no directory icc did not create changes
mode, and the idle tick (the fast path cron runs every minute) makes the same owner and mode checks as the rest."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from projectkit import Project, at
from statekit import IS_ROOT, NOBODY, TWO_JOBS, one_line_error, scanned

needs_root = pytest.mark.skipif(not IS_ROOT, reason="planting a file owned by another user needs root")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def use_state_dir(project: Project, value: str) -> None:
    text = project.config.read_text().replace('state_dir = "state"', f'state_dir = "{value}"')
    project.config.write_text(text)


def idle(project: Project) -> None:
    """Scan and tick once at at(0): a second tick at at(0) has nothing due and takes the fast path."""
    scanned(project, TWO_JOBS)
    project.icc("run", "--at", at(0), check=True)
    assert "nothing due" in project.icc("run", "--at", at(0), check=True).stdout


# -- symbolic links (issue 8, item 9) ----------------------------------------------------------------------------
@needs_root
def test_state_dir_symlink_planted_by_another_user_is_refused_and_its_target_left_alone(
    project: Project, tmp_path: Path
) -> None:
    target = tmp_path / "victim"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    project.state_dir.symlink_to(target)
    os.lchown(project.state_dir, NOBODY, NOBODY)
    project.write_plugin(TWO_JOBS)
    for args in (("scan",), ("status",), ("run", "--at", at(0))):
        one_line_error(project.icc(*args), "symbolic link owned by uid 65534", str(project.state_dir))
    assert mode(target) == 0o755
    assert list(target.iterdir()) == []


def test_state_dir_symlink_of_your_own_is_followed_without_changing_its_target(
    project: Project, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    target.chmod(0o755)
    project.state_dir.symlink_to(target)
    scanned(project, TWO_JOBS)
    project.icc("run", "--at", at(0), check=True)
    assert (target / "state.sqlite3").is_file()
    assert mode(target) == 0o755


@needs_root
def test_state_database_symlink_planted_by_another_user_is_refused(project: Project, tmp_path: Path) -> None:
    idle(project)
    forged = tmp_path / "forged.sqlite3"
    project.db.rename(forged)
    project.db.symlink_to(forged)
    os.lchown(project.db, NOBODY, NOBODY)
    for args in (("status",), ("run", "--at", at(0)), ("run", "--at", at(5))):
        one_line_error(project.icc(*args), "symbolic link owned by uid 65534", str(project.db))


@needs_root
def test_wal_symlink_planted_by_another_user_is_refused_and_its_target_untouched(
    project: Project, tmp_path: Path
) -> None:
    scanned(project, TWO_JOBS)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    wal = project.db.with_name(project.db.name + "-wal")
    wal.unlink(missing_ok=True)  # the last connection of the scan checkpointed it: nothing is lost
    wal.symlink_to(victim)
    os.lchown(wal, NOBODY, NOBODY)
    one_line_error(project.icc("status"), "symbolic link owned by uid 65534", str(wal))
    assert mode(victim) == 0o644
    assert victim.read_text() == "precious\n"


# -- directories icc did not create (item 10) --------------------------------------------------------------------
@pytest.mark.parametrize("where", [".", "public"])
def test_existing_directory_used_as_state_dir_keeps_its_mode(project: Project, where: str) -> None:
    directory = project.root / where
    directory.mkdir(exist_ok=True)
    directory.chmod(0o755)
    use_state_dir(project, where)
    scanned(project, TWO_JOBS)
    project.icc("run", "--at", at(0), check=True)
    assert project.icc("status").returncode == 0
    assert mode(directory) == 0o755
    assert mode(directory / "state.sqlite3") == 0o600  # its files are still private


def test_existing_group_writable_directory_is_refused_and_left_as_it_is(project: Project) -> None:
    shared = project.root / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    use_state_dir(project, "shared")
    project.write_plugin(TWO_JOBS)
    one_line_error(project.icc("scan"), "writable by other users", str(shared))
    assert mode(shared) == 0o775
    assert list(shared.iterdir()) == []


# -- the idle tick's fast path (item 11) -------------------------------------------------------------------------
def test_idle_tick_refuses_a_world_writable_state_dir(project: Project) -> None:
    idle(project)
    project.state_dir.chmod(0o777)
    proc = project.icc("run", "--at", at(0))
    one_line_error(proc, "writable by other users")
    assert "nothing due" not in proc.stdout


@needs_root
def test_idle_tick_refuses_a_state_database_owned_by_another_user(project: Project) -> None:
    idle(project)
    os.chown(project.db, NOBODY, NOBODY)
    proc = project.icc("run", "--at", at(0))
    one_line_error(proc, "owned by uid 65534", str(project.db))
    assert "nothing due" not in proc.stdout


@needs_root
def test_idle_tick_refuses_a_state_dir_symlink_planted_by_another_user(
    project: Project, tmp_path: Path
) -> None:
    idle(project)
    forged = tmp_path / "forged"
    project.state_dir.rename(forged)
    project.state_dir.symlink_to(forged)
    os.lchown(project.state_dir, NOBODY, NOBODY)
    proc = project.icc("run", "--at", at(0))
    one_line_error(proc, "symbolic link owned by uid 65534")
    assert "nothing due" not in proc.stdout
