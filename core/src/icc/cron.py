"""The cron engine: compiled expressions, fast minute matching, next runs and icc's daylight-saving policy.

An expression is parsed and validated once (plain numeric fields by icc itself, anything else with croniter,
imported lazily, so that ``import icc.cron``, the idle tick and a fresh tick of plain expressions stay cheap) and
compiled into a :class:`CronSpec`: one bitmask per field plus the day-of-month/day-of-week
rules precomputed for every shape of month. A :class:`TimeRule` adds what a schedule layers on top of the five
fields (zone, years, a ``between`` window) and knows the DST policy; :class:`DueIndex` evaluates many rules for one
slot at once.

Daylight saving time follows Debian cron as cronsim documents it. A rule whose minute or hour field starts with
``*`` is *wildcard*: it runs at every real instant whose local wall-clock time matches, so ``*/15 * * * *`` keeps
its real-time cadence through both transitions. Any other rule is *fixed*: its wall-clock times run once on a
fall-back day (at the first occurrence) and, when a spring-forward gap swallows them, once at the first minute
after the gap.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icc.errors import ScheduleError

__all__ = [
    "ALIASES",
    "FIELD_NAMES",
    "FIELD_RANGES",
    "CronSpec",
    "DueIndex",
    "HasTimeRule",
    "SlotContext",
    "TimeRule",
    "compile_expression",
    "get_zone",
    "parse_years",
    "split_expression",
    "validate_field",
]

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)

FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
YEAR_RANGE = (0, 9999)

# The shortcuts Vixie cron knows; @weekly is Sunday there, unlike icc's weekly() which is Monday.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# Characters each field may hold before croniter sees it. croniter also knows hashed (H), random (R) and
# nearest-weekday (W) values and seconds/years columns; icc does not, so they are refused up front. Patterns, not
# compiled ones: re compiles (and caches) one when an expression is not a plain one (_simple_mask), which a due
# tick never meets (compiling them at import was a millisecond of every tick).
_FIELD_CHARS = (
    r"[0-9*,/\-]+",
    r"[0-9*,/\-]+",
    r"[0-9*,/\-?Ll]+",
    r"[0-9A-Za-z*,/\-]+",
    r"[0-9A-Za-z*,/\-#?]+",
)
_SYNTAX_HINT = {
    0: "a number 0-59 or cron syntax such as '*/5', '0-30/5', '15,45'",
    1: "a number 0-23 or cron syntax such as '*/3', '9-17', '0,12'",
    2: "a number 1-31, 'L' (last day) or cron syntax such as '1,15', '*/2'",
    3: "a number 1-12, a name (JAN-DEC) or cron syntax such as '1-6', '*/3'",
    4: "a number 0-7 (0 and 7 are Sunday), a name (MON-SUN), 'MON#2' (second Monday), 'L5' (last Friday) "
    "or cron syntax such as '1-5'",
}
_EQUAL_RANGE = r"^([^-/#]+)-([^-/#]+)(/\d+)?$"  # a pattern, as above
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _low_bit(mask: int) -> int:
    """Index of the lowest set bit of a non-zero mask."""
    return (mask & -mask).bit_length() - 1


def _days_in_month(year: int, month: int) -> int:
    # calendar.isleap, without importing calendar (and locale with it: a due tick's import time)
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _DAYS_IN_MONTH[month]


def get_zone(name: str) -> ZoneInfo:
    """The IANA zone called *name*, or a :class:`ScheduleError` that says so."""
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(
            f"time zone {name!r} is not valid: give an IANA zone name such as 'Europe/Berlin'"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(
            f"time zone {name!r} is unknown: give an IANA zone name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def split_expression(expression: str) -> tuple[str, str, str, str, str]:
    """The five fields of *expression*, with the ``@daily``-style shortcuts expanded."""
    if not isinstance(expression, str):
        raise ScheduleError(f"a cron expression is a string such as '30 4 * * 1', not {expression!r}")
    text = expression.strip()
    if text.startswith("@"):
        alias = ALIASES.get(text.lower())
        if alias is None:
            raise ScheduleError(
                f"cron shortcut {text!r} is not supported; use one of {', '.join(ALIASES)} or five fields"
            )
        text = alias
    parts = text.split()
    if len(parts) != 5:
        fields = "1 field" if len(parts) == 1 else f"{len(parts)} fields"
        raise ScheduleError(
            f"cron expression {expression!r} has {fields}; it needs exactly 5: "
            "minute hour day-of-month month day-of-week (for example '30 4 * * 1')"
        )
    return parts[0], parts[1], parts[2], parts[3], parts[4]


def _normalize_for_croniter(text: str) -> str:
    """Rewrite ``a-a`` (and ``a-a/n``) as ``a``: croniter reads an equal range as the whole field, cron as one value."""
    terms = []
    for term in text.split(","):
        m = re.match(_EQUAL_RANGE, term)
        if m and m.group(1).lower() == m.group(2).lower():
            term = m.group(1)
        terms.append(term)
    return ",".join(terms)


def _field_error(index: int, value: str, detail: str = "") -> ScheduleError:
    low, high = FIELD_RANGES[index]
    extra = f" ({detail})" if detail else ""
    return ScheduleError(
        f"{FIELD_NAMES[index]} {value!r} is not valid: the range is {low}-{high}; "
        f"give {_SYNTAX_HINT[index]}{extra}"
    )


def _expand(expression: str) -> tuple[list[list[int | str]], dict[int, set[int | str]]]:
    # croniter is imported here, not at module level: parsing happens at scan time and once per new expression
    # (compile_expression is cached), never on the idle tick.
    from croniter import croniter  # lazy: only to parse a new expression (see above)

    expanded, nth = croniter.expand(expression)
    return expanded, nth


# The mask of "*" in each field (day-of-week: 0-6, 7 is Sunday again).
_EVERY = tuple(
    ((1 << (high + 1)) - 1) & ~((1 << low) - 1) for low, high in ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
)
# Every day of every month shape: the day masks of "* * *" (and any rule whose day fields are all "every day").
_ALL_DAYS = tuple((1 << (dim + 1)) - 2 for _wd in range(7) for dim in range(28, 32))


def _simple_number(text: str, low: int, high: int) -> int | None:
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        return None
    number = int(text)
    return number if low <= number <= high else None


def _simple_mask(index: int, value: str) -> int | None:
    """The bitmask of a field written in plain numeric cron syntax (``*``, ``*/s``, ``a``, ``a-b``, ``a-b/s``
    and lists of them), or None for anything else (names, ``L``, ``#``, ``?``, ``a/s``, leading zeros, Sunday as
    7, a range that wraps), which croniter parses. Equal to croniter's reading (tests/model/test_cron_simple.py), but
    about a hundred times faster and without importing croniter: scans and fresh ticks compile every stored
    expression."""
    if value == "*":
        return _EVERY[index]
    low, high = FIELD_RANGES[index]
    if index == 4:
        high = 6  # 7 (Sunday again) is croniter's to map
    mask = 0
    terms = value.split(",")
    for term in terms:
        body, slash, step_text = term.partition("/")
        step = 1
        if slash:
            parsed = _simple_number(step_text, 1, high)
            if parsed is None:
                return None
            step = parsed
        if body == "*":
            if (slash and index == 4) or len(terms) > 1:
                return None  # croniter reads "*" in a list its own way
            start, end = low, high
        else:
            first, dash, last = body.partition("-")
            start_n = _simple_number(first, low, high)
            if start_n is None:
                return None
            if dash:
                end_n = _simple_number(last, low, high)
                if end_n is None or end_n < start_n:
                    return None
            elif slash:
                return None  # "a/s": croniter reads it as a-max/s, cron implementations differ
            else:
                end_n = start_n
            start, end = start_n, end_n
        for number in range(start, end + 1, step):
            mask |= 1 << number
    return mask


@functools.lru_cache(maxsize=4096)
def validate_field(index: int, value: str) -> None:
    """Raise a :class:`ScheduleError` naming the field, value and range unless *value* is valid cron syntax."""
    if _simple_mask(index, value) is not None:
        return
    if not re.fullmatch(_FIELD_CHARS[index], value):
        if index == 2 and "w" in value.lower():
            raise _field_error(index, value, "W, the nearest weekday, is not supported")
        raise _field_error(index, value)
    probe = ["*"] * 5
    probe[index] = _normalize_for_croniter(value)
    try:
        _expand(" ".join(probe))
    except Exception as exc:  # croniter raises a handful of ValueError/TypeError subclasses
        detail = str(exc).split("\n")[-1].strip()
        if "mixing literal values and nth" in detail:
            detail = "'#' values cannot be mixed with plain days in one field"
        elif "out of" in detail or "not acceptable" in detail:
            detail = ""
        raise _field_error(index, value, detail) from None


def _field_mask(values: list[int | str], low: int, high: int) -> int:
    if values == ["*"]:
        return sum(1 << v for v in range(low, high + 1))
    return sum(1 << v for v in values if isinstance(v, int))


@functools.lru_cache(maxsize=1024)
def _day_masks(
    dom: int, dom_last: bool, dow: int, dow_nth: frozenset[tuple[int, int]], dow_last: int, day_and: bool
) -> tuple[int, ...]:
    """The matching days for every month shape, indexed by ``first_weekday * 4 + days_in_month - 28``.

    Cached on the day fields alone: most expressions share them (``* * *``), and the minute/hour fields do not
    change which days match.
    """
    every_weekday = dow & 0x7F == 0x7F
    if day_and and not dow_nth and not dow_last and (every_weekday or (dom >> 1) == (1 << 31) - 1):
        # The common shapes, without a loop over every day of every shape: one field is "every day".
        if every_weekday and (dom >> 1) == (1 << 31) - 1:
            return _ALL_DAYS
        if every_weekday:
            return tuple(
                (dom & ((1 << (dim + 1)) - 2)) | (dom_last << dim)
                for _wd in range(7)
                for dim in range(28, 32)
            )
        if not dom_last:
            shapes: list[int] = []
            for first_wd in range(7):
                weekly = 0
                for day in range(1, 32):
                    if dow >> ((first_wd + day - 1) % 7) & 1:
                        weekly |= 1 << day
                shapes.extend(weekly & ((1 << (dim + 1)) - 2) for dim in range(28, 32))
            return tuple(shapes)
    masks = []
    for first_wd in range(7):
        for dim in range(28, 32):
            mask = 0
            for day in range(1, dim + 1):
                wd = (first_wd + day - 1) % 7
                dom_ok = bool(dom >> day & 1) or (dom_last and day == dim)
                dow_ok = (
                    bool(dow >> wd & 1)
                    or (wd, (day - 1) // 7 + 1) in dow_nth
                    or (bool(dow_last >> wd & 1) and day + 7 > dim)
                )
                if (dom_ok and dow_ok) if day_and else (dom_ok or dow_ok):
                    mask |= 1 << day
            masks.append(mask)
    return tuple(masks)


@dataclass(frozen=True, slots=True)
class CronSpec:
    """One compiled 5-field expression: a bitmask per field and the day rule for every shape of month."""

    text: str
    minutes: int  # bit m for minute m
    hours: int  # bit h for hour h
    months: int  # bit m for month m (1-12)
    dom: int  # bit d for day d (1-31)
    dom_last: bool  # "L": the last day of the month
    dow: int  # bit w for weekday w, 0 = Sunday
    dow_nth: frozenset[tuple[int, int]]  # (weekday, n): the n-th such weekday of the month
    dow_last: int  # bit w: the last such weekday of the month ("L5")
    dom_star: bool  # field text starts with "*" (or is "?"): Vixie then ANDs the day fields instead of ORing
    dow_star: bool
    wildcard: bool  # minute or hour starts with "*": real-time cadence through DST changes
    # Day masks indexed by first_weekday * 4 + (days_in_month - 28): 28 month shapes cover every calendar.
    day_masks: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        day_and = self.dom_star or self.dow_star
        masks = _day_masks(self.dom, self.dom_last, self.dow, self.dow_nth, self.dow_last, day_and)
        object.__setattr__(self, "day_masks", masks)

    def day_mask(self, year: int, month: int) -> int:
        """Bit d set when day d of that month matches the day-of-month/day-of-week/month rules."""
        if not self.months >> month & 1:
            return 0
        first_wd = (date(year, month, 1).weekday() + 1) % 7
        return self.day_masks[first_wd * 4 + _days_in_month(year, month) - 28]

    def feasible(self) -> bool:
        """Whether any date ever matches. Every (month, first weekday, length) shape occurs in the calendar."""
        for month in range(1, 13):
            if not self.months >> month & 1:
                continue
            lengths = (28, 29) if month == 2 else (_DAYS_IN_MONTH[month],)
            for first_wd in range(7):
                for dim in lengths:
                    if self.day_masks[first_wd * 4 + dim - 28]:
                        return True
        return False

    def first_minute(self, from_mod: int, window: tuple[int, int] | None) -> int | None:
        """The first minute of the day (``hour * 60 + minute``) at or after *from_mod* that matches, or None."""
        hours, minutes = self.hours, self.minutes
        mod = from_mod
        for _ in range(3):  # a window moves the start at most once or twice
            if mod >= 1440:
                return None
            hour, minute = divmod(mod, 60)
            cand = -1
            if hours >> hour & 1:
                rest = minutes >> minute
                if rest:
                    cand = mod + _low_bit(rest)
            if cand < 0:
                later = hours >> (hour + 1)
                if not later:
                    return None
                cand = (hour + 1 + _low_bit(later)) * 60 + _low_bit(minutes)
            if window is None:
                return cand
            start, end = window
            if start <= end:
                if start <= cand <= end:
                    return cand
                if cand > end:
                    return None
                mod = start
            else:
                if cand >= start or cand <= end:
                    return cand
                mod = start
        return None


@functools.lru_cache(maxsize=4096)
def compile_expression(expression: str) -> CronSpec:
    """Parse, validate and compile a 5-field expression (or an ``@daily``-style shortcut)."""
    fields = split_expression(expression)
    text = " ".join(fields)
    simple = [_simple_mask(index, value) for index, value in enumerate(fields)]
    if None not in simple:
        spec = CronSpec(
            text=text,
            minutes=simple[0] or 0,
            hours=simple[1] or 0,
            months=simple[3] or 0,
            dom=simple[2] or 0,
            dom_last=False,
            dow=simple[4] or 0,
            dow_nth=frozenset(),
            dow_last=0,
            dom_star=fields[2].startswith("*"),
            dow_star=fields[4].startswith("*"),
            wildcard=fields[0].startswith("*") or fields[1].startswith("*"),
        )
        if spec.feasible():
            return spec
        return _compile_with_croniter(fields)  # its error message, worded once
    return _compile_with_croniter(fields)


def _compile_with_croniter(fields: tuple[str, str, str, str, str]) -> CronSpec:
    """Compile five fields with croniter's parser: any syntax icc accepts."""
    for index, value in enumerate(fields):
        validate_field(index, value)
    text = " ".join(fields)
    normalized = " ".join(_normalize_for_croniter(f) for f in fields)
    try:
        expanded, nth = _expand(normalized)
    except Exception as exc:
        detail = str(exc).split("\n")[-1].strip()
        raise ScheduleError(f"cron expression {text!r} is not valid: {detail}") from None

    dom_values = expanded[2]
    dow_values = expanded[4]
    nth_pairs: set[tuple[int, int]] = set()
    last_mask = 0
    for weekday, kinds in nth.items():
        for kind in kinds:
            if kind == "l":
                last_mask |= 1 << int(weekday)
            else:
                nth_pairs.add((int(weekday), int(kind)))
    plain_dow = _field_mask(dow_values, 0, 6) & ~sum(1 << int(w) for w in nth)

    def starred(value: str) -> bool:
        return value.startswith("*") or value == "?"

    spec = CronSpec(
        text=text,
        minutes=_field_mask(expanded[0], 0, 59),
        hours=_field_mask(expanded[1], 0, 23),
        months=_field_mask(expanded[3], 1, 12),
        dom=_field_mask(dom_values, 1, 31),
        dom_last="l" in dom_values,
        dow=plain_dow,
        dow_nth=frozenset(nth_pairs),
        dow_last=last_mask,
        dom_star=starred(fields[2]),
        dow_star=starred(fields[4]),
        wildcard=fields[0].startswith("*") or fields[1].startswith("*"),
    )
    if not spec.feasible():
        raise ScheduleError(
            f"cron expression {text!r} never matches: no date has day-of-month {fields[2]!r} "
            f"in month {fields[3]!r} (with day-of-week {fields[4]!r}); day-of-month is 1-31 and must exist "
            "in one of the months"
        )
    return spec


