"""Due evaluation: icc against croniter, like for like first, then icc's batched index for scale.

Three comparisons, each measured in this run on the same schedules (100,000 realistic, mixed expressions in
eight zones; croniter on a sample of them), in interleaved rounds, reported as the median of the per-round
ratios. Every ratio reads "croniter's time / icc's time": above 1 means icc is faster.

1. Per schedule, from scratch (the goal). What a fresh ``icc run`` process does to decide whether a stored job
   is due in its minute: test the compiled form ``icc scan`` stored with the definition (``compiled_matches``:
   the field masks, read in the job's zone, with bit tests), and only where the bits cannot tell (a DST change
   next to the minute, ``L``/``#`` day rules, a year rule) rebuild the schedule from its definition
   (``Schedule.from_definition``), parse and compile its expression and evaluate it (``matches``). Every icc
   cache (the ``functools.lru_cache`` functions in ``icc.cron``) is cleared before each schedule, so nothing
   parsed earlier is reused. The compiled form is built before timing, as the scan builds it once per job;
   croniter has no stored form, so its side parses: that is what the goal measures. The baseline is
   ``croniter.match``, which parses the expression and evaluates it on every call (croniter keeps no cache).
   Both sides get the same UTC minute and the same zone (``ZoneInfo``'s own cache is warm on both sides; the
   conversion to the zone is timed on both). What differs: icc also checks the year rule, the ``between``
   window (5% of the schedules) and its DST policy, which croniter.match has no notion of.
   Goal: icc at least 30x faster, i.e. icc's from-scratch time per schedule at most 1/30 of croniter.match's.
   The line "from_definition + parse + matches" (no goal) is the full path alone: what a due job, or a job
   stored by an icc without the compiled form, costs.
2. Next run, on prebuilt objects (no goal). croniter objects built before timing (``croniter(expr, start)``),
   one ``get_next`` each, against icc's ``Schedule.next_run`` on schedules whose rules are compiled before
   timing. Fresh croniter objects each round, since ``get_next`` moves them.
3. The due set of all 100,000 schedules for one minute (no goal; NOT like for like). ``DueIndex.due``
   deduplicates the schedules into distinct rules, reads each zone once and checks each distinct rule once;
   croniter.match is called per schedule (its per-call time on the sample, times 100,000). The ratio says
   what the index buys at scale, not that one evaluation is that much faster; the per-schedule figures are
   in 1 and in icc's warm ``Schedule.matches`` line.

Run: ``nox -s bench -- bench/bench_due.py``.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import icc.cron
from croniter import CroniterBadDateError, croniter
from icc import Schedule
from icc.cron import DueIndex, compiled_form, compiled_matches

SCHEDULES = 100_000
SAMPLE = 3_000  # schedules measured one by one on both sides
ROUNDS = 6  # interleaved rounds; each covers SAMPLE / ROUNDS schedules on both sides
SLOTS = 20
FROM_SCRATCH_GOAL = 30.0
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


def icc_caches() -> list[Callable[[], None]]:
    """The cache_clear of every lru_cache in icc.cron: what a fresh process starts without."""
    return [
        value.cache_clear
        for value in vars(icc.cron).values()
        if callable(value) and callable(getattr(value, "cache_clear", None))
    ]


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def per_schedule(
    definitions: list[tuple[dict[str, Any], list[int] | None]], slot: datetime
) -> tuple[float, float, float, float]:
    """Seconds per schedule, for one slot:

    - icc parsing: ``Schedule.from_definition`` + parse + ``matches``, every icc cache cleared first;
    - croniter parsing: ``croniter.match`` (it parses on every call, and keeps no cache);
    - icc cached: the stored compiled form (``compiled_matches``), and where it cannot tell a prebuilt,
      compiled ``Schedule.matches`` (caches warm);
    - croniter cached: a prebuilt ``croniter`` object per schedule, doing what ``croniter.match`` does
      after its parse (``set_current`` then ``get_prev``, within 60 s).
    """
    clears = icc_caches()
    icc_parse = 0.0
    for definition, _compiled in definitions:
        for clear in clears:
            clear()
        t0 = time.perf_counter()
        Schedule.from_definition(definition).matches(slot)
        icc_parse += time.perf_counter() - t0
    cron_parse = 0.0
    for definition, _compiled in definitions:
        t0 = time.perf_counter()
        croniter.match(definition["expression"], slot.astimezone(ZoneInfo(definition["zone"])))
        cron_parse += time.perf_counter() - t0
    # The cached forms, built before timing.
    schedules = [Schedule.from_definition(definition) for definition, _compiled in definitions]
    for schedule in schedules:
        schedule.matches(slot - timedelta(days=1))  # compiled, caches warm
    iterators = [
        croniter(d["expression"], slot.astimezone(ZoneInfo(d["zone"])), ret_type=datetime)
        for d, _compiled in definitions
    ]
    icc_cached = 0.0
    for (definition, compiled), schedule in zip(definitions, schedules, strict=True):
        t0 = time.perf_counter()
        due = None if compiled is None else compiled_matches(compiled, definition["zone"], slot)
        if due is None:
            schedule.matches(slot)
        icc_cached += time.perf_counter() - t0
    cron_cached = 0.0
    matched = 0
    for (definition, _compiled), it in zip(definitions, iterators, strict=True):
        t0 = time.perf_counter()
        current = slot.astimezone(ZoneInfo(definition["zone"])) + timedelta(microseconds=1)
        it.set_current(current, force=True)
        try:
            previous = it.get_prev()
            matched += abs((current - previous).total_seconds()) < 60
        except CroniterBadDateError:
            pass
        cron_cached += time.perf_counter() - t0
    n = len(definitions)
    return icc_parse / n, cron_parse / n, icc_cached / n, cron_cached / n


def next_runs(schedules: list[Schedule], start: datetime) -> tuple[float, float]:
    """Seconds per schedule: icc next_run on compiled rules and get_next on prebuilt croniter objects."""
    for s in schedules:
        _ = s.time_rule  # compiled before timing
    iterators = [croniter(s.expression, start.astimezone(ZoneInfo(s.zone))) for s in schedules]
    t0 = time.perf_counter()
    for s in schedules:
        s.next_run(start)
    icc_per = (time.perf_counter() - t0) / len(schedules)
    t0 = time.perf_counter()
    for it in iterators:
        it.get_next(datetime)
    croniter_per = (time.perf_counter() - t0) / len(iterators)
    return icc_per, croniter_per


def main() -> None:
    rnd = random.Random(2)
    schedules = [realistic(rnd) for _ in range(SCHEDULES)]
    base = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
    slots = [base + timedelta(minutes=rnd.randrange(0, 7 * 1440)) for _ in range(SLOTS)]
    sample = [schedules[i] for i in rnd.sample(range(SCHEDULES), SAMPLE)]
    block = SAMPLE // ROUNDS
    blocks = [sample[r * block : (r + 1) * block] for r in range(ROUNDS)]

    # 1. Per schedule: parse against parse, cached against cached.
    # The compiled form is what `icc scan` stores with each job (icc.tick.coordinator.record_definition), built once.
    stored = [[(s.definition(), compiled_form(s.time_rule)) for s in b] for b in blocks]
    rows = [per_schedule(d, slots[r % SLOTS]) for r, d in enumerate(stored)]
    print(f"1. one schedule is due or not, {SAMPLE:,} schedules in {ROUNDS} interleaved rounds (medians)")
    for title, icc_label, cron_label, icc_col, cron_col in (
        (
            "parse against parse (from the definition; every icc cache cleared)",
            "icc from_definition + parse + matches",
            "croniter.match (parses each call)",
            0,
            1,
        ),
        (
            "cached against cached (the parse done before timing)",
            "icc stored compiled form (+ matches)",
            "croniter prebuilt object, as match",
            2,
            3,
        ),
    ):
        icc_time = statistics.median(r[icc_col] for r in rows)
        cron_time = statistics.median(r[cron_col] for r in rows)
        ratio = statistics.median(r[cron_col] / r[icc_col] for r in rows)
        print(f"   {title}")
        print(f"     {icc_label:38}{icc_time * 1e6:9.1f} us per schedule")
        print(f"     {cron_label:38}{cron_time * 1e6:9.1f} us per schedule")
        print(f"     {'croniter / icc':38}{ratio:9.2f}x  (above 1: icc faster)")
        print(
            f"     goal: icc at least {FROM_SCRATCH_GOAL:.0f}x faster than croniter, like for like: "
            f"{verdict(ratio >= FROM_SCRATCH_GOAL)} ({ratio:.2f}x)"
        )
    ratio = statistics.median(r[1] / r[2] for r in rows)
    print(
        "   what a tick does, NOT like for like (no goal): icc's stored compiled form against croniter.match"
    )
    print(f"     {'croniter.match / icc cached':38}{ratio:9.2f}x")

    # 2. Next run on prebuilt objects.
    start = slots[0]
    rows = [next_runs(b, start) for b in blocks]
    icc_next = statistics.median(r[0] for r in rows)
    cron_next = statistics.median(r[1] for r in rows)
    ratio = statistics.median(r[1] / r[0] for r in rows)
    print()
    print(f"2. next run on prebuilt objects, {SAMPLE:,} schedules in {ROUNDS} interleaved rounds (medians)")
    print(f"   icc Schedule.next_run (compiled rule)   {icc_next * 1e6:9.1f} us per schedule")
    print(f"   croniter.get_next (prebuilt object)     {cron_next * 1e6:9.1f} us per schedule")
    print(f"   croniter / icc                          {ratio:9.2f}x  (no goal)")

    # 3. The due set of all schedules for one slot: batched index against per-schedule match.
    t0 = time.perf_counter()
    index = DueIndex(schedules)
    indexed = time.perf_counter() - t0
    icc_slots, cron_slots, warm = [], [], []
    due_count = 0
    for r, b in enumerate(blocks):
        slot = slots[r % SLOTS]
        t0 = time.perf_counter()
        due_count += len(index.due(slot))
        icc_slots.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for s in b:
            croniter.match(s.expression, slot.astimezone(ZoneInfo(s.zone)))
        cron_slots.append((time.perf_counter() - t0) / len(b) * SCHEDULES)
        t0 = time.perf_counter()
        for s in b:
            s.matches(slot)
        warm.append((time.perf_counter() - t0) / len(b))
    ratio = statistics.median(c / i for c, i in zip(cron_slots, icc_slots, strict=True))
    print()
    print(
        f"3. due set of all {SCHEDULES:,} schedules for one minute (NOT like for like: batched and deduplicated)"
    )
    print(
        f"   icc DueIndex.due                        {statistics.median(icc_slots) * 1e3:9.1f} ms per slot "
        f"({index.distinct:,} distinct rules, index built in {indexed:.1f} s; {due_count // ROUNDS:,} due)"
    )
    print(
        f"   croniter.match x {SCHEDULES:,}               {statistics.median(cron_slots) * 1e3:9.1f} ms per slot"
    )
    print(f"   croniter / icc                          {ratio:9.0f}x  (no goal)")
    print(f"   icc Schedule.matches, compiled rule     {statistics.median(warm) * 1e6:9.1f} us per schedule")


if __name__ == "__main__":
    main()
