"""Property tests of every(), once() and unless_between(): runs strictly increasing, every() spaced exactly n
real minutes across DST changes in several zones, unless_between() never yielding a time in its window, once()
yielding one run, and is_due, next_run and DueIndex agreeing."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from icc import Schedule
from icc.cron import DueIndex

MINUTE = timedelta(minutes=1)
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # a 30-minute shift
    "America/Nuuk",  # a gap at midnight
    "Pacific/Chatham",  # changes at 02:45
    "Asia/Kolkata",  # +05:30, no DST
]
# Around DST changes of the zones above (UTC), so that generated instants often straddle one.
TRANSITIONS = [
    datetime(2025, 3, 30, 1, 0, tzinfo=UTC),
    datetime(2025, 10, 26, 1, 0, tzinfo=UTC),
    datetime(2025, 3, 9, 7, 0, tzinfo=UTC),
    datetime(2025, 11, 2, 6, 0, tzinfo=UTC),
    datetime(2025, 4, 5, 15, 0, tzinfo=UTC),
    datetime(2025, 10, 4, 15, 30, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    datetime(2025, 9, 27, 14, 0, tzinfo=UTC),
    datetime(2025, 4, 5, 14, 0, tzinfo=UTC),
]
PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

zones = st.sampled_from(ZONES)
periods = st.one_of(st.integers(1, 200), st.sampled_from([59, 61, 90, 120, 1439, 1440, 1441, 2160, 10080]))
clock = st.tuples(st.integers(0, 23), st.integers(0, 59)).map(lambda hm: f"{hm[0]:02d}:{hm[1]:02d}")


@st.composite
def instants(draw: st.DrawFn) -> datetime:
    base = draw(st.sampled_from(TRANSITIONS))
    return base + timedelta(seconds=draw(st.integers(-2 * 86400, 2 * 86400)))


def minutes_of_day(text: str) -> int:
    hour, minute = text.split(":")
    return int(hour) * 60 + int(minute)


def in_window(local: datetime, window: tuple[str, str]) -> bool:
    start, end = (minutes_of_day(t) for t in window)
    mod = local.hour * 60 + local.minute
    return start <= mod <= end if start <= end else (mod >= start or mod <= end)


@PROFILE
@given(zone=zones, period=periods, anchor=instants(), after=instants())
def test_every_is_spaced_exactly_n_real_minutes_across_dst(
    zone: str, period: int, anchor: datetime, after: datetime
) -> None:
    schedule = Schedule(default_timezone=zone).every(minutes=period).starting(anchor)
    runs = schedule.next_runs(after, 6)
    assert len(runs) == 6
    start = anchor.replace(second=0, microsecond=0) + (
        MINUTE if anchor.second or anchor.microsecond else timedelta()
    )
    utc = [r.astimezone(UTC) for r in runs]
    assert utc[0] > after.replace(second=0, microsecond=0) and utc[0] >= start
    assert all(b - a == timedelta(minutes=period) for a, b in itertools.pairwise(utc))
    assert all((u - start) % timedelta(minutes=period) == timedelta() for u in utc)
    assert all(r.utcoffset() == r.astimezone(ZoneInfo(zone)).utcoffset() for r in runs)
    assert all(schedule.is_due(r) for r in runs)
    # Nothing in between is due: the minute after each run, and the one before the next.
    for a, b in itertools.pairwise(utc):
        if b - a > MINUTE:
            assert not schedule.is_due(a + MINUTE) and not schedule.is_due(b - MINUTE)


@PROFILE
@given(zone=zones, period=periods, after=instants(), window=st.tuples(clock, clock))
def test_every_with_unless_between_never_runs_in_the_window(
    zone: str, period: int, after: datetime, window: tuple[str, str]
) -> None:
    schedule = Schedule(default_timezone=zone).every(minutes=period).unless_between(*window)
    runs = schedule.next_runs(after, 5)
    utc = [r.astimezone(UTC) for r in runs]
    assert all(a < b for a, b in itertools.pairwise(utc))
    for run in runs:
        assert not in_window(run.astimezone(ZoneInfo(zone)), window)
        assert int(run.timestamp()) // 60 % period == 0
        assert schedule.is_due(run)


WILDCARD_EXPRESSIONS = [
    "* * * * *",
    "*/5 * * * *",
    "*/7 * * * *",
    "0 * * * *",
    "15,45 * * * *",
    "*/10 9-17 * * *",
]


@PROFILE
@given(
    zone=zones,
    expression=st.sampled_from(WILDCARD_EXPRESSIONS),
    after=instants(),
    window=st.tuples(clock, clock),
)
def test_unless_between_never_yields_a_time_in_the_window(
    zone: str, expression: str, after: datetime, window: tuple[str, str]
) -> None:
    # Wildcard rules run at their wall-clock times; a fixed rule's run swallowed by a spring-forward gap belongs to
    # its scheduled time (docs/schedules.md), which is what between() and unless_between() read.
    schedule = Schedule(default_timezone=zone).cron(expression).unless_between(*window)
    runs = schedule.next_runs(after, 8)
    utc = [r.astimezone(UTC) for r in runs]
    assert all(a < b for a, b in itertools.pairwise(utc))
    for run in runs:
        assert not in_window(run.astimezone(ZoneInfo(zone)), window), (run, window)
        assert schedule.is_due(run)
    # is_due agrees with next_run on each minute of the stretch it covers.
    if runs:
        minute = after.astimezone(UTC).replace(second=0, microsecond=0) + MINUTE
        due = set(utc)
        while minute <= utc[0]:
            assert schedule.is_due(minute) == (minute in due), minute
            minute += MINUTE * 7  # a sample of the minutes up to the first run


@PROFILE
@given(
    zone=zones,
    start=instants(),
    after=instants(),
    expression=st.sampled_from(["* * * * *", "30 2 * * *", "0 */3 * * *"]),
)
def test_once_yields_exactly_its_first_run_from_starting(
    zone: str, start: datetime, after: datetime, expression: str
) -> None:
    schedule = Schedule(default_timezone=zone).cron(expression).once().starting(start)
    plain = Schedule(default_timezone=zone).cron(expression)
    first = plain.next_run(start - timedelta(seconds=start.second, microseconds=start.microsecond) - MINUTE)
    if start.second or start.microsecond:
        first = plain.next_run(start)
    assert first is not None
    runs = schedule.next_runs(after, 3)
    assert runs == (
        [first] if first.astimezone(UTC) > after.astimezone(UTC).replace(second=0, microsecond=0) else []
    )
    assert schedule.is_due(first)
    assert not schedule.is_due(first + MINUTE) and not schedule.is_due(first - MINUTE)


@PROFILE
@given(
    zone=zones,
    slot=instants(),
    period=periods,
    window=st.tuples(clock, clock),
    anchor=instants(),
)
def test_due_index_agrees_with_is_due_for_counted_schedules(
    zone: str, slot: datetime, period: int, window: tuple[str, str], anchor: datetime
) -> None:
    schedules = [
        Schedule(default_timezone=zone).every(minutes=period).starting(anchor),
        Schedule(default_timezone=zone).every(minutes=period).unless_between(*window),
        Schedule(default_timezone=zone).every_minutes(5).unless_between(*window),
        Schedule(default_timezone=zone).once().starting(anchor),
        Schedule(default_timezone=zone).daily().at(2, 30).starting(anchor),
    ]
    minute = slot.replace(second=0, microsecond=0)
    due = DueIndex(schedules).due(minute)
    assert due == [i for i, s in enumerate(schedules) if s.matches(minute)]
