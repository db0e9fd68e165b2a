"""This host's clock against the shared store's: measured by every full tick, warned about, refused past a bound.

Leases and "last seen" use the database server's clock, but a tick's slot (the minute it evaluates) comes from the
host's own clock. On a store several hosts share, every full tick (and ``icc consume``) records its host in the
``hosts`` table with the offset of its clock (host minus server, half the query's round trip accounted). Past
:data:`WARN_SECONDS` the tick warns in one line and ``icc status`` / ``icc metrics`` show the offset; past
:data:`REFUSE_SECONDS` the tick claims nothing and exits 2: a host a minute off would claim the wrong slots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from icc.errors import StateError
from icc.locks import hostname
from icc.logs import logger

if TYPE_CHECKING:
    from icc.store.protocol import StateStore

__all__ = ["REFUSE_SECONDS", "WARN_SECONDS", "check", "describe", "skewed"]

WARN_SECONDS = 5.0  # |offset| above this: warned about (tick, status, metrics)
REFUSE_SECONDS = 60.0  # |offset| above this: the tick claims nothing (a slot is a minute)

FIX = "sync this host's clock with NTP (chrony: `chronyc tracking`; `timedatectl set-ntp true`)"


def skewed(offset: float) -> bool:
    return abs(offset) > WARN_SECONDS


def describe(offset: float) -> str:
    """``"7.2 s ahead of"`` / ``"90.0 s behind"`` the database server's clock."""
    return f"{abs(offset):.1f} s {'ahead of' if offset > 0 else 'behind'}"


def check(store: StateStore, *, refuse: bool = True) -> float | None:
    """Record this host on a shared store and judge its clock: warn past :data:`WARN_SECONDS`; past
    :data:`REFUSE_SECONDS` raise a :class:`StateError` (when ``refuse``). Returns the offset (None: one host)."""
    offset = store.register_host(hostname())
    if offset is None or not skewed(offset):
        return offset
    if refuse and abs(offset) > REFUSE_SECONDS:
        raise StateError(
            f"this host's clock is {describe(offset)} the database server's (more than {REFUSE_SECONDS:.0f} s): "
            f"nothing was claimed; {FIX}"
        )

    logger.warning(
        "this host's clock is %s the database server's (more than %.0f s; past %.0f s ticks refuse to run): %s",
        describe(offset),
        WARN_SECONDS,
        REFUSE_SECONDS,
        FIX,
    )
    return offset