@functools.lru_cache(maxsize=256)
def parse_years(rule: str) -> int:
    """Compile a year rule (``2025``, ``2025-2030``, ``*/2``, ``2024,2026``) into a bitmask over 0-9999."""
    low, high = YEAR_RANGE

    def bad(detail: str = "") -> ScheduleError:
        extra = f" ({detail})" if detail else ""
        return ScheduleError(
            f"year {rule!r} is not valid: the range is {low}-{high}; give a year or cron syntax such as "
            f"'2025-2030', '*/2', '2024,2026'{extra}"
        )

    def number(text: str) -> int:
        if not text.isdigit() or not text.isascii():
            raise bad()
        value = int(text)
        if not low <= value <= high:
            raise bad(f"{value} is out of range")
        return value

    mask = 0
    for term in rule.split(","):
        base, slash, step_text = term.partition("/")
        step = 1
        if slash:
            step = number(step_text)
            if step == 0:
                raise bad("a step must be at least 1")
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = number(a), number(b)
            if first > last:
                raise bad(f"range {base} runs backwards")
        else:
            first = number(base)
            last = high if slash else first
        for year in range(first, last + 1, step):
            mask |= 1 << year
    return mask


@functools.lru_cache(maxsize=4096)
def _is_transition_day(zone: ZoneInfo, day: date) -> bool:
    """Whether the offset of *zone* changes during *day* or at either midnight (cached: every rule asks).

    Both folds of both midnights are read: a midnight inside a gap or a repeated hour has two offsets, and a gap
    that crosses midnight must be scanned from the day it starts on.
    """
    try:
        following = day + DAY
    except OverflowError:
        return False
    start = datetime.combine(day, time(), tzinfo=zone)
    end = datetime.combine(following, time(), tzinfo=zone)
    offset = start.utcoffset()
    return not (
        start.replace(fold=1).utcoffset() == offset
        and end.utcoffset() == offset
        and end.replace(fold=1).utcoffset() == offset
    )


