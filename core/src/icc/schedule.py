"""``icc.Schedule``: the fluent builder plugins use to say when a task runs, and the questions asked of it.

A schedule is five cron fields plus constraints (zone, years, a ``between`` window, environments, callbacks) and
recorded options for the runner (background, overlapping, timeout, missed-slot policy). Every method returns the
schedule itself; every mistake raises :class:`icc.ScheduleError` at the call that makes it, never at run time.
Pure: no I/O. The time arithmetic, including the daylight-saving policy, lives in :mod:`icc.cron`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import PurePath
from types import FunctionType, MappingProxyType
from typing import Any, ClassVar

from icc.cron import (
    FIELD_NAMES,
    CronSpec,
    TimeRule,
    compile_expression,
    get_zone,
    parse_years,
    split_expression,
    validate_field,
)
from icc.errors import ScheduleError
from icc.records import record

__all__ = [
    "FLUENT_METHODS",
    "MISSED_POLICIES",
    "SECOND_INTERVALS",
    "Notifications",
    "Schedule",
    "UnbuiltSchedule",
    "jitter_offset",
]

Rule = int | str
Callback = Callable[[], object]

MISSED_POLICIES = ("skip", "once", "all")
SECOND_INTERVALS = (1, 2, 5, 10, 15, 20, 30)  # every_seconds(n): the divisors of 60 below 60 Laravel offers
MAX_JITTER = 59  # seconds: a jittered run still starts inside its minute
MAX_TIMEOUT = 30 * 86_400  # seconds: timeout() at most 30 days
MAX_MISSED_WINDOW = 525_600  # minutes: a year
MAX_EVERY_MINUTES = 525_600  # every(minutes=n): at most a year
MAX_EVERY_HOURS = 8_760  # every(hours=n): at most a year
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_EXPECT_SUCCESS = 366 * 86_400  # seconds: expect_success_within() at most a year

_MINUTE, _HOUR, _DAY, _MONTH, _DOW = range(5)
_TIME = r"(\d{1,2}):(\d{2})"  # patterns, compiled (and cached by re) when first used
_DAY_NAMES = {
    "0": "Sunday",
    "7": "Sunday",
    "sun": "Sunday",
    "1": "Monday",
    "mon": "Monday",
    "2": "Tuesday",
    "tue": "Tuesday",
    "3": "Wednesday",
    "wed": "Wednesday",
    "4": "Thursday",
    "thu": "Thursday",
    "5": "Friday",
    "fri": "Friday",
    "6": "Saturday",
    "sat": "Saturday",
}
_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTH_ABBR = {name[:3].lower(): index + 1 for index, name in enumerate(_MONTH_NAMES)}
_WEEKDAYS = {"1-5", "mon-fri"}
_WEEKENDS = {"6,7", "6,0", "0,6", "7,6", "sat,sun", "sun,sat", "6-7", "sat-sun"}
# What digest_state() leaves out: derived from the rest (the rule), or callables (when()/skip() count as whether
# there are any; run callbacks are not in the definition).
_NOT_DIGESTED = frozenset({"_rule", "_when", "_skip", "_run_callbacks"})
_DEFINITION_KEYS = (
    "expression",
    "year",
    "zone",
    "between",
    "environments",
    "background",
    "overlapping",
    "timeout",
    "missed",
    "has_callbacks",
    "notify",
    "output",
    "even_when_paused",
    "on_each_host",
    "seconds",
    "jitter",
    "missed_window",
    "every",
    "starting",
    "once",
    "unless_between",
    "args",
    "expect_success_within",
)
# The lists of Notifications, by definition key (also the methods that fill them).
_NOTIFY_LISTS = (
    "email_output_to",
    "email_output_on_failure",
    "ping_before",
    "then_ping",
    "ping_on_success",
    "ping_on_failure",
    "notify_on_failure",
)
_EVERY_AND_CRON = (
    "every() cannot be combined with the cron-style methods (every_minutes(), every_hour(), daily(), at(), "
    "on_mondays(), set_minute(), cron(), ...): every() counts real minutes from starting(); keep one of them"
)
_ADDRESS = r"[^@\s<>,;]+@[^@\s<>,;]+"


@record(frozen=True)
class Notifications:
    """Who hears about a job's runs: mail (icc-mail) and heartbeat URLs (icc's ``[monitor]`` pings).

    ``pings`` False (:meth:`Schedule.without_pings`) opts the job out of ``[monitor] ping_url``; its own
    ``ping_*`` URLs are still called.
    """

    email_output_to: tuple[str, ...] = ()
    email_output_on_failure: tuple[str, ...] = ()
    ping_before: tuple[str, ...] = ()
    then_ping: tuple[str, ...] = ()
    ping_on_success: tuple[str, ...] = ()
    ping_on_failure: tuple[str, ...] = ()
    pings: bool = True
    notify_on_failure: tuple[str, ...] = ()  # apprise URLs (icc.notify.notifications)


_NO_NOTIFICATIONS = Notifications()


def _notify_shown(url: object) -> str:
    from icc.urls import redact  # lazy: only notify URLs; every due tick imports icc.schedule

    return repr(redact(url)) if isinstance(url, str) else repr(url)


def _parse_time(which: str, value: object, method: str = "between") -> str:
    """``"H:MM"``/``"HH:MM"`` or a :class:`datetime.time` as ``"HH:MM"``."""
    if isinstance(value, dt_time):
        return f"{value.hour:02d}:{value.minute:02d}"
    if isinstance(value, str):
        m = re.fullmatch(_TIME, value.strip())
        if m:
            hour, minute = int(m.group(1)), int(m.group(2))
            if hour <= 23 and minute <= 59:
                return f"{hour:02d}:{minute:02d}"
    raise ScheduleError(
        f"{method}() {which} {value!r} is not a valid time: give 'HH:MM' with hour 0-23 and minute 0-59, "
        f"for example {method}('22:00', '06:00')"
    )


def _shown(value: object) -> str:
    """``repr(value)`` for a message; an integer past 64 bits is described (its repr may not even be allowed)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<an integer of {value.bit_length()} bits>"
    return repr(value)


# Field texts already checked, by (field, value) for a plain int or str value: a plugin of 10,000 jobs repeats a
# few values (issue 17). Bounded: cleared when full.
_FIELD_TEXTS: dict[tuple[int, int | str], str] = {}
_KNOWN_ZONES: set[str] = set()  # zone names get_zone accepted
_TIME_RULES: dict[tuple[str, str, str | None, tuple[str, str] | None], TimeRule] = {}  # immutable: shared
_CACHE_LIMIT = 4096


