"""File locks (kernel ``flock``): the tick lock and one lock per job.

The kernel releases a lock when its process dies, so a crash never leaves a lock stuck; lock files are never
unlinked (unlinking a lock file lets two processes hold "the" lock on different inodes). The holder writes its
pid, host and start time into the lock file itself, so a process that finds the lock taken can say who holds it.

The lock file cannot be replaced by a rename (the lock is on its inode), so the holder record is written in one
``pwrite`` of a fixed-size, space-padded record at offset 0 and the file is never truncated: a reader sees the
previous holder's record or the new one, never an empty file. A reader that finds no record, a torn one, or one
of a process that is gone (the new holder has not written yet) reads again for a moment, then says it does not
know who holds the lock; finding the lock taken never depends on reading the record.

The locks are taken with :func:`fcntl.flock` directly, as the filelock package took them for icc before
(importing that package cost a due tick more than starting Python does): the file is opened without following
a link and never truncated, a lock file unlinked meanwhile is opened again, and a forked child closes its copies
of the locks' descriptors at once (``os.register_at_fork``), so a task or a callback never keeps its
supervisor's job lock held after the supervisor is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
import sys
import time
from pathlib import Path

from icc.errors import StateError
from icc.records import record
from icc.statedir import os_error, state_dir_problem

try:  # CPython's own SHA-1: the digest hashlib gives, without loading OpenSSL (_hashlib: 2-3 ms of a due tick)
    from _sha1 import sha1 as _sha1  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - another Python
    from hashlib import sha1 as _sha1


def hostname() -> str:
    """``socket.gethostname()``; on Linux the same name from ``uname``, without importing socket (a due tick's
    import time)."""
    return os.uname().nodename if sys.platform.startswith("linux") else _socket_hostname()


def _socket_hostname() -> str:
    import socket  # lazy: not Linux only

    return socket.gethostname()


_UNSAFE = r"[^A-Za-z0-9_.-]+"  # a pattern, compiled (and cached by re) when first used
_RECORD_SIZE = (
    1024  # holder records are padded to this size: a shorter one never leaves a tail of a longer one
)


@record(frozen=True)
class Holder:
    """Who holds a lock, as written into the lock file by the holder."""

    pid: int
    host: str
    since: float

    def describe(self, zone: str | None) -> str:
        """``pid 4242 since 2026-12-07 03:00:05 CET``: when it took the lock, with the date, in ``zone`` (the
        project's; the host's own when None or not a known zone)."""
        from datetime import datetime  # lazy: only a lock found taken is described

        moment = datetime.fromtimestamp(self.since).astimezone()
        if zone:
            from zoneinfo import ZoneInfo  # lazy: as above

            with contextlib.suppress(ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
                moment = moment.astimezone(ZoneInfo(zone))
        return f"pid {self.pid} since {moment.strftime('%Y-%m-%d %H:%M:%S %Z')}"


def _write_holder(fd: int) -> None:
    data = json.dumps({"pid": os.getpid(), "host": hostname(), "since": time.time()}).encode()
    os.pwrite(fd, data.ljust(_RECORD_SIZE), 0)  # one write, no truncate: never seen empty


def _parse_holder(raw: bytes) -> Holder | None:
    try:
        data, _end = json.JSONDecoder().raw_decode(raw.decode().lstrip())
        return Holder(int(data["pid"]), str(data["host"]), float(data["since"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def pid_alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live process. A zombie is dead: a killed supervisor is reparented to pid 1,
    which in a container is not always an init that reaps it."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (or it vanished): kill() said it exists


class Lock:
    """A non-blocking, kernel-held lock on one file, with holder metadata."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never waits. A lock file icc cannot use is a :class:`StateError`."""
        if self.fd is not None:
            return True  # held by this very object already
        problem = lock_file_problem(self.path)
        if problem is not None:
            raise StateError(problem)
        flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        for _attempt in range(3):
            try:
                fd = os.open(self.path, flags, 0o600)
            except OSError as exc:
                raise os_error(self.path, exc, doing="taking the lock") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as exc:
                os.close(fd)
                raise os_error(self.path, exc, doing="taking the lock") from exc
            if os.fstat(fd).st_nlink:
                break
            os.close(fd)  # unlinked meanwhile: not "the" lock any more; open the one there now
        else:
            raise StateError(
                f"lock file {self.path} keeps being removed; check what deletes files in state_dir"
            )
        self.fd = fd
        _HELD[id(self)] = self
        try:
            _write_holder(fd)
        except OSError as exc:  # a full disk: let go, and say so in one line
            self.release()
            raise os_error(self.path, exc, doing="taking the lock") from exc
        return True

    def release(self) -> None:
        fd, self.fd = self.fd, None
        _HELD.pop(id(self), None)
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def is_locked(self) -> bool:
        return self.fd is not None

    def holder(self, *, wait: float = 1.0) -> Holder | None:
        """The holder recorded in the lock file (meaningful while the lock is taken), or None when unknown.

        A missing, torn or stale record (a process of this host that is gone: the new holder has not written
        yet) is read again for up to ``wait`` seconds."""
        deadline = time.monotonic() + wait
        here = hostname()
        while True:
            try:
                found = _parse_holder(self.path.read_bytes())
            except OSError:
                found = None
            if found is not None and (found.host != here or pid_alive(found.pid)):
                return found
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def is_held_elsewhere(self) -> bool:
        """True when another process holds the lock (probes by taking and releasing it)."""
        if self.is_locked:
            return False
        if self.try_acquire():
            self.release()
            return False
        return True


_HELD: dict[int, Lock] = {}  # the locks this process holds


def _forget_in_child() -> None:
    """In a forked child: close its copies of the held locks' descriptors (the parent still holds them)."""
    for lock in list(_HELD.values()):
        fd, lock.fd = lock.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def tick_lock(state_dir: Path) -> Lock:
    return Lock(state_dir / "tick.lock")


def lock_file_problem(path: Path) -> str | None:
    """Why the lock file ``path`` cannot be used (a link, not a regular file, someone else's); None if fine."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot use the lock file {path}: {exc.strerror}; check state_dir"
    if stat.S_ISLNK(info.st_mode):
        return f"lock file {path} is a symbolic link; icc does not follow it: remove it (icc makes a new one)"
    if not stat.S_ISREG(info.st_mode):
        return f"lock file {path} is not a regular file; remove it (icc makes a new one)"
    if info.st_uid != os.getuid():
        return (
            f"lock file {path} is owned by uid {info.st_uid}, not by you (uid {os.getuid()}); "
            "run icc as its owner, or remove it (icc makes a new one)"
        )
    return None


def job_lock(state_dir: Path, job: str) -> Lock:
    """The lock a job's run holds while it runs; the file name is the job name made safe, plus a hash."""
    locks = state_dir / "locks"
    try:
        os.mkdir(locks, 0o700)
    except FileExistsError:
        pass  # checked below
    except OSError as exc:
        raise os_error(locks, exc, doing="making the lock directory") from exc
    problem = state_dir_problem(locks)
    if problem is not None:
        raise StateError(problem)
    return Lock(locks / job_lock_name(job))


def job_lock_name(job: str) -> str:
    """The file name of a job's lock in ``<state_dir>/locks``: the job name made safe, plus a hash."""
    digest = _sha1(job.encode(), usedforsecurity=False).hexdigest()[:10]
    return f"{re.sub(_UNSAFE, '_', job)[:60]}-{digest}.lock"
