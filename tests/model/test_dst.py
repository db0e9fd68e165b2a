"""Daylight saving time, Debian cron style: fixed-time jobs run once, wildcard jobs keep real-time cadence.

Real tz data, three zones: Europe/Berlin and America/New_York shift by an hour, Australia/Lord_Howe by 30 minutes.
Every case is checked through is_due, next_run, next_runs and DueIndex, which must all agree.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from icc import Schedule
from icc.cron import DueIndex
from projectkit import Project

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


# -- Gaps and repeats at the end of a day (issue 13) -------------------------------------------------------------
#
# America/Nuuk moves from -02 to -01 at 01:00 UTC on the last Sunday of March, which is 23:00 local on Saturday:
# 23:00-23:59 of that Saturday does not exist and the next wall-clock minute after 22:59 is 00:00 on Sunday. It
# moves back at 01:00 UTC on the last Sunday of October: 00:00 -01 becomes 23:00 -02 on Saturday again, so
# 23:00-23:59 of that Saturday happens twice.


@pytest.mark.parametrize(
    "expression",
    [
        "50 23 * * *",  # every day
        "50 23 * * 6",  # Saturdays only: the run is on a Sunday
        "50 23 28 * *",  # the 28th only: the run is on the 29th
        "0,30,59 23 * * *",  # three swallowed times, one run
    ],
)
def test_fixed_time_in_a_gap_at_the_end_of_the_day_runs_at_midnight_after_it(expression: str) -> None:
    s = Schedule(default_timezone="America/Nuuk").cron(expression)
    start = local("America/Nuuk", 2026, 3, 28, 12, 0)
    runs = assert_all_agree(s, start, start + timedelta(hours=13))
    # 00:00 on Sunday 29 March at -01 is 01:00 UTC, the instant of the change.
    assert runs == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC)]
    assert s.next_run(start) == local("America/Nuuk", 2026, 3, 29, 0, 0)


def test_fixed_time_in_a_gap_that_ends_in_another_month_runs_on_the_first_of_it() -> None:
    # Europe/Sofia 1979: 23:00 (+02) on 31 March jumped to 00:00 (+03) on 1 April, i.e. 21:00 UTC.
    s = Schedule(default_timezone="Europe/Sofia").cron("30 23 31 3 *")
    start = local("Europe/Sofia", 1979, 3, 31, 12, 0)
    runs = assert_all_agree(s, start, start + timedelta(days=1))
    assert runs == [datetime(1979, 3, 31, 21, 0, tzinfo=UTC)]
    assert s.next_run(start) == local("Europe/Sofia", 1979, 4, 1, 0, 0)


@pytest.mark.parametrize("expression", ["45 23 30 3 *", "15 0 31 3 *"])
def test_fixed_time_in_a_gap_across_midnight_runs_at_the_first_minute_after_it(expression: str) -> None:
    # America/Toronto 1919: 23:30 (-05) on 30 March jumped to 00:30 (-04) on 31 March, 04:30 UTC. Both the
    # 23:45 of the 30th and the 00:15 of the 31st were swallowed; each runs at 00:30.
    s = Schedule(default_timezone="America/Toronto").cron(expression).set_year(1919)
    start = local("America/Toronto", 1919, 3, 30, 12, 0)
    assert due_by_stepping(s, start, start + timedelta(days=2)) == [datetime(1919, 3, 31, 4, 30, tzinfo=UTC)]
    assert s.next_runs(start, 2) == [local("America/Toronto", 1919, 3, 31, 0, 30)]


@pytest.mark.parametrize(
    ("zone", "expression", "year", "expected"),
    [
        # Asia/Singapore: 23:30 (+07:30) on 31 December 1981 jumped to 00:00 (+08) on 1 January 1982, 16:00 UTC.
        ("Asia/Singapore", "45 23 31 12 *", "1981", datetime(1981, 12, 31, 16, 0, tzinfo=UTC)),
        # Pacific/Kiritimati skipped 31 December 1994 whole (-10 to +14): 00:00 on 1 January 1995 is 10:00 UTC
        # on 31 December. The 12:00 run of the skipped day runs there, and still counts as a 1994 run.
        ("Pacific/Kiritimati", "0 12 31 12 *", "1994", datetime(1994, 12, 31, 10, 0, tzinfo=UTC)),
    ],
)
def test_fixed_time_in_a_gap_that_ends_in_another_year_runs_once_and_belongs_to_the_old_year(
    zone: str, expression: str, year: str, expected: datetime
) -> None:
    s = Schedule(default_timezone=zone).cron(expression).set_year(year)
    start = expected - timedelta(days=1)
    assert due_by_stepping(s, start, start + timedelta(days=2)) == [expected]
    assert [r.astimezone(UTC) for r in s.next_runs(start, 5)] == [expected]  # set_year: nothing after it
    assert s.next_run(expected - MINUTE) == s.next_run(start) == expected
    assert DueIndex([s]).due(expected) == [0]


def test_tick_due_slots_include_the_run_after_a_gap_at_the_end_of_the_day() -> None:
    from icc.tick.coordinator import due_slots, next_due, slot_of

    s = Schedule(default_timezone="America/Nuuk").cron("50 23 * * 6")
    saturday_noon = slot_of(local("America/Nuuk", 2026, 3, 28, 12, 0))
    after_gap = slot_of(datetime(2026, 3, 29, 1, 0, tzinfo=UTC))  # 00:00 Sunday, -01
    assert next_due(s, saturday_noon) == after_gap
    assert due_slots(s, saturday_noon, after_gap + 3600) == [after_gap]
    assert due_slots(s, after_gap, after_gap) == [after_gap]
    assert DueIndex([s]).due(datetime(2026, 3, 29, 1, 0, tzinfo=UTC)) == [0]


def test_repeated_hour_at_the_end_of_the_day_runs_fixed_jobs_once_and_wildcard_jobs_by_real_time() -> None:
    start = local("America/Nuuk", 2026, 10, 24, 12, 0)
    end = start + timedelta(days=2)
    fixed = Schedule(default_timezone="America/Nuuk").cron("30 23 * * *")
    # 23:30 -01 on Saturday (00:30 UTC) only, not 23:30 -02 an hour later; then Sunday 23:30 -02.
    assert assert_all_agree(fixed, start, end) == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
    ]
    midnight = Schedule(default_timezone="America/Nuuk").cron("0 0 * * 0")
    # Sunday 00:00 exists once, after the repeated hour: 00:00 -02 is 02:00 UTC.
    assert assert_all_agree(midnight, start, end) == [datetime(2026, 10, 25, 2, 0, tzinfo=UTC)]
    hourly = Schedule(default_timezone="America/Nuuk").cron("0 * * * *")
    # Real time: 23:00 -01, 23:00 -02, 00:00 -02 are three runs an hour apart.
    runs = assert_all_agree(hourly, start, end)
    night = [
        r
        for r in runs
        if datetime(2026, 10, 24, 23, 0, tzinfo=UTC) <= r <= datetime(2026, 10, 25, 3, 0, tzinfo=UTC)
    ]
    assert [r.astimezone(ZoneInfo("America/Nuuk")).strftime("%H:%M%z") for r in night] == [
        "22:00-0100",
        "23:00-0100",
        "23:00-0200",
        "00:00-0200",
        "01:00-0200",
    ]
    wildcard = Schedule(default_timezone="America/Nuuk").cron("*/20 23 * * *")
    # Both passes: 23:00/20/40 at -01 (00:00-00:40 UTC), then again at -02 (01:00-01:40 UTC).
    assert assert_all_agree(wildcard, start, end)[:6] == [
        datetime(2026, 10, 25, h, m, tzinfo=UTC) for h in (0, 1) for m in (0, 20, 40)
    ]


def test_wildcard_job_runs_in_the_second_pass_of_a_repeated_hour_across_midnight() -> None:
    # America/Goose_Bay went back from 00:01 (-03) on 25 October 1987 to 23:01 (-04) on the 24th, at 03:01 UTC:
    # the first pass reaches 00:00 on the 25th (03:00 UTC), then 23:01-23:59 of the 24th happens again. A
    # wildcard job runs by real time, so 23:20 and 23:40 of the 24th run twice: 02:20, 02:40 UTC at -03 and
    # 03:20, 03:40 UTC at -04. cronsim leaves the 24th at 00:00 and misses the second pass.
    s = Schedule(default_timezone="America/Goose_Bay").cron("*/20 * 24 10 *")
    start = local("America/Goose_Bay", 1987, 10, 24, 22, 50)
    runs = assert_all_agree(s, start, start + timedelta(hours=3))
    assert runs == [
        datetime(1987, 10, 25, h, m, tzinfo=UTC) for h, m in ((2, 0), (2, 20), (2, 40), (3, 20), (3, 40))
    ]
    # From 00:00 on the 25th (the end of the first pass) the next run is still on the 24th.
    assert s.next_run(datetime(1987, 10, 25, 2, 59, 30, tzinfo=UTC)) == datetime(
        1987, 10, 24, 23, 20, tzinfo=ZoneInfo("America/Goose_Bay"), fold=1
    )
    fixed = Schedule(default_timezone="America/Goose_Bay").cron("30 23 24 10 *")
    assert assert_all_agree(fixed, start, start + timedelta(hours=3)) == [
        datetime(1987, 10, 25, 2, 30, tzinfo=UTC)
    ]


# -- Where cronsim is wrong (the sweep in tests/properties/test_dst_sweep.py leaves these out; cronsim_known_wrong) ----------


def test_lord_howe_wildcard_job_after_the_30_minute_shift_runs_on_the_hour() -> None:
    # Australia/Lord_Howe falls back from +11 to +10:30 at 02:00 on 5 April 2026 (15:00 UTC on the 4th). 11:00
    # at +10:30 is 00:30 UTC on the 5th; cronsim steps an hour from a :00 and lands on 11:30 (01:00 UTC).
    s = Schedule(default_timezone="Australia/Lord_Howe").cron("* 11 * * *")
    runs = s.next_runs(local("Australia/Lord_Howe", 2026, 4, 5, 6, 0), 60)
    assert runs[0].astimezone(UTC) == datetime(2026, 4, 5, 0, 30, tzinfo=UTC)
    assert [(r.hour, r.minute) for r in runs] == [(11, m) for m in range(60)]


def test_lord_howe_hourly_job_runs_in_both_passes_of_the_repeated_half_hour() -> None:
    # Lord Howe's 01:30-01:59 happens twice on 5 April 2026: first at +11 (14:30-14:59 UTC on the 4th), then at
    # +10:30 (15:00-15:29 UTC). A wildcard job runs by real time, so 01:30 runs in both passes, 30 minutes apart.
    # From 01:59 +11 cronsim adds 31 minutes to reach :30, lands on 02:30 +10:30 and misses the second 01:30.
    s = Schedule(default_timezone="Australia/Lord_Howe").cron("30 * * * *")
    runs = s.next_runs(local("Australia/Lord_Howe", 2026, 4, 5, 1, 0), 3)
    assert [r.astimezone(UTC) for r in runs] == [
        datetime(2026, 4, 4, h, m, tzinfo=UTC) for h, m in ((14, 30), (15, 0), (16, 0))
    ]
    assert [(r.hour, r.minute, r.fold) for r in runs] == [(1, 30, 0), (1, 30, 1), (2, 30, 0)]
    start = local("Australia/Lord_Howe", 2026, 4, 5, 1, 59)
    assert s.next_run(start) == datetime(2026, 4, 5, 1, 30, tzinfo=ZoneInfo("Australia/Lord_Howe"), fold=1)


def test_chatham_wildcard_job_in_the_hour_after_the_gap_runs() -> None:
    # Pacific/Chatham springs from 02:45 (+12:45) to 03:45 (+13:45) on 27 September 2026 (14:00 UTC on the
    # 26th). 04:00 at +13:45 is 14:15 UTC; cronsim moves to hour 4 from the non-existent 03:00 and so misses the
    # whole hour, answering the next day.
    s = Schedule(default_timezone="Pacific/Chatham").cron("* 4 * * *")
    runs = s.next_runs(local("Pacific/Chatham", 2026, 9, 27, 3, 50), 60)
    assert runs[0].astimezone(UTC) == datetime(2026, 9, 26, 14, 15, tzinfo=UTC)
    assert [(r.day, r.hour, r.minute) for r in runs] == [(27, 4, m) for m in range(60)]


def test_wildcard_job_in_the_first_hour_after_a_midnight_gap_runs() -> None:
    # Africa/Cairo springs from 00:00 (+02) to 01:00 (+03) on 24 April 2026 (22:00 UTC on the 23rd). 01:00 at
    # +03 is 22:00 UTC; cronsim starts the day at the non-existent 00:00, steps an hour to 02:00 and skips 01:xx.
    s = Schedule(default_timezone="Africa/Cairo").cron("* 1 * * *")
    runs = s.next_runs(local("Africa/Cairo", 2026, 4, 23, 12, 0), 60)
    assert runs[0].astimezone(UTC) == datetime(2026, 4, 23, 22, 0, tzinfo=UTC)
    assert [(r.day, r.hour, r.minute) for r in runs] == [(24, 1, m) for m in range(60)]


@pytest.mark.parametrize(
    ("zone", "expression", "skipped", "expected"),
    [
        # Kiritimati has no 31 December 1994 (-10 to +14 at 10:00 UTC); the next 31 December is 1995's, and
        # 00:00 at +14 on it is 10:00 UTC on the 30th.
        ("Pacific/Kiritimati", "* * 31 12 *", (1994, 12, 31), datetime(1995, 12, 30, 10, 0, tzinfo=UTC)),
        # Apia has no 30 December 2011 (-10 to +14 at 10:00 UTC); 00:00 at +14 (summer time) on 30 December
        # 2012 is 10:00 UTC on the 29th.
        ("Pacific/Apia", "*/30 * 30 12 *", (2011, 12, 30), datetime(2012, 12, 29, 10, 0, tzinfo=UTC)),
    ],
)
def test_wildcard_job_on_a_day_skipped_whole_does_not_run(
    zone: str, expression: str, skipped: tuple[int, int, int], expected: datetime
) -> None:
    # cronsim answers the imaginary midnight of the skipped day (the instant of the change); a wildcard job runs
    # at real instants whose wall-clock time matches, and no instant has that date.
    s = Schedule(default_timezone=zone).cron(expression)
    before = local(zone, *skipped, 0, 0) - timedelta(days=1)
    assert s.next_run(before) is not None
    assert s.next_run(before).astimezone(UTC) == expected  # type: ignore[union-attr]


def test_icc_run_runs_a_nuuk_job_swallowed_by_the_gap_at_midnight_after_it(project: Project) -> None:
    # America/Nuuk 2027: 23:00 (-02) on Saturday 27 March jumps to 00:00 (-01) on Sunday 28 March, 01:00 UTC.
    project.config.write_text(project.config.read_text().replace('"UTC"', '"America/Nuuk"'))
    project.write_plugin(
        """
        def late():
            with open(os.path.join(os.environ["MARKER_DIR"], "late"), "a") as f:
                f.write("ran\\n")

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(late).cron("50 23 * * 6").timezone("America/Nuuk")
        """
    )
    project.icc("scan", check=True)
    status = project.icc("status", "--json", "--at", "2027-03-28T00:30:00+00:00", check=True)  # 22:30
    # status shows the minute the run happens in: 00:00 on Sunday, not the swallowed 23:50 on Saturday.
    assert json.loads(status.stdout)["jobs"][0]["next_run"] == "2027-03-28T00:00:00-01:00"
    project.icc("run", "--at", "2027-03-28T00:59:00+00:00", check=True)  # 22:59, the last minute before
    assert project.marker_lines("late") == []
    project.icc("run", "--at", "2027-03-28T01:00:00+00:00", check=True)  # 00:00 on Sunday
    assert project.marker_lines("late") == ["ran"]
    (run,) = project.runs()
    assert run["slot"] == int(datetime(2027, 3, 28, 1, 0, tzinfo=UTC).timestamp())
    assert json.loads(project.icc("status", "--json", check=True).stdout)["jobs"][0]["last_run"]["slot"] == (
        "2027-03-28T00:00:00-01:00"
    )
    project.icc("run", "--at", "2027-03-28T01:01:00+00:00", check=True)
    assert project.marker_lines("late") == ["ran"]