def _field_text(index: int, rule: Rule) -> str:
    """The user's value for one field as text, validated; numbers become their decimal string."""
    kind = type(rule)
    if kind is int or kind is str:
        text = _FIELD_TEXTS.get((index, rule))
        if text is None:
            text = _check_field_text(index, rule)
            if len(_FIELD_TEXTS) >= _CACHE_LIMIT:
                _FIELD_TEXTS.clear()
            _FIELD_TEXTS[(index, rule)] = text
        return text
    return _check_field_text(index, rule)


def _check_field_text(index: int, rule: Rule) -> str:
    if isinstance(rule, bool) or not isinstance(rule, (int, str)):
        raise ScheduleError(
            f"{FIELD_NAMES[index]} {rule!r} is not valid: give a number or cron syntax as a string"
        )
    if isinstance(rule, int) and rule.bit_length() > 64:
        raise ScheduleError(
            f"{FIELD_NAMES[index]} {_shown(rule)} is not valid: give a number in the field's range or cron syntax"
        )
    text = str(rule).strip()
    if text.split() != [text]:  # empty, or whitespace inside
        raise ScheduleError(
            f"{FIELD_NAMES[index]} {rule!r} is not valid: give one value without spaces, e.g. '15,45'"
        )
    validate_field(index, text)
    return text


