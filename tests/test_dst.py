"""Daylight saving time, Debian cron style: fixed-time jobs run once, wildcard jobs keep real-time cadence.

Real tz data, three zones: Europe/Berlin and America/New_York shift by an hour, Australia/Lord_Howe by 30 minutes.
Every case is checked through is_due, next_run, next_runs and DueIndex, which must all agree.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from icc import Schedule
from icc.cron import DueIndex

MINUTE = timedelta(minutes=1)

# (zone, local start, local end) around each 2025 transition, wide enough to hold a day on each side.
SPRING = {
    "Europe/Berlin": datetime(2025, 3, 29, 12, 0),
    "America/New_York": datetime(2025, 3, 8, 12, 0),
    "Australia/Lord_Howe": datetime(2025, 10, 4, 12, 0),
}
FALL = {
    "Europe/Berlin": datetime(2025, 10, 25, 12, 0),
    "America/New_York": datetime(2025, 11, 1, 12, 0),
    "Australia/Lord_Howe": datetime(2025, 4, 5, 12, 0),
}


def local(zone: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold)  # type: ignore[misc]


def due_by_stepping(s: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Every minute in (start, end] that is_due says runs, found the slow, obvious way."""
    out = []
    t = start.astimezone(UTC).replace(second=0, microsecond=0) + MINUTE
    while t <= end.astimezone(UTC):
        if s.is_due(t):
            out.append(t)
        t += MINUTE
    return out


def runs_until(s: Schedule, start: datetime, end: datetime) -> list[datetime]:
    out = []
    t: datetime | None = start
    while True:
        t = s.next_run(t)
        assert t is not None
        if t.astimezone(UTC) > end.astimezone(UTC):
            return out
        out.append(t.astimezone(UTC))


def assert_all_agree(s: Schedule, start: datetime, end: datetime) -> list[datetime]:
    stepped = due_by_stepping(s, start, end)
    assert runs_until(s, start, end) == stepped
    listed = [r.astimezone(UTC) for r in s.next_runs(start, len(stepped))]
    assert listed == stepped
    index = DueIndex([s, Schedule().every_minute()])
    t = start.astimezone(UTC).replace(second=0) + MINUTE
    while t <= end.astimezone(UTC):
        assert (0 in index.due(t)) is (t in stepped)
        t += MINUTE
    return stepped


def window(zone: str, days: dict[str, datetime]) -> tuple[datetime, datetime]:
    start = days[zone].replace(tzinfo=ZoneInfo(zone))
    return start, start + timedelta(days=2)


@pytest.mark.parametrize(
    ("zone", "expression", "expected"),
    [
        # Spring forward: a fixed time in the gap runs once, at the first minute after the gap.
        ("Europe/Berlin", "30 2 * * *", [(2025, 3, 30, 3, 0), (2025, 3, 31, 2, 30)]),
        ("America/New_York", "30 2 * * *", [(2025, 3, 9, 3, 0), (2025, 3, 10, 2, 30)]),
        ("Australia/Lord_Howe", "15 2 * * *", [(2025, 10, 5, 2, 30), (2025, 10, 6, 2, 15)]),
        # Several skipped times collapse into one run.
        (
            "Europe/Berlin",
            "0,15,30,45 2 * * *",
            [(2025, 3, 30, 3, 0)] + [(2025, 3, 31, 2, m) for m in (0, 15, 30, 45)],
        ),
        # A skipped time and an existing time at the same instant are one run, not two.
        (
            "Europe/Berlin",
            "30 2,3 * * *",
            [(2025, 3, 30, 3, 0), (2025, 3, 30, 3, 30), (2025, 3, 31, 2, 30), (2025, 3, 31, 3, 30)],
        ),
        # Times outside the gap are untouched.
        ("Europe/Berlin", "30 1 * * *", [(2025, 3, 30, 1, 30), (2025, 3, 31, 1, 30)]),
    ],
)
def test_fixed_hour_job_in_a_skipped_hour_runs_at_the_first_minute_after_the_gap(
    zone: str, expression: str, expected: list[tuple[int, ...]]
) -> None:
    s = Schedule(default_timezone=zone).cron(expression)
    start, end = window(zone, SPRING)
    runs = assert_all_agree(s, start, end)
    assert runs == [local(zone, *e).astimezone(UTC) for e in expected]


@pytest.mark.parametrize(
    ("zone", "expression", "expected"),
    [
        ("Europe/Berlin", "30 2 * * *", [(2025, 10, 26, 2, 30), (2025, 10, 27, 2, 30)]),
        ("America/New_York", "30 1 * * *", [(2025, 11, 2, 1, 30), (2025, 11, 3, 1, 30)]),
        ("Australia/Lord_Howe", "45 1 * * *", [(2025, 4, 6, 1, 45), (2025, 4, 7, 1, 45)]),
    ],
)
def test_fixed_hour_job_runs_once_on_fall_back_day(
    zone: str, expression: str, expected: list[tuple[int, ...]]
) -> None:
    s = Schedule(default_timezone=zone).cron(expression)
    start, end = window(zone, FALL)
    runs = assert_all_agree(s, start, end)
    assert runs == [local(zone, *e).astimezone(UTC) for e in expected]
    first = local(zone, *expected[0])
    assert s.is_due(first)
    assert not s.is_due(first.replace(fold=1))  # the repeated wall-clock time is not a second run


