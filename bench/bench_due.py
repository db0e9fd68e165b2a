"""Due-evaluation at scale: icc's DueIndex against croniter.match, and next runs against croniter.get_next.

100,000 schedules of realistic, mixed expressions in several zones. croniter is measured in the same run on a
sample of the same schedules and scaled per schedule. Run with ``python bench/bench_due.py``; prints the figures
and the ratios (goal: due evaluation at least 50x faster than croniter).
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from icc import Schedule
from icc.cron import DueIndex

SCHEDULES = 100_000
SAMPLE = 3_000
SLOTS = 20
ZONES = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
]


def realistic(rnd: random.Random) -> Schedule:
    """One schedule as plugins write them: mostly the fluent helpers, some ported crontab lines."""
    s = Schedule(default_timezone=rnd.choice(ZONES))
    kind = rnd.random()
    if kind < 0.15:
        s.every_minute()
    elif kind < 0.35:
        s.every_minutes(rnd.choice([2, 5, 10, 15, 30]))
    elif kind < 0.45:
        s.every_hour().set_minute(rnd.randrange(60))
    elif kind < 0.50:
        s.every_hours(rnd.choice([2, 3, 4, 6, 12])).set_minute(rnd.randrange(60))
    elif kind < 0.70:
        s.daily().at(rnd.randrange(24), rnd.randrange(0, 60, 5))
    elif kind < 0.78:
        s.weekly().set_day_of_week(rnd.randrange(1, 8)).at(rnd.randrange(24), rnd.choice([0, 15, 30, 45]))
    elif kind < 0.84:
        s.daily().on_weekdays().at(rnd.randrange(6, 20), rnd.choice([0, 30]))
    elif kind < 0.90:
        s.monthly().set_day(rnd.randrange(1, 29)).at(rnd.randrange(24))
    elif kind < 0.93:
        s.yearly().on(rnd.randrange(1, 13), rnd.randrange(1, 29)).at(rnd.randrange(24))
    else:
        s.cron(
            rnd.choice(
                [
                    "*/15 9-17 * * 1-5",
                    "0 22 * * 1-5",
                    "5 4 * * sun",
                    "0 0 L * *",
                    "30 8 * * mon#1",
                    "0 */2 1-7 * *",
                    "0 0,12 1 */2 *",
                    "@hourly",
                    "@daily",
                ]
            )
        )
    if rnd.random() < 0.05:
        s.between("08:00", "20:00")
    return s


def main() -> None:
    rnd = random.Random(2)
    started = time.perf_counter()
    schedules = [realistic(rnd) for _ in range(SCHEDULES)]
    built = time.perf_counter() - started
    started = time.perf_counter()
    index = DueIndex(schedules)
    indexed = time.perf_counter() - started
    print(
        f"{SCHEDULES:,} schedules built in {built:.2f} s; index of {index.distinct:,} distinct rules in {indexed:.2f} s"
    )

    base = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
    slots = [base + timedelta(minutes=rnd.randrange(0, 7 * 1440)) for _ in range(SLOTS)]

    # icc: the whole due set for one slot.
    timings = []
    due_count = 0
    for slot in slots:
        t0 = time.perf_counter()
        due = index.due(slot)
        timings.append(time.perf_counter() - t0)
        due_count += len(due)
    icc_slot = statistics.median(timings)

    # croniter.match on a sample of the same schedules, each at the slot in its own zone, scaled per schedule.
    sample = rnd.sample(range(SCHEDULES), SAMPLE)
    zones = {name: ZoneInfo(name) for name in ZONES}
    checks = [(schedules[i].expression, zones[schedules[i].zone]) for i in sample]
    slot = slots[0]
    local = {name: slot.astimezone(z) for name, z in zones.items()}
    t0 = time.perf_counter()
    for expression, zone in checks:
        croniter.match(expression, local[zone.key])
    croniter_per = (time.perf_counter() - t0) / SAMPLE
    croniter_slot = croniter_per * SCHEDULES

    # icc without the index: Schedule.matches per schedule, for an honest per-schedule figure.
    t0 = time.perf_counter()
    for i in sample:
        schedules[i].matches(slot)
    matches_per = (time.perf_counter() - t0) / SAMPLE

    print()
    print("due set for one minute slot")
    print(
        f"  icc DueIndex.due        {icc_slot * 1e3:9.2f} ms per slot  (median of {SLOTS}; {due_count // SLOTS:,} due)"
    )
    print(
        f"  croniter.match x {SCHEDULES:,} {croniter_slot * 1e3:9.2f} ms per slot  ({croniter_per * 1e6:.1f} us each)"
    )
    print(f"  icc Schedule.matches    {matches_per * 1e6:9.2f} us per schedule (no index)")
    print(f"  ratio                   {croniter_slot / icc_slot:9.0f}x faster than croniter.match")

    # Next runs: icc Schedule.next_run vs croniter(...).get_next, same schedules and start.
    start = slots[0]
    t0 = time.perf_counter()
    for i in sample:
        schedules[i].next_run(start)
    icc_next = (time.perf_counter() - t0) / SAMPLE
    t0 = time.perf_counter()
    for expression, zone in checks:
        croniter(expression, start.astimezone(zone)).get_next(datetime)
    croniter_next = (time.perf_counter() - t0) / SAMPLE
    print()
    print("next run")
    print(f"  icc next_run            {1 / icc_next:12,.0f} per s  ({icc_next * 1e6:.1f} us each)")
    print(f"  croniter.get_next       {1 / croniter_next:12,.0f} per s  ({croniter_next * 1e6:.1f} us each)")
    print(f"  ratio                   {croniter_next / icc_next:9.1f}x faster than croniter.get_next")


if __name__ == "__main__":
    main()