def jitter_offset(name: str, seconds: int) -> int:
    """The stable start offset of job *name* in ``[0, seconds)``: sha256 of the name, the same in every process
    and on every host (never Python's salted ``hash()``); 0 when *seconds* is 0."""
    if seconds <= 0:
        return 0
    import hashlib  # lazy: only a job with jitter() (OpenSSL's load is a due tick's import time)

    digest = hashlib.sha256(name.encode("utf-8", errors="surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % seconds


def _minutes_of_day(text: str) -> int:
    hour, minute = text.split(":")
    return int(hour) * 60 + int(minute)


class Schedule:
    """When a task runs. A new schedule runs every minute (``* * * * *``) in the configured zone."""

    _default: ClassVar[tuple[str, str, str, str, str]] = ("*", "*", "*", "*", "*")

    # The settings' defaults are class attributes, each method setting its own on the instance (mutable ones are
    # replaced, never changed in place): a new schedule sets one attribute, not thirty (issue 17: a plugin of
    # 10,000 jobs builds 10,000 schedules at every scan).
    _zone: str | None = None
    _fields: tuple[str, str, str, str, str] = _default
    _expression = "* * * * *"
    _year: str | None = None
    _between: tuple[str, str] | None = None
    _environments: tuple[str, ...] | None = None
    _when: tuple[Callback, ...] = ()
    _skip: tuple[Callback, ...] = ()
    _callbacks_flag = False
    _background = False
    _overlapping = False
    _timeout: float | None = None
    _missed = "skip"
    _rule: TimeRule | None = None
    _notify: Mapping[str, tuple[str, ...]] = MappingProxyType({})
    _pings = True
    _run_callbacks: Mapping[str, tuple[Callable[[Any], object], ...]] = MappingProxyType(
        {"before": (), "after": (), "on_success": (), "on_failure": ()}
    )
    _output_to: tuple[str, bool] | None = None
    _even_when_paused = False
    _on_each_host = False
    _seconds: int | None = None
    _jitter = 0
    _missed_window: int | None = None
    _every: int | None = None  # every(): minutes
    _starting: datetime | None = None
    _once = False
    _missed_given = False  # missed() called: once() then keeps the policy given
    _unless: tuple[str, str] | None = None
    _args: tuple[list[Any], dict[str, Any]] | None = None
    _expect_success_within: int | None = None

    def __init__(self, *, default_timezone: str = "UTC") -> None:
        if default_timezone not in _KNOWN_ZONES:
            get_zone(default_timezone)
            _KNOWN_ZONES.add(default_timezone)
        self._default_zone = default_timezone

    # -- fields -------------------------------------------------------------------------------------------------

    def _set_fields(self, fields: tuple[str, str, str, str, str]) -> Schedule:
        if self._every is not None:
            raise ScheduleError(_EVERY_AND_CRON)
        # Compiling the whole expression catches combinations no single field shows, such as day 30 in February.
        expression = " ".join(fields)
        compile_expression(expression)
        self._fields = fields
        self._expression = expression
        self._rule = None
        return self

    def _set_field(self, index: int, rule: Rule) -> Schedule:
        return self._set_many(((index, rule),))

    def _set_many(self, changes: tuple[tuple[int, Rule], ...]) -> Schedule:
        fields = list(self._fields)
        for index, rule in changes:
            fields[index] = _field_text(index, rule)
        return self._set_fields((fields[0], fields[1], fields[2], fields[3], fields[4]))

    def cron(self, rules: str) -> Schedule:
        """A full 5-field expression or one of ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``, ``@daily``,
        ``@midnight``, ``@hourly``; replaces all five fields."""
        return self._set_fields(split_expression(rules))

    def set_minute(self, rule: Rule) -> Schedule:
        """Minute field, 0-59."""
        return self._set_field(_MINUTE, rule)

    def set_hour(self, rule: Rule) -> Schedule:
        """Hour field, 0-23."""
        return self._set_field(_HOUR, rule)

    def set_day(self, rule: Rule) -> Schedule:
        """Day-of-month field, 1-31 (``L`` is the last day)."""
        return self._set_field(_DAY, rule)

    def set_month(self, rule: Rule) -> Schedule:
        """Month field, 1-12 or JAN-DEC."""
        return self._set_field(_MONTH, rule)

    def set_day_of_week(self, rule: Rule) -> Schedule:
        """Day-of-week field, 0-7 (0 and 7 are Sunday) or MON-SUN; ``MON#2`` and ``L5`` as croniter reads them."""
        return self._set_field(_DOW, rule)

    def set_year(self, rule: Rule) -> Schedule:
        """Only in these years, 0-9999 (``2025``, ``"2025-2030"``, ``"*/2"``); ``"*"`` lifts the restriction."""
        if (
            isinstance(rule, bool)
            or not isinstance(rule, (int, str))
            or (isinstance(rule, int) and not 0 <= rule <= 9999)
        ):
            raise ScheduleError(
                f"year {_shown(rule)} is not valid: give a number 0-9999 or cron syntax as a string"
            )
        text = str(rule).strip()
        if text == "*":
            self._year = None
        else:
            parse_years(text)
            self._year = text
        self._rule = None
        return self

    # -- intervals (each replaces the five fields with its row of the table) -------------------------------------

    @staticmethod
    def _interval(value: object, unit: str, high: int, instead: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ScheduleError(
                f"every_{unit}s({_shown(value)}) is not valid: the interval is 1-{high} {unit}s; "
                f"for longer intervals use {instead}"
            )
        return value

    def every_minute(self) -> Schedule:
        """``* * * * *``"""
        return self._set_fields(("*", "*", "*", "*", "*"))

    def every_minutes(self, minutes: int) -> Schedule:
        """``*/x * * * *``, x 1-59."""
        x = self._interval(minutes, "minute", 59, "every_hour() or every_hours()")
        return self._set_fields((f"*/{x}", "*", "*", "*", "*"))

    def every_hour(self) -> Schedule:
        """``0 * * * *``"""
        return self._set_fields(("0", "*", "*", "*", "*"))

    def every_hours(self, hours: int) -> Schedule:
        """``0 */x * * *``, x 1-23."""
        x = self._interval(hours, "hour", 23, "daily()")
        return self._set_fields(("0", f"*/{x}", "*", "*", "*"))

    def daily(self) -> Schedule:
        """``0 0 * * *``"""
        return self._set_fields(("0", "0", "*", "*", "*"))

    def weekly(self) -> Schedule:
        """``0 0 * * 1`` (Monday)."""
        return self._set_fields(("0", "0", "*", "*", "1"))

    def monthly(self) -> Schedule:
        """``0 0 1 * *``"""
        return self._set_fields(("0", "0", "1", "*", "*"))

    def yearly(self) -> Schedule:
        """``0 0 1 1 *``"""
        return self._set_fields(("0", "0", "1", "1", "*"))

    # -- helpers ------------------------------------------------------------------------------------------------

    def at(self, hour: Rule, minute: Rule = 0) -> Schedule:
        """``set_hour(hour).set_minute(minute)``; ``at("03:30")`` is ``at(3, 30)``."""
        if isinstance(hour, str) and ":" in hour:
            if minute != 0:
                raise ScheduleError(f"at({hour!r}, {minute!r}): give either at('HH:MM') or at(hour, minute)")
            m = re.fullmatch(_TIME, hour.strip())
            if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
                raise ScheduleError(
                    f"at({hour!r}) is not a valid time: give 'HH:MM' with hour 0-23, minute 0-59"
                )
            hour, minute = str(int(m.group(1))), str(int(m.group(2)))
        return self._set_many(((_HOUR, hour), (_MINUTE, minute)))

    def on(self, month: Rule, day: Rule) -> Schedule:
        """``set_month(month).set_day(day)``."""
        return self._set_many(((_MONTH, month), (_DAY, day)))

    def on_mondays(self) -> Schedule:
        return self.set_day_of_week("1")

    def on_tuesdays(self) -> Schedule:
        return self.set_day_of_week("2")

    def on_wednesdays(self) -> Schedule:
        return self.set_day_of_week("3")

    def on_thursdays(self) -> Schedule:
        return self.set_day_of_week("4")

    def on_fridays(self) -> Schedule:
        return self.set_day_of_week("5")

    def on_saturdays(self) -> Schedule:
        return self.set_day_of_week("6")

    def on_sundays(self) -> Schedule:
        return self.set_day_of_week("7")

    def on_weekdays(self) -> Schedule:
        return self.set_day_of_week("1-5")

    def on_weekends(self) -> Schedule:
        return self.set_day_of_week("6,7")

    # -- constraints --------------------------------------------------------------------------------------------

    def between(self, start: str | dt_time, end: str | dt_time) -> Schedule:
        """Only between two wall-clock times, inclusive; ``between("22:00", "06:00")`` crosses midnight."""
        self._between = (_parse_time("start", start), _parse_time("end", end))
        self._rule = None
        return self

    def timezone(self, zone: str) -> Schedule:
        """Evaluate in this IANA zone instead of the configured one."""
        get_zone(zone)
        self._zone = zone
        self._rule = None
        return self

    def environments(self, *names: str) -> Schedule:
        """Only when the configured environment is one of *names*."""
        if not names:
            raise ScheduleError("environments() needs at least one name, e.g. environments('production')")
        for name in names:
            if not isinstance(name, str) or not name.strip() or name != name.strip():
                raise ScheduleError(
                    f"environment name {name!r} is not valid: give non-empty strings without surrounding spaces"
                )
        self._environments = tuple(sorted(set(names)))
        return self

    def when(self, callback: Callback) -> Schedule:
        """Only when *callback()* returns true (evaluated at run time; several must all pass)."""
        if not callable(callback):
            raise ScheduleError(f"when() takes a callable with no arguments, not {callback!r}")
        self._when = (*self._when, callback)
        return self

    def skip(self, callback: Callback) -> Schedule:
        """Not when *callback()* returns true (evaluated at run time)."""
        if not callable(callback):
            raise ScheduleError(f"skip() takes a callable with no arguments, not {callback!r}")
        self._skip = (*self._skip, callback)
        return self

    # -- counted in real time: every(), starting(), once(); and unless_between() -------------------------------------

    def every(self, *, minutes: int | None = None, hours: int | None = None) -> Schedule:
        """Every *minutes* (1-525600) or *hours* (1-8760), counted in UTC from :meth:`starting` (the Unix epoch
        when not given): ``every(minutes=90)``, ``every(hours=36)``. For periods that do not divide the hour or
        the day; real minutes, so daylight saving time never stretches or shortens a period. Does not combine
        with the cron-style methods (``daily()``, ``at()``, ``set_minute()``, ``cron()``, ...) nor with
        ``every_seconds()``; ``between()``, ``unless_between()``, ``set_year()`` and ``environments()`` filter
        its runs."""
        given = [
            (unit, value) for unit, value in (("minutes", minutes), ("hours", hours)) if value is not None
        ]
        if len(given) != 1:
            raise ScheduleError(
                "every() takes one of minutes=n or hours=n, e.g. every(minutes=90) or every(hours=36)"
            )
        unit, value = given[0]
        high = MAX_EVERY_MINUTES if unit == "minutes" else MAX_EVERY_HOURS
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ScheduleError(
                f"every({unit}={_shown(value)}) is not valid: give whole {unit} 1-{high} (at most a year)"
            )
        if self._fields != self._default:
            raise ScheduleError(_EVERY_AND_CRON)
        if self._seconds is not None:
            raise ScheduleError(
                f"every({unit}={value}) cannot be combined with every_seconds({self._seconds}): drop one of them"
            )
        self._every = value if unit == "minutes" else value * 60
        self._rule = None
        return self

    def starting(self, moment: datetime) -> Schedule:
        """The anchor of :meth:`every` and the moment of :meth:`once`'s run; with other schedules, no run before
        it. A datetime (a naive one is read in the schedule's zone); a moment inside a minute means the next
        minute."""
        if not isinstance(moment, datetime):
            raise ScheduleError(
                f"starting({_shown(moment)}) is not valid: give a datetime, e.g. "
                "starting(datetime(2026, 1, 1, 6, 0, tzinfo=ZoneInfo('Europe/Berlin')))"
            )
        self._starting = moment
        self._rule = None
        return self

    def once(self) -> Schedule:
        """A one-off job: its first run at or after :meth:`starting` (required), recorded, never again. Missed
        while nothing ticked, it runs once late within the missed window (``missed("skip")`` keeps it from
        that)."""
        self._once = True
        self._rule = None
        return self

    def unless_between(self, start: str | dt_time, end: str | dt_time) -> Schedule:
        """Not between two wall-clock times, both inclusive: the inverse of :meth:`between`;
        ``unless_between("22:00", "06:00")`` crosses midnight. A later call replaces an earlier one."""
        window = (_parse_time("start", start, "unless_between"), _parse_time("end", end, "unless_between"))
        self._unless = window
        self._rule = None
        return self

    def args(self, *args: Any, **kwargs: Any) -> Schedule:
        """Arguments for a callable task: ``task(*args, **kwargs)`` in its run. JSON values only (str, int,
        float, bool, None, lists, dicts with string keys): they are stored at scan and shown by ``icc status``;
        the task gets them as JSON gives them back (a tuple as a list)."""
        for where, value in [*((f"argument {i}", v) for i, v in enumerate(args)), *kwargs.items()]:
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ScheduleError(
                    f"args(): {where if where.startswith('argument') else f'keyword {where!r}'} "
                    f"({type(value).__name__}) is not JSON-serialisable ({exc}): pass str, int, float, bool, "
                    "None, lists or dicts with string keys"
                ) from None
        stored = json.loads(json.dumps([list(args), kwargs], allow_nan=False))
        self._args = (stored[0], stored[1])
        return self

    @property
    def call_args(self) -> tuple[list[Any], dict[str, Any]] | None:
        """``(args, kwargs)`` from :meth:`args` as JSON gives them back, or None."""
        if self._args is None:
            return None
        return json.loads(json.dumps(self._args[0])), json.loads(json.dumps(self._args[1]))

    @property
    def every_minutes_count(self) -> int | None:
        """The :meth:`every` period in minutes, or None."""
        return self._every

    @property
    def starting_at(self) -> datetime | None:
        """The :meth:`starting` moment, aware (a naive one read in the schedule's zone), or None."""
        moment = self._starting
        if moment is None:
            return None
        return moment.replace(tzinfo=get_zone(self.zone)) if moment.tzinfo is None else moment

    @property
    def one_off(self) -> bool:
        """Whether :meth:`once` was called."""
        return self._once

    @property
    def unless_times(self) -> tuple[str, str] | None:
        """``("HH:MM", "HH:MM")`` from :meth:`unless_between`, or None."""
        return self._unless

    def problem(self) -> str | None:
        """What makes this schedule unusable as a whole (checked at scan, where the order of the calls no longer
        matters), or None."""
        if self._once and self._starting is None:
            return "once() needs starting(datetime): the moment of its one run"
        if self._once and self._seconds is not None:
            return f"once() runs one slot: drop every_seconds({self._seconds})"
        return None

    # -- recorded options for the runner ------------------------------------------------------------------------

    def in_background(self) -> Schedule:
        """Run in its own process, in parallel, without holding up the tick."""
        self._background = True
        return self

    def without_overlapping(self) -> Schedule:
        """Never two runs of this job at once (the default)."""
        self._overlapping = False
        return self

    def allow_overlapping(self) -> Schedule:
        """Let a run start while the previous one is still going."""
        self._overlapping = True
        return self

    def timeout(self, seconds: float) -> Schedule:
        """Kill a run past this many seconds: more than 0, at most 30 days (2592000)."""
        # Compared before any float(): an integer too large for a float is out of range, not an OverflowError.
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or seconds != seconds
            or not 0 < seconds <= MAX_TIMEOUT
        ):
            raise ScheduleError(
                f"timeout {_shown(seconds)} is not valid: give a number of seconds greater than 0, at most "
                f"{MAX_TIMEOUT} (30 days)"
            )
        self._timeout = float(seconds)
        return self

    def every_seconds(self, seconds: int) -> Schedule:
        """Run at every *seconds* offset (1, 2, 5, 10, 15, 20 or 30) of every minute the rest of the schedule
        matches: ``every_seconds(15)`` runs at :00, :15, :30 and :45. The cron fields are left as they are."""
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds not in SECOND_INTERVALS:
            raise ScheduleError(
                f"every_seconds({_shown(seconds)}) is not valid: give one of {', '.join(map(str, SECOND_INTERVALS))} "
                "(a divisor of 60); for a minute or more use every_minute() or every_minutes()"
            )
        if self._jitter:
            raise ScheduleError(
                f"every_seconds({seconds}) cannot be combined with jitter({self._jitter}): a sub-minute job "
                "runs at fixed offsets; drop one of them"
            )
        if self._every is not None:
            raise ScheduleError(
                f"every_seconds({seconds}) cannot be combined with every(minutes={self._every}): drop one of them"
            )
        self._seconds = seconds
        return self

    def every_second(self) -> Schedule:
        """``every_seconds(1)``."""
        return self.every_seconds(1)

    def jitter(self, seconds: int) -> Schedule:
        """Start each run a stable per-job offset in ``[0, seconds)`` after its minute (sha256 of the job's name),
        so many jobs on the same minute do not all start at :00. The run's slot stays the scheduled minute.
        ``seconds`` 0-59 (0: none); a jittered run always starts within its minute."""
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= MAX_JITTER:
            raise ScheduleError(
                f"jitter({_shown(seconds)}) is not valid: give whole seconds 0-{MAX_JITTER}; a run starts within "
                "its minute"
            )
        if seconds and self._seconds is not None:
            raise ScheduleError(
                f"jitter({seconds}) cannot be combined with every_seconds({self._seconds}): a sub-minute job "
                "runs at fixed offsets; drop one of them"
            )
        self._jitter = seconds
        return self

    def missed_window(self, minutes: int) -> Schedule:
        """How far back (minutes) this job's missed slots are considered, instead of the configured
        ``missed_window``: ``missed_window(24 * 60).missed("once")`` catches up a daily job after a day down."""
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 0 <= minutes <= MAX_MISSED_WINDOW:
            raise ScheduleError(
                f"missed_window({_shown(minutes)}) is not valid: give whole minutes 0-{MAX_MISSED_WINDOW} (a year)"
            )
        self._missed_window = minutes
        return self

    def missed(self, policy: str) -> Schedule:
        """What happens to slots missed while nothing ticked: ``"skip"`` (default), ``"once"`` or ``"all"``."""
        if policy not in MISSED_POLICIES:
            raise ScheduleError(f"missed policy {policy!r} is not valid: give one of 'skip', 'once', 'all'")
        self._missed = policy
        self._missed_given = True
        return self

    def even_when_paused(self) -> Schedule:
        """Run while ``icc pause`` is in force (every other job's slots are then skipped)."""
        self._even_when_paused = True
        return self

    @property
    def runs_when_paused(self) -> bool:
        """Whether :meth:`even_when_paused` was called."""
        return self._even_when_paused

    def on_each_host(self) -> Schedule:
        """With a store several hosts share (``[icc.store] url``): run once per host per slot, for host-local
        work (caches, temporary files, this host's queue consumers). Without it a slot runs once in the whole
        cluster. On the embedded SQLite store (one host) it changes nothing."""
        self._on_each_host = True
        return self

    @property
    def per_host(self) -> bool:
        """Whether :meth:`on_each_host` was called."""
        return self._on_each_host

    # -- notifications: mail (icc-mail) and heartbeat pings ------------------------------------------------------

    def _add_addresses(self, method: str, addresses: tuple[str, ...]) -> Schedule:
        if not addresses:
            raise ScheduleError(f"{method}() needs at least one address, e.g. {method}('ops@example.org')")
        for address in addresses:
            # The full check (display names, header injection) is icc-mail's, when it builds the mail.
            if not isinstance(address, str) or not re.search(_ADDRESS, address) or address != address.strip():
                raise ScheduleError(
                    f"{method}({address!r}): give e-mail addresses as strings, "
                    "'ops@example.org' or 'Ops <ops@example.org>'"
                )
            if any(c in address for c in "\r\n\x00"):
                raise ScheduleError(f"{method}(): the address {address!r} contains a line break")
        self._notify = {
            **self._notify,
            method: tuple(dict.fromkeys((*self._notify.get(method, ()), *addresses))),
        }
        return self

    def _add_url(self, method: str, url: str) -> Schedule:
        from icc.urls import redact, url_problem  # lazy: as in _notify_shown

        problem = url_problem(url)
        if problem is not None:
            shown = redact(url) if isinstance(url, str) else repr(url)
            raise ScheduleError(f"{method}({shown}) is not valid: give {problem}")
        self._notify = {**self._notify, method: tuple(dict.fromkeys((*self._notify.get(method, ()), url)))}
        return self

    def email_output_to(self, *addresses: str) -> Schedule:
        """Mail every run's output (and error) to these addresses, through icc-mail's ``mail`` queue."""
        return self._add_addresses("email_output_to", addresses)

    def email_output_on_failure(self, *addresses: str) -> Schedule:
        """Mail the output of a failed, timed-out or abandoned run (flood-limited like ``mail.alert_to``)."""
        return self._add_addresses("email_output_on_failure", addresses)

    def ping_before(self, url: str) -> Schedule:
        """Request this http(s) URL just before every run starts."""
        return self._add_url("ping_before", url)

    def then_ping(self, url: str) -> Schedule:
        """Request this URL after every run, whatever its outcome; the body is the output tail."""
        return self._add_url("then_ping", url)

    def ping_on_success(self, url: str) -> Schedule:
        """Request this URL after a run that succeeded."""
        return self._add_url("ping_on_success", url)

    def ping_on_failure(self, url: str) -> Schedule:
        """Request this URL after a run that failed, timed out or was found abandoned."""
        return self._add_url("ping_on_failure", url)

    def without_pings(self) -> Schedule:
        """Leave this job out of ``[monitor] ping_url`` (its own ``ping_*`` URLs still apply)."""
        self._pings = False
        return self

    @property
    def notifications(self) -> Notifications:
        """The addresses and URLs given to the methods above."""
        if not self._notify and self._pings:
            return _NO_NOTIFICATIONS  # most jobs: one shared value (a scan of 10,000 jobs reads each)
        get = self._notify.get
        return Notifications(
            email_output_to=get("email_output_to", ()),
            email_output_on_failure=get("email_output_on_failure", ()),
            ping_before=get("ping_before", ()),
            then_ping=get("then_ping", ()),
            ping_on_success=get("ping_on_success", ()),
            ping_on_failure=get("ping_on_failure", ()),
            pings=self._pings,
            notify_on_failure=get("notify_on_failure", ()),
        )

    def notify_on_failure(self, *urls: str) -> Schedule:
        """Send a notification to these apprise URLs (``json://``, ``slack://``, ``mailto://``, ...) for each
        failed, timed-out or abandoned run and when the job goes stale, flood-limited (icc.notify.notifications).
        The syntax is checked here; apprise checks each URL at scan."""
        from icc.urls import notify_url_problem  # lazy: as in _notify_shown

        if not urls:
            raise ScheduleError(
                "notify_on_failure() needs at least one URL, e.g. notify_on_failure('json://host/')"
            )
        for url in urls:
            problem = notify_url_problem(url)
            if problem is not None:
                raise ScheduleError(f"notify_on_failure({_notify_shown(url)}) is not valid: give {problem}")
        self._notify = {
            **self._notify,
            "notify_on_failure": tuple(dict.fromkeys((*self._notify.get("notify_on_failure", ()), *urls))),
        }
        return self

    def expect_success_within(self, seconds: int) -> Schedule:
        """A freshness check (a dead man's switch): the job is stale when its last success is older than this
        many seconds, counted from its first scan when it never succeeded. The next tick on any host alerts
        once per episode (mail, pings' ``/fail``, notification URLs); ``icc check`` and ``icc_job_stale`` say so."""
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or seconds != seconds
            or not 0 < seconds <= MAX_EXPECT_SUCCESS
        ):
            raise ScheduleError(
                f"expect_success_within({_shown(seconds)}) is not valid: give seconds greater than 0, at most "
                f"{MAX_EXPECT_SUCCESS} (a year)"
            )
        self._expect_success_within = max(1, int(seconds))
        return self

    @property
    def stale_after(self) -> int | None:
        """The seconds given to :meth:`expect_success_within`, or None."""
        return self._expect_success_within

    # -- knowing what happened: run callbacks and the output file -------------------------------------------------

    def _add_run_callback(self, which: str, fn: Callable[[Any], object]) -> Schedule:
        if not callable(fn):
            raise ScheduleError(f"{which}() takes a callable with one argument, not {fn!r}")
        self._run_callbacks = {**self._run_callbacks, which: (*self._run_callbacks[which], fn)}
        return self

    def before(self, fn: Callable[[Any], object]) -> Schedule:
        """Call *fn(run_context)* just before each run starts (in the process that runs it)."""
        return self._add_run_callback("before", fn)

    def after(self, fn: Callable[[Any], object]) -> Schedule:
        """Call *fn(run_result)* after every run, whatever its outcome (missed and skipped slots too)."""
        return self._add_run_callback("after", fn)

    def on_success(self, fn: Callable[[Any], object]) -> Schedule:
        """Call *fn(run_result)* after a run that succeeded."""
        return self._add_run_callback("on_success", fn)

    def on_failure(self, fn: Callable[[Any], object]) -> Schedule:
        """Call *fn(run_result)* after a run that failed, timed out or was abandoned."""
        return self._add_run_callback("on_failure", fn)

    def run_callbacks(self, which: str) -> tuple[Callable[[Any], object], ...]:
        """The callbacks given to ``before``, ``after``, ``on_success`` or ``on_failure``, in order."""
        return tuple(self._run_callbacks[which])

    def _output_file(self, path: object, append: bool) -> Schedule:
        which = "append_output_to" if append else "send_output_to"
        if not isinstance(path, str | PurePath) or not str(path).strip() or "\0" in str(path):
            raise ScheduleError(f"{which}() takes a file path (relative to the project root), not {path!r}")
        self._output_to = (str(path), append)
        return self

    def send_output_to(self, path: str | PurePath) -> Schedule:
        """Write each run's stdout and stderr to *path* (relative to the project root), replacing it."""
        return self._output_file(path, False)

    def append_output_to(self, path: str | PurePath) -> Schedule:
        """Append each run's stdout and stderr to *path* (relative to the project root)."""
        return self._output_file(path, True)

    @property
    def output_to(self) -> tuple[str, bool] | None:
        """``(path, append)`` from :meth:`send_output_to` / :meth:`append_output_to`, or None."""
        return self._output_to

    # -- reading ------------------------------------------------------------------------------------------------

    @property
    def expression(self) -> str:
        """The 5-field cron expression."""
        return self._expression

    @property
    def zone(self) -> str:
        """The IANA zone the schedule is evaluated in."""
        return self._zone if self._zone is not None else self._default_zone

    @property
    def year(self) -> str | None:
        """The year rule given to :meth:`set_year`, or None for every year."""
        return self._year

    @property
    def between_times(self) -> tuple[str, str] | None:
        """``("HH:MM", "HH:MM")`` from :meth:`between`, or None."""
        return self._between

    @property
    def background(self) -> bool:
        return self._background

    @property
    def overlapping(self) -> bool:
        return self._overlapping

    @property
    def timeout_seconds(self) -> float | None:
        return self._timeout

    @property
    def missed_policy(self) -> str:
        """The missed() policy; a once() job without one is ``"once"`` (its one run runs late, within the
        missed window)."""
        return "once" if self._once and not self._missed_given else self._missed

    @property
    def seconds(self) -> int | None:
        """The sub-minute interval from :meth:`every_seconds`, or None."""
        return self._seconds

    @property
    def jitter_seconds(self) -> int:
        """The jitter range from :meth:`jitter` (0: none)."""
        return self._jitter

    def start_offset(self, name: str) -> int:
        """Seconds after its minute a run of job *name* starts: its jitter offset (0 without jitter)."""
        return jitter_offset(name, self._jitter)

    @property
    def missed_window_minutes(self) -> int | None:
        """The job's own missed window from :meth:`missed_window`, or None (the configured one applies)."""
        return self._missed_window

    def offsets(self) -> tuple[int, ...]:
        """The second offsets of a matching minute at which runs start: ``(0,)``, or ``(0, 15, 30, 45)``."""
        return (0,) if self._seconds is None else tuple(range(0, 60, self._seconds))

    @property
    def environment_names(self) -> tuple[str, ...] | None:
        return self._environments

    @property
    def has_callbacks(self) -> bool:
        """Whether when()/skip() callbacks exist (also true on a rebuilt schedule whose original had them)."""
        return bool(self._when or self._skip) or self._callbacks_flag

    @property
    def spec(self) -> CronSpec:
        """The compiled cron fields."""
        return compile_expression(self.expression)

    @property
    def time_rule(self) -> TimeRule:
        """Everything that decides when the schedule runs, for :class:`icc.cron.DueIndex`."""
        if self._rule is None:
            key = (self._expression, self.zone, self._year, self._between)
            rule = _TIME_RULES.get(key)
            if rule is None:
                window = None
                if self._between is not None:
                    window = (_minutes_of_day(self._between[0]), _minutes_of_day(self._between[1]))
                years = parse_years(self._year) if self._year is not None else None
                rule = TimeRule(self.spec, self.zone, years, window)
                if len(_TIME_RULES) >= _CACHE_LIMIT:
                    _TIME_RULES.clear()
                _TIME_RULES[key] = rule
            self._rule = rule
            if (
                self._every is not None
                or self._starting is not None
                or self._once
                or self._unless is not None
            ):
                self._rule = self._counted_rule(rule)
        return self._rule

    def _counted_rule(self, rule: TimeRule) -> TimeRule:
        """The rule with every(), starting(), once() and unless_between() added."""
        from dataclasses import replace  # lazy: only schedules that use these methods need it

        moment = self.starting_at
        start = None if moment is None else math.ceil(moment.timestamp() / 60)
        unless = None
        if self._unless is not None:
            unless = (_minutes_of_day(self._unless[0]), _minutes_of_day(self._unless[1]))
        if self._once and start is None:
            raise ScheduleError(self.problem() or "")
        return replace(rule, period=self._every or 0, start=start, once=self._once, unless=unless)

    def matches(self, at: datetime) -> bool:
        """Whether the minute of *at* is a run: cron fields, year and between, DST-aware."""
        return self.time_rule.matches(at)

    def check_conditions(self, environment: str | None) -> bool:
        """The run-time conditions: the environments filter, then every when() and skip() callback."""
        if self._environments is not None and (environment is None or environment not in self._environments):
            return False
        return all(callback() for callback in self._when) and not any(callback() for callback in self._skip)

    def conditions(self) -> tuple[tuple[Callback, ...], tuple[Callback, ...]]:
        """The when() and the skip() callbacks, for a run's supervisor to call one at a time."""
        return tuple(self._when), tuple(self._skip)

    def is_due(self, at: datetime, environment: str | None = None) -> bool:
        """``matches(at) and check_conditions(environment)``; callbacks run only when the time matches."""
        return self.matches(at) and self.check_conditions(environment)

    def next_run(self, after: datetime) -> datetime | None:
        """The first run strictly after *after*, aware in the schedule's zone; None when no run is left.

        With :meth:`every_seconds` a run is a second offset of a matching minute (the minute of *after* too)."""
        rule = self.time_rule
        if self._seconds is None:
            return rule.next_after(after)
        zone = get_zone(self.zone)
        moment = after.replace(tzinfo=zone) if after.tzinfo is None else after
        minute = moment.astimezone(UTC).replace(second=0, microsecond=0)
        later = [k for k in self.offsets() if minute + timedelta(seconds=k) > moment]
        if later and rule.matches(minute):
            return (minute + timedelta(seconds=later[0])).astimezone(zone)
        return rule.next_after(after)

    def next_runs(self, after: datetime, count: int) -> list[datetime]:
        """Up to *count* runs after *after*, in order (fewer when the schedule ends)."""
        runs: list[datetime] = []
        current = after
        for _ in range(count):
            found = self.next_run(current)
            if found is None:
                break
            runs.append(found)
            current = found
        return runs

    def describe(self) -> str:
        """The schedule in words: "every 5 minutes", "daily at 03:30 (Europe/Berlin)"."""
        parts = [self._describe_fields()]
        if self._every is not None or self._starting is not None or self._once:
            parts[0] = self._describe_counted(parts[0])
        if self._between is not None:
            parts.append(f"between {self._between[0]} and {self._between[1]}")
        if self._unless is not None:
            parts.append(f"not between {self._unless[0]} and {self._unless[1]}")
        if self._year is not None:
            plural = "" if self._year.isdigit() else "s"
            parts.append(f"in year{plural} {self._year}")
        if self._environments is not None:
            parts.append(f"only in {', '.join(self._environments)}")
        if self._seconds is not None:
            parts[0] = ("every second" if self._seconds == 1 else f"every {self._seconds} seconds") + (
                "" if parts[0] == "every minute" else f" ({parts[0]})"
            )
        if self._jitter:
            parts.append(f"jitter {self._jitter}s")
        text = ", ".join(parts)
        if self._zone is not None:
            text += f" ({self._zone})"
        return text

    def _describe_counted(self, fields: str) -> str:
        """every(), starting() and once() in words: "every 90 minutes from 1970-01-01 00:00 UTC"."""
        moment = self.starting_at
        shown = "1970-01-01 00:00 UTC"
        if moment is not None:
            minute = math.ceil(moment.timestamp() / 60) * 60  # a moment inside a minute: its next minute
            local = datetime.fromtimestamp(minute, UTC).astimezone(get_zone(self.zone))
            shown = f"{local:%Y-%m-%d %H:%M} {local.tzname()}"
        if self._every is not None:
            n = self._every
            fields = f"every {n // 60} hours" if n % 60 == 0 else f"every {n} minutes"
            fields = {"every 1 minutes": "every minute", "every 1 hours": "every hour"}.get(fields, fields)
        if not self._once:
            return f"{fields} from {shown}"
        if self._every is None and fields == "every minute":
            return f"once at {shown}"
        return f"once, the first of {fields} from {shown}"

    def _describe_fields(self) -> str:
        minute, hour, day, month, dow = self._fields
        rest = (day, month, dow) == ("*", "*", "*")
        if minute == "*" and hour == "*" and rest:
            return "every minute"
        if minute.startswith("*/") and minute[2:].isdigit() and hour == "*" and rest:
            n = int(minute[2:])
            return "every minute" if n == 1 else f"every {n} minutes"
        if minute.isdigit() and hour == "*" and rest:
            return "every hour" if int(minute) == 0 else f"every hour at minute {int(minute)}"
        if minute.isdigit() and hour.startswith("*/") and hour[2:].isdigit() and rest:
            n = int(hour[2:])
            base = "every hour" if n == 1 else f"every {n} hours"
            return base if int(minute) == 0 else f"{base} at minute {int(minute)}"
        if minute.isdigit() and hour.isdigit():
            at = f"{int(hour):02d}:{int(minute):02d}"
            low_dow = dow.lower()
            if rest:
                return f"daily at {at}"
            if day == "*" and month == "*":
                if low_dow in _DAY_NAMES:
                    return f"weekly on {_DAY_NAMES[low_dow]} at {at}"
                if low_dow in _WEEKDAYS:
                    return f"on weekdays at {at}"
                if low_dow in _WEEKENDS:
                    return f"on weekends at {at}"
            if day.isdigit() and month == "*" and dow == "*":
                return f"monthly on day {int(day)} at {at}"
            month_number = int(month) if month.isdigit() else _MONTH_ABBR.get(month.lower())
            if day.isdigit() and month_number is not None and dow == "*":
                return f"yearly on {_MONTH_NAMES[month_number - 1]} {int(day)} at {at}"
        return f"cron {self.expression}"

    # -- persistence --------------------------------------------------------------------------------------------

    def definition(self) -> dict[str, Any]:
        """A JSON-serializable record of everything but the callbacks; equal definitions, same schedule."""
        definition: dict[str, Any] = {
            "expression": self.expression,
            "year": self._year,
            "zone": self.zone,
            "between": list(self._between) if self._between is not None else None,
            "environments": list(self._environments) if self._environments is not None else None,
            "background": self._background,
            "overlapping": self._overlapping,
            "timeout": self._timeout,
            "missed": self.missed_policy,
            "has_callbacks": self.has_callbacks,
        }
        # Only when set: a job without them keeps the definition it had before these settings existed.
        if self._output_to:
            definition["output"] = {"path": self._output_to[0], "append": self._output_to[1]}
        notify: dict[str, Any] = {
            key: list(self._notify[key]) for key in _NOTIFY_LISTS if key in self._notify
        }
        if not self._pings:
            notify["pings"] = False
        if notify:
            definition["notify"] = notify
        if self._even_when_paused:
            definition["even_when_paused"] = True
        if self._on_each_host:
            definition["on_each_host"] = True
        if self._seconds is not None:
            definition["seconds"] = self._seconds
        if self._jitter:
            definition["jitter"] = self._jitter
        if self._missed_window is not None:
            definition["missed_window"] = self._missed_window
        if self._every is not None:
            definition["every"] = self._every
        moment = self.starting_at
        if moment is not None:
            definition["starting"] = moment.astimezone(UTC).isoformat()
        if self._once:
            definition["once"] = True
        if self._unless is not None:
            definition["unless_between"] = list(self._unless)
        if self._args is not None:
            definition["args"] = {"args": self._args[0], "kwargs": self._args[1]}
        if self._expect_success_within is not None:
            definition["expect_success_within"] = self._expect_success_within
        return definition

    def digest_state(self) -> tuple[Any, ...]:
        """Everything :meth:`definition` is made of, read quickly, in values ``marshal`` writes: the attributes
        this schedule's methods set (the defaults stay the class's), when()/skip() as whether there are any, the
        starting moment and the arguments as text. Equal states make equal definitions: a scan hashes them to
        tell a plugin unchanged without building 10,000 definitions (icc.tick.coordinator.plugin_digests)."""
        state: list[Any] = [bool(self._when or self._skip)]
        for key, value in self.__dict__.items():
            if key in _NOT_DIGESTED:
                continue
            if key == "_starting":
                value = repr(value)
            elif key == "_args":
                value = json.dumps(value, sort_keys=True)
            state.append((key, value))
        return tuple(state)

    @classmethod
    def from_definition(cls, definition: dict[str, Any], *, default_timezone: str = "UTC") -> Schedule:
        """Rebuild a schedule from :meth:`definition`, without callbacks (``has_callbacks`` is kept as a flag)."""
        if not isinstance(definition, dict):
            raise ScheduleError(f"a schedule definition is a dict, not {type(definition).__name__}")
        unknown = set(definition) - set(_DEFINITION_KEYS)
        missing = {"expression", "zone"} - set(definition)
        if unknown or missing:
            raise ScheduleError(
                f"schedule definition has unknown keys {sorted(unknown)} or lacks {sorted(missing)}; "
                f"expected keys: {', '.join(_DEFINITION_KEYS)}"
            )
        schedule = cls(default_timezone=default_timezone)
        schedule.cron(definition["expression"])
        zone = definition["zone"]
        if zone != default_timezone:
            schedule.timezone(zone)
        if definition.get("year") is not None:
            schedule.set_year(definition["year"])
        if definition.get("between") is not None:
            start, end = definition["between"]
            schedule.between(start, end)
        if definition.get("environments") is not None:
            schedule.environments(*definition["environments"])
        if definition.get("background", False):
            schedule.in_background()
        if definition.get("overlapping", False):
            schedule.allow_overlapping()
        if definition.get("timeout") is not None:
            schedule.timeout(definition["timeout"])
        schedule.missed(definition.get("missed", "skip"))
        schedule._callbacks_flag = bool(definition.get("has_callbacks", False))
        notify = definition.get("notify") or {}
        if not isinstance(notify, dict) or set(notify) - {*_NOTIFY_LISTS, "pings"}:
            raise ScheduleError(
                f"schedule definition 'notify' must be a dict with keys {', '.join(_NOTIFY_LISTS)}, pings"
            )
        for key in _NOTIFY_LISTS:
            for value in notify.get(key, ()):
                getattr(schedule, key)(value)
        if notify.get("pings", True) is False:
            schedule.without_pings()
        output = definition.get("output")
        if output is not None:
            schedule._output_file(output["path"], bool(output["append"]))
        if definition.get("even_when_paused", False):
            schedule.even_when_paused()
        if definition.get("on_each_host", False):
            schedule.on_each_host()
        if definition.get("seconds") is not None:
            schedule.every_seconds(definition["seconds"])
        if definition.get("jitter"):
            schedule.jitter(definition["jitter"])
        if definition.get("missed_window") is not None:
            schedule.missed_window(definition["missed_window"])
        if definition.get("every") is not None:
            schedule.every(minutes=definition["every"])
        if definition.get("starting") is not None:
            try:
                schedule.starting(datetime.fromisoformat(definition["starting"]))
            except (TypeError, ValueError):
                raise ScheduleError(
                    f"schedule definition 'starting' {definition['starting']!r} is not an ISO 8601 datetime"
                ) from None
        if definition.get("once"):
            schedule.once()
        if definition.get("unless_between") is not None:
            start, end = definition["unless_between"]
            schedule.unless_between(start, end)
        stored_args = definition.get("args")
        if stored_args is not None:
            if not isinstance(stored_args, dict) or not isinstance(stored_args.get("kwargs"), dict):
                raise ScheduleError("schedule definition 'args' must be a dict with keys args and kwargs")
            schedule.args(*stored_args.get("args", ()), **stored_args["kwargs"])
        if definition.get("expect_success_within") is not None:
            schedule.expect_success_within(definition["expect_success_within"])
        return schedule

    def __repr__(self) -> str:
        return f"<Schedule {self.expression!r} zone={self.zone!r} {self.describe()!r}>"


class UnbuiltSchedule:
    """The schedule of a job a lookup passes over (:class:`icc.jobs.Scheduler` with ``only``, in a run's
    supervisor): each fluent call (every :class:`Schedule` method that returns the schedule) is recorded, neither
    checked nor compiled, since the scan checked it. Anything else read from it builds the real schedule from the
    recorded calls first (a mistake raises then), and answers from that."""

    __slots__ = ("_built", "_calls", "_default_zone")

    def __init__(self, *, default_timezone: str = "UTC") -> None:
        self._default_zone = default_timezone
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._built: Schedule | None = None

    def build(self) -> Schedule:
        """The schedule the recorded calls make."""
        if self._built is None:
            schedule = Schedule(default_timezone=self._default_zone)
            for name, args, kwargs in self._calls:
                getattr(schedule, name)(*args, **kwargs)
            self._built = schedule
        return self._built

    def __getattr__(self, name: str) -> Any:
        return getattr(self.build(), name)

    def __repr__(self) -> str:
        return f"<UnbuiltSchedule of {len(self._calls)} calls>"


def _recorder(name: str) -> Callable[..., UnbuiltSchedule]:
    def record(self: UnbuiltSchedule, *args: Any, **kwargs: Any) -> UnbuiltSchedule:
        if self._built is not None:
            getattr(self._built, name)(*args, **kwargs)
        else:
            self._calls.append((name, args, kwargs))
        return self

    record.__name__ = record.__qualname__ = name
    return record


# The fluent methods, found rather than listed: one added to Schedule is recorded too.
FLUENT_METHODS = tuple(
    name
    for name, value in vars(Schedule).items()
    if isinstance(value, FunctionType)
    and not name.startswith("_")
    and value.__annotations__.get("return") == "Schedule"
)
for _name in FLUENT_METHODS:
    setattr(UnbuiltSchedule, _name, _recorder(_name))
