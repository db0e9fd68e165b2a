"""The idle tick's configuration reader: ``tomllib`` and ``os`` only, no dataclasses, typing or pathlib.

It finds the configuration file the way :func:`icc.config.load_config` does (``--config``, then
``ICC_CONFIG``, then the first ``icc.toml`` or ``pyproject.toml`` with ``[tool.icc]`` walking up from the
working directory) and returns the two settings the idle tick needs: the state directory and the time zone.
It answers only when it is sure the full loader would accept the same configuration and give the same two
values; on any doubt it returns None and the full command, the source of truth, loads the configuration
and reports what is wrong. Doubts: a key it does not know or a value it cannot vouch for, an ``ICC_*``
variable other than those of ``ENV_CHECKS`` (``ICC_STATE_DIR``, ``ICC_TIMEZONE``, ``ICC_ENVIRONMENT``,
``ICC_SCAN``, ``ICC_NOTIFY_URLS``, ``ICC_NOTIFY_INTERVAL``) and the ones that are never
configuration: ``ICC_CONFIG``, ``ICC_PLUGINS``, ``ICC_DISABLE_PLUGIN_AUTOLOAD``, plugin tables'
``ICC_<TABLE>__<KEY>``, a ``.env`` or ``.env.local`` that mentions ``ICC_`` or that the full loader would
refuse (not UTF-8, a NUL byte), and an ``[icc.store]`` table: with ``url`` (or ``ICC_STORE_URL``) the state
is in PostgreSQL, and the full tick reads it (a ``state.sqlite3`` left in the state directory is stale then).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing's: importing typing costs more than the rest of the idle tick
if TYPE_CHECKING:
    from collections.abc import Callable

    Check = Callable[[object], bool]

# Variables that are never configuration keys (icc.config.RESERVED_VARIABLES).
_RESERVED = frozenset({"ICC_CONFIG", "ICC_PLUGINS", "ICC_DISABLE_PLUGIN_AUTOLOAD"})
_CORE_TABLES = ("consumers", "queues", "monitor", "store", "notify", "web")
MAX_OUTPUT_LIMIT = 16 * 1024**2


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _number(value: object, minimum: float, maximum: float, exclusive: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if value != value or not minimum <= value <= maximum:  # no float(): a huge integer is out of range
        return False
    return value > minimum if exclusive else True


def _integer(value: object, minimum: int, maximum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and minimum <= value <= maximum


def _names(value: object) -> bool:
    return isinstance(value, list) and all(_text(v) for v in value)


def _url(value: object) -> bool:
    from icc.urls import url_problem  # lazy: urllib.parse: paid only by a config with a ping URL

    return url_problem(value) is None


def _timezone(value: object) -> bool:
    if not _text(value):
        return False
    assert isinstance(value, str)
    zone = value.strip()
    if zone == "UTC":
        return True
    import zoneinfo  # lazy: only a zone other than UTC (the idle tick)

    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


# What each key of icc.config accepts, as a yes/no check (the messages are the full loader's business), with
# the same bounds (icc.config.MAX_*; tests/system/test_edges_files.py pins that they agree).
# tests/tick/test_fastpath.py pins that these are exactly icc.config's keys: a key added there and not here
# makes the idle tick fall through (slower, never wrong).
CORE_CHECKS: dict[str, Check] = {
    "environment": _text,
    "timezone": _timezone,
    "state_dir": _text,
    "plugins": _names,
    "keep_runs": lambda v: _integer(v, 1, 1_000_000),
    "keep_skipped": lambda v: _integer(v, 0, 1_000_000),
    # A size with a unit ("64KiB") is a doubt: the full loader parses it.
    "output_limit": lambda v: _integer(v, 0, MAX_OUTPUT_LIMIT),
    "missed_window": lambda v: _integer(v, 0, 525_600),
    "grace": lambda v: _number(v, 0, 3600),
    "scan": lambda v: isinstance(v, str) and v.strip() in ("manual", "auto"),
    "scan_timeout": lambda v: _number(v, 0, 3600, exclusive=True),
    "callback_timeout": lambda v: _number(v, 0, 3600, exclusive=True),
    "keep_runs_days": lambda v: _number(v, 0, 36_600, exclusive=True),
}
CONSUMER_CHECKS: dict[str, Check] = {
    "mode": lambda v: isinstance(v, str) and v.strip() in ("cron", "service"),
    "queues": _names,
    "time_limit": lambda v: _number(v, 0, 86_400, exclusive=True),
    "skip_empty": lambda v: isinstance(v, bool),
    "notify": lambda v: isinstance(v, bool),  # true without [icc.store] is the full loader's error
}
QUEUE_CHECKS: dict[str, Check] = {
    "retries": lambda v: _integer(v, 0, 1000),
    "delay": lambda v: _number(v, 0, 604_800),
    "multiplier": lambda v: _number(v, 1, 100),
    "max_delay": lambda v: _number(v, 0, 604_800),
    "lease": lambda v: _number(v, 0, 86_400, exclusive=True),
}
MONITOR_CHECKS: dict[str, Check] = {
    "ping_url": _url,
    "timeout": lambda v: _number(v, 0, 600, exclusive=True),
}


def _notify_urls(value: object) -> bool:
    if not isinstance(value, list) or not value:
        return False
    from icc.urls import (  # lazy: paid only by a config with notification URLs
        apprise_missing,
        notify_url_problem,
    )

    return all(notify_url_problem(url) is None for url in value) and apprise_missing() is None


NOTIFY_CHECKS: dict[str, Check] = {
    "urls": _notify_urls,
    "interval": lambda v: _number(v, 0, 30 * 86_400),
}
# [icc.web]: the dashboard's token (icc.config's WEB_KEYS: at least 16 characters, spaces around it a doubt).
WEB_CHECKS: dict[str, Check] = {"token": lambda v: isinstance(v, str) and len(v) >= 16 and v == v.strip()}
_NAME = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_HOST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@-")
# [icc.store], read only for the PostgreSQL idle tick: the same rules as icc.config's STORE_KEYS (values with
# spaces around them, which the full loader strips, are a doubt).
STORE_CHECKS: dict[str, Check] = {
    "url": lambda v: isinstance(v, str) and v.startswith(("postgresql://", "postgres://")) and v == v.strip(),
    "schema": lambda v: isinstance(v, str) and 0 < len(v) <= 63 and set(v) <= _NAME and not v[0].isdigit(),
    "host_id": lambda v: isinstance(v, str) and 0 < len(v) <= 128 and set(v) <= _HOST and v[0] not in "_.:@-",
    "lease": lambda v: _number(v, 5, 86_400),
}


def _env_number(value: object, minimum: float, maximum: float) -> bool:
    """A variable's number, as the full loader reads it (``float`` of the stripped string)."""
    if not isinstance(value, str):
        return False
    try:
        number = float(value.strip())
    except ValueError:
        return False
    return _number(number, minimum, maximum)


