"""Why a database of the state directory cannot be used, as one line that says what to do.

SQLite reports a locked database, a full disk, a read-only file and a corrupt one through the same exception
class. Only corruption, confirmed by ``PRAGMA quick_check`` on a read-only connection, earns the advice to move
the file away (losing its history); everything else names what is actually wrong and leaves the data alone.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterable
from pathlib import Path

from icc.errors import StateError

_LOW_SPACE = 64 * 1024  # bytes free below which a failed write is put down to a full disk


def lock_holders(paths: Iterable[Path]) -> list[int]:
    """Pids (other than ours) holding a write lock on any of ``paths``, from ``/proc/locks`` (Linux)."""
    inodes = set()
    for path in paths:
        with contextlib.suppress(OSError):
            info = os.stat(path)
            inodes.add(f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}")
    holders: list[int] = []
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return holders
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 1234 08:01:56789 0 EOF" (a blocked waiter's line has "->" after the id)
        if "->" in fields:
            continue
        if len(fields) < 6 or fields[3] != "WRITE" or fields[5] not in inodes:
            continue
        with contextlib.suppress(ValueError):
            pid = int(fields[4])
            if pid != os.getpid() and pid > 0 and pid not in holders:
                holders.append(pid)
    return holders


def describe_pid(pid: int) -> str:
    """``pid 123 (icc run --quiet)``: the command line from /proc when it can be read."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return f"pid {pid}"
    command = " ".join(a.decode(errors="replace") for a in argv if a)
    if len(command) > 80:
        command = command[:77] + "..."
    return f"pid {pid} ({command})" if command else f"pid {pid}"


def _free_bytes(directory: Path) -> int | None:
    try:
        vfs = os.statvfs(directory)
    except OSError:
        return None
    return vfs.f_bavail * vfs.f_frsize


def _access_problem(path: Path) -> str | None:
    """Why this user cannot write ``path`` or its -wal/-shm files beside it, if that is the reason."""
    directory = path.parent
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return (
                f"state database {path} is on a read-only file system; icc must write to it: "
                "remount it read-write or point state_dir to a writable place"
            )
    except OSError:
        pass
    uid = os.getuid()
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            info = os.stat(file)
        except OSError:
            continue
        if info.st_uid != uid:
            return (
                f"state file {file} is owned by uid {info.st_uid}, not by you (uid {uid}); "
                f"run icc as its owner, or give it back with: chown {uid} {file}"
            )
        if not info.st_mode & stat.S_IWUSR or not os.access(file, os.R_OK | os.W_OK):
            return (
                f"state file {file} is read-only (mode {stat.S_IMODE(info.st_mode):o}); icc must write to it: "
                f"chmod 600 {file}"
            )
    if not os.access(directory, os.W_OK | os.X_OK):
        return (
            f"state directory {directory} is not writable by you (icc keeps its -wal and -shm files there): "
            f"chmod 700 {directory}"
        )
    return None


def is_corrupt(path: Path) -> bool:
    """True when a read-only ``PRAGMA quick_check`` finds ``path`` damaged or not a database at all."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return False
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        name = getattr(exc, "sqlite_errorname", "")
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    finally:
        db.close()
    return rows != [("ok",)]


def database_error(path: Path, exc: BaseException, *, doing: str, timeout: float) -> StateError:
    """The one-line error for ``exc``, raised by SQLite while ``doing`` something with the database ``path``."""
    name = str(getattr(exc, "sqlite_errorname", ""))
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in str(exc):
        side = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        holders = lock_holders(side)
        by = ", ".join(describe_pid(pid) for pid in holders) if holders else "another process"
        return StateError(
            f"state database {path} stayed locked by {by} for {timeout:g} s while {doing}; nothing was changed: "
            "let it finish (or stop it if it hangs) and run again"
        )
    free = _free_bytes(path.parent)
    if name == "SQLITE_FULL" or (name.startswith("SQLITE_IOERR") and free is not None and free < _LOW_SPACE):
        return StateError(
            f"the disk holding the state database {path} is full ({doing}); nothing was lost: "
            "free some space and run again"
        )
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH", "SQLITE_IOERR")):
        problem = _access_problem(path)
        if problem is not None:
            return StateError(problem)
    if name.startswith("SQLITE_IOERR"):
        return StateError(
            f"I/O error on the state database {path} while {doing} ({exc}); nothing was changed: "
            "check the disk (dmesg) and run again"
        )
    if is_corrupt(path):
        return StateError(
            f"state database {path} is unreadable ({exc}); it was left untouched. "
            f"Restore it from a backup, or move it away (mv {path} {path}.broken) and run "
            "`icc scan` to start a new one (run history is lost)"
        )
    return StateError(
        f"state database {path} could not be used while {doing} ({exc}); it was left untouched "
        "(an integrity check finds it intact)"
    )
