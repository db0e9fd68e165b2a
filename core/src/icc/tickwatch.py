"""What every tick notices cheaply, with stat calls and stdlib only: a stuck tick lock, and plugins changed
since the last scan (the ``drift_stamp`` a scan stores, :func:`icc.plugins.drift_stamp`).

A leaf: the idle ticks (:mod:`icc.tick.idle`, :mod:`icc.store.postgres.idle`), the full tick, ``icc status`` and
``icc metrics`` all read it, so it imports nothing of icc's.
"""

from __future__ import annotations

import os
import time

LOCK_HELD_NOTICE = 60.0  # seconds the tick lock may be held before a tick says so


# Every tick (idle, light or full) marks the time it ran as this file's mtime in the state directory: one
# utime call, no database write. `icc check` reads it (a tick's own record: the idle ticks write nothing else).
TICK_STAMP = "tick.stamp"


def stamp_tick(state_dir: str) -> None:
    """Set ``tick.stamp``'s mtime to now (made 0600 when missing). Never through a link (utime on the link
    itself), never opening an existing file, never failing a tick: a stamp that cannot be set is not set."""
    path = os.path.join(state_dir, TICK_STAMP)
    try:
        os.utime(path, follow_symlinks=False)
        return
    except FileNotFoundError:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    except OSError:
        return
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:
        return
    os.close(fd)


def last_tick(state_dir: str) -> float | None:
    """When a tick last ran on this host (``tick.stamp``'s mtime), or None: no tick since this icc."""
    try:
        return os.lstat(os.path.join(state_dir, TICK_STAMP)).st_mtime
    except OSError:
        return None


DRIFT_META_KEY = "drift_stamp"
# The plugins with before_run/after_run hooks, stored by `icc scan` (icc.plugins.run_hook_plugins): a run's
# supervisor loads those and its job's own plugin while the plugins have not drifted.
RUN_HOOKS_META_KEY = "run_hook_plugins"
_DRIFT_HEADER = "icc drift 1"


def drift(stamp: str | None) -> str | None:
    """Why the plugins may have changed since the scan that stored ``stamp`` (meta ``drift_stamp``, made by
    :func:`icc.plugins.drift_stamp`), or None: a recorded file (the config file, a plugin module) whose
    mtime or size differs or that is gone, or a recorded package directory (``site-packages``) whose mtime
    differs. The latter starts with ``"packages:"``: something was installed or removed there, which
    :func:`icc.plugins.installed_fingerprint` (importlib.metadata, no plugin imported) tells apart from an
    unrelated install. Stat calls only; no stamp (never scanned by an icc that writes one) is no drift."""
    if not stamp:
        return None
    lines = stamp.split("\n")
    if lines[0] != _DRIFT_HEADER:
        return None
    changed: str | None = None
    for line in lines[1:]:
        kind, _, rest = line.partition("\t")
        fields = rest.split("\t")
        try:
            info = os.stat(fields[0])
        except OSError:
            return f"{fields[0]} is gone"
        if (
            kind == "file"
            and len(fields) == 3
            and (str(info.st_mtime_ns), str(info.st_size))
            != (
                fields[1],
                fields[2],
            )
        ):
            return f"{fields[0]} changed"
        if kind == "dir" and len(fields) == 2 and str(info.st_mtime_ns) != fields[1] and changed is None:
            changed = f"packages: {fields[0]} changed"
    return changed


def _flocked(dev: int, ino: int) -> bool | None:
    """Whether a process holds a ``flock`` on the file (device, inode), from ``/proc/locks``; None when it
    cannot be read (then the holder record's pid says)."""
    wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == wanted:
                    return True
    except OSError:
        return None
    return False


def tick_lock_held(state_dir: str, longer_than: float = 0.0) -> tuple[float, int | None, str | None] | None:
    """``(since, pid, host)`` of the process holding the tick lock when it has held it for longer than
    ``longer_than`` seconds, else None. Never takes the lock (a tick starting at that moment would find it
    taken): it reads the holder record (:mod:`icc.locks`), and only when that says the lock was taken long
    enough ago does it look whether the lock is held now (``/proc/locks``; without it, whether the recorded
    process of this host is alive). A record it cannot read gives the lock file's mtime as since."""
    path = os.path.join(state_dir, "tick.lock")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_mode & 0o170000 != 0o100000:  # not a regular file: the full tick says what is wrong
            return None
        raw = os.pread(fd, 1024, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    since = info.st_mtime
    _, found, rest = raw.partition(b'"since": ')
    if found:
        try:  # noqa: SIM105 (contextlib is one more import on the idle path)
            since = float(rest.split(b"}")[0].split(b",")[0])
        except ValueError:
            pass
    if since > time.time() - longer_than:
        return None
    import json  # lazy: only a lock held for longer than a minute
    import socket  # lazy: only a lock held for longer than a minute

    pid: int | None = None
    host: str | None = None
    try:
        record = json.JSONDecoder().raw_decode(raw.decode().lstrip())[0]
        pid, host = int(record["pid"]), str(record["host"])
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    held = _flocked(info.st_dev, info.st_ino)
    if held is None:
        held = pid is not None and host == socket.gethostname() and _alive(pid)
    return (since, pid, host) if held else None


def _alive(pid: int) -> bool:
    # lazy: icc.locks (json, re, hashlib) only when a holder record must be checked, never on a quiet idle tick
    from icc.locks import pid_alive

    return pid_alive(pid)


def held_for(seconds: float) -> str:
    """``2h05m``, ``3m07s``, ``42s``: how long the tick lock has been held."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def lock_held_line(since: float, pid: int | None, host: str | None, now: float) -> str:
    """The line a tick prints when the tick lock has been held for longer than a minute."""
    who = "a process that did not say who it is" if pid is None else f"pid {pid} on {host}"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(since))
    return (
        f"icc run: the tick lock has been held for {held_for(now - since)} by {who} (since {when} UTC): "
        "is a tick stuck? `icc status` shows it"
    )


def drift_line(why: str) -> str:
    """The line a tick prints when the plugins changed since the last scan (``why``: :func:`drift`)."""
    return f'icc run: plugins changed since the last scan ({why}); run `icc scan`, or set [icc] scan = "auto"'


def idle_notices(state_dir: str, why: str | None) -> str:
    """What an idle tick says before "nothing due", as lines: the tick lock held for longer than
    :data:`LOCK_HELD_NOTICE`, and the plugins' drift ``why`` (:func:`drift`); "" when neither. Said once for
    both idle ticks, SQLite's (icc.tick.idle) and PostgreSQL's (icc.store.postgres.idle)."""
    lines = ""
    held = tick_lock_held(state_dir, LOCK_HELD_NOTICE)
    if held is not None:
        lines += lock_held_line(*held, time.time()) + "\n"
    if why is not None:
        lines += drift_line(why) + "\n"
    return lines


def parse_run_hook_plugins(text: str | None) -> list[tuple[str, str | None, tuple[str, ...] | None]] | None:
    """The stored :func:`icc.plugins.run_hook_plugins` as (name, distribution, settings or None) in load order;
    None when there is none (scanned by an icc that did not store it) or it does not parse: then a run loads
    every plugin."""
    import json  # lazy: only when something is due

    if text is None:
        return None
    try:
        found = []
        for item in json.loads(text):
            name, dist, *rest = item
            settings = rest[0] if rest else None
            found.append(
                (
                    str(name),
                    None if dist is None else str(dist),
                    None if settings is None else tuple(str(s) for s in settings),
                )
            )
        return found
    except (ValueError, TypeError):
        return None