# The variables this reader understands (each a string the full loader checks with the same rule).
ENV_CHECKS: dict[str, Check] = {
    "ICC_ENVIRONMENT": _text,
    "ICC_TIMEZONE": _timezone,
    "ICC_STATE_DIR": _text,
    "ICC_SCAN": lambda v: isinstance(v, str) and v.strip() in ("manual", "auto"),
    # Comma-separated, as the full loader splits them: set in a container's environment, they must not make
    # every idle minute a full tick.
    "ICC_NOTIFY_URLS": lambda v: isinstance(v, str) and _notify_urls([p.strip() for p in v.split(",")]),
    "ICC_NOTIFY_INTERVAL": lambda v: _env_number(v, 0, 30 * 86_400),
    "ICC_WEB_TOKEN": lambda v: True,  # the dashboard's: no tick reads it
}


class _Doubt(Exception):
    pass


# --- a subset of TOML ------------------------------------------------------------------------------
# tomllib costs more to import (typing, its regular expressions) than the rest of the idle tick. A config
# file is usually a few tables of plain keys with simple values, which simple_toml reads; for anything else
# (dotted keys, escapes, floats, multi-line values, a table or key defined twice...) it returns None and
# tomllib reads the file. tests/tick/test_fastpath.py pins that whatever it returns equals tomllib's result.

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _bare(key: str) -> bool:
    return bool(key) and all(c in _BARE for c in key)


