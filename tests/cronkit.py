"""Shared pieces of the cron property tests: generated expressions, cronsim as the oracle, real tz transitions."""

from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError
from hypothesis import strategies as st

MINUTE = timedelta(minutes=1)

# The years scanned for transitions in every zone, and older transitions worth keeping because they are odd:
# Apia skipped 30 December 2011 (-10 to +14), Kiritimati skipped 31 December 1994 (a gap that ends in another
# year), Sofia's gap of 1979 ran from 23:00 on 31 March to 00:00 on 1 April (another month), Singapore's from
# 23:30 on 31 December 1981 to 00:00 on 1 January, Toronto's of 1919 from 23:30 to 00:30 (across midnight),
# Goose Bay and St. John's repeated 23:01-00:00 across midnight (Goose Bay two hours in 1988), and Pyongyang and
# Caracas moved by 30 minutes.
YEARS = (2019, 2031)
EXTRA = {
    "Pacific/Apia": (2011, 2012),
    "Pacific/Kiritimati": (1994, 1996),
    "Europe/Sofia": (1979, 1980),
    "Asia/Singapore": (1981, 1983),
    "America/Toronto": (1919, 1920),
    "America/Goose_Bay": (1987, 1990),
    "America/St_Johns": (2009, 2012),
    "Asia/Pyongyang": (2015, 2019),
    "America/Caracas": (2007, 2017),
}
# Coarse step of the scan: two transitions closer than this (none in tzdata since 2000) would cancel out unseen.
SCAN_STEP = timedelta(days=2)


@dataclass(frozen=True)
class Transition:
    zone: str
    at: datetime  # the first UTC minute with the new offset
    before: timedelta
    after: timedelta

    @property
    def gap(self) -> bool:
        """Spring forward (wall-clock times skipped) rather than fall back (repeated)."""
        return self.after > self.before


def _scan(zone: zoneinfo.ZoneInfo, name: str, first: int, last: int) -> list[Transition]:
    t = datetime(first, 1, 1, tzinfo=UTC)
    end = datetime(last, 1, 1, tzinfo=UTC)
    found: list[Transition] = []
    prev = t.astimezone(zone).utcoffset()
    assert prev is not None
    while t < end:
        nxt = t + SCAN_STEP
        off = nxt.astimezone(zone).utcoffset()
        assert off is not None
        if off != prev:
            lo, hi = t, nxt
            while hi - lo > MINUTE:  # bisect to the minute (every real transition is on a minute)
                mid = (lo + (hi - lo) / 2).replace(second=0, microsecond=0)
                if mid.astimezone(zone).utcoffset() == prev:
                    lo = mid
                else:
                    hi = mid
            found.append(Transition(name, hi, prev, off))
            prev = off
        t = nxt
    return found


@functools.cache
def transitions() -> dict[str, tuple[Transition, ...]]:
    """Every offset change of every zone in ``YEARS`` (and ``EXTRA``), by zone; zones without any are left out.

    Scanned once per process (about a second and a half for ~600 zones).
    """
    out: dict[str, tuple[Transition, ...]] = {}
    for name in sorted(zoneinfo.available_timezones()):
        zone = zoneinfo.ZoneInfo(name)
        found = _scan(zone, name, *YEARS)
        if name in EXTRA:
            found = _scan(zone, name, *EXTRA[name]) + found
        if found:
            out[name] = tuple(found)
    return out


@st.composite
def field(draw: st.DrawFn, low: int, high: int, star: float) -> str:
    """A cron field both croniter and cronsim read the same way (no wrapping or equal-with-step ranges)."""
    if draw(st.floats(0, 1)) < star:
        return "*"
    terms = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["n", "range", "star-step", "range-step"]))
        a = draw(st.integers(low, high))
        if kind == "n":
            terms.append(str(a))
        elif kind == "star-step":
            return f"*/{draw(st.integers(1, high))}"
        else:
            a = min(a, high - 1)
            b = draw(st.integers(a + 1, high))
            step = f"/{draw(st.integers(1, high))}" if kind == "range-step" else ""
            terms.append(f"{a}-{b}{step}")
    return ",".join(terms)


@st.composite
def day_of_week(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["*", "*", "plain", "nth", "last"]))
    if kind == "*":
        return "*"
    if kind == "nth":
        return f"{draw(st.integers(0, 7))}#{draw(st.integers(1, 5))}"
    if kind == "last":
        return f"L{draw(st.integers(0, 7))}"
    return draw(field(0, 7, 0))


@st.composite
def expressions(draw: st.DrawFn) -> str:
    day = "L" if draw(st.integers(0, 19)) == 0 else draw(field(1, 31, 0.6))
    parts = [
        draw(field(0, 59, 0.3)),
        draw(field(0, 23, 0.4)),
        day,
        draw(field(1, 12, 0.7)),
        draw(day_of_week()),
    ]
    return " ".join(parts)


def cronsim_iter(expression: str, after: datetime) -> CronSim:
    """cronsim over *expression* from *after* (aware, in the zone). cronsim writes "last Friday" as 5L, croniter
    as L5."""
    parts = expression.split()
    if parts[4].startswith("L"):
        parts[4] = parts[4][1:] + "L"
    return CronSim(" ".join(parts), after)


def cronsim_next(expression: str, after: datetime, count: int) -> list[datetime]:
    """cronsim's next runs strictly after *after*, in UTC."""
    out: list[datetime] = []
    try:
        it = cronsim_iter(expression, after)
        while len(out) < count:
            r = next(it).astimezone(UTC)
            # From the second pass of a repeated hour, cronsim may answer a fixed time at or before the start.
            if r > after.astimezone(UTC) and (not out or r > out[-1]):
                out.append(r)
    except (StopIteration, CronSimError):
        pass
    return out


def cronsim_between(expression: str, start: datetime, end: datetime) -> list[datetime]:
    """cronsim's runs in (start, end], in UTC."""
    out: list[datetime] = []
    try:
        it = cronsim_iter(expression, start)
        while True:
            r = next(it).astimezone(UTC)
            if r > end:
                return out
            if r > start.astimezone(UTC) and (not out or r > out[-1]):
                out.append(r)
    except (StopIteration, CronSimError):
        return out
