"""The state directory: created 0700, refused when another user owns it or others may write to it.

icc never changes the mode of a directory it did not create (``state_dir = "."`` must not lock up a project
root), never follows a symbolic link another user planted, and never opens a state file through one. The checks
are stat calls only, so the idle tick (:mod:`icc.tick.idle`) makes them too.
"""

from __future__ import annotations

import errno  # built in: costs the idle tick nothing
import os
import stat

from icc.errors import StateError

TYPE_CHECKING = False  # not typing's: the idle tick does not import typing
if TYPE_CHECKING:  # pathlib is not imported at run time: the idle tick passes strings
    from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def _resolve_link(path: Path | str, what: str) -> tuple[os.stat_result | None, str | None]:
    """``lstat`` of ``path``, or ``stat`` of its target when it is a link of this user's; a problem otherwise."""
    uid = os.getuid()
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            if info.st_uid != uid:
                return None, (
                    f"{what} {path} is a symbolic link owned by uid {info.st_uid}, not by you (uid {uid}); "
                    "icc does not follow it: remove it, or point state_dir to a directory of your own"
                )
            try:
                info = os.stat(path)
            except FileNotFoundError:
                return (
                    None,
                    f"{what} {path} is a symbolic link to nothing; remove it or point it at a directory",
                )
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot use the {what} {path}: {exc.strerror}; check state_dir"
    return info, None


def state_dir_problem(path: Path | str) -> str | None:
    """Why ``path`` must not be used as the state directory; None when it is fine or does not exist yet."""
    info, problem = _resolve_link(path, "state directory")
    if info is None:
        return problem
    uid = os.getuid()
    if not stat.S_ISDIR(info.st_mode):
        return f"state directory {path} is not a directory; point state_dir elsewhere"
    if info.st_uid != uid:
        return (
            f"state directory {path} is owned by uid {info.st_uid}, not by you (uid {uid}); "
            "run icc as its owner or point state_dir to a directory of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"state directory {path} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}), "
            f"who could forge its state; fix it with: chmod 700 {path}, or point state_dir to a directory "
            "of its own"
        )
    return None


def state_file_problem(path: Path | str) -> str | None:
    """Why the state file ``path`` must not be opened; None when it is fine or does not exist yet."""
    info, problem = _resolve_link(path, "state file")
    if info is None:
        return problem
    uid = os.getuid()
    if not stat.S_ISREG(info.st_mode):
        return f"state file {path} is not a regular file; move it away (icc creates it again)"
    if info.st_uid != uid:
        return (
            f"state file {path} is owned by uid {info.st_uid}, not by you (uid {uid}); "
            f"run icc as its owner, or give it back with: chown {uid} {path}"
        )
    return None


def ensure_state_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if missing, and check that only this user can use it.

    An existing directory keeps its mode: icc did not create it, so it is not icc's to change.
    """
    problem = state_dir_problem(path)
    if problem is None and not os.path.lexists(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            pass  # made by another process meanwhile: checked below like any existing directory
        except OSError as exc:
            raise StateError(
                f"cannot create the state directory {path}: {exc.strerror}; check state_dir"
            ) from exc
        problem = state_dir_problem(path)
    if problem is not None:
        raise StateError(problem)
    return path


def check_state_file(path: Path) -> None:
    """Raise :class:`StateError` when ``path`` is a foreign link, not a regular file, or someone else's."""
    problem = state_file_problem(path)
    if problem is not None:
        raise StateError(problem)