def _simple_value(text: str) -> tuple[object, str] | None:
    """The value at the start of ``text`` and the rest of the line, or None."""
    if text.startswith('"'):
        end = text.find('"', 1)
        if end < 0 or "\\" in text[1:end]:
            return None
        value = text[1:end]
        if any((ord(c) < 0x20 and c != "\t") or c == "\x7f" for c in value):
            return None
        return value, text[end + 1 :]
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        items: list[object] = []
        inner = text[1:end].strip()
        if inner:
            parts = inner.split(",")
            for number, part in enumerate(parts):
                item = part.strip(" \t")
                if not item and 0 < number == len(parts) - 1:
                    continue  # a trailing comma
                parsed = _simple_value(item)
                if parsed is None or parsed[1].strip() or not isinstance(parsed[0], str):
                    return None
                items.append(parsed[0])
        return items, text[end + 1 :]
    word, _, rest = text.partition(" ")
    word, hashed, comment = word.partition("#")
    rest = f"{hashed}{comment} {rest}" if hashed else rest
    if word == "true":
        return True, rest
    if word == "false":
        return False, rest
    digits = word[1:] if word.startswith("-") else word
    if digits.isascii() and digits.isdigit() and (digits == "0" or not digits.startswith("0")):
        return int(word), rest
    return None


def simple_toml(text: str) -> dict[str, object] | None:
    """``text`` as ``tomllib.loads`` reads it, when it is a few tables of plain keys with simple values; None
    for anything else (then tomllib reads it, and says what is wrong)."""
    if "\r" in text.replace("\r\n", ""):
        return None  # a carriage return not ending a line: TOML refuses it
    document: dict[str, object] = {}
    table = document
    headers: set[str] = set()
    for raw in text.split("\n"):
        line = raw.strip(" \t\r")
        if "'" in line or any((ord(c) < 0x20 and c != "\t") or c == "\x7f" for c in line):
            return None
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            header, closed, rest = line[1:].partition("]")
            rest = rest.strip(" \t")
            keys = [key.strip(" \t") for key in header.split(".")]
            name = ".".join(keys)
            if not closed or line.startswith("[[") or (rest and not rest.startswith("#")) or name in headers:
                return None
            headers.add(name)
            table = document
            for key in keys:
                if not _bare(key):
                    return None
                inner = table.setdefault(key, {})
                if not isinstance(inner, dict):
                    return None
                table = inner
            if table:  # keys already set under it (a super-table defined later): leave that to tomllib
                return None
            continue
        key, equals, value_text = line.partition("=")
        key = key.strip(" \t")
        if not equals or not _bare(key) or key in table:
            return None
        parsed = _simple_value(value_text.strip(" \t"))
        if parsed is None:
            return None
        value, rest = parsed
        rest = rest.strip(" \t")
        if rest and not rest.startswith("#"):
            return None
        table[key] = value
    return document


def _toml(data: bytes) -> dict[str, object]:
    text = data.decode()
    document = simple_toml(text)
    if document is None:
        import tomllib  # lazy: only a file the idle tick's small reader cannot read

        document = tomllib.loads(text)
    return document


def _load(path: str) -> dict[str, object]:
    with open(path, "rb") as fh:
        return _toml(fh.read())


def _pyproject_has_icc(path: str) -> bool:
    with open(path, "rb") as fh:
        data = fh.read()
    if b"tool.icc" not in data and b"[tool]" not in data:
        return False
    tool = _toml(data).get("tool", {})
    if not isinstance(tool, dict):
        raise _Doubt
    return isinstance(tool.get("icc"), dict)


