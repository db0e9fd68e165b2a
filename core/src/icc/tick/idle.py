"""The idle tick: ``icc run`` when nothing is due, in a few milliseconds more than Python's own start.

Only stdlib, a light config reader (:mod:`icc.fastconfig`) and one read-only SQLite query: every job's next slot is stored by the last
full tick (or scan), so "is anything due?" is ``MIN(next_due) <= slot``. Those next slots were computed at the
watermark, so they only answer for a slot at or after it: an earlier slot (the clock went back, or an earlier
``--at`` than the last tick's) goes to the full tick, which evaluates from scratch. Anything unusual (an unknown
option, a config error, no state yet or never scanned, a run in progress that may need recovering, an ``icc
pause``) returns None and the full command handles it, with its proper error messages.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time

from icc.slots import tick_slot

TYPE_CHECKING = False  # not typing's: the idle tick does not import typing
if TYPE_CHECKING:
    from icc.config import Config

_QUERY = (
    "SELECT (SELECT MIN(next_due) FROM jobs WHERE enabled = 1 AND removed_at IS NULL),"
    " (SELECT COUNT(*) FROM runs WHERE outcome IN ('pending', 'running')),"
    " (SELECT value FROM meta WHERE key = 'watermark'),"
    " (SELECT value FROM meta WHERE key = 'plugins_fingerprint'),"
    " (SELECT COUNT(*) FROM meta WHERE key = 'pause'),"  # icc pause: the full tick records the skipped slots
    " (SELECT value FROM meta WHERE key = 'drift_stamp')"
)
LOCK_HELD_NOTICE = 60.0  # seconds the tick lock may be held before a tick says so


def _parse(args: list[str]) -> tuple[str | None, bool, str | None] | None:
    config: str | None = None
    quiet = False
    at: str | None = None
    seen_run = False
    it = iter(args)
    for arg in it:
        if arg == "run" and not seen_run:
            seen_run = True
        elif arg in ("-q", "--quiet") and seen_run:
            quiet = True
        elif arg == "--at" and seen_run:
            at = next(it, None)
            if at is None:
                return None
        elif arg.startswith("--at=") and seen_run:
            at = arg[5:]
        elif arg == "--config" and not seen_run:
            value = next(it, None)
            if value is None:
                return None
            config = value
        elif arg.startswith("--config=") and not seen_run:
            config = arg[9:]
        else:
            return None
    return (config, quiet, at) if seen_run else None


def _trusted(state_dir: str, db_path: str) -> bool:
    """The same owner, mode and link checks as every other command (stat calls only); the full command
    reports what is wrong."""
    from icc.statedir import state_dir_problem, state_file_problem

    if state_dir_problem(state_dir) is not None:
        return False
    return all(state_file_problem(db_path + s) is None for s in ("", "-wal", "-shm"))


def try_idle_tick(args: list[str]) -> int | None:
    """Exit code of an idle tick, or None when the full ``icc run`` must handle it."""
    parsed = _parse(args)
    if parsed is None:
        return None
    config_path, quiet, at = parsed
    try:
        from icc.fastconfig import read_config

        settings: dict[str, object] = {}
        config = read_config(config_path, settings=settings)
        if config is None:  # among the doubts: [icc.store], whose PostgreSQL idle tick has its own module
            from icc.store import idle_tick  # lazy: only a configuration with [icc.store] gets here

            return idle_tick(config_path, quiet, at)
        state_dir, timezone = config
        db_path = os.path.join(state_dir, "state.sqlite3")
        if not _trusted(state_dir, db_path) or not os.path.isfile(db_path):
            return None
        slot = tick_slot(at, timezone)
        if slot is None:
            return None
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            earliest, unfinished, watermark, scanned, paused, stamp = db.execute(_QUERY).fetchone()
        finally:
            db.close()
        if scanned is None or (watermark is not None and slot < int(watermark)):
            return None
    except Exception:
        return None
    if unfinished or paused:
        return None
    scan_auto = settings.get("scan") == "auto"
    why = drift(stamp) if scan_auto or not quiet else None  # --quiet, scan manual: nothing to say, no stat
    if why is not None and (scan_auto or why.startswith("packages:")):
        return None  # the full tick rescans, or tells a plugin's install from an unrelated one
    if earliest is not None and earliest <= slot:
        return _light_minute(config_path, quiet, slot, state_dir, db_path)
    if not quiet:
        held = tick_lock_held(state_dir, LOCK_HELD_NOTICE)
        if held is not None:
            sys.stdout.write(lock_held_line(*held, time.time()) + "\n")
        if why is not None:
            sys.stdout.write(drift_line(why) + "\n")
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(slot))
        nxt = (
            ""
            if earliest is None
            else f"; next slot {time.strftime('%Y-%m-%d %H:%M', time.gmtime(earliest))} UTC"
        )
        sys.stdout.write(f"icc run: nothing due at {when} UTC{nxt}\n")
    return 0


def _light_minute(
    config_path: str | None, quiet: bool, slot: int, state_dir: str, db_path: str
) -> int | None:
    """Something is due: when it is only the consumer cron jobs, :mod:`icc.tick.light` may run the minute."""
    if not quiet:  # the full tick prints its table
        return None
    from icc.tick.light import try_light_minute

    return try_light_minute(config_path, slot, state_dir, db_path)


# --- what every tick notices cheaply: a stuck tick lock, plugins changed since the scan (stat calls only) ----

DRIFT_META_KEY = "drift_stamp"
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


def plugins_drift(config: Config, stamp: str | None, scanned: str | None) -> str | None:
    """Why the plugins changed since the last scan (:func:`drift`; when only a package directory changed,
    confirmed with the installed metadata, :func:`icc.plugins.installed_fingerprint`), or None. With no stamp
    (a scan by an icc that stored none) the installed metadata alone says. No plugin is imported, and
    :mod:`icc.plugins` only when a package directory changed or there is no stamp."""
    why = drift(stamp)
    if why is not None and not why.startswith("packages:"):
        return why
    if scanned is None or (why is None and stamp is not None):
        return None
    from icc.plugins import installed_fingerprint

    return "installed plugin distributions changed" if scanned != installed_fingerprint(config) else None


def refreshed_stamp(stamp: str) -> str:
    """``stamp`` with its package directories' mtimes as they are now (their change was not a plugin's)."""
    import contextlib  # the full tick's: the idle path never refreshes

    lines = stamp.split("\n")
    for i, line in enumerate(lines):
        kind, _, rest = line.partition("\t")
        if kind == "dir":
            path = rest.split("\t")[0]
            with contextlib.suppress(OSError):  # gone: drift() says so
                lines[i] = f"dir\t{path}\t{os.stat(path).st_mtime_ns}"
    return "\n".join(lines)


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
    import json
    import socket

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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
