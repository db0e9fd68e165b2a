"""Slots: the minute a tick is for, and a slot or time as people read it.

A leaf: the idle tick (:mod:`icc.tick.idle`, :mod:`icc.store.postgres.idle`) imports it, so it imports only
``time`` at import time; the tick's messages (:mod:`icc.tick.coordinator`) and the CLI's tables
(:mod:`icc.cli.render`) format slots with it.
"""

from __future__ import annotations

import time


def tick_slot(at: str | None, timezone: str) -> int | None:
    """The minute a tick at ``at`` (``--at``, naive times in ``timezone``; None: now) is for, in epoch seconds;
    None outside what icc schedules (the full command says so). Raises ValueError for a malformed ``at``."""
    if at is None:
        now = time.time()
    else:
        from datetime import datetime  # lazy: only --at; the idle tick without it imports time only

        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            from zoneinfo import ZoneInfo  # lazy: as above

            moment = moment.replace(tzinfo=ZoneInfo(timezone))
        now = moment.timestamp()
    slot = int(now) - int(now) % 60
    return slot if 86400 <= slot <= 253402300740 else None


def fmt_time(epoch: float | None, zone: str) -> str:
    if epoch is None:
        return "-"
    from datetime import UTC, datetime  # lazy: the idle tick imports this module, and never formats
    from zoneinfo import ZoneInfo  # lazy: as above

    return datetime.fromtimestamp(epoch, tz=UTC).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def fmt_slot(slot: int | None, zone: str) -> str:
    """A run's slot: its minute, with the seconds for a sub-minute job's offset (``2026-03-29 10:00:15``)."""
    if slot is None or slot % 60 == 0:
        return fmt_time(slot, zone)
    from datetime import UTC, datetime  # lazy: as in fmt_time
    from zoneinfo import ZoneInfo  # lazy: as in fmt_time

    return datetime.fromtimestamp(slot, tz=UTC).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
