"""Waiting for a change to a few files of one directory without polling them: Linux's inotify, through ctypes on
libc (no dependency), for an idle consumer that would otherwise look at its queue database every second (issue 17:
two idle service consumers cost less than an idle tick per minute).

:class:`ChangeWatch` watches the *directory*, so that the files being written, created, removed, renamed or
replaced all wake the waiter, and the directory itself going too. Events for other names in it (the state
database's, the tick's) are read and ignored without returning. Where there is no inotify (another system, the
per-user limit of inotify instances or watches reached, the directory missing), :meth:`ChangeWatch.wait` says so
(None) and the caller polls as before.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import struct
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ctypes

__all__ = ["ChangeWatch"]

# <sys/inotify.h>
_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_UNMOUNT = 0x2000
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_ONLYDIR = 0x01000000
_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
)
# The watch is gone (the directory was removed, moved or unmounted): watch again at the next wait.
_GONE = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_UNMOUNT | _IN_IGNORED
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name
_MAX_MS = 2**31 - 1


_LIBC: list[ctypes.CDLL | None] = []  # looked up once


def _libc() -> ctypes.CDLL | None:
    if not _LIBC:
        _LIBC.append(_find_libc())
    return _LIBC[0]


def _find_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # lazy: ~3 ms, for a consumer that waits only (this module loads with every SQLite transport)

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    init.argtypes, init.restype = [ctypes.c_int], ctypes.c_int
    add.argtypes, add.restype = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int
    return libc


class ChangeWatch:
    """Wakes one waiting thread when one of ``names`` in ``directory`` changes, or when :meth:`interrupt` is
    called (from another thread or a signal handler). Nothing is opened until the first :meth:`wait`."""

    def __init__(self, directory: str, names: Iterable[str]) -> None:
        self.directory = directory
        self.names = frozenset(os.fsencode(name) for name in names)
        self._fd: int | None = None  # the inotify instance, watching the directory
        self._wake_r, self._wake_w = -1, -1  # the interrupt's pipe
        self._poll: select.poll | None = None
        self._pid = os.getpid()

    def _start(self) -> bool:
        if self._wake_r < 0:
            self._wake_r, self._wake_w = os.pipe()  # not inherited (PEP 446)
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
        libc = _libc()
        if libc is None:
            return False
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)  # IN_NONBLOCK | IN_CLOEXEC
        if fd < 0:
            return False  # EMFILE: the per-user limit of inotify instances (fs.inotify.max_user_instances)
        if libc.inotify_add_watch(fd, os.fsencode(self.directory), _MASK) < 0:
            os.close(fd)  # no directory, or ENOSPC: the limit of watches (fs.inotify.max_user_watches)
            return False
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._poll.register(self._wake_r, select.POLLIN)
        return True

    def wait(self, timeout: float, *, not_before: float = 0.0) -> bool | None:
        """Block up to ``timeout`` seconds until one of the names is written, created, removed or renamed (or
        the directory goes), or :meth:`interrupt` is called. A change is noticed no sooner than ``not_before``
        (``time.monotonic()``; an interrupt is, at once): a waiter that has just looked lets a busy directory's
        changes gather. True: one of those happened, or the watch has just begun (what changed before it is
        not known: look now). False: the time passed without one. None: nothing to wait on here (no inotify,
        or the directory is missing): poll instead."""
        if self._pid != os.getpid():  # a forked child's copy: the parent's descriptors are not its own
            self._fd = self._poll = None
            self._wake_r = self._wake_w = -1
            self._pid = os.getpid()
        if self._fd is None:
            return True if self._start() else None
        poll = self._poll
        assert poll is not None
        now = time.monotonic()
        end = now + max(0.0, timeout)
        if not_before > now:
            if select.select([self._wake_r], [], [], min(end, not_before) - now)[0]:
                self._drain_wake()
                return True
            if end <= not_before:
                return False
        while True:
            remaining = end - time.monotonic()
            ready = poll.poll(min(_MAX_MS, max(0, math.ceil(remaining * 1000))))
            if not ready:
                return False
            woken = False
            for fd, _ in ready:
                if fd == self._wake_r:
                    self._drain_wake()
                    woken = True
                elif self._events():
                    woken = True
            if woken:
                return True
            if remaining <= 0:
                return False

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def _events(self) -> bool:
        """Read what inotify queued; True when it names one of the names, the queue overflowed, or the watch
        is gone (it is closed then, and made again at the next wait)."""
        fd = self._fd
        assert fd is not None
        changed = gone = False
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                if wd < 0 or mask & _IN_Q_OVERFLOW or name in self.names:
                    changed = True
                if mask & _GONE:
                    gone = changed = True
        if gone:
            self._close_watch()
        return changed

    def interrupt(self) -> None:
        """Make the current (or the next) :meth:`wait` return True at once. Safe from signal handlers."""
        if self._wake_w >= 0 and self._pid == os.getpid():
            with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
                os.write(self._wake_w, b"!")

    def _close_watch(self) -> None:
        if self._fd is not None:
            poll = self._poll
            if poll is not None:
                with contextlib.suppress(KeyError, ValueError):
                    poll.unregister(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = self._poll = None

    def close(self) -> None:
        if self._pid != os.getpid():
            return
        self._close_watch()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1
