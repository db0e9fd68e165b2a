"""A state store or lock file icc can't use is one line that says what is actually wrong, exit 2, data intact.

"Move it away (history is lost)" is advised only when an integrity check finds the database corrupt.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from icc.errors import StateError
from icc.store.sqlite.state import SQLiteStateStore
from projectkit import Project, at, slot
from statekit import CAN_DROP, IS_ROOT, NOBODY, TWO_JOBS, icc_unprivileged, one_line_error, scanned

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mounts, files owned by another user)")
can_drop = pytest.mark.skipif(not CAN_DROP, reason="needs setpriv to run icc without root's DAC override")


def snapshot(project: Project) -> bytes:
    """The store's content, the same whether or not a WAL is beside it."""
    db = sqlite3.connect(f"file:{project.db}?mode=ro", uri=True)
    try:
        return "\n".join(db.iterdump()).encode()
    finally:
        db.close()


def job_lock_path(project: Project, job: str) -> Path:
    digest = hashlib.sha1(job.encode(), usedforsecurity=False).hexdigest()[:10]
    return project.state_dir / "locks" / f"{job}-{digest}.lock"


# -- a read-only store (item 12) ---------------------------------------------------------------------------------
@can_drop
def test_read_only_state_database_is_one_line_and_left_intact(project: Project) -> None:
    scanned(project)
    project.icc("run", "--at", at(0), check=True)
    before = snapshot(project)
    project.db.chmod(0o444)
    try:
        for args in (("run", "--at", at(1)), ("disable", "a"), ("scan",)):
            one_line_error(icc_unprivileged(project, *args), "read-only", f"chmod 600 {project.db}")
        assert icc_unprivileged(project, "status").returncode == 0  # reading still works
    finally:
        project.db.chmod(0o600)
    assert snapshot(project) == before
    assert project.marker_lines("a") == project.marker_lines("a")[:1]  # nothing ran at at(1)


@pytest.fixture
def read_only_mount(project: Project) -> Iterator[Path]:
    """The state directory bind-mounted read-only on itself."""
    scanned(project)
    project.icc("run", "--at", at(0), check=True)
    path = str(project.state_dir)
    if subprocess.run(["mount", "--bind", path, path], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", path], check=True, capture_output=True)
        yield project.state_dir
    finally:
        subprocess.run(["umount", path], check=True)


@needs_root
def test_state_database_on_a_read_only_file_system_says_so(project: Project, read_only_mount: Path) -> None:
    for args in (("disable", "a"), ("run", "--at", at(1))):
        line = one_line_error(project.icc(*args), "read-only file system")
        assert "move it away" not in line and "history is lost" not in line


# -- lock files (item 12) ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_tick_lock_that_is_not_a_plain_file_is_one_line_and_status_still_works(
    project: Project, tmp_path: Path, kind: str
) -> None:
    scanned(project)
    lock = project.state_dir / "tick.lock"
    lock.unlink(missing_ok=True)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    if kind == "directory":
        lock.mkdir()
    else:
        lock.symlink_to(victim)
    one_line_error(project.icc("run", "--at", at(0)), str(lock), "remove it")
    assert not project.marker_lines("a")
    assert project.icc("status").returncode == 0
    assert victim.read_text() == "precious\n"


@needs_root
def test_lock_file_owned_by_another_user_is_refused(project: Project) -> None:
    scanned(project)
    lock = project.state_dir / "tick.lock"
    lock.touch()
    lock.chmod(0)
    os.chown(lock, NOBODY, NOBODY)
    one_line_error(project.icc("run", "--at", at(0)), str(lock), "owned by uid 65534")


@can_drop
def test_unreadable_tick_lock_is_one_line(project: Project) -> None:
    scanned(project)
    lock = project.state_dir / "tick.lock"
    lock.touch()
    lock.chmod(0)
    one_line_error(
        icc_unprivileged(project, "run", "--at", at(0)), str(lock), "Permission denied", "chmod u+rw"
    )


def test_broken_job_lock_fails_that_run_only_and_status_still_works(project: Project) -> None:
    scanned(project)
    job_lock_path(project, "a").parent.mkdir(exist_ok=True)
    job_lock_path(project, "a").mkdir()
    proc = project.icc("run", "--at", at(0))
    assert proc.returncode == 1, proc.stderr  # a run failed; the tick went on
    assert "Traceback" not in proc.stderr
    assert project.marker_lines("b") and not project.marker_lines("a")
    (run_a,) = project.runs("a")
    assert run_a["outcome"] == "failed" and "not a regular file" in run_a["error"]
    assert project.icc("status").returncode == 0
    assert project.icc("status", "a").returncode == 0


