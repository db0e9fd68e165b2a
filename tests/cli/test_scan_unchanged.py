"""``icc scan`` with nothing changed (issue 17): a plugin whose digest of its jobs is the one the last scan stored
has no record built nor row compared; a row that changed behind the scan's back is still found."""

from __future__ import annotations

import itertools
import marshal
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from icc.config import load_config
from icc.errors import ScheduleError
from icc.jobs import Job, Provenance, Scheduler
from icc.schedule import FLUENT_METHODS, Schedule
from icc.store import open_store
from icc.tick.coordinator import SCAN_DIGESTS_META_KEY, plugin_digests
from projectkit import Project


def _jobs(change: Callable[[Scheduler], None] | None = None, version: str = "1.0") -> dict[str, Job]:
    scheduler = Scheduler(provenance=Provenance("p", "dist", version))
    scheduler.add(print, name="one", description="first").daily().at(3)
    scheduler.add(["true", "x"], name="two").every_minutes(5).timeout(60)
    if change is not None:
        change(scheduler)
    other = Scheduler(provenance=Provenance("q"))
    other.add(print, name="three").weekly()
    return {**scheduler.jobs, **other.jobs}


def _timeout(s: Scheduler) -> None:
    s.jobs["two"].schedule.timeout(61)


def _ping(s: Scheduler) -> None:
    s.jobs["one"].schedule.then_ping("https://example.com/ping")


def _reorder(s: Scheduler) -> None:
    s.jobs = {"two": s.jobs["two"], "one": s.jobs["one"]}


def _describe(s: Scheduler) -> None:
    s.jobs["one"] = Job("one", print, s.jobs["one"].schedule, "second", s.jobs["one"].provenance)


def _target(s: Scheduler) -> None:
    s.jobs["one"] = Job("one", repr, s.jobs["one"].schedule, "first", s.jobs["one"].provenance)


def _argv(s: Scheduler) -> None:
    s.jobs["two"] = Job("two", ("true", "y"), s.jobs["two"].schedule, None, s.jobs["two"].provenance)


@pytest.mark.parametrize("change", [_timeout, _ping, _reorder, _describe, _target, _argv])
def test_a_plugins_digest_changes_with_anything_its_job_records_store(
    change: Callable[[Scheduler], None],
) -> None:
    same = plugin_digests(_jobs())
    assert plugin_digests(_jobs()) == same and set(same) == {"p", "q"}
    changed = plugin_digests(_jobs(change))
    assert changed["p"] != same["p"] and changed["q"] == same["q"]


def test_a_plugins_digest_changes_with_its_distributions_version() -> None:
    assert plugin_digests(_jobs(version="1.1"))["p"] != plugin_digests(_jobs())["p"]


PLUGIN = """
def a():
    pass

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(a, name="a").daily().at(3)
    scheduler.add(["true"], name="b").every_hour()
"""


@pytest.mark.both_stores
def test_a_scan_with_nothing_changed_stores_its_digests_and_still_restores_a_row_removed_behind_its_back(
    project: Project,
) -> None:
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    again = project.icc("scan", check=True).stdout
    assert [line.split()[:2] for line in again.splitlines()[2:4]] == [["a", "unchanged"], ["b", "unchanged"]]
    store = open_store(load_config(project.config))
    try:
        assert store.get_meta(SCAN_DIGESTS_META_KEY)
        kept = [r for r in store.jobs() if r.name == "a"]
        store.sync_jobs(kept, prune=False, dry_run=False, now=1.0, meta={})  # b removed; the digests stay
        assert [r.name for r in store.jobs()] == ["a"]
    finally:
        store.close()
    out = project.icc("scan", check=True).stdout
    assert ["b", "restored"] in [line.split()[:2] for line in out.splitlines()]
    assert [j["name"] for j in project.status()["jobs"]] == ["a", "b"]


def test_a_plugins_digest_is_the_same_in_every_process() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = "from cli.test_scan_unchanged import _jobs; from icc.tick.coordinator import plugin_digests; "
    code += "print(plugin_digests(_jobs()))"
    tests = str(Path(__file__).resolve().parents[1])
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": tests},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert seen == {f"{plugin_digests(_jobs())}\n"}


@pytest.mark.both_stores
def test_a_scan_after_another_icc_scanned_compares_every_row_again(project: Project) -> None:
    # An older icc scanning meanwhile (a downgrade, then an upgrade) rewrites rows and "scanned_at", not the
    # digests: they no longer hold, even for a row of the same length.
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    store = open_store(load_config(project.config))
    try:
        (a,) = [r for r in store.jobs() if r.name == "a"]
        schedule = {**a.definition["schedule"], "expression": "0 4 * * *"}
        other = replace(a, definition={**a.definition, "schedule": schedule})
        rest = [r for r in store.jobs() if r.name != "a"]
        store.sync_jobs([other, *rest], prune=False, dry_run=False, now=1.0, meta={"scanned_at": "1.0"})
    finally:
        store.close()
    out = project.icc("scan", check=True).stdout
    assert ["a", "changed", "0", "3"] in [line.split()[:4] for line in out.splitlines()]
    assert {j["name"]: j["schedule"]["cron"] for j in project.status()["jobs"]}["a"] == "0 3 * * *"


