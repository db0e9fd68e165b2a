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
from icc.tickwatch import drift, idle_notices, stamp_tick

TYPE_CHECKING = False  # not typing's: the idle tick does not import typing
if TYPE_CHECKING:
    from icc.config import Config

_QUERY = (
    "SELECT (SELECT MIN(next_due) FROM jobs WHERE enabled = 1 AND removed_at IS NULL),"
    " (SELECT COUNT(*) FROM runs WHERE outcome IN ('pending', 'running')),"
    " (SELECT value FROM meta WHERE key = 'watermark'),"
    " (SELECT value FROM meta WHERE key = 'plugins_fingerprint'),"
    " (SELECT COUNT(*) FROM meta WHERE key = 'pause'),"  # icc pause: the full tick records the skipped slots
    " (SELECT value FROM meta WHERE key = 'drift_stamp'),"
    # expect_success_within: the earliest moment a job goes stale unalerted (icc.notify.freshness)
    " (SELECT value FROM meta WHERE key = 'stale.next'),"
    # a job due at the slot other than a consumer job: the light minute does not apply (not even imported)
    " EXISTS (SELECT 1 FROM jobs WHERE enabled = 1 AND removed_at IS NULL AND next_due <= ?"
    " AND substr(name, 1, 8) != 'consume:')"
)


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
    from icc.statedir import (  # lazy: only once a configuration was found
        state_dir_problem,
        state_file_problem,
    )

    if state_dir_problem(state_dir) is not None:
        return False
    return all(state_file_problem(db_path + s) is None for s in ("", "-wal", "-shm"))


def try_idle_tick(args: list[str]) -> int | None:
    """Exit code of an idle tick, or None when the full ``icc run`` must handle it."""
    parsed = _parse(args)
    if parsed is None:
        return None
    config_path, quiet, at = parsed
    return idle_tick(config_path, quiet, at)


def idle_tick(
    config_path: str | None, quiet: bool, at: str | None, known: dict[str, object] | None = None
) -> int | None:
    """Exit code of an idle tick, or None when the full ``icc run`` must handle it. ``known``: a framework
    project's snapshot (:mod:`icc.tick.snapshot`: ``state_dir``, ``timezone``, ``scan``, ``store``), read
    instead of a configuration file (the light minute's consumers then hand a message over to the framework's
    ``icc consume``)."""
    try:
        settings: dict[str, object] = {}
        if known is not None:
            settings["scan"] = known["scan"]
            config: tuple[str, str] | None = (str(known["state_dir"]), str(known["timezone"]))
        else:
            from icc.fastconfig import read_config  # lazy: a framework snapshot (known) does without it

            config = read_config(config_path, settings=settings)
        if config is None or (known is not None and known.get("store") is not None):
            # among the doubts: [icc.store], whose PostgreSQL idle tick has its own module
            from icc.store import idle_tick as store_idle_tick  # lazy: only a configuration with [icc.store]

            return store_idle_tick(config_path, quiet, at, known)
        state_dir, timezone = config
        db_path = os.path.join(state_dir, "state.sqlite3")
        if not _trusted(state_dir, db_path) or not os.path.isfile(db_path):
            return None
        stamp_tick(state_dir)  # `icc check`: a tick ran (the idle tick writes nothing else)
        slot = tick_slot(at, timezone)
        if slot is None:
            return None
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            earliest, unfinished, watermark, scanned, paused, stamp, stale_next, others = db.execute(
                _QUERY, (slot,)
            ).fetchone()
        finally:
            db.close()
        if scanned is None or (watermark is not None and slot < int(watermark)):
            return None
        if stale_next is not None and float(stale_next) <= time.time():
            return None  # a job went stale: the full tick alerts (icc.notify.freshness)
    except Exception:
        return None
    if unfinished or paused:
        return None
    scan_auto = settings.get("scan") == "auto"
    why = drift(stamp) if scan_auto or not quiet else None  # --quiet, scan manual: nothing to say, no stat
    if why is not None and (scan_auto or why.startswith("packages:")):
        return None  # the full tick rescans, or tells a plugin's install from an unrelated one
    if earliest is not None and earliest <= slot:
        return _light_minute(config_path, quiet, slot, state_dir, db_path, known, bool(others))
    if not quiet:
        sys.stdout.write(idle_notices(state_dir, why))
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(slot))
        nxt = (
            ""
            if earliest is None
            else f"; next slot {time.strftime('%Y-%m-%d %H:%M', time.gmtime(earliest))} UTC"
        )
        sys.stdout.write(f"icc run: nothing due at {when} UTC{nxt}\n")
    return 0


def _light_minute(
    config_path: str | None,
    quiet: bool,
    slot: int,
    state_dir: str,
    db_path: str,
    known: dict[str, object] | None = None,
    others: bool = False,
) -> int | None:
    """Something is due: when it is only the consumer cron jobs, :mod:`icc.tick.light` may run the minute;
    with other jobs due, :mod:`icc.tick.plain` may, when they are plain foreground or background jobs
    (:mod:`icc.tick.background` starts these; not in a framework project: its tasks run inside the framework)."""
    if not quiet:  # the full tick prints its table
        return None
    if others:
        if known is not None:
            return None
        from icc.tick.background import try_minute  # lazy: only a minute with a job other than a consumer due

        return try_minute(config_path, slot, state_dir, db_path)
    from icc.tick.light import try_light_minute  # lazy: only a minute with something due

    return try_light_minute(config_path, slot, state_dir, db_path, known)


# --- what every tick notices cheaply: a stuck tick lock, plugins changed since the scan (stat calls only) ----


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
    from icc.plugins import installed_fingerprint  # lazy: only when a drift check is asked for

    return "installed plugin distributions changed" if scanned != installed_fingerprint(config) else None


def refreshed_stamp(stamp: str) -> str:
    """``stamp`` with its package directories' mtimes as they are now (their change was not a plugin's)."""
    import contextlib  # lazy: the full tick's: the idle path never refreshes

    lines = stamp.split("\n")
    for i, line in enumerate(lines):
        kind, _, rest = line.partition("\t")
        if kind == "dir":
            path = rest.split("\t")[0]
            with contextlib.suppress(OSError):  # gone: drift() says so
                lines[i] = f"dir\t{path}\t{os.stat(path).st_mtime_ns}"
    return "\n".join(lines)
