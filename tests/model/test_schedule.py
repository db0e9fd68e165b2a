"""icc.Schedule: DESIGN.md's table row by row, the errors a user can make, words, options and constraints."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import icc
import pytest
from icc import IccError, Schedule, ScheduleError

S = Schedule


@pytest.mark.parametrize(
    ("build", "expression"),
    [
        (lambda: S(), "* * * * *"),
        (lambda: S().every_minute(), "* * * * *"),
        (lambda: S().every_minutes(5), "*/5 * * * *"),
        (lambda: S().every_hour(), "0 * * * *"),
        (lambda: S().every_hours(3), "0 */3 * * *"),
        (lambda: S().daily(), "0 0 * * *"),
        (lambda: S().weekly(), "0 0 * * 1"),
        (lambda: S().monthly(), "0 0 1 * *"),
        (lambda: S().yearly(), "0 0 1 1 *"),
        (lambda: S().cron("5 4 * * 1-3"), "5 4 * * 1-3"),
        (lambda: S().cron("  5   4 * *   sun "), "5 4 * * sun"),
        (lambda: S().cron("@yearly"), "0 0 1 1 *"),
        (lambda: S().cron("@annually"), "0 0 1 1 *"),
        (lambda: S().cron("@monthly"), "0 0 1 * *"),
        (lambda: S().cron("@weekly"), "0 0 * * 0"),
        (lambda: S().cron("@daily"), "0 0 * * *"),
        (lambda: S().cron("@midnight"), "0 0 * * *"),
        (lambda: S().cron("@HOURLY"), "0 * * * *"),
        (lambda: S().set_minute(15), "15 * * * *"),
        (lambda: S().set_minute("15,45"), "15,45 * * * *"),
        (lambda: S().set_minute("*/5"), "*/5 * * * *"),
        (lambda: S().set_minute("0-30/5"), "0-30/5 * * * *"),
        (lambda: S().set_hour(23), "* 23 * * *"),
        (lambda: S().set_day(31), "* * 31 * *"),
        (lambda: S().set_day("L"), "* * L * *"),
        (lambda: S().set_month(12), "* * * 12 *"),
        (lambda: S().set_month("jan-mar"), "* * * jan-mar *"),
        (lambda: S().set_day_of_week(0), "* * * * 0"),
        (lambda: S().set_day_of_week(7), "* * * * 7"),
        (lambda: S().set_day_of_week("MON#2"), "* * * * MON#2"),
        (lambda: S().set_day_of_week("L5"), "* * * * L5"),
        (lambda: S().daily().set_minute(5).set_minute(10), "10 0 * * *"),
        (lambda: S().daily().at(3), "0 3 * * *"),
        (lambda: S().daily().at(3, 30), "30 3 * * *"),
        (lambda: S().daily().at("03:30"), "30 3 * * *"),
        (lambda: S().daily().at("0,12", "15,45"), "15,45 0,12 * * *"),
        (lambda: S().on(12, 24), "* * 24 12 *"),
        (lambda: S().on_mondays(), "* * * * 1"),
        (lambda: S().on_tuesdays(), "* * * * 2"),
        (lambda: S().on_wednesdays(), "* * * * 3"),
        (lambda: S().on_thursdays(), "* * * * 4"),
        (lambda: S().on_fridays(), "* * * * 5"),
        (lambda: S().on_saturdays(), "* * * * 6"),
        (lambda: S().on_sundays(), "* * * * 7"),
        (lambda: S().on_weekdays(), "* * * * 1-5"),
        (lambda: S().on_weekends(), "* * * * 6,7"),
        (lambda: S().every_hours(3).set_minute(15), "15 */3 * * *"),
        (lambda: S().yearly().on(12, 24).at(18), "0 18 24 12 *"),
        (lambda: S().monthly().set_day("1,15").at(6), "0 6 1,15 * *"),
        (lambda: S().weekly().on_fridays().at(17, 30), "30 17 * * 5"),
        (lambda: S().daily().on_weekdays().at(8), "0 8 * * 1-5"),
    ],
)
def test_expression_reproduces_the_table(build: Callable[[], Schedule], expression: str) -> None:
    assert build().expression == expression


def test_interval_methods_start_over_from_their_row() -> None:
    assert S().on_mondays().at(9).daily().expression == "0 0 * * *"
    assert S().weekly().every_minutes(10).expression == "*/10 * * * *"


def test_every_method_returns_the_schedule_itself() -> None:
    s = S()
    calls: list[Callable[[], Schedule]] = [
        s.every_minute,
        lambda: s.every_minutes(2),
        s.every_hour,
        lambda: s.every_hours(2),
        s.daily,
        s.weekly,
        s.monthly,
        s.yearly,
        lambda: s.cron("* * * * *"),
        lambda: s.set_minute(1),
        lambda: s.set_hour(1),
        lambda: s.set_day(1),
        lambda: s.set_month(1),
        lambda: s.set_day_of_week(1),
        lambda: s.set_year(2030),
        lambda: s.at(1),
        lambda: s.on(1, 1),
        s.on_mondays,
        s.on_tuesdays,
        s.on_wednesdays,
        s.on_thursdays,
        s.on_fridays,
        s.on_saturdays,
        s.on_sundays,
        s.on_weekdays,
        s.on_weekends,
        lambda: s.between("01:00", "02:00"),
        lambda: s.timezone("Europe/Berlin"),
        lambda: s.environments("production"),
        lambda: s.when(lambda: True),
        lambda: s.skip(lambda: False),
        s.in_background,
        s.without_overlapping,
        s.allow_overlapping,
        lambda: s.timeout(10),
        lambda: s.missed("once"),
    ]
    for call in calls:
        assert call() is s


def test_schedule_is_exported_from_icc() -> None:
    assert icc.Schedule is Schedule
    assert issubclass(ScheduleError, IccError)
    assert issubclass(ScheduleError, ValueError)


# -- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "fragments"),
    [
        (lambda: S().set_minute(60), ["minute", "60", "0-59"]),
        (lambda: S().set_minute(-1), ["minute", "-1", "0-59"]),
        (lambda: S().set_minute("*/0"), ["minute", "*/0", "0-59"]),
        (lambda: S().set_minute("5 6"), ["minute", "5 6"]),
        (lambda: S().set_minute(""), ["minute"]),
        (lambda: S().set_minute(1.5), ["minute", "1.5"]),  # type: ignore[arg-type]
        (lambda: S().set_minute(True), ["minute", "True"]),
        (lambda: S().set_hour(24), ["hour", "24", "0-23"]),
        (lambda: S().set_hour("L"), ["hour", "L", "0-23"]),
        (lambda: S().set_day(0), ["day-of-month", "0", "1-31"]),
        (lambda: S().set_day(32), ["day-of-month", "32", "1-31"]),
        (lambda: S().set_day("15W"), ["day-of-month", "15W", "W"]),
        (lambda: S().set_month(13), ["month", "13", "1-12"]),
        (lambda: S().set_month("foo"), ["month", "foo", "1-12"]),
        (lambda: S().set_day_of_week("8"), ["day-of-week", "8", "0-7"]),
        (lambda: S().set_day_of_week("1#6"), ["day-of-week", "1#6", "0-7"]),
        (lambda: S().set_day_of_week("1,2#3"), ["day-of-week", "1,2#3", "mixed"]),
        (lambda: S().set_year(10000), ["year", "10000", "0-9999"]),
        (lambda: S().set_year("2030-2020"), ["year", "2030-2020", "0-9999"]),
        (lambda: S().set_year("x"), ["year", "x", "0-9999"]),
        (lambda: S().every_minutes(0), ["every_minutes(0)", "1-59"]),
        (lambda: S().every_minutes(60), ["every_minutes(60)", "1-59"]),
        (lambda: S().every_hours(0), ["every_hours(0)", "1-23"]),
        (lambda: S().every_hours(24), ["every_hours(24)", "1-23"]),
        (lambda: S().cron("* * *"), ["* * *", "3 fields", "5"]),
        (lambda: S().cron("* * * * * *"), ["6 fields", "5"]),
        (lambda: S().cron("@reboot"), ["@reboot"]),
        (lambda: S().cron("60 * * * *"), ["minute", "60", "0-59"]),
        (lambda: S().cron("H * * * *"), ["minute", "H", "0-59"]),
        (lambda: S().cron("0 0 30 2 *"), ["0 0 30 2 *", "never", "day-of-month", "1-31"]),
        (lambda: S().cron("0 0 31 4,6,9,11 *"), ["never", "31"]),
        (lambda: S().on(2, 31), ["never", "31"]),
        (lambda: S().timezone("Mars/Olympus"), ["Mars/Olympus", "IANA"]),
        (lambda: S().timezone("../etc/passwd"), ["../etc/passwd", "IANA"]),
        (lambda: S(default_timezone="Nowhere/Land"), ["Nowhere/Land", "IANA"]),
        (lambda: S().between("25:00", "x"), ["start", "25:00", "0-23"]),
        (lambda: S().between("10:00", "10:60"), ["end", "10:60", "0-59"]),
        (lambda: S().at(24), ["hour", "24", "0-23"]),
        (lambda: S().at(1, 60), ["minute", "60", "0-59"]),
        (lambda: S().at("25:00"), ["25:00", "0-23"]),
        (lambda: S().timeout(0), ["timeout", "0", "greater than 0"]),
        (lambda: S().timeout(-5), ["timeout", "-5"]),
        (lambda: S().timeout(float("inf")), ["timeout", "inf"]),
        (lambda: S().missed("sometimes"), ["sometimes", "skip", "once", "all"]),
        (lambda: S().environments(), ["environments()"]),
        (lambda: S().environments(""), ["environment name"]),
        (lambda: S().when("yes"), ["when()", "callable"]),  # type: ignore[arg-type]
        (lambda: S().skip(None), ["skip()", "callable"]),  # type: ignore[arg-type]
    ],
)
def test_mistakes_raise_schedule_error_naming_field_value_and_range(
    build: Callable[[], object], fragments: list[str]
) -> None:
    with pytest.raises(ScheduleError) as info:
        build()
    message = str(info.value)
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)


def test_a_failed_call_leaves_the_schedule_unchanged() -> None:
    s = S().daily().at(6)
    with pytest.raises(ScheduleError):
        s.set_minute(99)
    with pytest.raises(ScheduleError):
        s.at(7, 99)  # the hour must not be applied when the minute is wrong
    assert s.expression == "0 6 * * *"


# -- describe ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: S(), "every minute"),
        (lambda: S().every_minutes(5), "every 5 minutes"),
        (lambda: S().every_hour(), "every hour"),
        (lambda: S().set_minute(15).set_hour("*"), "every hour at minute 15"),
        (lambda: S().every_hours(3), "every 3 hours"),
        (lambda: S().every_hours(3).set_minute(15), "every 3 hours at minute 15"),
        (lambda: S().daily().at("03:30").timezone("Europe/Berlin"), "daily at 03:30 (Europe/Berlin)"),
        (lambda: S(default_timezone="Europe/Berlin").daily().at(3, 30), "daily at 03:30"),
        (lambda: S().weekly(), "weekly on Monday at 00:00"),
        (lambda: S().weekly().on_sundays().at(7), "weekly on Sunday at 07:00"),
        (lambda: S().daily().on_weekdays().at(8), "on weekdays at 08:00"),
        (lambda: S().daily().on_weekends().at(10), "on weekends at 10:00"),
        (lambda: S().monthly().at(6), "monthly on day 1 at 06:00"),
        (lambda: S().yearly().on(12, 24).at(18), "yearly on December 24 at 18:00"),
        (lambda: S().cron("5 4 * * 1-3"), "cron 5 4 * * 1-3"),
        (lambda: S().monthly().set_day("1,15").at(6), "cron 0 6 1,15 * *"),
        (
            lambda: S().every_minutes(5).between("22:00", "06:00").set_year(2030).environments("production"),
            "every 5 minutes, between 22:00 and 06:00, in year 2030, only in production",
        ),
        (
            lambda: S().daily().set_year("2030-2032").timezone("UTC"),
            "daily at 00:00, in years 2030-2032 (UTC)",
        ),
    ],
)
def test_describe_gives_words(build: Callable[[], Schedule], words: str) -> None:
    assert build().describe() == words


# -- options -----------------------------------------------------------------------------------------------------


def test_recorded_options_have_documented_defaults() -> None:
    s = S()
    assert s.zone == "UTC"
    assert s.background is False
    assert s.overlapping is False
    assert s.timeout_seconds is None
    assert s.missed_policy == "skip"
    assert s.environment_names is None
    assert s.has_callbacks is False
    assert s.year is None
    assert s.between_times is None


def test_recorded_options_are_read_back() -> None:
    s = S(default_timezone="Europe/Berlin").in_background().allow_overlapping().timeout(30).missed("all")
    assert (s.zone, s.background, s.overlapping, s.timeout_seconds, s.missed_policy) == (
        "Europe/Berlin",
        True,
        True,
        30.0,
        "all",
    )
    assert s.without_overlapping().overlapping is False
    assert s.timezone("Asia/Tokyo").zone == "Asia/Tokyo"
    assert s.environments("staging", "production", "staging").environment_names == ("production", "staging")


# -- constraints: between, environments, when/skip, timezone in every combination and order -----------------------

CONSTRAINTS: dict[str, Callable[[Schedule], Schedule]] = {
    "between": lambda s: s.between("22:00", "06:00"),
    "environments": lambda s: s.environments("production"),
    "when": lambda s: s.when(lambda: True),
    "skip": lambda s: s.skip(lambda: False),
    "timezone": lambda s: s.timezone("Europe/Berlin"),
}


def _evaluate(s: Schedule) -> tuple[object, ...]:
    # Berlin 23:30 in winter is 22:30 UTC; 12:00 UTC is outside between either way.
    slots = [datetime(2025, 1, 10, 22, 30, tzinfo=UTC), datetime(2025, 1, 10, 12, 0, tzinfo=UTC)]
    return (
        tuple(s.is_due(at, env) for at in slots for env in (None, "production", "staging")),
        tuple(s.matches(at) for at in slots),
        s.next_runs(datetime(2025, 1, 10, 8, 0, tzinfo=UTC), 2),
        s.definition(),
    )


@pytest.mark.parametrize(
    "names", [p for r in range(len(CONSTRAINTS) + 1) for p in itertools.permutations(CONSTRAINTS, r)]
)
def test_constraints_combine_and_call_order_does_not_matter(names: tuple[str, ...]) -> None:
    s = S().every_minutes(30)
    for name in names:
        CONSTRAINTS[name](s)
    reference = S().every_minutes(30)
    for name in sorted(names):
        CONSTRAINTS[name](reference)
    assert _evaluate(s) == _evaluate(reference)

    zone = ZoneInfo("Europe/Berlin" if "timezone" in names else "UTC")
    late = datetime(2025, 1, 10, 23, 30, tzinfo=zone)
    noon = datetime(2025, 1, 10, 12, 0, tzinfo=zone)
    assert s.matches(late)
    assert s.matches(noon) is ("between" not in names)
    for env in (None, "production", "staging"):
        expected = "environments" not in names or env == "production"
        assert s.is_due(late, env) is expected
        assert s.check_conditions(env) is expected


def test_between_crosses_midnight_inclusive() -> None:
    s = S().between("22:00", "06:00")
    assert s.matches(datetime(2025, 1, 1, 22, 0, tzinfo=UTC))
    assert s.matches(datetime(2025, 1, 1, 6, 0, tzinfo=UTC))
    assert s.matches(datetime(2025, 1, 1, 0, 0, tzinfo=UTC))
    assert not s.matches(datetime(2025, 1, 1, 6, 1, tzinfo=UTC))
    assert not s.matches(datetime(2025, 1, 1, 21, 59, tzinfo=UTC))
    assert s.next_run(datetime(2025, 1, 1, 7, 0, tzinfo=UTC)) == datetime(2025, 1, 1, 22, 0, tzinfo=UTC)


def test_between_inside_one_day_and_accepts_time_objects() -> None:
    s = S().every_minutes(15).between(time(9, 0), "17:00")
    assert s.between_times == ("09:00", "17:00")
    runs = s.next_runs(datetime(2025, 1, 1, 16, 50, tzinfo=UTC), 3)
    assert runs == [
        datetime(2025, 1, 1, 17, 0, tzinfo=UTC),
        datetime(2025, 1, 2, 9, 0, tzinfo=UTC),
        datetime(2025, 1, 2, 9, 15, tzinfo=UTC),
    ]


def test_between_that_excludes_every_time_has_no_next_run() -> None:
    s = S().daily().at(3).between("04:00", "05:00")
    assert s.next_run(datetime(2025, 1, 1, tzinfo=UTC)) is None


def test_when_and_skip_callbacks_must_all_pass() -> None:
    state = {"a": True, "b": True, "stop": False}
    s = S().when(lambda: state["a"]).when(lambda: state["b"]).skip(lambda: state["stop"])
    at = datetime(2025, 1, 1, tzinfo=UTC)
    assert s.has_callbacks
    assert s.is_due(at)
    state["b"] = False
    assert not s.is_due(at)
    state["b"] = True
    state["stop"] = True
    assert not s.is_due(at)
    assert s.matches(at)  # matches ignores callbacks


def test_callbacks_are_not_called_when_the_time_does_not_match() -> None:
    calls: list[int] = []
    s = S().daily().when(lambda: calls.append(1) is None)
    assert not s.is_due(datetime(2025, 1, 1, 5, 0, tzinfo=UTC))
    assert calls == []


def test_environments_filter_needs_a_configured_environment() -> None:
    s = S().environments("production", "staging")
    at = datetime(2025, 1, 1, tzinfo=UTC)
    assert s.is_due(at, "staging")
    assert not s.is_due(at, None)
    assert not s.is_due(at, "dev")
    assert S().is_due(at, None) and S().is_due(at, "dev")


# -- years ---------------------------------------------------------------------------------------------------------


def test_set_year_is_honoured_by_matches_and_next_run() -> None:
    s = S().yearly().set_year("2030,2032")
    assert not s.matches(datetime(2031, 1, 1, tzinfo=UTC))
    assert s.matches(datetime(2032, 1, 1, tzinfo=UTC))
    assert s.next_runs(datetime(2025, 6, 1, tzinfo=UTC), 5) == [
        datetime(2030, 1, 1, tzinfo=UTC),
        datetime(2032, 1, 1, tzinfo=UTC),
    ]


def test_set_year_in_the_past_builds_but_has_no_next_run() -> None:
    s = S().daily().set_year(2020)
    assert s.next_run(datetime(2025, 1, 1, tzinfo=UTC)) is None
    assert s.next_runs(datetime(2025, 1, 1, tzinfo=UTC), 3) == []
    assert s.next_run(datetime(2019, 12, 31, 12, tzinfo=UTC)) == datetime(2020, 1, 1, tzinfo=UTC)


def test_feb_29_in_a_common_year_has_no_next_run() -> None:
    s = S().yearly().on(2, 29).set_year(2027)
    assert s.next_run(datetime(2025, 1, 1, tzinfo=UTC)) is None


def test_set_year_star_lifts_the_restriction() -> None:
    assert S().set_year(2030).set_year("*").year is None


# -- next runs ---------------------------------------------------------------------------------------------------


def test_next_run_is_strictly_after_and_in_the_schedule_zone() -> None:
    s = S().daily().at(3, 30).timezone("Europe/Berlin")
    berlin = ZoneInfo("Europe/Berlin")
    run = s.next_run(datetime(2025, 1, 10, 3, 30, tzinfo=berlin))
    assert run == datetime(2025, 1, 11, 3, 30, tzinfo=berlin)
    assert run is not None and run.tzinfo == berlin
    assert s.next_run(datetime(2025, 1, 10, 3, 29, 59, tzinfo=berlin)) == datetime(
        2025, 1, 10, 3, 30, tzinfo=berlin
    )


def test_naive_datetimes_are_read_in_the_schedule_zone() -> None:
    s = S(default_timezone="America/New_York").daily().at(9)
    ny = ZoneInfo("America/New_York")
    assert s.matches(datetime(2025, 1, 10, 9, 0))
    assert not s.matches(datetime(2025, 1, 10, 9, 0, tzinfo=UTC))
    assert s.next_run(datetime(2025, 1, 10, 8, 0)) == datetime(2025, 1, 10, 9, 0, tzinfo=ny)


def test_matches_truncates_to_the_minute() -> None:
    s = S().daily()
    assert s.matches(datetime(2025, 1, 1, 0, 0, 59, 999999, tzinfo=UTC))
    assert not s.matches(datetime(2025, 1, 1, 0, 1, tzinfo=UTC))


def test_vixie_or_when_both_day_fields_are_restricted() -> None:
    s = S().cron("0 0 13 * 5")  # the 13th, or any Friday
    assert s.matches(datetime(2025, 1, 13, tzinfo=UTC))  # a Monday
    assert s.matches(datetime(2025, 1, 17, tzinfo=UTC))  # a Friday
    assert not s.matches(datetime(2025, 1, 14, tzinfo=UTC))
    star = S().cron("0 0 */2 * 5")  # a star-prefixed field makes it AND
    assert star.matches(datetime(2025, 1, 17, tzinfo=UTC))
    assert not star.matches(datetime(2025, 1, 10, tzinfo=UTC))  # even day
    assert not star.matches(datetime(2025, 1, 13, tzinfo=UTC))


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 0 L * *", datetime(2024, 2, 1), datetime(2024, 2, 29)),
        ("0 0 L 2 *", datetime(2025, 3, 1), datetime(2026, 2, 28)),
        ("0 0 * * L5", datetime(2025, 1, 1), datetime(2025, 1, 31)),  # last Friday
        ("0 0 * * 1#2", datetime(2025, 1, 1), datetime(2025, 1, 13)),  # second Monday
        ("0 0 * * mon#1,fri#3", datetime(2025, 1, 7), datetime(2025, 1, 17)),
        ("0 0 * * 7#1", datetime(2025, 1, 1), datetime(2025, 1, 5)),  # first Sunday
        ("0 0 1 jan-mar/2 *", datetime(2025, 1, 2), datetime(2025, 3, 1)),
        ("0 0 * * sat-sun", datetime(2025, 1, 1), datetime(2025, 1, 4)),
        ("0 22-2 * * *", datetime(2025, 1, 1, 3), datetime(2025, 1, 1, 22)),  # croniter's wrapping range
        (
            "5-5 * * * *",
            datetime(2025, 1, 1, 0, 6),
            datetime(2025, 1, 1, 1, 5),
        ),  # one minute, not croniter's all
        ("0 0 29 2 1#5", datetime(2025, 1, 1), datetime(2028, 2, 29)),  # Feb 29, or fifth Monday of Feb
    ],
)
def test_cron_features(expression: str, after: datetime, expected: datetime) -> None:
    s = S().cron(expression)
    assert s.next_run(after.replace(tzinfo=UTC)) == expected.replace(tzinfo=UTC)
    assert s.matches(expected.replace(tzinfo=UTC))


# -- definitions ---------------------------------------------------------------------------------------------------


def test_definition_records_everything_but_callbacks() -> None:
    s = (
        S(default_timezone="Europe/Berlin")
        .every_minutes(10)
        .set_year("2030-2031")
        .between("22:00", "6:00")
        .environments("production")
        .in_background()
        .allow_overlapping()
        .timeout(90)
        .missed("once")
        .when(lambda: True)
    )
    d = s.definition()
    assert d == {
        "expression": "*/10 * * * *",
        "year": "2030-2031",
        "zone": "Europe/Berlin",
        "between": ["22:00", "06:00"],
        "environments": ["production"],
        "background": True,
        "overlapping": True,
        "timeout": 90.0,
        "missed": "once",
        "has_callbacks": True,
    }
    assert json.loads(json.dumps(d)) == d
    rebuilt = Schedule.from_definition(d)
    assert rebuilt.definition() == d
    assert rebuilt.has_callbacks
    assert rebuilt.check_conditions("production")  # no callbacks to call: only the environment filter
    assert not rebuilt.check_conditions("dev")
    after = datetime(2030, 5, 1, tzinfo=UTC)
    assert rebuilt.next_runs(after, 5) == s.next_runs(after, 5)


def test_from_definition_rejects_unknown_keys() -> None:
    with pytest.raises(ScheduleError, match="unknown keys"):
        Schedule.from_definition({"expression": "* * * * *", "zone": "UTC", "colour": "red"})
    with pytest.raises(ScheduleError, match="lacks"):
        Schedule.from_definition({"expression": "* * * * *"})


def test_a_lookup_scheduler_builds_only_the_wanted_job_and_records_the_others() -> None:
    from icc.jobs import Scheduler
    from icc.schedule import UnbuiltSchedule

    scheduler = Scheduler(only="mine")
    other = scheduler.add(print, name="other").daily().at(25)  # a mistake, checked at scan: not here
    assert isinstance(other, UnbuiltSchedule) and list(scheduler.jobs) == []
    with pytest.raises(ScheduleError, match="hour '25' is not valid"):
        scheduler.add(print, name="mine").daily().at(25)  # the wanted job is built, and checked, as ever
    mine = Scheduler(only="mine")
    assert mine.add(print, name="mine").daily().at(3).expression == "0 3 * * *"
    assert list(mine.jobs) == ["mine"]


def test_an_unbuilt_schedule_answers_from_the_schedule_its_recorded_calls_build() -> None:
    from icc.schedule import UnbuiltSchedule

    unbuilt = UnbuiltSchedule(default_timezone="Europe/Berlin")
    same = Schedule(default_timezone="Europe/Berlin")
    for schedule in (unbuilt, same):
        schedule.weekly().at("04:30").in_background().between("01:00", "05:00")
    assert unbuilt.definition() == same.definition()
    assert unbuilt.describe() == same.describe()
    unbuilt.timeout(60)  # built already: the call goes to the built schedule
    assert unbuilt.timeout_seconds == 60
    broken = UnbuiltSchedule().on(2, 30)
    with pytest.raises(ScheduleError) as raised:
        _ = broken.expression
    with pytest.raises(ScheduleError) as direct:
        Schedule().on(2, 30)
    assert str(raised.value) == str(direct.value)
