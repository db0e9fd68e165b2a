"""The outcomes journal: what a tick could not write to its store (a full disk), kept in a file of the state
directory whose space was reserved before the runs started, so the next tick can record it.

A finished run's outcome that the store refused, and the claims of runs that never started (recorded ``skipped``
with the reason), go here; the next tick records them first and removes them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from icc.errors import StateError
from icc.statedir import state_file_problem
from icc.store.protocol import Outcome, StateStore

JOURNAL = "outcomes.journal"  # in the state directory: what the store could not take, for the next tick
JOURNAL_SIZE = 64 * 1024  # reserved before the runs start: writing into it needs no free space
JOURNAL_OUTPUT = 4096  # characters of a run's output kept there (its tail)


class OutcomeJournal:
    """Outcomes a tick could not write to its store (a full disk), kept in a file whose space was reserved before
    the tick started its runs, so that writing them needs no free space; the next tick records them.

    The file is JSON, ended by a NUL byte (a NUL first byte: empty). Ticks that overlap (one whose runs overran
    the minute) share it: every change is made under an exclusive ``flock``, reading what is there first."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self.entries: list[dict[str, Any]] = []  # what this tick kept

    @classmethod
    def reserve(cls, state_dir: Path) -> OutcomeJournal | None:
        """Open the journal and make sure its space is allocated; None when that cannot be done (then a lost
        outcome stays lost, as before)."""
        fd = _open_journal(state_dir, create=True)
        if fd is None:
            return None
        try:
            with _journal_locked(fd):
                size = os.fstat(fd).st_size
                if size < JOURNAL_SIZE:
                    if size == 0:
                        os.pwrite(fd, b"\0", 0)
                    os.posix_fallocate(fd, 0, JOURNAL_SIZE)
        except OSError:
            os.close(fd)
            return None
        return cls(state_dir / JOURNAL, fd)

    def add(self, entry: dict[str, Any]) -> bool:
        """Keep ``entry`` (one per run: a later one replaces it); False when it could not be written."""
        try:
            with _journal_locked(self._fd):
                kept = [e for e in _journal_load(self._fd) if e.get("run") != entry["run"]]
                if not _journal_store(self._fd, [*kept, entry]):
                    return False
        except OSError:
            return False
        self.entries.append(entry)
        return True

    def reopen(self) -> OutcomeJournal | None:
        """The same journal on a descriptor of its own, for a supervisor forked from the tick: a ``flock`` is
        held per open file, so one shared across the fork would not keep the two from writing at once."""
        fd = _open_journal(self.path.parent)
        return None if fd is None else OutcomeJournal(self.path, fd)

    def kept(self, run_id: int) -> dict[str, Any] | None:
        """What is kept for ``run_id``, by this tick or by a supervisor it forked; None when nothing."""
        for entry in self.entries:
            if entry.get("run") == run_id:
                return entry
        try:
            with _journal_locked(self._fd):
                found = _journal_load(self._fd)
        except OSError:
            return None
        return next((e for e in found if e.get("run") == run_id), None)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _open_journal(state_dir: Path, *, create: bool = False) -> int | None:
    """The journal's descriptor: this user's regular file, never through a link or a FIFO; None when not."""
    path = state_dir / JOURNAL
    if state_file_problem(path) is not None:
        return None
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
    except OSError:
        info = None
    if info is None or not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def _journal_locked(fd: int) -> Iterator[None]:

    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _journal_load(fd: int) -> list[dict[str, Any]]:

    data = os.pread(fd, JOURNAL_SIZE, 0).split(b"\0", 1)[0]
    try:
        found = json.loads(data) if data else []
    except ValueError:
        return []
    return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []


def _journal_store(fd: int, entries: list[dict[str, Any]]) -> bool:
    """Write ``entries`` over the journal, in its reserved space; False when they do not fit."""

    entries = [dict(e) for e in entries]
    data = json.dumps(entries).encode()
    for entry in entries:  # too long: the outputs go first, the outcomes stay
        if len(data) < JOURNAL_SIZE:
            break
        entry["output"] = ""
        data = json.dumps(entries).encode()
    if len(data) >= JOURNAL_SIZE:
        return False
    os.pwrite(fd, data + b"\0", 0)
    os.fsync(fd)
    return True


def read_journal(state_dir: Path) -> list[dict[str, Any]]:
    """The outcomes ticks kept in the journal (empty when none, or it cannot be read)."""
    fd = _open_journal(state_dir)
    if fd is None:
        return []
    try:
        with _journal_locked(fd):
            return _journal_load(fd)
    except OSError:
        return []
    finally:
        os.close(fd)


def forget_journal(state_dir: Path, run_ids: set[int]) -> None:
    """Take the entries of ``run_ids`` (recorded now) out of the journal; others a tick added meanwhile stay."""
    fd = _open_journal(state_dir)
    if fd is None:
        return
    try:
        with _journal_locked(fd):
            _journal_store(fd, [e for e in _journal_load(fd) if e.get("run") not in run_ids])
    except OSError:
        pass
    finally:
        os.close(fd)


class _Journaled:
    """A state store whose ``finish`` keeps the outcome in the journal when the store cannot take it (and still
    raises: the tick stops). Everything else goes to the store."""

    def __init__(self, store: StateStore, journal: OutcomeJournal) -> None:
        self.store = store
        self._journal = journal

    def finish(
        self,
        run_id: int,
        outcome: Outcome,
        *,
        now: float,
        exit_code: int | None = None,
        output: str = "",
        error: str | None = None,
    ) -> None:
        try:
            self.store.finish(run_id, outcome, now=now, exit_code=exit_code, output=output, error=error)
        except StateError as exc:
            # "why": the store's words, for the tick that waits on this run's supervisor (it stops part way).
            entry: dict[str, Any] = {
                "run": run_id,
                "outcome": outcome,
                "ended_at": now,
                "exit_code": exit_code,
            }
            entry |= {"output": output[-JOURNAL_OUTPUT:], "error": error, "why": _reason(exc)}
            exc.journaled = self._journal.add(entry)  # type: ignore[attr-defined]
            raise

    def mark_running(self, run_id: int, *, pid: int, task_pid: int | None, now: float) -> None:
        try:
            self.store.mark_running(run_id, pid=pid, task_pid=task_pid, now=now)
        except StateError as exc:
            why = f"its task started, but the store could not take that nor its outcome ({_reason(exc)})"
            entry = {
                "run": run_id,
                "outcome": "abandoned",
                "ended_at": now,
                "error": why,
                "why": _reason(exc),
            }
            exc.journaled = self._journal.add(entry)  # type: ignore[attr-defined]
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def _reason(exc: StateError) -> str:
    """The store's error without its advice for a single write ("nothing was lost"): a tick did more."""
    return str(exc).split("; nothing was lost")[0].split("; nothing was changed")[0]
