"""``icc pause``: kept in the state store's meta table under one key, so every tick sees it.

The value is JSON ``{"since": epoch, "until": epoch | null, "reason": text | null, "queues": bool}``. The idle
fast path reads the same key (by name, without importing this module) and hands a paused store to the full
tick, which records the due slots ``skipped`` with the error ``paused``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from icc.store.protocol import StateStore

META_KEY = "pause"
PAUSED_ERROR = "paused"  # the error of the slots a paused tick skipped: status shows "skipped (paused)"
CONSUMER_PREFIX = "consume:"  # the built-in consumer jobs: they keep running unless the queues are paused too


@dataclass(frozen=True)
class Pause:
    since: float
    until: float | None = None
    reason: str | None = None
    queues: bool = False

    def in_force(self, at: float) -> bool:
        return self.until is None or at < self.until

    def exempts(self, job: str, even_when_paused: bool) -> bool:
        """Whether ``job`` runs anyway during this pause."""
        if job.startswith(CONSUMER_PREFIX) and not self.queues:
            return True
        return even_when_paused and not (self.queues and job.startswith(CONSUMER_PREFIX))


def parse(value: str | None) -> Pause | None:
    """The stored pause, or None; a value icc cannot read counts as a pause without an end (fail safe)."""
    if value is None:
        return None
    try:
        data = json.loads(value)
        return Pause(
            since=float(data["since"]),
            until=None if data.get("until") is None else float(data["until"]),
            reason=None if data.get("reason") is None else str(data["reason"]),
            queues=bool(data.get("queues", False)),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return Pause(since=0.0, reason=f"unreadable pause record {value[:80]!r}; `icc resume` clears it")


def current(store: StateStore, at: float) -> Pause | None:
    """The pause in force at ``at`` (epoch seconds), or None (an expired one is not in force)."""
    pause = parse(store.get_meta(META_KEY))
    return pause if pause is not None and pause.in_force(at) else None


def set_pause(store: StateStore, pause: Pause) -> None:
    value = json.dumps(asdict(pause))
    store.update_meta(META_KEY, lambda old: value)


def clear(store: StateStore) -> Pause | None:
    """End the pause; the one that was stored (in force or expired), or None."""
    old = parse(store.get_meta(META_KEY))
    store.update_meta(META_KEY, lambda value: None)
    return old


def clear_expired(store: StateStore, at: float) -> None:
    """Remove a pause that ended before ``at`` (only that one: a pause set meanwhile stays)."""

    def change(value: str | None) -> str | None:
        pause = parse(value)
        return None if pause is not None and not pause.in_force(at) else value

    store.update_meta(META_KEY, change)