def _epoch_minute(moment: datetime) -> int:
    """Whole minutes since the Unix epoch of an aware *moment* (floored)."""
    return int(moment.timestamp() // 60)


def _window_holds(window: tuple[int, int], mod: int) -> bool:
    """Whether minute-of-day *mod* is inside the inclusive *window* (start > end crosses midnight)."""
    start, end = window
    return start <= mod <= end if start <= end else (mod >= start or mod <= end)


class SlotContext:
    """One minute slot read in one zone: everything a rule needs to decide, computed once per zone."""

    __slots__ = (
        "_epoch",
        "_gap",
        "_gap_known",
        "_local",
        "_zone",
        "day",
        "dim",
        "first_wd",
        "hour",
        "minute",
        "mod",
        "month",
        "repeat",
        "year",
    )

    def __init__(self, at: datetime, zone: tzinfo) -> None:
        local = (at.replace(tzinfo=zone) if at.tzinfo is None else at.astimezone(zone)).replace(
            second=0, microsecond=0
        )
        self._local = local
        self._zone = zone
        self._gap: tuple[datetime, datetime] | None = None
        self._gap_known = False
        self._epoch: int | None = None
        self.year = local.year
        self.month = local.month
        self.day = local.day
        self.hour = local.hour
        self.minute = local.minute
        self.mod = local.hour * 60 + local.minute
        self.first_wd = (local.weekday() + 1 - (local.day - 1)) % 7
        self.dim = _days_in_month(local.year, local.month)
        # The second pass through a repeated (fall-back) hour; zoneinfo sets fold=1 only there.
        self.repeat = local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()

    @property
    def epoch_minute(self) -> int:
        """The slot as whole minutes since the Unix epoch (UTC): what every()/starting()/once() count in."""
        if self._epoch is None:
            self._epoch = _epoch_minute(self._local)
        return self._epoch

    @property
    def gap(self) -> tuple[datetime, datetime] | None:
        """The wall-clock minutes [start, end) a spring-forward gap swallowed just before this slot, if any.

        Computed on first use: only fixed-time rules that do not match the slot itself ever ask.
        """
        if not self._gap_known:
            self._gap_known = True
            local = self._local
            wall = local.replace(tzinfo=None)
            try:
                prev = (local.astimezone(UTC) - MINUTE).astimezone(self._zone).replace(tzinfo=None)
            except OverflowError:
                return None
            if wall - prev > MINUTE:
                self._gap = (prev + MINUTE, wall)
        return self._gap


@dataclass(frozen=True, slots=True)
class TimeRule:
    """Everything that decides *when* a schedule runs: cron fields, zone, years and a ``between`` window."""

    spec: CronSpec
    zone_name: str
    years: int | None = None  # bitmask over years, None for every year
    window: tuple[int, int] | None = None  # minutes of the day, inclusive; start > end crosses midnight
    zone: ZoneInfo = field(default=None, compare=False, repr=False)  # type: ignore[assignment]
    # every(): a run every ``period`` minutes counted in UTC from ``start`` (the epoch when None); the cron
    # fields are then all ``*`` and only the filters (years, window, unless) read the wall clock.
    period: int = 0
    start: int | None = None  # starting(): minutes since the epoch (UTC); no run before it
    once: bool = False  # once(): only the first run at or after ``start``
    unless: tuple[int, int] | None = None  # unless_between(): minutes of the day excluded, inclusive

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", get_zone(self.zone_name))

    @property
    def has_times(self) -> bool:
        """Whether any minute of the day passes the cron fields, the window and the unless window."""
        if self.unless is None:
            return self.spec.first_minute(0, self.window) is not None
        return self._first_minute(0) is not None

    def _first_minute(self, from_mod: int) -> int | None:
        """The first minute of the day at or after *from_mod* that the fields and both windows allow."""
        mod = from_mod
        for _ in range(4):  # the unless window moves the start at most twice
            found = self.spec.first_minute(mod, self.window)
            if found is None or self.unless is None or not _window_holds(self.unless, found):
                return found
            start, end = self.unless
            if start <= end or found <= end:
                mod = end + 1  # past the window (or its morning part, when it crosses midnight)
            else:
                return None  # the window runs to midnight
            if mod >= 1440:
                return None
        return None

    def _window_ok(self, mod: int) -> bool:
        window = self.window
        if window is None:
            return True
        start, end = window
        return start <= mod <= end if start <= end else (mod >= start or mod <= end)

    def _date_ok(self, year: int, month: int, day: int) -> bool:
        if self.years is not None and not self.years >> year & 1:
            return False
        return bool(self.spec.day_mask(year, month) >> day & 1)

    def matches_context(self, ctx: SlotContext) -> bool:
        """The decision for one slot already read in this rule's zone (see :class:`SlotContext`)."""
        spec = self.spec
        if (
            spec.minutes >> ctx.minute & 1
            and spec.hours >> ctx.hour & 1
            and spec.months >> ctx.month & 1
            and spec.day_masks[ctx.first_wd * 4 + ctx.dim - 28] >> ctx.day & 1
            and (self.years is None or self.years >> ctx.year & 1)
            and (self.window is None or self._window_ok(ctx.mod))
            and (self.unless is None or not _window_holds(self.unless, ctx.mod))
        ):
            # A fixed-time job runs at the first occurrence of a repeated wall-clock time only.
            hit = spec.wildcard or not ctx.repeat
        elif spec.wildcard:
            return False
        else:
            gap = ctx.gap
            hit = gap is not None and self._gap_hit(*gap)
        if not hit or (self.start is None and not self.period):
            return hit
        return self._counted_ok(ctx.epoch_minute)

    def _counted_ok(self, minute: int) -> bool:
        """The real-time part of a rule (every, starting, once) for the epoch minute of a slot the rest allows."""
        if self.start is not None and minute < self.start:
            return False
        if self.period and (minute - (self.start or 0)) % self.period:
            return False
        return not self.once or minute == _first_slot(self)

    def _gap_hit(self, start: datetime, end: datetime) -> bool:
        """Whether a wall-clock time in [start, end) would have run: fixed jobs run at the first minute after."""
        day = start.date()
        mod = start.hour * 60 + start.minute
        while day <= end.date():
            if self._date_ok(day.year, day.month, day.day):
                found = (
                    self.spec.first_minute(mod, self.window)
                    if self.unless is None
                    else self._first_minute(mod)
                )
                if found is not None and datetime.combine(day, time(found // 60, found % 60)) < end:
                    return True
            day += DAY
            mod = 0
        return False

    def matches(self, at: datetime) -> bool:
        """Whether the minute containing *at* is a run of this rule (a naive *at* is read in the rule's zone)."""
        return self.matches_context(SlotContext(at, self.zone))

    def _next_date(self, start: date) -> date | None:
        """The first date on or after *start* whose year, month and day match."""
        year, month, day = start.year, start.month, start.day
        years, months = self.years, self.spec.months
        while True:
            if year > 9999:
                return None
            if years is not None and not years >> year & 1:
                rest = years >> year
                if not rest:
                    return None
                year += _low_bit(rest)
                month, day = 1, 1
                continue
            rest = months >> month
            if not rest:
                year, month, day = year + 1, 1, 1
                continue
            found_month = month + _low_bit(rest)
            if found_month != month:
                month, day = found_month, 1
            days = self.spec.day_mask(year, month) >> day
            if days:
                return date(year, month, day + _low_bit(days))
            month, day = month + 1, 1
            if month > 12:
                year, month = year + 1, 1

    def _is_transition_day(self, day: date) -> bool:
        return _is_transition_day(self.zone, day)

    def _scan_transition_day(self, day: date, start: datetime) -> datetime | None:
        """Step real minutes through a day with a DST change; matches() holds the policy, so both agree.

        The scan runs from the earliest reading of the day's midnight to the latest reading of the next one, in
        real time, whatever date the minutes show: a gap at the end of the day (America/Nuuk jumps from 23:00 to
        00:00) runs the day's swallowed times at the next day's first minute, and a repeated hour that crosses
        midnight (America/St_Johns went back from 00:01 to 23:01 until 2011) returns to the day after its
        midnight.
        """
        zone = self.zone
        midnight = datetime.combine(day, time(), tzinfo=zone)
        following = datetime.combine(day + DAY, time(), tzinfo=zone)
        first = min(midnight.astimezone(UTC), midnight.replace(fold=1).astimezone(UTC))
        stop = max(following.astimezone(UTC), following.replace(fold=1).astimezone(UTC))
        instant = max(first, start.astimezone(UTC))
        for _ in range(3 * 1440):  # a day is at most 24 h plus a shift; the bound only guards odd zones
            if instant > stop:
                return None
            local = instant.astimezone(zone)
            if self.matches_context(SlotContext(local, zone)):
                return local
            instant += MINUTE
        return None

    def next_after(self, after: datetime) -> datetime | None:
        """The first run strictly after *after*, aware in the rule's zone; None when there is none."""
        if self.start is None and not self.period:
            return self._next_cron(after)
        zone = self.zone
        try:
            local = after.replace(tzinfo=zone) if after.tzinfo is None else after
            after_minute = _epoch_minute(local)
        except (OverflowError, ValueError):
            return None
        if self.once:
            first = _first_slot(self)
            return None if first is None or first <= after_minute else _from_epoch_minute(first, zone)
        if self.start is not None and after_minute < self.start - 1:
            after_minute = self.start - 1
        if not self.period:
            try:
                return self._next_cron(_from_epoch_minute(after_minute, zone))
            except (OverflowError, ValueError):
                return None
        return self._next_counted(after_minute)

    def _next_counted(self, after_minute: int) -> datetime | None:
        """every(): the first aligned minute after *after_minute* that the filters (years, windows) allow."""
        period, anchor = self.period, self.start or 0
        filters = replace(self, period=0, start=None, once=False)
        minute = after_minute + 1
        for _ in range(_COUNTED_STEPS):
            minute = anchor + -(-(minute - anchor) // period) * period  # aligned, rounding up
            try:
                candidate = _from_epoch_minute(minute, self.zone)
            except (OverflowError, ValueError):
                return None
            if filters.matches(candidate):
                return candidate
            allowed = filters.next_after(candidate)  # skip the minutes the filters refuse in one step
            if allowed is None:
                return None
            minute = _epoch_minute(allowed)
        return None

    def _next_cron(self, after: datetime) -> datetime | None:
        zone = self.zone
        if not self.has_times:
            return None
        try:
            local = (after.replace(tzinfo=zone) if after.tzinfo is None else after.astimezone(zone)).replace(
                second=0, microsecond=0
            )
            start = (local.astimezone(UTC) + MINUTE).astimezone(zone)
        except OverflowError:
            return None
        day: date | None = start.date()
        assert day is not None
        if day > date.min and self._is_transition_day(day - DAY):
            # The day before may still have runs at or after start: the swallowed times of a gap that ended at
            # midnight (America/Nuuk: 23:00 to 00:00), or the second pass of a repeated hour across midnight.
            hit = self._scan_transition_day(day - DAY, start)
            if hit is not None:
                return hit
        mod = start.hour * 60 + start.minute
        # Each pass either returns or leaves a matching day; only a run of DST days without a hit can repeat it.
        for _ in range(10_000):
            assert day is not None
            found = self._next_date(day)
            if found is None:
                return None
            if found != day:
                mod = 0
            day = found
            if self._is_transition_day(day):
                hit = self._scan_transition_day(day, start)
                if hit is not None:
                    return hit
            else:
                minute = (
                    self.spec.first_minute(mod, self.window)
                    if self.unless is None
                    else self._first_minute(mod)
                )
                if minute is not None:
                    return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)
            if day == date.max:
                return None
            day += DAY
            mod = 0
        return None


_COUNTED_STEPS = 20_000  # every(): aligned minutes tried past refused ones before next_after gives up (None)


def _from_epoch_minute(minute: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(minute * 60, UTC).astimezone(zone)


@functools.lru_cache(maxsize=1024)
def _first_slot(rule: TimeRule) -> int | None:
    """once(): the epoch minute of the one run, the first the rule without once() has at or after its start."""
    if rule.start is None:
        return None
    found = replace(rule, once=False).next_after(_from_epoch_minute(rule.start - 1, rule.zone))
    return None if found is None else _epoch_minute(found)


class HasTimeRule(Protocol):
    """Anything that carries a :class:`TimeRule`, such as :class:`icc.Schedule`."""

    @property
    def time_rule(self) -> TimeRule: ...


class DueIndex:
    """Finds the due set of many rules for one slot: each zone is read once, identical rules are checked once."""

    def __init__(self, items: Iterable[TimeRule | HasTimeRule]) -> None:
        by_zone: dict[str, dict[TimeRule, list[int]]] = {}
        count = 0
        for index, item in enumerate(items):
            rule = item if isinstance(item, TimeRule) else item.time_rule
            by_zone.setdefault(rule.zone_name, {}).setdefault(rule, []).append(index)
            count = index + 1
        self._groups = [
            (get_zone(name), [(rule, indices) for rule, indices in rules.items()])
            for name, rules in by_zone.items()
        ]
        self.size = count
        self.distinct = sum(len(rules) for _, rules in self._groups)

    def due(self, slot: datetime) -> list[int]:
        """Indices (in input order) of the rules due in the minute *slot*; a naive slot is read as UTC."""
        if slot.tzinfo is None:
            slot = slot.replace(tzinfo=UTC)
        result: list[int] = []
        for zone, rules in self._groups:
            ctx = SlotContext(slot, zone)
            for rule, indices in rules:
                if rule.matches_context(ctx):
                    result.extend(indices)
        result.sort()
        return result


# -- the compiled form kept in a stored job definition ---------------------------------------------------------

# Flags of a compiled form: bit 0, the day fields are ANDed (one of them starts with "*"); bit 1, the rule is
# wildcard (real-time cadence through DST changes); bit 2, the day rule needs the full CronSpec (L, #, L5).
_C_DAY_AND = 1
_C_WILDCARD = 2
_C_SLOW_DAYS = 4


def compiled_form(rule: TimeRule) -> list[int] | None:
    """The masks a fresh tick tests without parsing anything: ``[minutes, hours, dom, months, dow, flags,
    window_start, window_end]`` (window -1 when there is none); None for a year rule (the tick then builds the
    schedule)."""
    if rule.years is not None:
        return None
    if rule.period or rule.start is not None or rule.unless is not None:
        return None  # every(), starting(), once() and unless_between(): the full rule decides
    spec = rule.spec
    flags = (_C_DAY_AND if spec.dom_star or spec.dow_star else 0) | (_C_WILDCARD if spec.wildcard else 0)
    if spec.dom_last or spec.dow_nth or spec.dow_last:
        flags |= _C_SLOW_DAYS
    start, end = rule.window if rule.window is not None else (-1, -1)
    return [spec.minutes, spec.hours, spec.dom, spec.months, spec.dow, flags, start, end]


def compiled_matches(compiled: list[int], zone_name: str, at: datetime) -> bool | None:
    """Whether the minute of the aware instant *at* is a run of a rule in its :func:`compiled_form`, with bit
    tests only; None when only the full :class:`TimeRule` can tell (a DST change next to *at*, day rules with
    L or #, a malformed form). Agrees with :meth:`TimeRule.matches` wherever it answers (tests/model/test_cron_compiled.py).
    """
    try:
        minutes, hours, dom, months, dow, flags, start, end = compiled
        zone = ZoneInfo(zone_name)
    except (ValueError, TypeError, ZoneInfoNotFoundError, OSError):
        return None
    local = at.astimezone(zone)
    hour, minute = local.hour, local.minute
    if minutes >> minute & 1 and hours >> hour & 1 and months >> local.month & 1:
        if flags & _C_SLOW_DAYS:
            return None  # L, # and L5 need the month's shape: the full rule knows it
        dom_ok = dom >> local.day & 1
        dow_ok = dow >> (local.isoweekday() % 7) & 1
        day_ok = (dom_ok and dow_ok) if flags & _C_DAY_AND else (dom_ok or dow_ok)
        mod = hour * 60 + minute
        if day_ok and (start < 0 or (start <= mod <= end if start <= end else (mod >= start or mod <= end))):
            # Fixed-time rules run at the first pass of a repeated hour only: the second pass is the slow path.
            return True if flags & _C_WILDCARD or not local.fold else None
    if flags & _C_WILDCARD:
        return False
    # A fixed-time rule may still owe a time a spring-forward gap swallowed just before *at*: any wall-clock
    # jump other than one minute sends it to the slow path.
    before = (at - MINUTE).astimezone(zone)
    return False if (mod_of(local) - mod_of(before)) % 1440 == 1 else None


def mod_of(local: datetime) -> int:
    return local.hour * 60 + local.minute
