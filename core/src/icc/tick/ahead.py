"""The next slots of the plain jobs the light minute runs (:mod:`icc.tick.plain`), kept by the full tick.

A plain job's row in ``light_jobs`` (written by ``icc scan``) holds its next :data:`SLOTS_AHEAD` slots, each
with its ``HH:MM`` in the job's zone (``'epoch@HH:MM,...'``), computed with the job's own
:class:`icc.Schedule`: the light minute writes a job's next slot from them without importing ``icc.cron``,
``datetime`` or ``zoneinfo``. The full tick keeps them (:func:`refresh_slots`) for the vouched jobs it ran,
and only those: a list that ran out (or was never made) makes the light minute leave that job's minute to
the full tick, which makes a new one. Stdlib only: the light minute reads the lists with :func:`following`.
"""

from __future__ import annotations

import sqlite3

TYPE_CHECKING = False  # not typing's: the light minute does not import typing
if TYPE_CHECKING:
    from collections.abc import Sequence

    from icc.schedule import Schedule

TABLE = "light_jobs"
SLOTS_AHEAD = 32  # the next slots a full tick stores for a vouched job it ran


def next_slots(schedule: Schedule, first: int, count: int = SLOTS_AHEAD) -> list[int]:
    """``first`` and the ``count - 1`` slots that follow it by ``schedule`` (fewer when it ends)."""
    from datetime import UTC, datetime  # lazy: the full tick's

    found = [first]
    rule = schedule.time_rule
    cursor = datetime.fromtimestamp(first, tz=UTC)
    while len(found) < count:
        nxt = rule.next_after(cursor)
        if nxt is None:
            break
        ts = int(nxt.timestamp())
        found.append(ts - ts % 60)
        cursor = datetime.fromtimestamp(found[-1], tz=UTC)
    return found


def slots_text(schedule: Schedule, first: int) -> str:
    """The stored list from ``first`` on: ``'epoch@HH:MM,...'``, each slot's time in the job's zone."""
    from datetime import UTC, datetime  # lazy: the full tick's
    from zoneinfo import ZoneInfo  # lazy: as above

    zone = ZoneInfo(schedule.zone)
    return ",".join(
        f"{s}@{datetime.fromtimestamp(s, tz=UTC).astimezone(zone).strftime('%H:%M')}"
        for s in next_slots(schedule, first)
    )


def refresh_slots(db_path: str, ran: Sequence[tuple[str, Schedule, int | None]]) -> None:
    """The full tick, for the vouched jobs it ran (name, schedule, the ``next_due`` it wrote): a new list of
    next slots where the stored one does not go on after that ``next_due``. One read of those jobs' rows, a
    write only for the lists that ran out. Never fails the tick (the light minute then does not apply)."""
    import contextlib  # lazy: the full tick's

    wanted = {name: (schedule, nxt) for name, schedule, nxt in ran if nxt is not None}
    if not wanted:
        return
    with contextlib.suppress(sqlite3.Error):
        db = _connect(db_path)
        try:
            marks = ", ".join("?" for _ in wanted)
            stored = db.execute(f"SELECT name, slots FROM {TABLE} WHERE name IN ({marks})", list(wanted))
            updates = []
            for name, slots in stored.fetchall():
                schedule, nxt = wanted[name]
                if following(str(slots), nxt) is not None:
                    continue
                updates.append((slots_text(schedule, nxt), name))
            if updates:
                _write(db, f"UPDATE {TABLE} SET slots = ? WHERE name = ?", updates)
        finally:
            db.close()


def following(slots: str, slot: int) -> tuple[int, str] | None:
    """The slot after ``slot`` in a stored list, and ``slot``'s ``HH:MM``; None when the list does not go on."""
    mark = f"{slot}@"
    start = slots.find(mark)
    if start < 0 or (start and slots[start - 1] != ","):
        return None
    end = slots.find(",", start)
    if end < 0:
        return None  # the last one: the full tick makes a new list
    after = slots[end + 1 :].partition(",")[0]
    nxt = after.partition("@")[0]
    return (int(nxt), slots[start + len(mark) : end]) if nxt.isdigit() else None


# The light paths' connection and write (icc.tick.light and icc.tick.plain use these too): this module is the
# smallest they all load.
def _connect(db_path: str) -> sqlite3.Connection:
    db = sqlite3.connect(db_path, timeout=30.0, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")  # as icc.store.sqlite.state opens it
    return db


def _write(db: sqlite3.Connection, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(sql, rows)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
