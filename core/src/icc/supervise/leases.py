"""Keeping the leases of this process's runs on a store several hosts share, and knowing when one is lost.

A run on a shared store is owned by its host until its lease passes on the database server's clock; then any
host records it ``abandoned``. While a run is claimed or running, a thread renews its lease every ``lease / 3``
on a connection of its own, so a hung database never blocks the supervisor, and a supervisor never waits on a
renewal. A failed renewal is tried again on a new connection until one gets through or the next period is due.
The supervisor only asks :meth:`Leases.lost`: a run is lost when its renewal was refused (another host
recorded it abandoned) or when ``lease * 2 / 3`` has passed since the last renewal that succeeded, counted from
the moment that renewal was sent (so the server's lease ran at least as long). The supervisor then fences
itself: it stops the task (SIGTERM, at most ``lease / 6`` of grace, SIGKILL) before the lease can pass.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from icc.store.protocol import StateStore

FENCE_AFTER = 2 / 3  # of the lease, since the last renewal that succeeded: the run is lost, its task stopped
FENCE_GRACE = 1 / 6  # of the lease: the most SIGTERM-to-SIGKILL grace a fenced task gets
RETRY_PAUSE = 1 / 20  # of the renewal period: the pause between a failed renewal's further attempts


class Leases:
    """The leases of a set of runs of this process, renewed by a daemon thread while any is held."""

    def __init__(self, store: StateStore) -> None:
        lease = store.lease
        assert lease is not None
        self.lease = lease
        self.period = lease / 3
        self._store = store
        self._renewed: dict[int, float] = {}  # run id -> monotonic time the last good renewal was sent
        self._lost: dict[int, str] = {}
        self._problem = ""  # the last renewal's error
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def hold(self, run_id: int, since: float | None = None) -> None:
        """Keep renewing ``run_id``'s lease; ``since``: the monotonic time its lease was last set (default now)."""
        with self._lock:
            self._renewed.setdefault(run_id, time.monotonic() if since is None else since)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="icc-lease", daemon=True)
            self._thread.start()
        self._wake.set()

    def release(self, run_id: int) -> None:
        with self._lock:
            self._renewed.pop(run_id, None)
            self._lost.pop(run_id, None)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def lost(self, run_id: int) -> str | None:
        """Why this run's lease is lost (the task must stop now), or None while it holds."""
        with self._lock:
            if run_id in self._lost:
                return self._lost[run_id]
            since = self._renewed.get(run_id)
            problem = self._problem
        if since is None:
            return None
        waited = time.monotonic() - since
        if waited < self.lease * FENCE_AFTER:
            return None
        why = f": {problem}" if problem else " (the database did not answer)"
        return f"its lease could not be renewed for {waited:.1f}s of its {self.lease:g}s{why}"

    def _loop(self) -> None:
        while not self._stopped:
            with self._lock:
                ids = [i for i in self._renewed if i not in self._lost]
            if ids:
                self._renew(ids)
            self._wake.wait(self.period)
            self._wake.clear()

    def _renew(self, ids: list[int]) -> None:
        """One renewal of ``ids``. A failed one (a dropped connection: the idle one is found dead only when used,
        and a new one can be dropped too) is tried again on a new connection, at once and then every
        :data:`RETRY_PAUSE` of the period, until one gets through or the next period is due: a host whose
        connections keep being dropped keeps its runs' leases as long as any renewal gets through before
        the fence. A hung database is bounded by the connection's own timeouts."""
        until = time.monotonic() + self.period
        attempt = 0
        while True:
            sent = time.monotonic()
            try:
                kept = set(self._store.renew(ids))
            except Exception as exc:  # any failure is a failed renewal; the deadline decides
                with self._lock:
                    self._problem = str(exc)
                    ids = [i for i in ids if i in self._renewed and i not in self._lost]
                pause = 0.0 if attempt == 0 else self.period * RETRY_PAUSE
                attempt += 1
                if self._stopped or not ids or time.monotonic() + pause >= until:
                    return
                time.sleep(pause)
                continue
            with self._lock:
                self._problem = ""
                for run_id in ids:
                    if run_id not in self._renewed:
                        continue  # released meanwhile
                    if run_id in kept:
                        self._renewed[run_id] = sent
                    else:
                        self._lost[run_id] = (
                            "its lease was refused: another host recorded the run as abandoned"
                        )
            return
