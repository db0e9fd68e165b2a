"""icc's own parser for plain numeric cron fields (no croniter import on a fresh tick) reads every field exactly
as croniter does, and the shortcut day masks equal the day-by-day definition."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from icc import cron
from icc.errors import ScheduleError


def random_term(rnd: random.Random, low: int, high: int) -> str:
    kind = rnd.randrange(6)
    a, b = sorted(rnd.randint(low, high) for _ in range(2))
    if kind == 0:
        return "*"
    if kind == 1:
        return f"*/{rnd.randint(1, high)}"
    if kind == 2:
        return str(a)
    if kind == 3:
        return f"{a}-{b}"
    if kind == 4:
        return f"{a}-{b}/{rnd.randint(1, high)}"
    return rnd.choice(["0", f"{b}-{a}", f"{a}/5", f"0{a}", "7", "*/0", f"{high + 1}", "1,,2", ""])


def random_field(rnd: random.Random, index: int) -> str:
    low, high = cron.FIELD_RANGES[index]
    return ",".join(random_term(rnd, low, high) for _ in range(rnd.choice([1, 1, 1, 2, 3])))


def croniter_mask(index: int, value: str) -> int | None:
    """The mask the croniter path gives for ``value`` in field ``index`` (None: croniter refuses it)."""
    fields = ["*"] * 5
    fields[index] = value
    try:
        spec = cron._compile_with_croniter((fields[0], fields[1], fields[2], fields[3], fields[4]))
    except ScheduleError:
        return None
    return [spec.minutes, spec.hours, spec.dom, spec.months, spec.dow][index]


@pytest.mark.parametrize("index", range(5))
def test_simple_fields_read_as_croniter_reads_them(index: int) -> None:
    rnd = random.Random(index)
    checked = 0
    for _ in range(3000):
        value = random_field(rnd, index)
        mine = cron._simple_mask(index, value)
        if mine is None:
            continue  # croniter's to parse
        checked += 1
        assert mine == croniter_mask(index, value), (index, value)
    assert checked > 1000


def brute_day_masks(spec: cron.CronSpec) -> tuple[int, ...]:
    day_and = spec.dom_star or spec.dow_star
    masks = []
    for first_wd in range(7):
        for dim in range(28, 32):
            mask = 0
            for day in range(1, dim + 1):
                wd = (first_wd + day - 1) % 7
                dom_ok = bool(spec.dom >> day & 1) or (spec.dom_last and day == dim)
                dow_ok = (
                    bool(spec.dow >> wd & 1)
                    or (wd, (day - 1) // 7 + 1) in spec.dow_nth
                    or (bool(spec.dow_last >> wd & 1) and day + 7 > dim)
                )
                if (dom_ok and dow_ok) if day_and else (dom_ok or dow_ok):
                    mask |= 1 << day
            masks.append(mask)
    return tuple(masks)


def test_day_masks_equal_the_day_by_day_rule() -> None:
    rnd = random.Random(5)
    days = ["*", "L", "1,15", "*/2", "1-7", "31", "?", "*/3"]
    weekdays = ["*", "1-5", "0", "0,6", "mon#1", "L5", "*/2", "?", "1-5/2", "sun", "7"]
    for dom in days:
        for dow in weekdays:
            expression = f"0 0 {dom} {rnd.choice(['*', '2', '1-6'])} {dow}"
            try:
                spec = cron.compile_expression(expression)
            except ScheduleError:
                continue
            assert spec.day_masks == brute_day_masks(spec), expression


def test_a_fresh_tick_of_plain_expressions_does_not_import_croniter() -> None:
    code = (
        "import sys\n"
        "from icc.schedule import Schedule\n"
        "for e in ['*/15 9-17 * * 1-5', '0 3 * * *', '0 0 1 1 *', '5 4 * * 0', '0 */2 1-7 * *']:\n"
        "    Schedule.from_definition({'expression': e, 'zone': 'UTC'})\n"
        "print('croniter' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