# -- a full disk (item 12): a real, small tmpfs ------------------------------------------------------------------
@pytest.fixture
def small_disk(project: Project) -> Iterator[Path]:
    """The state directory on a 2 MiB tmpfs of its own."""
    path = str(project.state_dir)
    project.state_dir.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "icc-test", path]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield project.state_dir
    finally:
        unmount(path)


def unmount(path: str, wait: float = 20.0) -> None:
    """Unmount ``path`` once nothing holds it: the tick's detached processes (its concluder, a supervisor
    recording its run) may still be finishing when the test ends. Fails naming the holders after ``wait``."""
    deadline = time.monotonic() + wait
    while subprocess.run(["umount", path], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} stayed busy for {wait:g}s, held by {holders(path)}")
        time.sleep(0.1)


def holders(path: str) -> list[str]:
    """The processes with a working directory or an open file under ``path``, and their titles."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/cwd")]
            links += [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(link == path or link.startswith(path + "/") for link in links):
            found.append(f"{pid} {title.strip()}")
    return found


def fill(directory: Path) -> Path:
    """Write a file until the disk is full."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


@needs_root
def test_full_disk_is_one_line_and_nothing_is_lost(project: Project, small_disk: Path) -> None:
    scanned(project)
    project.icc("run", "--at", at(0), check=True)
    # An open connection keeps the -wal and -shm files in place, so icc gets as far as writing.
    keeper = sqlite3.connect(project.db)
    try:
        keeper.execute("SELECT COUNT(*) FROM runs").fetchone()
        before = snapshot(project)
        (small_disk / "tick.lock").unlink()  # nothing runs; a new one needs a page of the full disk
        filler = fill(small_disk)
        one_line_error(project.icc("disable", "a"), "full", "free some space")
        one_line_error(project.icc("run", "--at", at(1)), "tick.lock", "No space left on device")
        assert snapshot(project) == before
        filler.unlink()
        project.icc("disable", "a", check=True)
        project.icc("run", "--at", at(2), check=True)
    finally:
        keeper.close()
    assert len(project.marker_lines("b")) == 2 and len(project.marker_lines("a")) == 1
    db = sqlite3.connect(project.db)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


FILLS_THE_DISK = """
def filler():
    with open(os.path.join(os.environ["MARKER_DIR"], "filler"), "a") as f:
        f.write("ran\\n")
    if not os.path.exists(os.path.join(os.environ["MARKER_DIR"], "fill")):
        return
    import sqlite3
    db = sqlite3.connect(os.path.join(os.environ["FILL_DIR"], "state.sqlite3"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the tick recorded that it runs: the run has started for sure
        if db.execute("SELECT 1 FROM runs WHERE job = 'filler' AND outcome = 'running'").fetchone():
            break
        time.sleep(0.05)
    db.close()
    fd = os.open(os.path.join(os.environ["FILL_DIR"], "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)

def after():
    with open(os.path.join(os.environ["MARKER_DIR"], "after"), "a") as f:
        f.write("ran\\n")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(filler, name="filler").every_minute()
    scheduler.add(after, name="after").every_minute()
"""


@needs_root
def test_disk_full_mid_tick_says_what_happened_and_the_next_tick_records_the_outcome_and_releases_claims(
    project: Project, small_disk: Path
) -> None:
    scanned(project, FILLS_THE_DISK)
    project.env["FILL_DIR"] = str(small_disk)
    project.icc("run", "--at", at(0), check=True)  # both ran
    (project.root / "fill").touch()  # from now on the first job fills the disk
    # An open connection keeps the -wal and -shm files in place, so the tick gets as far as recording.
    keeper = sqlite3.connect(project.db)
    try:
        keeper.execute("SELECT COUNT(*) FROM runs").fetchone()
        line = one_line_error(project.icc("run", "--at", at(1)), "stopped part way", "full")
        assert "nothing was lost" not in line
        assert "filler" in line and "ran: succeeded, not recorded yet" in line
        assert "after" in line and "was not started" in line
        assert len(project.marker_lines("after")) == 1  # it never ran at minute 1
        (small_disk / "filler").unlink()  # space returns
        (project.root / "fill").unlink()
        project.icc("run", "--at", at(2), check=True)
    finally:
        keeper.close()
    runs = {(r["job"], r["slot"]): r for r in project.runs()}
    filler = runs[("filler", slot(1))]
    assert filler["outcome"] == "succeeded" and "recorded by the next tick" in filler["error"]
    after = runs[("after", slot(1))]
    assert after["outcome"] == "skipped" and "not started" in after["error"] and "full" in after["error"]
    assert not any(r["outcome"] == "abandoned" for r in runs.values())
    assert runs[("after", slot(2))]["outcome"] == "succeeded"


