"""What the dashboard draws: times and durations as text, a run's output with its ANSI colours made safe, the
timeline and the duration chart as server-rendered SVG. Every piece of stored text goes through
:func:`markupsafe.escape`; colours become CSS classes (the CSP allows no inline style)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

NONE = "\u2013"  # an en dash: no value
OUTCOME_CLASSES = {
    "succeeded": "ok",
    "failed": "bad",
    "timed_out": "bad",
    "abandoned": "bad",
    "stopped": "bad",
    "missed": "missed",
    "skipped": "skipped",
    "running": "running",
    "pending": "running",
    "started": "running",
}


def outcome_class(outcome: str | None) -> str:
    return OUTCOME_CLASSES.get(outcome or "", "none")


def fmt_time(epoch: float | None, zone: str) -> str:
    if epoch is None:
        return NONE
    return datetime.fromtimestamp(epoch, tz=UTC).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(epoch: float | None, zone: str) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, tz=UTC).astimezone(ZoneInfo(zone)).isoformat()


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def fmt_age(epoch: float | None, now: float) -> str:
    if epoch is None:
        return NONE
    ago = now - epoch
    if ago < 0:
        return "in " + fmt_duration(-ago)
    return fmt_duration(ago) + " ago"


# -- ANSI output ---------------------------------------------------------------------------------------------------

_ESCAPE = re.compile(r"\x1b\[([0-9;?]*)([ -/]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_COLOURS = {**{30 + i: f"fg{i}" for i in range(8)}, **{90 + i: f"fg{i}b" for i in range(8)}}


def ansi_html(text: str) -> Markup:
    """``text`` as HTML: escaped, SGR colours and bold as ``<span class="ansi-...">``, every other escape
    sequence and control character (but newline and tab) removed."""
    text = text.replace("\r\n", "\n")
    out: list[str] = []
    classes: list[str] = []
    pos = 0

    def emit(chunk: str) -> None:
        if not chunk:
            return
        body = str(escape(_CONTROLS.sub("", chunk)))
        out.append(f'<span class="{" ".join(classes)}">{body}</span>' if classes else body)

    for match in _ESCAPE.finditer(text):
        emit(text[pos : match.start()])
        pos = match.end()
        params, between, final = match.group(1), match.group(2), match.group(3)
        if final != "m" or between or "?" in (params or ""):
            continue  # not a colour: cursor moves, titles, ... are dropped
        for part in (params or "0").split(";"):
            code = int(part) if part.isdigit() else 0
            if code == 0:
                classes = []
            elif code == 1:
                classes = [*classes, "ansi-bold"]
            elif code in _COLOURS:
                classes = [c for c in classes if not c.startswith("ansi-fg")] + [f"ansi-{_COLOURS[code]}"]
            elif code == 39:
                classes = [c for c in classes if not c.startswith("ansi-fg")]
    emit(text[pos:])
    return Markup("".join(out))  # noqa: S704 (every piece of text went through escape())


# -- SVG -------------------------------------------------------------------------------------------------------------

TIMELINE_NAME_WIDTH = 220
TIMELINE_WIDTH = 960
ROW = 18


def timeline_svg(rows: Sequence[dict[str, Any]], start: float, cell_minutes: int, zone: str) -> Markup:
    """Jobs by time: each row a job, runs of neighbouring cells with the same outcome one bar coloured by it
    (missed and skipped too); hour ticks on top. Job names are escaped and link to the job page."""
    count = max((len(r["cells"]) for r in rows), default=0) or 1
    width = TIMELINE_WIDTH - TIMELINE_NAME_WIDTH
    cell_w = width / count
    height = 24 + ROW * len(rows)
    parts = [
        f'<svg class="timeline" viewBox="0 0 {TIMELINE_WIDTH} {height}" width="{TIMELINE_WIDTH}" height="{height}" '
        'role="img" aria-label="Runs by time, one row per job">'
    ]
    cell_s = cell_minutes * 60
    step = max(1, round(count / 12))
    for i in range(0, count, step):
        x = TIMELINE_NAME_WIDTH + i * cell_w
        label = (
            datetime.fromtimestamp(start + i * cell_s, tz=UTC).astimezone(ZoneInfo(zone)).strftime("%H:%M")
        )
        parts.append(f'<line class="tick" x1="{x:.1f}" y1="16" x2="{x:.1f}" y2="{height}"/>')
        parts.append(f'<text class="tick-label" x="{x + 2:.1f}" y="12">{label}</text>')
    for n, row in enumerate(rows):
        y = 20 + n * ROW
        name = str(row["name"])
        parts.append(
            f'<a href="/jobs/{escape(quote(name, safe=""))}"><text class="job-label" x="4" y="{y + 12}">'
            f"{escape(name[:34] + ('…' if len(name) > 34 else ''))}<title>{escape(name)}</title></text></a>"
        )
        cells = row["cells"]
        i = 0
        while i < len(cells):
            outcome = cells[i]
            j = i + 1
            while j < len(cells) and cells[j] == outcome:
                j += 1
            if outcome is not None:
                x = TIMELINE_NAME_WIDTH + i * cell_w
                begin = datetime.fromtimestamp(start + i * cell_s, tz=UTC).astimezone(ZoneInfo(zone))
                parts.append(
                    f'<rect class="bar o-{outcome_class(outcome)}" x="{x:.1f}" y="{y + 2}" '
                    f'width="{max(cell_w * (j - i) - 0.5, 1):.1f}" height="{ROW - 4}">'
                    f"<title>{escape(name)}: {escape(outcome)} from {begin:%H:%M}</title></rect>"
                )
            i = j
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every piece of text went through escape())


def duration_svg(points: Sequence[tuple[int, float | None, str]]) -> Markup:
    """Bars of the durations of a job's recent runs, oldest left: ``(run id, seconds, outcome)``."""
    width, height, pad = 600, 140, 28
    shown = [p for p in points if p[1] is not None]
    if not shown:
        return Markup('<p class="muted">No finished runs to chart yet.</p>')
    top = max(p[1] or 0.0 for p in shown) or 1.0
    bar = min(24.0, (width - pad) / len(shown))
    parts = [
        f'<svg class="durations" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="Durations of the last {len(shown)} runs">',
        f'<text class="tick-label" x="0" y="10">{escape(fmt_duration(top))}</text>',
        f'<line class="tick" x1="{pad}" y1="{height - 14}" x2="{width}" y2="{height - 14}"/>',
    ]
    for i, (run_id, seconds, outcome) in enumerate(shown):
        h = max(1.0, (height - 30) * (seconds or 0.0) / top)
        x = pad + i * bar
        parts.append(
            f'<a href="/runs/{run_id}"><rect class="bar o-{outcome_class(outcome)}" x="{x:.1f}" '
            f'y="{height - 14 - h:.1f}" width="{max(bar - 1, 1):.1f}" height="{h:.1f}">'
            f"<title>run {run_id}: {escape(fmt_duration(seconds))} ({escape(outcome)})</title></rect></a>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every piece of text went through escape())