def test_fixed_minute_range_in_a_repeated_hour_runs_on_the_first_pass_only() -> None:
    s = Schedule(default_timezone="Europe/Berlin").cron("0-59 2 26 10 *")
    start, end = window("Europe/Berlin", FALL)
    runs = assert_all_agree(s, start, end)
    assert len(runs) == 60
    assert runs[0] == local("Europe/Berlin", 2025, 10, 26, 2, 0).astimezone(UTC)
    assert runs[-1] == local("Europe/Berlin", 2025, 10, 26, 2, 59).astimezone(UTC)


@pytest.mark.parametrize("zone", sorted(SPRING))
@pytest.mark.parametrize("days", [SPRING, FALL], ids=["spring", "fall"])
@pytest.mark.parametrize("expression", ["*/15 * * * *", "*/10 * * * *", "* * * * *"])
def test_wildcard_job_keeps_real_time_cadence_through_transitions(
    zone: str, days: dict[str, datetime], expression: str
) -> None:
    s = Schedule(default_timezone=zone).cron(expression)
    start, end = window(zone, days)
    runs = assert_all_agree(s, start, end)
    step = {"*/15 * * * *": 15, "*/10 * * * *": 10, "* * * * *": 1}[expression]
    gaps = {b - a for a, b in itertools.pairwise(runs)}
    # The cadence is real time: a 30-minute shift leaves the 15- and 10-minute steps untouched.
    assert gaps == {timedelta(minutes=step)}


def test_wildcard_hour_with_fixed_minute_runs_in_both_passes_of_a_repeated_hour() -> None:
    s = Schedule(default_timezone="Europe/Berlin").cron("0 * * * *")
    start, end = window("Europe/Berlin", FALL)
    runs = assert_all_agree(s, start, end)
    berlin = ZoneInfo("Europe/Berlin")
    first = datetime(2025, 10, 26, 2, 0, tzinfo=berlin)
    assert first.astimezone(UTC) in runs
    assert first.replace(fold=1).astimezone(UTC) in runs


def test_wildcard_minute_with_fixed_hour_in_a_skipped_hour_does_not_run() -> None:
    s = Schedule(default_timezone="Europe/Berlin").cron("*/15 2 * * *")
    start, end = window("Europe/Berlin", SPRING)
    runs = assert_all_agree(s, start, end)
    assert [r.astimezone(ZoneInfo("Europe/Berlin")).date().day for r in runs] == [31] * 4


def test_worked_example_from_the_docs() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    backup = Schedule().daily().at(2, 30).timezone("Europe/Berlin")
    assert backup.next_runs(datetime(2025, 3, 29, 12, 0, tzinfo=berlin), 2) == [
        datetime(2025, 3, 30, 3, 0, tzinfo=berlin),
        datetime(2025, 3, 31, 2, 30, tzinfo=berlin),
    ]
    assert backup.next_runs(datetime(2025, 10, 25, 12, 0, tzinfo=berlin), 2) == [
        datetime(2025, 10, 26, 2, 30, tzinfo=berlin),
        datetime(2025, 10, 27, 2, 30, tzinfo=berlin),
    ]
    poll = Schedule().every_minutes(30).timezone("Europe/Berlin")
    runs = poll.next_runs(datetime(2025, 10, 26, 1, 45, tzinfo=berlin), 5)
    assert [(r.strftime("%H:%M%z"), r.fold) for r in runs] == [
        ("02:00+0200", 0),
        ("02:30+0200", 0),
        ("02:00+0100", 1),
        ("02:30+0100", 1),
        ("03:00+0100", 0),
    ]


def test_next_run_from_inside_a_repeated_hour() -> None:
    ny = ZoneInfo("America/New_York")
    inside_second_pass = datetime(2025, 11, 2, 1, 10, tzinfo=ny, fold=1)
    fixed = Schedule(default_timezone="America/New_York").daily().at(1, 30)
    assert fixed.next_run(inside_second_pass) == datetime(2025, 11, 3, 1, 30, tzinfo=ny)
    hourly = Schedule(default_timezone="America/New_York").set_minute(30).set_hour("*")
    run = hourly.next_run(inside_second_pass)
    assert run is not None and run.fold == 1 and (run.hour, run.minute) == (1, 30)


def test_between_reads_the_scheduled_wall_clock_time_for_shifted_runs() -> None:
    # The 02:30 run moved to 03:00 by the gap is still the 02:30 run for between().
    s = Schedule(default_timezone="Europe/Berlin").daily().at(2, 30).between("02:00", "02:45")
    start, end = window("Europe/Berlin", SPRING)
    runs = assert_all_agree(s, start, end)
    assert runs[0] == local("Europe/Berlin", 2025, 3, 30, 3, 0).astimezone(UTC)
