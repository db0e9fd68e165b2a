"""The next slots the full tick stores for the light minute (icc.tick.ahead) are the schedule's own: for any
schedule and zone, each stored slot is the next run after the one before it, and the light minute reads the
slot that follows any of them (but the last) back from the stored text."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from icc.schedule import Schedule
from icc.tick.ahead import SLOTS_AHEAD, following, next_slots, slots_text
from icc.tick.coordinator import next_due

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "America/Sao_Paulo",
]

minutes = st.sampled_from(["*", "0", "30", "*/7", "5,35", "59", "0-10/5"])
hours = st.sampled_from(["*", "2", "3", "1-3", "*/5", "23", "0,12"])
days = st.sampled_from(["*", "1", "15", "28-31", "*/10"])
months = st.sampled_from(["*", "3", "10,11", "*/2"])
weekdays = st.sampled_from(["*", "0", "1-5", "6", "sun"])


@settings(max_examples=150, deadline=None)
@given(
    minute=minutes,
    hour=hours,
    day=days,
    month=months,
    weekday=weekdays,
    zone=st.sampled_from(ZONES),
    start=st.integers(min_value=1_700_000_000 // 60, max_value=2_200_000_000 // 60).map(lambda m: m * 60),
)
def test_the_stored_slots_are_the_schedules_own_next_runs(
    minute: str, hour: str, day: str, month: str, weekday: str, zone: str, start: int
) -> None:
    schedule = Schedule().cron(f"{minute} {hour} {day} {month} {weekday}").timezone(zone)
    first = next_due(schedule, start)
    if first is None:
        return
    found = next_slots(schedule, first)
    assert len(found) == SLOTS_AHEAD
    expected = [first]
    while len(expected) < SLOTS_AHEAD:
        nxt = next_due(schedule, expected[-1])
        assert nxt is not None
        expected.append(nxt)
    assert found == expected
    text = slots_text(schedule, first)
    for index, s in enumerate(found):
        after = following(text, s)
        if index == len(found) - 1:
            assert after is None  # the last: the list ran out, the full tick makes a new one
            continue
        assert after is not None
        hhmm = datetime.fromtimestamp(s, tz=UTC).astimezone(ZoneInfo(zone)).strftime("%H:%M")
        assert after == (found[index + 1], hhmm)
    assert following(text, first - 60) is None  # not in the list: the full tick's
    assert following(text, found[1] + 1) is None