def secure_file(path: Path) -> None:
    """Make a file of the state directory 0600 (sqlite creates files with the umask's mode).

    Only a regular file of this user's is changed: never the target of a symbolic link.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) != FILE_MODE:
        os.chmod(path, FILE_MODE)


# -- run output files (send_output_to / append_output_to) --------------------------------------------------------
# The state directory's rule, applied to a file icc writes for a job: no symbolic link another user planted is
# followed, and no directory another user (root aside) owns, or others may write to without the sticky bit, is
# trusted, since whoever can write there can swap the file for a link or a FIFO between a check and the open.

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((text for test, text in _KINDS if test(mode)), "not a regular file")


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def in_state_dir(path: Path | str, state_dir: Path | str) -> bool:
    """Whether ``path`` is the state directory or in it, links resolved (what ``icc scan`` refuses as output)."""
    return _inside(os.path.realpath(path), os.path.realpath(state_dir))


def _output_dir_problem(directory: str, path: str) -> str | None:
    """Why the directory of output file ``path`` cannot be trusted; None when it is fine or does not exist."""
    uid = os.getuid()
    try:
        link = os.lstat(directory)
        info = os.stat(directory) if stat.S_ISLNK(link.st_mode) else link
    except OSError:
        return None  # the open reports a missing directory
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (uid, 0):
        return (
            f"output file {path}: its directory {directory} is a symbolic link owned by uid {link.st_uid}, not "
            "by you; icc does not follow it: write the output to a directory of your own"
        )
    if info.st_uid not in (uid, 0):
        return (
            f"output file {path}: its directory {directory} is owned by uid {info.st_uid}, not by you (uid "
            f"{uid}), who could replace the file with a link; write the output to a directory of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        return (
            f"output file {path}: its directory {directory} is writable by other users (mode "
            f"{stat.S_IMODE(info.st_mode):o}), who could replace the file with a link; fix it with: chmod go-w "
            f"{directory}, or write the output to a directory of your own"
        )
    return None


def output_file_problem(path: Path | str, state_dir: Path | str | None = None) -> str | None:
    """Why icc must not write a run's output to ``path``; None when it may (or the open will say why not).

    Refused: a path inside the state directory (the output would overwrite the store), a symbolic link owned by
    another user, an untrusted directory (:func:`_output_dir_problem`, for the link's target too), and anything
    but a regular file: a FIFO would block the supervisor, a device or socket is never a log.
    """
    text = os.fspath(path)
    uid = os.getuid()
    try:
        real = os.path.realpath(text)
        if state_dir is not None and in_state_dir(real, state_dir):
            return (
                f"output file {text} is inside the state directory {state_dir}: the output would overwrite "
                "icc's own store; write it elsewhere"
            )
    except (OSError, ValueError) as exc:
        return f"output file {text} cannot be used: {exc}"
    problem = _output_dir_problem(os.path.dirname(os.path.abspath(text)), text)
    if problem is not None:
        return problem
    try:
        info = os.lstat(text)
    except OSError:
        return None  # missing (icc creates it), or the open reports why it cannot be used
    if stat.S_ISLNK(info.st_mode):
        if info.st_uid != uid:
            return (
                f"output file {text} is a symbolic link owned by uid {info.st_uid}, not by you (uid {uid}); "
                "icc does not follow it: remove it, or write the output elsewhere"
            )
        problem = _output_dir_problem(os.path.dirname(real), text)
        if problem is not None:
            return problem
        try:
            info = os.stat(text)
        except OSError:
            return None  # a link of yours to nothing: the open creates its target
    if not stat.S_ISREG(info.st_mode):
        return (
            f"output file {text} is {_kind(info.st_mode)}, not a regular file; icc writes output only to "
            "regular files: remove it, or write the output elsewhere"
        )
    return None


def open_output_file(path: Path | str, append: bool) -> int:
    """Open a run's output file for writing (created 0600), without ever blocking or following a planted link.

    ``O_NONBLOCK`` makes opening a FIFO fail or return at once instead of waiting for a reader; ``O_NOFOLLOW``
    refuses a link that appeared after :func:`output_file_problem` looked (a link of this user's is followed);
    only a regular file is kept. Raises :class:`OSError` when it cannot be opened, :class:`StateError` when
    what is there must not be written.
    """
    text = os.fspath(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    if append:
        flags |= os.O_APPEND
    try:
        info = os.lstat(text)
        own_link = stat.S_ISLNK(info.st_mode) and info.st_uid == os.getuid()
    except FileNotFoundError:
        own_link = False
    if not own_link:
        flags |= os.O_NOFOLLOW
    fd = os.open(text, flags, FILE_MODE)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateError(
                f"output file {text} is {_kind(info.st_mode)}, not a regular file; remove it, or write the "
                "output elsewhere"
            )
        os.set_blocking(fd, True)
        if not append:
            os.ftruncate(fd, 0)  # only now: truncating is for a regular file that passed the checks
    except BaseException:
        os.close(fd)
        raise
    return fd


def os_error(path: Path, exc: OSError, *, doing: str) -> StateError:
    """The one-line error for an :class:`OSError` on the state file or lock file ``path``."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StateError(
            f"cannot write {path} ({doing}): {exc.strerror} (the disk or your quota is full); "
            "nothing was lost: free some space and run again"
        )
    if exc.errno == errno.EROFS:
        return StateError(
            f"cannot write {path} ({doing}): it is on a read-only file system; remount it read-write "
            "or point state_dir to a writable place"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StateError(
            f"cannot use {path} ({doing}): {exc.strerror}; give yourself read and write access: chmod u+rw {path}"
        )
    return StateError(f"cannot use {path} ({doing}): {exc.strerror or exc}; check state_dir and its files")


class FileWatch:
    """Whether an SQLite database in WAL mode may have been written since an answer was read from it, by one stat
    call: an idle service consumer polls once a second and reads its queue database, and the pause record, only
    when they changed (issue 17: two idle consumers cost less than an idle tick per minute).

    Every commit in WAL mode writes the ``-wal`` file (a checkpoint's restart of it too), and it stays while a
    connection is open (the watcher's owner keeps one): its stat tells. Without a ``-wal`` file the database
    file's stat does. :meth:`generation` is a number that moves whenever the database may have changed; an
    answer read at one generation holds while it stays. A look is trusted only when the file's last change is
    ``RACY`` seconds older than the look: a write in the same tick of the file system's clock as an earlier one
    could otherwise leave the stamp as it was (git's "racy" index rule). At the latest ``MAX_TRUST`` seconds
    after a change the generation moves anyway. Looks within ``reuse`` seconds of the last share its stat call
    (the questions of one poll): a write meanwhile is seen at the next poll."""

    RACY = 2.0
    MAX_TRUST = 60.0

    __slots__ = ("_database", "_generation", "_looked", "_reuse", "_stamp", "_trusted_until", "_wal")

    def __init__(self, database: str, *, reuse: float = 0.0) -> None:
        self._database = database
        self._wal = f"{database}-wal"
        self._reuse = reuse
        self._stamp: tuple[str, int, int, int, int] | None = None
        self._trusted_until = 0.0
        self._looked = -1.0
        self._generation = 0

    def generation(self, now: float) -> int:
        """The database's generation at ``now`` (epoch seconds): never 0, so 0 stands for "not read yet"."""
        if 0.0 <= now - self._looked < self._reuse and self._generation:
            return self._generation
        self._looked = now
        found: tuple[str, int, int, int, int] | None = None
        for path in (self._wal, self._database):
            try:
                info = os.stat(path)
            except OSError:
                continue
            found = (path, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
            break
        if found is None or found != self._stamp or now >= self._trusted_until:
            self._generation += 1
            self._stamp = found
            settled = found is not None and max(found[3], found[4]) < (now - self.RACY) * 1e9
            self._trusted_until = now + self.MAX_TRUST if settled else 0.0
        return self._generation

    def moved(self) -> None:
        """The files changed (a change watch said so): the next :meth:`generation` moves, whatever their stat."""
        self._looked = -1.0
        self._trusted_until = 0.0
