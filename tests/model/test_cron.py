"""icc.cron: croniter stays out of the idle path, compiled specs are cached, DueIndex agrees with matches."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from icc import Schedule, ScheduleError
from icc.cron import DueIndex, TimeRule, compile_expression, parse_years


def test_importing_the_schedule_modules_does_not_import_croniter() -> None:
    code = "import sys, icc, icc.cron, icc.schedule; icc.Schedule; print('croniter' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_compiled_specs_are_cached_by_expression() -> None:
    assert compile_expression("7 7 * * 1") is compile_expression("7 7 * * 1")


def test_aliases_compile_to_five_fields() -> None:
    assert compile_expression("@weekly").text == "0 0 * * 0"


def test_parse_years_reads_lists_ranges_and_steps() -> None:
    mask = parse_years("2024,2026-2028,9990/5")
    assert [y for y in range(10000) if mask >> y & 1] == [2024, 2026, 2027, 2028, 9990, 9995]


@pytest.mark.parametrize(
    "expression",
    ["0 0 29 2 1#5", "0 0 L 2 L1", "59 23 31 12 5#5", "0 0 */30 2 *", "* * 29 2 *"],
)
def test_rare_expressions_are_found_quickly_from_anywhere(expression: str) -> None:
    try:
        s = Schedule().cron(expression)
    except ScheduleError:
        return
    started = time.perf_counter()
    for year in (1, 1999, 2025, 9990, 9999):
        run = s.next_run(datetime(year, 1, 1, tzinfo=UTC))
        assert run is None or s.matches(run)
    assert time.perf_counter() - started < 1.0


def test_next_run_near_the_end_of_time_returns_none() -> None:
    assert Schedule().yearly().next_run(datetime(9999, 6, 1, tzinfo=UTC)) is None
    assert Schedule().next_run(datetime(9999, 12, 31, 23, 59, tzinfo=UTC)) is None


def test_matching_a_minute_takes_microseconds() -> None:
    rule = Schedule().cron("*/5 9-17 * * 1-5").timezone("Europe/Berlin").time_rule
    at = datetime(2025, 6, 2, 10, 5, tzinfo=UTC)
    rounds = 20000
    started = time.perf_counter()
    for _ in range(rounds):
        rule.matches(at)
    per_call = (time.perf_counter() - started) / rounds
    assert per_call < 50e-6  # a few microseconds on any machine; generous for loaded CI


def test_due_index_agrees_with_matches_for_every_schedule() -> None:
    rnd = random.Random(7)
    expressions = ["* * * * *", "*/5 * * * *", "0 * * * *", "30 2 * * *", "0 9 * * 1-5", "*/15 8-18 * * *"]
    zones = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
    schedules = []
    for _ in range(300):
        s = Schedule(default_timezone=rnd.choice(zones)).cron(rnd.choice(expressions))
        if rnd.random() < 0.2:
            s.between("08:00", "20:00")
        if rnd.random() < 0.1:
            s.set_year(rnd.choice(["2025", "2026"]))
        schedules.append(s)
    index = DueIndex(schedules)
    assert index.size == 300
    assert index.distinct < 300
    slot = datetime(2025, 3, 30, 0, 0, tzinfo=UTC)
    for _ in range(200):
        slot += timedelta(minutes=rnd.choice([1, 7, 29, 61]))
        assert index.due(slot) == [i for i, s in enumerate(schedules) if s.matches(slot)]


def test_due_index_accepts_time_rules() -> None:
    rule = TimeRule(compile_expression("0 12 * * *"), "UTC")
    assert DueIndex([rule, rule]).due(datetime(2025, 1, 1, 12, 0)) == [0, 1]


def test_cron_expression_with_one_field_says_one_field_not_one_fields() -> None:
    with pytest.raises(ScheduleError, match=r"has 1 field; it needs exactly 5"):
        compile_expression("*/5")
    with pytest.raises(ScheduleError, match=r"has 3 fields; it needs exactly 5"):
        compile_expression("* * *")
