"""every(), starting(), once(), unless_between() and args(): next runs, is_due, words, definitions and the
one-line errors, in the hidden contract suite's style (DESIGN.md, Round 3 contract)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from icc import Schedule, ScheduleError
from icc.cron import compiled_form

S = Schedule
BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)


def test_every_90_minutes_counts_from_the_epoch_in_utc() -> None:
    runs = S().every(minutes=90).next_runs(T0, 4)
    assert runs == [T0 + timedelta(minutes=90 * k) for k in range(1, 5)]


def test_every_36_hours_counts_from_starting() -> None:
    start = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    schedule = S().every(hours=36).starting(start)
    assert schedule.next_runs(T0, 3) == [start, start + timedelta(hours=36), start + timedelta(hours=72)]
    assert schedule.is_due(start + timedelta(hours=36))
    assert not schedule.is_due(start + timedelta(hours=24))
    assert not schedule.is_due(start - timedelta(hours=36)), "no run before starting()"


def test_every_keeps_real_time_spacing_across_a_dst_change() -> None:
    schedule = S(default_timezone="Europe/Berlin").every(minutes=90)
    runs = [r.astimezone(UTC) for r in schedule.next_runs(datetime(2025, 3, 29, 20, 0, tzinfo=BERLIN), 8)]
    # Compared in UTC: Python subtracts two datetimes of one zone on the wall clock.
    assert all(b - a == timedelta(minutes=90) for a, b in itertools.pairwise(runs))
    assert all(r.tzinfo is not None and r.astimezone(UTC).minute in (0, 30) for r in runs)


def test_every_with_naive_starting_reads_it_in_the_schedule_zone() -> None:
    schedule = S().timezone("Europe/Berlin").every(hours=24).starting(datetime(2026, 1, 1, 6, 0))
    assert schedule.next_run(T0) == datetime(2026, 1, 1, 6, 0, tzinfo=BERLIN)


def test_every_is_filtered_by_between_and_environments() -> None:
    schedule = S().every(minutes=90).between("08:00", "10:00").environments("production")
    assert schedule.next_runs(T0, 2) == [
        datetime(2026, 1, 1, 9, 0, tzinfo=UTC),
        datetime(2026, 1, 2, 9, 0, tzinfo=UTC),
    ]
    assert schedule.is_due(datetime(2026, 1, 1, 9, 0, tzinfo=UTC), "production")
    assert not schedule.is_due(datetime(2026, 1, 1, 9, 0, tzinfo=UTC), "staging")
    assert not schedule.is_due(datetime(2026, 1, 1, 7, 30, tzinfo=UTC), "production")


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: S().every(minutes=90), "every 90 minutes from 1970-01-01 00:00 UTC"),
        (lambda: S().every(hours=36), "every 36 hours from 1970-01-01 00:00 UTC"),
        (lambda: S().every(minutes=120), "every 2 hours from 1970-01-01 00:00 UTC"),
        (
            lambda: S().every(minutes=90).starting(datetime(2026, 5, 1, 8, 0, tzinfo=BERLIN)),
            "every 90 minutes from 2026-05-01 06:00 UTC",
        ),
        (
            lambda: S().timezone("Europe/Berlin").every(minutes=90).starting(datetime(2026, 5, 1, 8, 0)),
            "every 90 minutes from 2026-05-01 08:00 CEST (Europe/Berlin)",
        ),
        (
            lambda: S().once().starting(datetime(2026, 12, 7, 6, 0, 30, tzinfo=UTC)),
            "once at 2026-12-07 06:01 UTC",
        ),
        (
            lambda: S().daily().at(3).once().starting(datetime(2026, 12, 7, 6, 0, tzinfo=UTC)),
            "once, the first of daily at 03:00 from 2026-12-07 06:00 UTC",
        ),
        (
            lambda: S().every_minutes(10).unless_between("12:00", "13:00"),
            "every 10 minutes, not between 12:00 and 13:00",
        ),
        (
            lambda: S().daily().at(3).starting(datetime(2027, 1, 1, tzinfo=UTC)),
            "daily at 03:00 from 2027-01-01 00:00 UTC",
        ),
    ],
)
def test_describe_counted_schedules(build, words: str) -> None:  # type: ignore[no-untyped-def]
    assert build().describe() == words


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: S().every(), "every() takes one of minutes=n or hours=n"),
        (lambda: S().every(minutes=5, hours=1), "every() takes one of minutes=n or hours=n"),
        (lambda: S().every(minutes=0), "every(minutes=0) is not valid: give whole minutes 1-525600"),
        (lambda: S().every(hours=8761), "every(hours=8761) is not valid: give whole hours 1-8760"),
        (lambda: S().every(minutes=1.5), "every(minutes=1.5) is not valid"),  # type: ignore[arg-type]
        (lambda: S().every(minutes=True), "every(minutes=True) is not valid"),
        (lambda: S().daily().every(minutes=90), "every() cannot be combined with the cron-style methods"),
        (lambda: S().every(minutes=90).at(3), "every() cannot be combined with the cron-style methods"),
        (
            lambda: S().every(minutes=90).cron("* * * * *"),
            "every() cannot be combined with the cron-style methods",
        ),
        (lambda: S().every_seconds(10).every(minutes=90), "cannot be combined with every_seconds(10)"),
        (lambda: S().every(minutes=90).every_seconds(10), "cannot be combined with every(minutes=90)"),
        (lambda: S().starting("2026-01-01"), "starting('2026-01-01') is not valid: give a datetime"),
        (lambda: S().unless_between("25:00", "06:00"), "unless_between() start '25:00' is not a valid time"),
        (lambda: S().args(object()), "args(): argument 0 (object) is not JSON-serialisable"),
        (
            lambda: S().args(1, when=datetime(2026, 1, 1)),
            "args(): keyword 'when' (datetime) is not JSON-serialisable",
        ),
        (lambda: S().args(float("nan")), "args(): argument 0 (float) is not JSON-serialisable"),
    ],
)
def test_mistakes_in_counted_methods_are_one_line_schedule_errors(build, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScheduleError) as info:
        build()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_once_without_starting_is_a_problem_for_scan() -> None:
    assert S().once().problem() == "once() needs starting(datetime): the moment of its one run"
    assert S().once().starting(T0).problem() is None
    assert (
        S().once().starting(T0).every_seconds(10).problem() == "once() runs one slot: drop every_seconds(10)"
    )


def test_once_runs_at_starting_and_never_again() -> None:
    start = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    schedule = S().once().starting(start)
    assert schedule.next_runs(T0, 3) == [start]
    assert schedule.next_run(start) is None
    assert schedule.is_due(start)
    assert not schedule.is_due(start + timedelta(minutes=1))
    assert not schedule.is_due(start - timedelta(minutes=1))


def test_once_inside_a_minute_runs_at_the_next_slot() -> None:
    schedule = S().once().starting(datetime(2026, 12, 7, 6, 0, 30, tzinfo=UTC))
    assert schedule.next_runs(T0, 2) == [datetime(2026, 12, 7, 6, 1, tzinfo=UTC)]


def test_once_with_a_cron_schedule_is_its_first_run_from_starting() -> None:
    schedule = S().daily().at(3).once().starting(datetime(2026, 12, 7, 6, 0, tzinfo=UTC))
    assert schedule.next_runs(T0, 2) == [datetime(2026, 12, 8, 3, 0, tzinfo=UTC)]


def test_once_outside_an_allowed_window_runs_at_the_first_allowed_slot() -> None:
    schedule = S().once().starting(datetime(2026, 12, 7, 12, 30, tzinfo=UTC)).unless_between("12:00", "13:00")
    assert schedule.next_runs(T0, 2) == [datetime(2026, 12, 7, 13, 1, tzinfo=UTC)]


def test_once_defaults_to_catching_up_its_missed_run_unless_told() -> None:
    start = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    assert S().once().starting(start).missed_policy == "once"
    assert S().missed("skip").once().starting(start).missed_policy == "skip"
    assert S().once().missed("all").starting(start).missed_policy == "all"


def test_starting_alone_means_no_run_before_it() -> None:
    schedule = S().daily().at(3).starting(datetime(2027, 1, 1, tzinfo=UTC))
    assert schedule.next_run(T0) == datetime(2027, 1, 1, 3, 0, tzinfo=UTC)
    assert not schedule.is_due(datetime(2026, 6, 1, 3, 0, tzinfo=UTC))


def test_unless_between_crosses_midnight_inclusive() -> None:
    schedule = S().every_minutes(30).unless_between("22:00", "06:00")
    assert not schedule.is_due(datetime(2026, 1, 1, 22, 0, tzinfo=UTC))
    assert not schedule.is_due(datetime(2026, 1, 1, 0, 0, tzinfo=UTC))
    assert not schedule.is_due(datetime(2026, 1, 1, 6, 0, tzinfo=UTC))
    assert schedule.is_due(datetime(2026, 1, 1, 6, 30, tzinfo=UTC))
    assert schedule.is_due(datetime(2026, 1, 1, 21, 30, tzinfo=UTC))
    assert schedule.next_run(datetime(2026, 1, 1, 21, 30, tzinfo=UTC)) == datetime(
        2026, 1, 2, 6, 30, tzinfo=UTC
    )


def test_unless_between_inside_a_day_and_with_between() -> None:
    schedule = S().every_minutes(15).between("09:00", "17:00").unless_between("12:00", "12:59")
    runs = schedule.next_runs(datetime(2026, 1, 1, 11, 30, tzinfo=UTC), 3)
    assert runs == [
        datetime(2026, 1, 1, 11, 45, tzinfo=UTC),
        datetime(2026, 1, 1, 13, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 13, 15, tzinfo=UTC),
    ]


def test_unless_between_the_whole_day_has_no_next_run() -> None:
    assert S().unless_between("00:00", "23:59").next_run(T0) is None


def test_args_are_kept_as_json_gives_them_back() -> None:
    schedule = S().args(1, (2, 3), name="x", options={"a": None})
    assert schedule.call_args == ([1, [2, 3]], {"name": "x", "options": {"a": None}})
    assert S().call_args is None


def test_definitions_round_trip_and_keep_older_definitions() -> None:
    built = [
        S().every(minutes=90).starting(datetime(2026, 1, 1, 6, 0, tzinfo=BERLIN)),
        S().once().starting(datetime(2026, 12, 7, 6, 0, tzinfo=UTC)).missed("skip"),
        S().every_minutes(5).unless_between("22:00", "06:00"),
        S().daily().args(1, x=[2]),
    ]
    for schedule in built:
        definition = schedule.definition()
        json.dumps(definition)
        again = S.from_definition(definition)
        assert again.definition() == definition
        assert again.next_runs(T0, 3) == schedule.next_runs(T0, 3)
    plain = S().daily().definition()
    assert not {"every", "starting", "once", "unless_between", "args"} & set(plain)


def test_counted_schedules_have_no_compiled_form_so_the_tick_builds_them() -> None:
    assert compiled_form(S().every(minutes=90).time_rule) is None
    assert compiled_form(S().unless_between("01:00", "02:00").time_rule) is None
    assert compiled_form(S().daily().time_rule) is not None
