"""Terminal rendering (rich): tables in a terminal, plain aligned text when stdout is not one.

rich is imported only when something is drawn on a terminal: a tick that starts jobs should not pay for it
before they start, and output to a pipe or cron mail never needs it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from icc.slots import fmt_duration as fmt_duration  # re-exported: ui.fmt_duration
from icc.slots import fmt_slot as fmt_slot  # re-exported: ui.fmt_slot
from icc.slots import fmt_time as fmt_time  # re-exported: ui.fmt_time
from icc.tick.summary import table_cells

if TYPE_CHECKING:
    from rich.console import Console

    from icc.tick.coordinator import TickRow

OUTCOME_STYLE = {
    "succeeded": "green",
    "started": "cyan",
    "running": "cyan",
    "pending": "cyan",
    "failed": "bold red",
    "timed_out": "bold red",
    "stopped": "red",
    "abandoned": "yellow",
    "skipped": "dim",
    "missed": "yellow",
    "added": "green",
    "changed": "yellow",
    "removed": "red",
    "pruned": "red",
    "restored": "green",
    "unchanged": "dim",
    "kept": "yellow",
}


def console(stderr: bool = False) -> Console:
    from rich.console import Console  # lazy: rich only for a terminal

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def plural(count: int, word: str, words: str | None = None) -> str:
    """``count`` and ``word``, in the plural unless it is one: "1 failed message", "2 failed messages"."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def is_terminal() -> bool:
    return sys.stdout.isatty()


# Control characters but line feed and tab (C0, DEL, C1), shown as \xNN: a job's output may hold escape
# sequences that clear the screen, rewrite lines or retitle the window of whoever reads it in a terminal.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c not in (0x09, 0x0A)}


def escape_controls(text: str) -> str:
    """``text`` with every control character but ``\\n`` and ``\\t`` written as ``\\xNN`` (``\\x1b``)."""
    return text.translate(_CONTROLS)


def for_terminal(text: str, raw: bool = False) -> str:
    """What ``icc status JOB`` and ``icc logs`` print of a job's text: escaped on a terminal unless ``raw``;
    unchanged into a pipe or file, where the bytes are what the reader asked for."""
    return text if raw or not is_terminal() else escape_controls(text)


@dataclass(frozen=True)
class Col:
    """A table column. ``keep``: never wrapped nor shortened (job names, times: one word each line); the other
    columns wrap or fold to the width left. ``wide``: shown only in terminals at least this many columns wide
    (what it shows is in ``icc status JOB`` and ``--json``); pipes and cron mail always get every column."""

    name: str
    keep: bool = False
    wide: int = 0


def table(
    title: str | None,
    columns: Sequence[str | Col],
    rows: Sequence[Sequence[str]],
    *,
    style_col: int = -1,
) -> None:
    """A rich table sized to the terminal; tab-free aligned plain text otherwise (pipes, logs, cron mail): full
    lines, never wrapped, since a mail reader wraps them itself."""
    cols = [c if isinstance(c, Col) else Col(c) for c in columns]
    if is_terminal():
        from rich import box  # lazy: rich only for a terminal
        from rich.table import Table  # lazy: as above

        out = console()
        shown = [i for i, c in enumerate(cols) if out.width >= c.wide]
        t = Table(
            title=title,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            padding=(0, 1, 0, 0),  # a column gap of two: " " and the box's " " separator
        )
        for i in shown:
            col = cols[i]
            if col.keep:
                longest = max((len(line) for r in rows for line in str(r[i]).splitlines()), default=0)
                t.add_column(col.name, no_wrap=True, min_width=max(longest, len(col.name)))
            else:
                t.add_column(col.name, overflow="fold")
        for row in rows:
            cells = list(row)
            if 0 <= style_col < len(cells) and cells[style_col] in OUTCOME_STYLE:
                style = OUTCOME_STYLE[cells[style_col]]
                cells[style_col] = f"[{style}]{cells[style_col]}[/]"
            t.add_row(*(cells[i] for i in shown))
        out.print(t)
        return
    grid = [[c.name for c in cols]]
    grid.extend([str(cell) for cell in row] for row in rows)
    widths = [max(map(len, col)) for col in zip(*grid, strict=False)]
    lines = [title] if title else []
    # One format and one write for all lines: 10,000 jobs are 10,000 lines (issue 17).
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    n = len(widths)
    lines.extend(
        (
            line.format(*row)
            if len(row) == n
            else "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
        ).rstrip()
        for row in grid
    )
    sys.stdout.write("\n".join(lines) + "\n")


def say(message: str, *, err: bool = False, style: str | None = None) -> None:
    if is_terminal() and not err:
        console().print(message, style=style, markup=False)
    else:
        (sys.stderr if err else sys.stdout).write(message + "\n")


def tick_table(title: str, rows: Sequence[TickRow], zone: str) -> None:
    """A tick's table, as ``icc run`` and ``icc work`` print it."""
    table(
        title,
        [
            Col("job", keep=True),
            Col("outcome", keep=True),
            Col("slot", keep=True),
            Col("took", keep=True),
            Col("next run", keep=True, wide=100),  # narrower: `icc status` shows it
            "detail",
        ],
        table_cells(rows, zone),
        style_col=1,
    )