def _find(cwd: str) -> str | None:
    directory = cwd
    while True:
        candidate = os.path.join(directory, "icc.toml")
        if os.path.isfile(candidate):
            return candidate
        candidate = os.path.join(directory, "pyproject.toml")
        if os.path.isfile(candidate) and _pyproject_has_icc(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _icc_table(path: str) -> dict[str, object]:
    document = _load(path)
    if os.path.basename(path) == "pyproject.toml":
        tool = document.get("tool", {})
        if not isinstance(tool, dict):
            raise _Doubt
        table = tool.get("icc", {})
    else:
        if any(key != "icc" for key in document):
            raise _Doubt
        table = document.get("icc", {})
    if not isinstance(table, dict):
        raise _Doubt
    return table


def _check(table: object, checks: dict[str, Check]) -> None:
    if not isinstance(table, dict):
        raise _Doubt
    for key, value in table.items():
        check = checks.get(key)
        if check is None or not check(value):
            raise _Doubt


def _check_dotenv(root: str) -> None:
    for name in (".env", ".env.local"):
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            data = fh.read()
        data.decode()  # the full loader refuses a file that is not UTF-8
        if b"ICC_" in data or b"\0" in data:
            raise _Doubt


def read_config(
    config: str | None, store: dict[str, object] | None = None, settings: dict[str, object] | None = None
) -> tuple[str, str] | None:
    """``(state directory, time zone)`` of the configuration ``config`` (from ``--config``; None: look for
    it), or None when the full loader must decide. An ``[icc.store]`` table is a doubt, unless ``store`` is
    given (the PostgreSQL idle tick, :mod:`icc.store.postgres.idle`): then its checked keys are copied into it."""
    try:
        cwd = os.getcwd()
        if config is None and os.environ.get("ICC_CONFIG"):
            config = os.environ["ICC_CONFIG"]
        if config is not None:
            path: str | None = os.path.join(cwd, os.path.expanduser(config))
            assert path is not None
            if not os.path.isfile(path):
                return None
        else:
            path = _find(cwd)
        table = _icc_table(path) if path is not None else {}
        root = os.path.dirname(path) if path is not None else cwd
        for key, value in table.items():
            if key == "store":  # [icc.store]: state may live in PostgreSQL; the full tick reads it
                if store is None:
                    raise _Doubt
                _check(value, STORE_CHECKS)
                assert isinstance(value, dict)
                store.update(value)
                continue
            if key == "consumers":
                _check(value, CONSUMER_CHECKS)
                if isinstance(value, dict) and value.get("notify") is True and "store" not in table:
                    raise _Doubt  # notify needs PostgreSQL: the full loader says so
            elif key == "monitor":
                _check(value, MONITOR_CHECKS)
            elif key == "notify":
                _check(value, NOTIFY_CHECKS)
            elif key == "web":
                _check(value, WEB_CHECKS)
            elif key == "store":
                raise _Doubt  # [icc.store]: the state may live in PostgreSQL, which only the full tick reads
            elif key == "queues":
                if not isinstance(value, dict):
                    raise _Doubt
                for queue in value.values():
                    _check(queue, QUEUE_CHECKS)
            elif not isinstance(value, dict):  # a dict of another name is a plugin's table: not core's
                check = CORE_CHECKS.get(key)
                if check is None or not check(value):
                    raise _Doubt
        found = {key: value for key, value in table.items() if isinstance(value, str)}
        for name, value in os.environ.items():
            if not name.startswith("ICC_") or name in _RESERVED or "__" in name[4:]:
                continue  # never configuration, or a plugin table's variable (handed over unchecked)
            check = ENV_CHECKS.get(name)
            if check is None or not check(value):
                raise _Doubt
            found[name[4:].lower()] = value
        _check_dotenv(root)
    except (_Doubt, OSError, ValueError, UnicodeDecodeError):  # TOMLDecodeError is a ValueError
        return None
    state_dir = os.path.expanduser(str(found.get("state_dir", ".icc")).strip())
    timezone = str(found.get("timezone", "UTC")).strip()
    if settings is not None:  # what else the idle tick needs: [icc] scan
        settings["scan"] = str(found.get("scan", "manual")).strip()
    return os.path.join(root, state_dir), timezone