@needs_root
def test_disk_full_when_a_background_run_ends_keeps_its_outcome_for_the_next_tick_not_abandoned(
    project: Project, small_disk: Path
) -> None:
    # The filler waits while the "hold" marker is there (the tick is done when it goes): only its supervisor
    # meets the full disk.
    waits = FILLS_THE_DISK.replace(
        "def filler():\n",
        "def filler():\n"
        '    while os.path.exists(os.path.join(os.environ["MARKER_DIR"], "hold")):\n'
        "        time.sleep(0.05)\n",
    )
    scanned(project, waits.replace('name="filler")', 'name="filler").in_background()'))
    project.env["FILL_DIR"] = str(small_disk)
    hold = project.root / "hold"
    hold.touch()
    (project.root / "fill").touch()
    keeper = sqlite3.connect(project.db)  # keeps the -wal and -shm files in place
    try:
        keeper.execute("SELECT COUNT(*) FROM runs").fetchone()
        try:
            project.icc("run", "--at", at(0), check=True)
        finally:
            hold.unlink()
        journal = small_disk / "outcomes.journal"
        project.wait_for(
            lambda: b'"outcome": "succeeded"' in journal.read_bytes(),
            what="its supervisor to keep the outcome",
        )
        (small_disk / "filler").unlink()  # space returns
        (project.root / "fill").unlink()
        project.icc("run", "--at", at(1), check=True)
        ended = ("succeeded", "failed", "abandoned")
        project.wait_for(lambda: all(r["outcome"] in ended for r in project.runs("filler")), what="the runs")
    finally:
        keeper.close()
    filler = {r["slot"]: r for r in project.runs("filler")}[slot(0)]
    assert filler["outcome"] == "succeeded" and "recorded by the next tick" in filler["error"]


def test_a_claim_whose_tick_died_before_starting_it_is_released_skipped_not_abandoned(
    project: Project,
) -> None:
    scanned(project)
    project.icc("run", "--at", at(0), check=True)
    db = sqlite3.connect(project.db)
    with db:  # what a tick killed between its claims and its first run leaves: a pending claim, its pid gone
        db.execute(
            "INSERT INTO runs (job, slot, kind, outcome, pid, host) VALUES ('a', ?, 'scheduled', 'pending', ?, ?)",
            (int(slot(1)), 2**22 + 12345, os.uname().nodename),
        )
    db.close()
    project.icc("run", "--at", at(2), check=True)
    (run,) = [r for r in project.runs("a") if r["slot"] == slot(1)]
    assert run["outcome"] == "skipped" and run["error"].startswith("not started: ")


@needs_root
def test_full_disk_before_the_first_scan_is_one_line(project: Project, small_disk: Path) -> None:
    project.write_plugin(TWO_JOBS)
    fill(small_disk)
    one_line_error(project.icc("scan"), "full")
    assert not project.db.exists()


# -- numbers past what the store holds (item 12) -----------------------------------------------------------------
@pytest.mark.parametrize("limit", ["99999999999999999999", "-1", "0"])
def test_status_limit_out_of_range_is_one_line(project: Project, limit: str) -> None:
    scanned(project)
    one_line_error(project.icc("status", "a", "--limit", limit), "--limit", limit)


# -- only corruption advises throwing the file away (item 13) ---------------------------------------------------
def test_database_locked_by_another_process_names_it_and_advises_no_deletion(project: Project) -> None:
    scanned(project)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "db.execute('BEGIN IMMEDIATE'); print('ok', flush=True); time.sleep(60)",
            str(project.db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        store = SQLiteStateStore(project.state_dir, timeout=0.2)
        with pytest.raises(StateError) as caught:
            store.set_enabled("a", False)
        store.close()
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    assert f"locked by pid {holder.pid}" in message
    assert "move it away" not in message and "history is lost" not in message
    assert project.status()["jobs"][0]["enabled"]


@needs_root
def test_state_database_of_another_user_says_whose_and_advises_no_deletion(project: Project) -> None:
    scanned(project)
    before = snapshot(project)
    os.chown(project.db, NOBODY, NOBODY)
    try:
        for args in (("status",), ("run", "--at", at(0)), ("scan",)):
            line = one_line_error(project.icc(*args), "owned by uid 65534", f"chown {os.getuid()}")
            assert "move it away" not in line
    finally:
        os.chown(project.db, 0, 0)
    assert snapshot(project) == before


def test_corrupt_database_still_advises_moving_it_away(project: Project) -> None:
    scanned(project)
    data = project.db.read_bytes()
    project.db.write_bytes(data[:4096] + b"\xff" * (len(data) - 4096))
    line = one_line_error(project.icc("status"), "unreadable", "history is lost")
    assert str(project.db) in line
