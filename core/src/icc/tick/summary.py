"""What ``icc run`` says about a tick, worded once for its two front ends: the due run of :mod:`icc.__main__`
(the stdlib; rich only on a terminal) and :func:`icc.cli.run` (click and rich). They print; this decides what:
the log warnings, the lines, the tick table's title and cells, the exit code. Stdlib only: the due minute
loads it."""

from __future__ import annotations

from icc.slots import fmt_duration, fmt_slot, fmt_time
from icc.tickwatch import LOCK_HELD_NOTICE, drift_line, held_for

TYPE_CHECKING = False  # not typing's: the due minute does not import typing for this
if TYPE_CHECKING:
    from collections.abc import Sequence

    from icc.tick.coordinator import TickReport, TickRow

TABLE_HEADER = ("job", "outcome", "slot", "took", "next run", "detail")


class RunSummary:
    """What to print of one tick: ``warnings`` (log lines), ``lines`` (said in order on stdout), ``table`` (the
    tick table's title, None for no table) and the command's ``exit_code``."""

    __slots__ = ("exit_code", "lines", "table", "warnings")

    def __init__(self, warnings: list[str], lines: list[str], table: str | None, exit_code: int) -> None:
        self.warnings = warnings
        self.lines = lines
        self.table = table
        self.exit_code = exit_code


def run_summary(report: TickReport, zone: str, *, quiet: bool) -> RunSummary:
    """What ``icc run`` prints of ``report`` (without ``--json``; that is :func:`icc.report.tick_data`)."""
    if report.locked_out:
        if quiet:  # not a failure: the tick that holds the lock evaluates the minute
            return RunSummary([], [], None, 0)
        holder = report.held_by
        who = (
            "its holder did not say who it is"
            if holder is None
            else f"pid {holder.pid} on {holder.host} since {fmt_time(holder.since, zone)}"
        )
        held = report.lock_held_for
        stuck = (
            f"; it has held the tick lock for {held_for(held)}: is it stuck? `icc status` shows it"
            if held is not None and held > LOCK_HELD_NOTICE
            else ""
        )
        return RunSummary([], [f"icc run: another tick is running ({who}){stuck}"], None, 0)
    warnings = [f"plugin {failure}" for failure in report.plugin_failures]
    if report.rescan:
        warnings.append(f"icc run: plugins changed, and the tick's own scan failed: {report.rescan}")
    lines = [drift_line(report.drift)] if report.drift is not None and not quiet else []
    if not report.rows:
        if not quiet:
            lines.append(f"icc run: nothing due at {fmt_time(report.slot, zone)} ({zone})")
        return RunSummary(warnings, lines, None, 0)
    table = f"icc run {fmt_time(report.slot, zone)} ({zone})" if not quiet or report.failed else None
    return RunSummary(warnings, lines, table, 1 if report.failed else 0)


def table_cells(rows: Sequence[TickRow], zone: str) -> list[list[str]]:
    """The tick table's cells, one row per run, under :data:`TABLE_HEADER`."""
    return [
        [
            r.job,
            r.outcome,
            fmt_slot(r.slot, zone),
            fmt_duration(r.duration),
            fmt_time(r.next_run, zone),
            r.detail,
        ]
        for r in rows
    ]
