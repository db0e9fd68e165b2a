"""``icc work``: the foreground scheduler, for containers, development and systemd (``icc-scheduler.service``).

At every minute boundary (second 0, computed from the wall clock each time, so it never drifts) it runs the
same :class:`icc.tick.coordinator.Tick` as ``icc run`` from crontab: tick lock, claims, watermark, background runs as
detached supervisors that outlive ``icc work``. It also ticks once at start, for the minute it started in (the
claims keep that from running anything a cron tick already ran). A tick whose foreground jobs run past the
next boundary is followed at once by a tick for the minute it ended in (late, as a cron tick on a busy host);
the boundaries it ran past are not ticked one by one: that tick's missed-slot policy handles their slots, as
for a host that was down.

SIGTERM/SIGINT/SIGHUP: nothing new is started; a running foreground job may finish within ``grace`` seconds, then it
is stopped as ``icc run`` stops it (SIGTERM to its process group, SIGKILL after ``grace``); a second signal
stops it at once. Then ``icc work`` exits 0.

For tests, ``period`` makes a "minute" last that many seconds: the ticks then see a scaled clock
(:func:`scaled`), the same in every process, so several ``icc work`` and ``icc run --at`` agree on the slot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from icc import logs
from icc.cli import render as ui
from icc.errors import IccError
from icc.supervise.supervisor import STOP, install_stop_handlers, stop_requested
from icc.tick.coordinator import Tick

if TYPE_CHECKING:
    from types import FrameType

    from icc.config import Config
    from icc.tick.coordinator import TickReport

MINUTE = 60.0
# The origin of the scaled test clock (2026-01-01 00:00 UTC, a minute boundary): real and scaled time meet here.
ANCHOR = 1_767_225_600
NAP = 0.5  # longest sleep between looks at the stop flag


def scaled(real: float, period: float) -> float:
    """The scheduler's time at real time ``real`` when a minute lasts ``period`` seconds (60: the real time)."""
    return ANCHOR + (real - ANCHOR) * MINUTE / period


def minute_index(real: float, period: float) -> int:
    """Which minute real time ``real`` falls in, counted from :data:`ANCHOR`; minute ``n`` starts at
    ``ANCHOR + n * period``."""
    return int((real - ANCHOR) // period)


def wait_until(moment: float) -> None:
    """Sleep until the wall clock reaches ``moment``, or until a stop is requested."""
    while not stop_requested() and (left := moment - time.time()) > 0:
        reap()
        time.sleep(min(left, NAP))


def reap() -> None:
    """Collect exited children. As a container's pid 1, ``icc work`` adopts the background supervisors its
    ticks orphaned on purpose (their intermediate process), which would stay zombies. Between ticks it has no
    child of its own, so nothing a tick waits for is taken from it."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def show(report: TickReport, zone: str, *, quiet: bool) -> None:
    """The tick's table (as ``icc run`` prints it); with ``quiet`` only when a job failed. Idle minutes print
    nothing."""
    if report.locked_out:
        holder = report.held_by
        who = "its holder did not say who" if holder is None else f"pid {holder.pid} on {holder.host}"
        if not quiet:
            ui.say(f"icc work: another tick is running ({who}); waiting for the next minute")
        return
    for failure in report.plugin_failures:
        logs.logger.warning("plugin %s", failure)
    if not report.rows or (quiet and not report.failed):
        return
    ui.tick_table(f"icc work {ui.fmt_time(report.slot, zone)} ({zone})", report.rows, zone)


def announce_signals(grace: float) -> None:
    """Say in the log what a stop signal does, from the handler itself (``os.write``: no buffer to re-enter)."""
    stop = signal.getsignal(signal.SIGTERM)
    assert callable(stop)

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop_requested():
            line = f"icc work: received {name} again: stopping the running job now\n"
        else:
            line = (
                f"icc work: received {name}: starting nothing new; a running job may finish within {grace:g}s "
                "(a second signal stops it now)\n"
            )
        stop(signum, frame)
        with contextlib.suppress(OSError):
            os.write(sys.stdout.fileno(), line.encode())

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    # SIGHUP (the terminal closed, or a service manager's reload) stops it the same way, with its stop line; the
    # processes it forks (tasks, supervisors) get the default action back, as from cron.
    signal.signal(signal.SIGHUP, handler)
    os.register_at_fork(after_in_child=_default_sighup)


def _default_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def work(config: Config, *, quiet: bool = False, period: float = MINUTE) -> int:
    """Tick at every minute boundary until SIGTERM/SIGINT/SIGHUP; returns the exit code (0).

    An error in the first tick (a store never scanned, a broken state directory) is raised: the set-up is
    wrong. A later one is printed and the loop goes on with the next minute.
    """

    install_stop_handlers(patience=config.grace)
    STOP.who = "icc work"
    announce_signals(config.grace)
    every = "every minute" if period == MINUTE else f"every {period:g}s (a scaled clock, for tests)"
    ui.say(f"icc work: started, pid {os.getpid()}, ticking {every}; state in {config.state_dir}")
    flush()
    first = True
    while not stop_requested():
        now = time.time()
        minute = minute_index(now, period)
        at = None if period == MINUTE else datetime.fromtimestamp(scaled(now, period), tz=UTC)
        try:
            tick = Tick(config, at=at)
            try:
                report = tick.run()
            finally:
                tick.store.close()
        except IccError as exc:
            if first:
                raise
            logs.logger.error("%s", exc)
        else:
            show(report, config.timezone, quiet=quiet)
        first = False
        flush()
        # A tick that ran into a later minute (a long foreground job) is followed at once by that minute's tick;
        # the boundaries it ran past are not ticked one by one: that tick's missed-slot policy takes them.
        if minute_index(time.time(), period) == minute:
            wait_until(ANCHOR + (minute + 1) * period)
    ui.say(f"icc work: stopped ({STOP.signum.name}), exiting")
    flush()
    return 0


def flush() -> None:
    """Lines reach the log (a pipe, the journal) after each tick, not when a buffer fills."""
    sys.stdout.flush()
    sys.stderr.flush()
