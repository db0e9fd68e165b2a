"""The compiled form a scan stores with each job: bit tests that agree with the full rule, DST included."""

from __future__ import annotations

import json
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from icc import Schedule
from icc.cron import compiled_form, compiled_matches
from projectkit import Project, at

EXPRESSIONS = [
    "* * * * *",
    "*/15 * * * *",
    "30 2 * * *",
    "0 3 * * *",
    "15 1 * * 0",
    "0 */2 * * *",
    "5 4 * * sun",
    "0 0 L * *",
    "30 8 * * mon#1",
    "0 0,12 1 */2 *",
    "*/5 9-17 * * 1-5",
    "0 2 1,15 * 1",
    "59 23 * * *",
]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Nuuk", "Asia/Kolkata"]
# Minutes around the 2024 transitions of those zones, plus ordinary days.
STARTS = [
    datetime(2024, 3, 31, 0, 0, tzinfo=UTC),
    datetime(2024, 10, 27, 0, 0, tzinfo=UTC),
    datetime(2024, 3, 10, 6, 0, tzinfo=UTC),
    datetime(2024, 11, 3, 5, 0, tzinfo=UTC),
    datetime(2024, 4, 6, 14, 0, tzinfo=UTC),
    datetime(2024, 10, 5, 15, 0, tzinfo=UTC),
    datetime(2024, 3, 30, 0, 0, tzinfo=UTC),
    datetime(2024, 7, 1, 0, 0, tzinfo=UTC),
]


@pytest.mark.slow  # minute by minute through a year of DST changes in several zones
def test_compiled_form_agrees_with_the_full_rule_through_dst_changes() -> None:
    answered = 0
    for expression in EXPRESSIONS:
        for zone in ZONES:
            for between in (None, ("08:00", "20:00"), ("22:00", "02:00")):
                schedule = Schedule().cron(expression).timezone(zone)
                if between:
                    schedule.between(*between)
                rule = schedule.time_rule
                compiled = compiled_form(rule)
                assert compiled is not None
                for start in STARTS:
                    for k in range(0, 5 * 60):
                        at = start + timedelta(minutes=k)
                        fast = compiled_matches(compiled, zone, at)
                        if fast is not None:
                            answered += 1
                            assert fast == rule.matches(at), (expression, zone, between, at)
    assert answered > 100_000  # the slow path is the exception


def test_compiled_form_defers_to_the_full_rule_where_bits_cannot_tell() -> None:
    # A year rule has no compiled form; L and # day rules always take the slow path.
    assert compiled_form(Schedule().cron("0 0 * * *").set_year("2030").time_rule) is None
    last = compiled_form(Schedule().cron("0 0 L * *").time_rule)
    assert last is not None
    assert compiled_matches(last, "UTC", datetime(2024, 1, 31, tzinfo=UTC)) is None
    # Berlin springs forward at 02:00 -> 03:00 on 2024-03-31 (01:00 UTC): 02:30 runs at 03:00, slow path.
    gap = compiled_form(Schedule().cron("30 2 * * *").timezone("Europe/Berlin").time_rule)
    assert gap is not None
    assert compiled_matches(gap, "Europe/Berlin", datetime(2024, 3, 31, 1, 0, tzinfo=UTC)) is None
    assert compiled_matches(gap, "Europe/Berlin", datetime(2024, 3, 31, 1, 1, tzinfo=UTC)) is False
    # A malformed form (hand-edited state) is not trusted.
    assert compiled_matches([1, 2, 3], "UTC", datetime(2024, 1, 1, tzinfo=UTC)) is None
    assert compiled_matches([0] * 8, "Not/AZone", datetime(2024, 1, 1, tzinfo=UTC)) is None


def test_random_expressions_agree_on_random_minutes() -> None:
    rnd = random.Random(12)
    fields = [
        ["*", "*/7", "0", "5-20/5", "1,31,59"],
        ["*", "*/3", "2", "1-3", "0,12,23"],
        ["*", "1", "*/10", "13", "29-31"],
        ["*", "2", "*/4", "1-6"],
        ["*", "0", "1-5", "6,0", "*/2"],
    ]
    for _ in range(300):
        expression = " ".join(rnd.choice(options) for options in fields)
        zone = rnd.choice(ZONES)
        rule = Schedule().cron(expression).timezone(zone).time_rule
        compiled = compiled_form(rule)
        assert compiled is not None
        for _ in range(200):
            at = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=rnd.randrange(366 * 1440))
            fast = compiled_matches(compiled, zone, at)
            if fast is not None:
                assert fast == rule.matches(at), (expression, zone, at)


DAILY = """
def mark(name):
    def task():
        with open(os.path.join(os.environ["MARKER_DIR"], name), "a") as f:
            f.write("ran\\n")
    task.__name__ = task.__qualname__ = name
    return task

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("daily"), name="daily").daily().at(3, 0)
"""


def _stored(project: Project) -> dict[str, Any]:
    db = sqlite3.connect(project.db)
    try:
        (text,) = db.execute("SELECT definition FROM jobs WHERE name = 'daily'").fetchone()
    finally:
        db.close()
    result: dict[str, Any] = json.loads(text)
    return result


def _strip_compiled(project: Project) -> None:
    definition = _stored(project)
    definition.pop("compiled", None)
    db = sqlite3.connect(project.db)
    try:
        with db:
            db.execute(
                "UPDATE jobs SET definition = ? WHERE name = 'daily'",
                (json.dumps(definition, sort_keys=True),),
            )
    finally:
        db.close()


def test_a_definition_stored_without_the_compiled_form_is_rescanned_as_unchanged_and_gains_it(
    project: Project,
) -> None:
    project.write_plugin(DAILY)
    project.icc("scan", check=True)
    assert "compiled" in _stored(project)
    _strip_compiled(project)  # as an older icc stored it
    # Ticks still plan it from the full schedule: not due at 02:59, due at 03:00.
    day = 17 * 60  # 03:00 UTC, BASE is 10:00
    project.icc("run", "--at", at(day - 1), check=True)
    assert not project.marker_lines("daily")
    project.icc("run", "--at", at(day), check=True)
    assert project.marker_lines("daily") == ["ran"]
    scan = project.icc("scan", "--json", check=True)
    changes = {row["name"]: row["change"] for row in json.loads(scan.stdout)["jobs"]}
    assert changes["daily"] == "unchanged"
    assert "compiled" in _stored(project)
    # With the compiled form back, the next days still run once at 03:00 and not in between.
    project.icc("run", "--at", at(day + 1), check=True)
    project.icc("run", "--at", at(day + 1440 - 1), check=True)
    assert project.marker_lines("daily") == ["ran"]
    project.icc("run", "--at", at(day + 1440), check=True)
    assert project.marker_lines("daily") == ["ran", "ran"]
