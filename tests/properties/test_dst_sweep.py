"""icc against cronsim near every real offset change of every zone that has one.

The transitions are scanned from tzdata once per process (tests/cronkit.py): every zone in
``zoneinfo.available_timezones()`` with an offset change in 2019-2030 (about 230 zones, 5,000 changes, including
the recent rule changes of Nuuk, Mexico, Tehran, Almaty, Cairo), plus a few older odd ones (``cronkit.EXTRA``: days
skipped whole, gaps into another month or year or across midnight, repeats across midnight, 30-minute moves). Each example draws a zone, one of its transitions,
an instant near it and an expression (often aimed at the transition's day and hour), and compares icc's
``next_runs``, and its ``is_due`` over every minute around the transition, with cronsim.

The CI run is derandomized and bounded. For a wider sweep, run many seeds::

    ICC_DST_SWEEP_SEEDS=1-50 ICC_DST_SWEEP_EXAMPLES=2000 .venv/bin/pytest -q tests/properties/test_dst_sweep.py

Where cronsim is known to be wrong the example is left out (``cronsim_known_wrong``) and icc's answer is pinned by
an explicit test in tests/model/test_dst.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from cronkit import Transition, cronsim_between, cronsim_next, expressions, transitions
from hypothesis import HealthCheck, assume, given, seed, settings
from hypothesis import strategies as st
from icc import Schedule, ScheduleError

MINUTE = timedelta(minutes=1)


def cronsim_known_wrong(tr: Transition, expression: str) -> str | None:
    """Why cronsim's answer near *tr* cannot be trusted for *expression*, or None.

    All five come from cronsim's handling of wildcard jobs (minute or hour starting with ``*``), which it walks in
    real time: it moves to the next allowed hour by adding 3600 real seconds to a local hh:00, and it starts a new
    day at its local midnight even when that midnight does not exist. Each entry has a test of icc's answer in
    tests/model/test_dst.py.
    """
    fields = expression.split()
    if not (fields[0].startswith("*") or fields[1].startswith("*")):
        return None
    z = ZoneInfo(tr.zone)
    wall_before = tr.at.astimezone(
        timezone(tr.before)
    )  # the wall-clock time the change happens at, old offset
    shift = tr.after - tr.before
    if shift >= timedelta(days=1):
        # Kiritimati 1994-12-31, Apia 2011-12-30: cronsim answers the imaginary midnight of the skipped day, i.e.
        # the instant of the change. Pinned by test_dst.py::test_wildcard_job_on_a_day_skipped_whole_does_not_run.
        return "a day skipped whole"
    if shift % timedelta(hours=1):
        # Lord Howe, Caracas, Pyongyang move by 30 minutes: cronsim jumps to the next allowed minute and hour by
        # wall-clock arithmetic in real seconds, which the shift moves by 30 minutes, and skips real runs. Pinned by
        # test_dst.py::test_lord_howe_wildcard_job_after_the_30_minute_shift_runs_on_the_hour and
        # ::test_lord_howe_hourly_job_runs_in_both_passes_of_the_repeated_half_hour.
        return "a 30-minute shift"
    if shift < timedelta(0) and (tr.at - MINUTE).astimezone(z).date() != tr.at.astimezone(z).date():
        # Goose Bay (1987-2010) and St. John's (until 2011) went back from 00:01 to 23:01: the first pass reaches
        # 00:00 of the next date, and cronsim, walking dates forward, never comes back to the second 23:01-23:59.
        # Pinned by test_dst.py::test_wildcard_job_runs_in_the_second_pass_of_a_repeated_hour_across_midnight.
        return "a repeated hour across midnight"
    if fields[1] == "*":
        return None
    if wall_before.minute or tr.at.astimezone(z).minute:
        # Chatham changes at 02:45: stepping an hour from the non-existent 03:00 lands on 05:00 and skips 04:xx.
        # Pinned by test_dst.py::test_chatham_wildcard_job_in_the_hour_after_the_gap_runs.
        return "a transition off the full hour"
    if shift > timedelta(0) and wall_before.hour == 0:
        # Cairo, Santiago, Havana, ...: the day starts with the gap; cronsim starts it at the imaginary midnight
        # (the instant of the change, 01:00 new time) and steps an hour to 02:00, skipping 01:00-01:59.
        # Pinned by test_dst.py::test_wildcard_job_in_the_first_hour_after_a_midnight_gap_runs.
        return "a gap at midnight"
    return None


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        seeds.extend(range(int(a), int(b or a) + 1))
    return seeds


SEEDS = parse_seeds(os.environ.get("ICC_DST_SWEEP_SEEDS", "0"))
EXAMPLES = int(os.environ.get("ICC_DST_SWEEP_EXAMPLES", "150"))
COUNTS: dict[str, int] = {}


@st.composite
def cases(draw: st.DrawFn) -> tuple[Transition, str]:
    """A transition of some zone and an expression, with its day and hour fields often aimed at it."""
    table = transitions()
    zone = draw(st.sampled_from(sorted(table)))
    tr = draw(st.sampled_from(table[zone]))
    fields = draw(expressions()).split()
    z = ZoneInfo(zone)
    # The wall-clock minute before and after the change, and a skipped or repeated time in between.
    before = (tr.at - MINUTE).astimezone(z)
    after = tr.at.astimezone(z)
    wall = draw(st.sampled_from([before, after, before + MINUTE, after - abs(tr.after - tr.before)]))
    if draw(st.booleans()):
        fields[1] = str(wall.hour) if draw(st.booleans()) else f"{wall.hour},{(wall.hour + 1) % 24}"
    if draw(st.booleans()):
        fields[0] = draw(st.sampled_from([str(wall.minute), "0", "*/15", "*", "0-59/7"]))
    aim = draw(st.sampled_from(["none", "dom", "dow", "both", "month"]))
    if aim in ("dom", "both"):
        fields[2] = str(wall.day) if draw(st.booleans()) else f"{wall.day},{(wall.day % 28) + 1}"
    if aim in ("dow", "both"):
        fields[4] = str((wall.weekday() + 1) % 7)
    if aim == "month":
        fields[3] = str(wall.month)
    return tr, " ".join(fields)


def build(expression: str, zone: str) -> Schedule:
    try:
        return Schedule(default_timezone=zone).cron(expression)
    except ScheduleError:
        assume(False)
        raise


def for_each_seed(
    *strategies: st.SearchStrategy[object],
) -> Callable[[Callable[..., None]], Callable[[int], None]]:
    """Run a property once per seed in ICC_DST_SWEEP_SEEDS (CI: seed 0 only), EXAMPLES examples each."""

    def decorate(test: Callable[..., None]) -> Callable[[int], None]:
        def run(sweep_seed: int) -> None:
            configured = settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            )(given(*strategies)(test))
            before = dict(COUNTS)
            seed(sweep_seed)(configured)()
            compared = {k: v - before.get(k, 0) for k, v in COUNTS.items() if v != before.get(k, 0)}
            print(f"[dst sweep] seed {sweep_seed}: compared {compared}")  # shown with -s

        return pytest.mark.parametrize("sweep_seed", SEEDS)(run)

    return decorate


def _next_runs_agree(case: tuple[Transition, str], offset: int) -> None:
    tr, expression = case
    reason = cronsim_known_wrong(tr, expression)
    assume(reason is None)
    s = build(expression, tr.zone)
    t = (tr.at + timedelta(seconds=offset)).astimezone(ZoneInfo(tr.zone))
    expected = cronsim_next(expression, t, 4)
    got = [r.astimezone(UTC) for r in s.next_runs(t, len(expected))]
    COUNTS["next_runs"] = COUNTS.get("next_runs", 0) + 1
    assert got == expected, (tr, expression, t)


test_next_runs_agree_with_cronsim_near_every_transition = for_each_seed(
    cases(), st.integers(-2 * 86400, 3600)
)(_next_runs_agree)


def _is_due_agrees(case: tuple[Transition, str]) -> None:
    tr, expression = case
    assume(cronsim_known_wrong(tr, expression) is None)
    s = build(expression, tr.zone)
    z = ZoneInfo(tr.zone)
    start = (tr.at - timedelta(hours=3)).astimezone(z)
    end = tr.at + timedelta(hours=3)
    expected = cronsim_between(expression, start, end)
    due = []
    t = start.astimezone(UTC) + MINUTE
    while t <= end:
        if s.is_due(t):
            due.append(t)
        t += MINUTE
    COUNTS["is_due"] = COUNTS.get("is_due", 0) + 1
    COUNTS["is_due minutes"] = COUNTS.get("is_due minutes", 0) + 360
    assert due == expected, (tr, expression)
    # The runs next_run chains through in the window are exactly the due minutes.
    assert [r.astimezone(UTC) for r in s.next_runs(start, len(due) + 1)][: len(due)] == due


test_is_due_agrees_with_cronsim_minute_by_minute_around_every_transition = for_each_seed(cases())(
    _is_due_agrees
)
