"""icc.locks takes its kernel locks with fcntl.flock itself (importing filelock cost a due tick more than
starting Python): one holder at a time, the holder record, a link or a foreign file refused, nothing left held
by a forked child, and filelock never imported."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from icc.errors import StateError
from icc.locks import job_lock, tick_lock


def test_a_lock_has_one_holder_at_a_time_and_records_who(tmp_path: Path) -> None:
    first, second = tick_lock(tmp_path), tick_lock(tmp_path)
    assert first.try_acquire() and first.is_locked
    assert not second.try_acquire() and not second.is_locked
    assert second.is_held_elsewhere()
    holder = second.holder(wait=0)
    assert holder is not None and holder.pid == os.getpid()
    assert (tmp_path / "tick.lock").stat().st_mode & 0o777 == 0o600
    first.release()
    assert not first.is_locked and second.try_acquire()
    second.release()
    assert (tmp_path / "tick.lock").exists()  # never unlinked: the lock is on its inode


def test_a_lock_file_that_is_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "tick.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StateError, match="symbolic link"):
        tick_lock(tmp_path).try_acquire()


CHILD_OUTLIVES_PARENT = """
import os, sys
from pathlib import Path
from icc.locks import job_lock
lock = job_lock(Path(sys.argv[1]), "nightly")
assert lock.try_acquire()
if os.fork() == 0:
    sys.stdin.read()  # lives on until the test closes its stdin
    os._exit(0)
print("held", flush=True)
os._exit(0)  # the parent dies holding the lock, without releasing it
"""


def test_a_forked_child_keeps_no_lock_once_its_parent_is_gone(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD_OUTLIVES_PARENT, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "held"
        assert proc.wait(timeout=60) == 0
        lock = job_lock(tmp_path, "nightly")
        # The child closes its copy in its after-fork hook, which it runs when it is first scheduled: on a loaded
        # machine that can be after its parent has exited. A child that kept the copy keeps the lock for good.
        deadline = time.monotonic() + 10
        while not lock.try_acquire():
            assert time.monotonic() < deadline, "the forked child's copy of the descriptor kept the job lock"
            time.sleep(0.05)
        lock.release()
    finally:
        proc.stdin.close()  # the child ends
        proc.stdout.close()


def test_taking_a_lock_imports_no_filelock(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from icc.locks import tick_lock; "
        f"lock = tick_lock(Path({str(tmp_path)!r})); assert lock.try_acquire(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'filelock'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