# One call of every fluent Schedule method (a method added to Schedule must be added here: the test below says so).
CALLS: dict[str, tuple[tuple[object, ...], dict[str, object]]] = {
    "cron": (("5 4 * * *",), {}),
    "set_minute": ((7,), {}),
    "set_hour": (("*/2",), {}),
    "set_day": ((3,), {}),
    "set_month": ((4,), {}),
    "set_day_of_week": (("1-5",), {}),
    "set_year": (("2031",), {}),
    "every_minute": ((), {}),
    "every_minutes": ((10,), {}),
    "every_hour": ((), {}),
    "every_hours": ((3,), {}),
    "daily": ((), {}),
    "weekly": ((), {}),
    "monthly": ((), {}),
    "yearly": ((), {}),
    "at": ((3, 30), {}),
    "on": ((6, 1), {}),
    "on_mondays": ((), {}),
    "on_tuesdays": ((), {}),
    "on_wednesdays": ((), {}),
    "on_thursdays": ((), {}),
    "on_fridays": ((), {}),
    "on_saturdays": ((), {}),
    "on_sundays": ((), {}),
    "on_weekdays": ((), {}),
    "on_weekends": ((), {}),
    "between": (("22:00", "06:00"), {}),
    "timezone": (("Europe/Berlin",), {}),
    "environments": (("production",), {}),
    "when": ((bool,), {}),
    "skip": ((bool,), {}),
    "every": ((), {"minutes": 7}),
    "starting": ((datetime(2030, 1, 1, 12, tzinfo=UTC),), {}),
    "once": ((), {}),
    "unless_between": (("01:00", "02:00"), {}),
    "args": ((1, "x"), {"flag": True}),
    "in_background": ((), {}),
    "without_overlapping": ((), {}),
    "allow_overlapping": ((), {}),
    "timeout": ((30,), {}),
    "every_seconds": ((15,), {}),
    "every_second": ((), {}),
    "jitter": ((20,), {}),
    "missed_window": ((30,), {}),
    "missed": (("all",), {}),
    "even_when_paused": ((), {}),
    "on_each_host": ((), {}),
    "email_output_to": (("ops@example.org",), {}),
    "email_output_on_failure": (("ops@example.org",), {}),
    "ping_before": (("https://example.org/a",), {}),
    "then_ping": (("https://example.org/b",), {}),
    "ping_on_success": (("https://example.org/c",), {}),
    "ping_on_failure": (("https://example.org/d",), {}),
    "without_pings": ((), {}),
    "notify_on_failure": (("json://example.org/hook",), {}),
    "expect_success_within": ((600,), {}),
    "before": ((print,), {}),
    "after": ((print,), {}),
    "on_success": ((print,), {}),
    "on_failure": ((print,), {}),
    "send_output_to": (("out.log",), {}),
    "append_output_to": (("out.log",), {}),
}


def _built(*calls: str) -> Schedule | None:
    schedule = Schedule(default_timezone="UTC")
    try:
        for name in calls:
            args, kwargs = CALLS[name]
            getattr(schedule, name)(*args, **kwargs)
        if schedule.problem() is not None:
            return None
        schedule.time_rule  # noqa: B018  (read as the scan reads it: the cached rule is not state)
    except ScheduleError:
        return None  # a combination Schedule refuses (every() and cron fields)
    return schedule


def test_every_fluent_schedule_method_is_in_the_digest_test() -> None:
    assert set(CALLS) == set(FLUENT_METHODS)


def test_schedules_with_equal_digest_states_have_equal_definitions() -> None:
    # The scan's digest of a plugin counts a schedule by digest_state(): two schedules the digest cannot tell
    # apart must store the same definition, over one or two calls of every fluent method.
    built = [
        (calls, _built(*calls)) for calls in [(), *[(a,) for a in CALLS], *itertools.combinations(CALLS, 2)]
    ]
    schedules = [(calls, s) for calls, s in built if s is not None]
    assert len(schedules) > 1500
    by_state: dict[bytes, tuple[tuple[str, ...], dict[str, object]]] = {}
    for calls, schedule in schedules:
        key = marshal.dumps(schedule.digest_state(), 2)
        definition = schedule.definition()
        first = by_state.setdefault(key, (calls, definition))
        assert first[1] == definition, (first[0], calls)
    plain = marshal.dumps(Schedule().digest_state(), 2)
    for name in CALLS:
        schedule = _built(name)
        if schedule is not None and schedule.definition() != Schedule().definition():
            assert marshal.dumps(schedule.digest_state(), 2) != plain, name
