"""Configuration: ``icc.toml`` (table ``[icc]``) or ``[tool.icc]`` in ``pyproject.toml``, then ``.env``,
``.env.local`` and ``ICC_*`` environment variables, each overriding the one before.

Core validates its own keys; every other table (``[tool.icc.mail]``) belongs to a plugin and is handed to it
untouched in :attr:`Config.tables`. This module is imported on the idle ``icc run`` path: it imports only the
standard library at module level, and python-dotenv only when a ``.env`` file exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from icc.errors import ConfigError
from icc.fastconfig import simple_toml
from icc.records import record

__all__ = [
    "CONFIG_FILE",
    "ENV_PREFIX",
    "Config",
    "ConsumersConfig",
    "MonitorConfig",
    "NotifyConfig",
    "QueueConfig",
    "StoreConfig",
    "WebConfig",
    "find_config_file",
    "load_config",
    "queue_defaults",
]

CONFIG_FILE = "icc.toml"
PYPROJECT = "pyproject.toml"
ENV_PREFIX = "ICC_"
DEFAULT_QUEUES = ("mail", "async")
CONSUMER_MODES = ("cron", "service")

# Variables with a meaning of their own: never read as configuration keys.
RESERVED_VARIABLES = frozenset({"ICC_CONFIG", "ICC_PLUGINS", "ICC_DISABLE_PLUGIN_AUTOLOAD"})


@record(frozen=True)
class ConsumersConfig:
    """``[tool.icc.consumers]``: how the queue consumers run."""

    mode: Literal["cron", "service"] = "cron"
    queues: tuple[str, ...] = DEFAULT_QUEUES
    time_limit: float = 20.0
    skip_empty: bool = False  # no consumer for a queue with no message in it that minute
    notify: bool = False  # PostgreSQL only: LISTEN/NOTIFY wakes idle consumers (polling stays the fallback)


@record(frozen=True)
class QueueConfig:
    """``[tool.icc.queues.<name>]``: retries and leases of one queue."""

    retries: int = 3
    delay: float = 1.0  # seconds before the first retry
    multiplier: float = 2.0
    max_delay: float = 3600.0
    lease: float = 60.0  # seconds a consumer holds a message before others may take it


@record(frozen=True)
class MonitorConfig:
    """``[tool.icc.monitor]``: heartbeat pings for every job (see :mod:`icc.notify.pings`)."""

    ping_url: str | None = None  # "{job}" is replaced by the URL-quoted job name
    timeout: float = 5.0  # seconds all the pings of one run event may take, retries included


@record(frozen=True)
class NotifyConfig:
    """``[tool.icc.notify]``: notification URLs (apprise syntax) for every job (see
    :mod:`icc.notify.notifications`); ``interval``: seconds between two notifications about one failing job."""

    urls: tuple[str, ...] = ()
    interval: float = 3600.0


@record(frozen=True)
class WebConfig:
    """``[tool.icc.web]``: the dashboard (``icc web``); ``token`` (or ``ICC_WEB_TOKEN``) logs in and is required
    to bind an address other than a loopback one."""

    token: str | None = None


@record(frozen=True)
class StoreConfig:
    """``[tool.icc.store]``: where state and queues live. No ``url``: embedded SQLite in ``state_dir``.

    With a PostgreSQL ``url`` both the state store and the queues go there (see docs/several-servers.md).
    ``host_id`` names this host among those sharing the store (default: a UUID kept in the state directory,
    see :func:`icc.store.host_id`); ``lease`` is how long a run stays owned by a host that stops renewing it.
    """

    url: str | None = None
    schema: str = "icc"
    host_id: str | None = None
    lease: float = 60.0

    @property
    def shared(self) -> bool:
        """True when the store is a database server several hosts may share."""
        return self.url is not None


# The mail queue waits out an SMTP outage as mail servers do (RFC 5321 section 4.5.4.1: give up after days, not
# seconds): 1, 2, 4 ... 128 minutes, then every 4 hours: 13 retries over 24 h 15 min (at least 18 h with the
# jitter). A mail is rarely worth less a day later; a message of ``async`` usually is, so it keeps 1 s, 2 s, 4 s.
MAIL_QUEUE_DEFAULTS = QueueConfig(retries=13, delay=60.0, multiplier=2.0, max_delay=4 * 3600.0)
_QUEUE_DEFAULTS: Mapping[str, QueueConfig] = MappingProxyType({"mail": MAIL_QUEUE_DEFAULTS})


def queue_defaults(name: str) -> QueueConfig:
    """The settings of queue ``name`` before its ``[queues.<name>]`` table: the mail queue's own, else the
    common defaults. A table changes only the keys it sets."""
    return _QUEUE_DEFAULTS.get(name) or QueueConfig()


def _default_queues() -> Mapping[str, QueueConfig]:
    return MappingProxyType({name: queue_defaults(name) for name in DEFAULT_QUEUES})


@record(frozen=True, kw_only=True)
class Config:
    """The loaded configuration. Build it with :func:`load_config`; constructing it directly is for tests.

    A relative ``state_dir`` is resolved against ``root``; ``queues`` always holds ``mail`` and ``async``.
    """

    path: Path | None  # the config file, None when none was found (defaults used)
    root: Path  # directory of the config file, or the working directory
    environment: str = "production"
    timezone: str = "UTC"
    state_dir: Path = Path(".icc")
    plugins: tuple[str, ...] = ()
    consumers: ConsumersConfig = field(default_factory=ConsumersConfig)
    queues: Mapping[str, QueueConfig] = field(default_factory=_default_queues)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    web: WebConfig = field(default_factory=WebConfig)
    keep_runs: int = 100  # runs kept per job when pruning
    keep_runs_days: float | None = None  # runs older than this many days are pruned too (batched)
    keep_skipped: int = 100  # missed and skipped rows kept per job, apart from the runs
    output_limit: int = 64 * 1024  # bytes of output stored per run: its head and its tail
    missed_window: int = 60  # minutes: how far back missed slots are considered
    grace: float = 10.0  # seconds between SIGTERM and SIGKILL
    scan: str = "manual"  # "auto": a tick that finds the plugins changed since the last scan rescans
    scan_timeout: float = 120.0  # seconds a tick's own scan (scan = "auto") may take
    callback_timeout: float = 30.0  # seconds each when()/skip(), callback and run hook may take
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    # "key" or "table.key" -> where a value was set by a variable: "environment variable ICC_MAIL__DSN" or
    # "/app/.env.local: ICC_CONSUMERS_QUEUES". Keys from the file are not in it.
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        root = Path(self.root).absolute()
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "state_dir", root / Path(self.state_dir).expanduser())
        queues = {name: queue_defaults(name) for name in DEFAULT_QUEUES}
        queues.update(self.queues)
        object.__setattr__(self, "queues", MappingProxyType(queues))
        object.__setattr__(self, "tables", MappingProxyType(dict(self.tables)))
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))

    def source(self, key: str) -> str | None:
        """Where ``key`` (``"mail.dsn"``, ``"consumers.queues"``, ``"state_dir"``) is set, for error messages:
        the variable that set it (``environment variable ICC_MAIL__DSN``, ``/app/.env: ICC_MAIL__DSN``), else
        the config file, or None when there is no config file."""
        return self.sources.get(key) or (str(self.path) if self.path is not None else None)

    def queue(self, name: str) -> QueueConfig:
        """The settings of queue ``name``; defaults for a queue that is not configured."""
        return self.queues.get(name) or queue_defaults(name)


# --- key schema -------------------------------------------------------------------------------------

# A converter turns a TOML value (or, with from_env=True, an environment string) into the key's type,
# raising _Invalid with what was expected.


class _Invalid(Exception):
    pass


Converter = Callable[[object, bool], object]


def _str(value: object, from_env: bool) -> object:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("a non-empty string")
    return value.strip()


def _int(minimum: int, maximum: int) -> Converter:
    expected = f"an integer from {minimum} to {maximum}"

    def convert(value: object, from_env: bool) -> object:
        if from_env and isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise _Invalid(expected) from None
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise _Invalid(expected)
        return value

    return convert


def _float(minimum: float, maximum: float, *, exclusive: bool = False) -> Converter:
    low = f"above {minimum:g}" if exclusive else f"from {minimum:g}"
    expected = f"a number {low} to {maximum:g}"

    def convert(value: object, from_env: bool) -> object:
        if from_env and isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise _Invalid(expected) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(expected)
        # Compared before float(): an integer too large for a float is out of range, not an OverflowError.
        if value != value or not minimum <= value <= maximum or (exclusive and value == minimum):
            raise _Invalid(expected)
        return float(value)

    return convert


MAX_CALLBACK_TIMEOUT = 3600.0


def _names(value: object, from_env: bool) -> object:
    if from_env and isinstance(value, str):
        value = [part for part in (p.strip() for p in value.split(",")) if part]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _Invalid('a list of names (in a variable: comma-separated, "a,b")')
    return tuple(dict.fromkeys(v.strip() for v in value))


def _bool(value: object, from_env: bool) -> object:
    if from_env and isinstance(value, str):
        value = {"true": True, "1": True, "false": False, "0": False}.get(value.strip().lower(), value)
    if not isinstance(value, bool):
        raise _Invalid('true or false (in a variable: "true", "false", "1" or "0")')
    return value


def _mode(value: object, from_env: bool) -> object:
    if not isinstance(value, str) or value.strip() not in CONSUMER_MODES:
        raise _Invalid('"cron" or "service"')
    return value.strip()


def _timezone(value: object, from_env: bool) -> object:
    zone = _str(value, from_env)
    assert isinstance(zone, str)
    if zone != "UTC":  # the default needs no tz database lookup on the idle path
        import zoneinfo  # lazy: the default zone (UTC) needs no tz database

        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise _Invalid('an IANA time zone such as "Europe/Berlin" or "UTC"') from None
    return zone


def _url(value: object, from_env: bool) -> object:
    from icc.urls import url_problem  # lazy: urllib.parse, paid only by a config with a URL

    problem = url_problem(value)
    if problem is not None:
        raise _Invalid(problem)
    assert isinstance(value, str)
    return value


_SIZE = r"(?i)^\s*(\d+)\s*([KMG]?)(?:I?B)?\s*$"  # a pattern, compiled (and cached by re) when first used
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
MAX_OUTPUT_LIMIT = 16 * 1024**2


def _output_size(value: object, from_env: bool) -> object:
    """``output_limit``: bytes, as an integer or a string with a binary unit ("64KiB", "1MiB"), at most 16 MiB."""
    expected = 'a size from 0 to 16MiB: a number of bytes or one with a unit, e.g. "64KiB" or "1MiB"'
    if isinstance(value, bool):
        raise _Invalid(expected)
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := re.match(_SIZE, value)):
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    else:
        raise _Invalid(expected)
    if not 0 <= size <= MAX_OUTPUT_LIMIT:
        raise _Invalid(expected)
    return size


SCAN_MODES = ("manual", "auto")


def _scan(value: object, from_env: bool) -> object:
    if not isinstance(value, str) or value.strip() not in SCAN_MODES:
        raise _Invalid('"manual" (a tick only says the plugins changed) or "auto" (a tick rescans then)')
    return value.strip()


def _table(value: object, from_env: bool) -> object:
    if not isinstance(value, dict):
        raise _Invalid("a table")
    return value


# Upper bounds of the numeric settings (docs/configuration.md lists them): a value past one is a mistake, and an
# unbounded one reaches SQLite or the clock arithmetic as an OverflowError at every tick.
MAX_KEEP = 1_000_000  # keep_runs, keep_skipped: rows per job
MAX_MISSED_WINDOW = 525_600  # minutes: a year, as Schedule.missed_window()
MAX_GRACE = 3600.0  # seconds between SIGTERM and SIGKILL
MAX_TIME_LIMIT = 86_400.0  # seconds a consumer runs
MAX_RETRIES = 1000
MAX_DELAY = 604_800.0  # seconds: a week (delay, max_delay)
MAX_MULTIPLIER = 100.0
MAX_LEASE = 86_400.0  # seconds (queue lease, store lease)
MAX_PING_TIMEOUT = 600.0
MAX_KEEP_DAYS = 36_600.0  # keep_runs_days: a century
MAX_NOTIFY_INTERVAL = 30 * 86_400.0

CORE_KEYS: dict[str, Converter] = {
    "environment": _str,
    "timezone": _timezone,
    "state_dir": _str,
    "plugins": _names,
    "keep_runs": _int(1, MAX_KEEP),
    "keep_skipped": _int(0, MAX_KEEP),
    "keep_runs_days": _float(0, MAX_KEEP_DAYS, exclusive=True),
    "output_limit": _output_size,
    "missed_window": _int(0, MAX_MISSED_WINDOW),
    "grace": _float(0, MAX_GRACE),
    "scan": _scan,
    "scan_timeout": _float(0, 3600, exclusive=True),
    "callback_timeout": _float(0, MAX_CALLBACK_TIMEOUT, exclusive=True),
}
CONSUMER_KEYS: dict[str, Converter] = {
    "mode": _mode,
    "queues": _names,
    "time_limit": _float(0, MAX_TIME_LIMIT, exclusive=True),
    "skip_empty": _bool,
    "notify": _bool,
}
QUEUE_KEYS: dict[str, Converter] = {
    "retries": _int(0, MAX_RETRIES),
    "delay": _float(0, MAX_DELAY),
    "multiplier": _float(1, MAX_MULTIPLIER),
    "max_delay": _float(0, MAX_DELAY),
    "lease": _float(0, MAX_LEASE, exclusive=True),
}
MONITOR_KEYS: dict[str, Converter] = {
    "ping_url": _url,
    "timeout": _float(0, MAX_PING_TIMEOUT, exclusive=True),
}


def _notify_urls(value: object, from_env: bool) -> object:
    from icc.urls import (  # lazy: urllib.parse, paid only by a config with notification URLs
        notify_url_problem,
        redact,
    )

    items = [part.strip() for part in value.split(",")] if from_env and isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _Invalid('a list of apprise URLs, e.g. ["json://hooks.example.org/icc"]')
    for item in items:
        problem = notify_url_problem(item)
        if problem is not None:
            shown = repr(redact(item)) if isinstance(item, str) else repr(item)
            raise _Invalid(f"a list of apprise URLs; {shown} is not one: give {problem}")
    return tuple(dict.fromkeys(items))


NOTIFY_KEYS: dict[str, Converter] = {
    "urls": _notify_urls,
    "interval": _float(0, MAX_NOTIFY_INTERVAL),
}


def _store_url(value: object, from_env: bool) -> object:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("a PostgreSQL URL (postgresql://user@host/dbname)")
    text = value.strip()
    if not text.startswith(("postgresql://", "postgres://")):
        raise _Invalid("a PostgreSQL URL starting with postgresql:// (without [icc.store] url: SQLite)")
    return text


def _identifier(value: object, from_env: bool) -> object:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value.strip()):
        raise _Invalid("a lower-case SQL name (letters, digits, underscores)")
    return value.strip()


def _host_id(value: object, from_env: bool) -> object:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}", value.strip()):
        raise _Invalid("a host name of letters, digits and . _ - : @ (at most 128)")
    return value.strip()


MIN_WEB_TOKEN = 16  # characters: the dashboard's login token is a password an attacker may guess at


def _web_token(value: object, from_env: bool) -> object:
    if not isinstance(value, str) or len(value.strip()) < MIN_WEB_TOKEN:
        raise _Invalid(
            f"a token of at least {MIN_WEB_TOKEN} characters; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value.strip()


WEB_KEYS: dict[str, Converter] = {"token": _web_token}

STORE_KEYS: dict[str, Converter] = {
    "url": _store_url,
    "schema": _identifier,
    "host_id": _host_id,
    "lease": _float(5, MAX_LEASE),
}
CORE_TABLES = ("consumers", "queues", "monitor", "store", "notify", "web")
# Keys whose value may hold a secret (a ping key in a URL, a database password): errors show it redacted.
_SECRET_KEYS = frozenset({"ping_url", "url", "urls", "token"})

# ICC_<NAME> -> (table or None for the top level, key). `plugins` has no variable: ICC_PLUGINS limits
# which plugins load (see icc.plugins). Plugin tables take ICC_<TABLE>__<KEY> (double underscore).
ENV_KEYS: dict[str, tuple[str | None, str]] = {
    **{f"ICC_{key.upper()}": (None, key) for key in CORE_KEYS if key != "plugins"},
    **{f"ICC_CONSUMERS_{key.upper()}": ("consumers", key) for key in CONSUMER_KEYS},
    **{f"ICC_MONITOR_{key.upper()}": ("monitor", key) for key in MONITOR_KEYS},
    **{f"ICC_STORE_{key.upper()}": ("store", key) for key in STORE_KEYS},
    **{f"ICC_NOTIFY_{key.upper()}": ("notify", key) for key in NOTIFY_KEYS},
    **{f"ICC_WEB_{key.upper()}": ("web", key) for key in WEB_KEYS},
}
_SECTION_KEYS: dict[str, dict[str, Converter]] = {
    "consumers": CONSUMER_KEYS,
    "monitor": MONITOR_KEYS,
    "store": STORE_KEYS,
    "notify": NOTIFY_KEYS,
    "web": WEB_KEYS,
}


def _shown_value(key: str, value: object) -> str:
    """A value for an error message: a URL that may carry a secret is redacted, a token never shown."""
    if key == "token":
        return "the value given (not shown)"
    if key in _SECRET_KEYS and isinstance(value, str):
        from icc.urls import redact  # lazy: only when a secret is shown

        return repr(redact(value))
    if key in _SECRET_KEYS and isinstance(value, list | tuple):
        from icc.urls import redact  # lazy: only when a secret is shown

        return repr([redact(item) if isinstance(item, str) else item for item in value])
    return repr(value)


# --- discovery --------------------------------------------------------------------------------------


def _shown(path: Path) -> str:
    """A path for a one-line message: a very long one is cut in the middle."""
    text = str(path)
    return text if len(text) <= 200 else f"{text[:80]}…{text[-80:]} ({len(text)} characters)"


def _not_utf8(path: Path) -> ConfigError:
    """The error for a file that is not UTF-8, naming the first line that is not."""
    line = ""
    try:
        data = path.read_bytes()
        data.decode()
    except UnicodeDecodeError as exc:
        number = data.count(b"\n", 0, exc.start) + 1
        line = f"line {number} "
    except OSError:
        pass
    return ConfigError(f"{_shown(path)}: {line}is not valid UTF-8; save the file as UTF-8")


def _read_toml(path: Path) -> dict[str, Any]:
    """The TOML document in ``path``. A file of a few tables of plain keys with simple values is read without
    importing tomllib (with its regular expressions and typing, about 2 ms of a due tick): by the idle tick's
    own reader, :func:`icc.fastconfig.simple_toml`, which gives what tomllib gives or nothing."""
    try:
        with path.open("rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"{_shown(path)}: cannot read the config file: {exc.strerror or exc}") from exc
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    simple = simple_toml(text)
    if simple is not None:
        return simple
    import tomllib  # lazy: see the docstring

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}; fix the syntax at that line") from exc


def _pyproject_has_icc(path: Path) -> bool:
    try:
        text = path.read_bytes()
    except OSError:
        return False
    if b"tool.icc" not in text and b"[tool]" not in text:  # cheap pre-check before parsing
        return False
    return isinstance(_read_toml(path).get("tool", {}).get("icc"), dict)


def find_config_file(cwd: Path | None = None) -> Path | None:
    """Walk up from ``cwd`` to the first ``icc.toml``, or ``pyproject.toml`` with a ``[tool.icc]`` table.

    In one directory ``icc.toml`` wins; a ``pyproject.toml`` without ``[tool.icc]`` is passed over.
    """
    start = (cwd or Path.cwd()).absolute()
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_FILE
        if candidate.is_file():
            return candidate
        candidate = directory / PYPROJECT
        if candidate.is_file() and _pyproject_has_icc(candidate):
            return candidate
    return None


# --- loading ----------------------------------------------------------------------------------------


def _table_label(path: Path) -> str:
    return "[tool.icc]" if path.name == PYPROJECT else "[icc]"


def _icc_table(path: Path, document: dict[str, Any]) -> dict[str, Any]:
    if path.name == PYPROJECT:
        table = document.get("tool", {}).get("icc", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: 'tool.icc' must be a table: write [tool.icc]")
        return table
    stray = [key for key in document if key != "icc"]
    if stray:
        raise ConfigError(
            f"{path}: key {stray[0]!r} is outside the [icc] table; put every setting under [icc]"
        )
    table = document.get("icc", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: 'icc' must be a table: write [icc]")
    return table


def _check(
    table: Mapping[str, Any], schema: Mapping[str, Converter], where: str, origin: str
) -> dict[str, Any]:
    """Convert the values of a TOML table with ``schema``; ``where`` names the table for messages."""
    values: dict[str, Any] = {}
    for key, value in table.items():
        convert = schema.get(key)
        if convert is None:
            import difflib  # lazy: only for an unknown key (its closest match)

            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{origin}: unknown key {key!r} in {where}; {hint}known keys: {', '.join(sorted(schema))}"
            )
        try:
            values[key] = convert(value, False)
        except _Invalid as exc:
            raise ConfigError(
                f"{origin}: {key!r} in {where} must be {exc}, not {_shown_value(key, value)}"
            ) from None
    return values


def _dotenv(root: Path) -> dict[str, tuple[str, Path]]:
    """Every variable of ``.env`` then ``.env.local`` in ``root`` (later files win), with its file."""
    values: dict[str, tuple[str, Path]] = {}
    for name in (".env", ".env.local"):
        path = root / name
        if not path.is_file():
            continue
        from dotenv import dotenv_values  # lazy: only paid for when a .env exists

        try:
            loaded = dotenv_values(path)
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
        for key, value in loaded.items():
            if value is not None:
                values[key] = (value, path)
    return values


def _variable_origin(name: str, environ: Mapping[str, str], dotenv: Mapping[str, tuple[str, Path]]) -> str:
    if name in environ:
        return f"environment variable {name}"
    return f"{dotenv[name][1]}: {name}"


def _export(dotenv: Mapping[str, tuple[str, Path]]) -> None:
    """Put the ``.env`` variables into the process environment, so tasks, commands and handlers see them.

    A variable the environment has already wins; ``ICC_*`` variables are icc's configuration, not exported.
    """
    for name, (value, path) in dotenv.items():
        if not name.startswith(ENV_PREFIX) and name not in os.environ:
            try:
                os.environ[name] = value
            except ValueError:  # a NUL byte: no environment can hold it
                raise ConfigError(
                    f"{path}: variable {name!r} has a NUL byte in its name or value; remove it"
                ) from None


def _framework_table(table: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """A framework setting's copy of ``[icc]``: a mapping whose tables are mappings (dicts, as TOML gives)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{origin} must be a dict with icc.toml's keys, not {type(table).__name__}")

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return list(value)
        return value

    return {str(k): plain(v) for k, v in table.items()}


def load_config(
    path: Path | None = None,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    export: bool = False,
) -> Config:
    """Find and load the configuration.

    ``path`` (from ``--config``) wins, then ``ICC_CONFIG``, then :func:`find_config_file` from ``cwd``.
    ``environ`` defaults to ``os.environ``. With ``export=True`` (icc's commands, before any plugin is
    imported), the variables of ``.env`` and ``.env.local`` that are not ``ICC_*`` and not in ``os.environ``
    already are added to it, so tasks, commands and handlers see them; ``icc.dispatch()`` in an application
    leaves the application's environment alone.
    """
    env = os.environ if environ is None else environ
    cwd = (cwd or Path.cwd()).absolute()
    held = None
    if path is None and env.get("ICC_CONFIG"):
        path = Path(env["ICC_CONFIG"])
    if path is not None:
        path = (cwd / Path(path).expanduser()).absolute()
        try:
            path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ConfigError(
                f"{_shown(path)}: config file not found; check --config or ICC_CONFIG"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"{_shown(path)}: cannot use this config file: {exc.strerror or exc}; check --config or ICC_CONFIG"
            ) from None
        if not path.is_file():
            raise ConfigError(
                f"{path}: is not a file; point --config or ICC_CONFIG to icc.toml or pyproject.toml"
            )
    else:
        from icc import framework  # lazy: only without a config file named

        held = framework.config_table()  # a framework's settings (Django's ICC) win over a file found
        path = None if held is not None else find_config_file(cwd)

    table: dict[str, Any] = {}
    root = cwd
    origin = str(path) if path is not None else "defaults"
    where = _table_label(path) if path is not None else "[icc]"
    if path is not None:
        root = path.parent
        table = _icc_table(path, _read_toml(path))
    elif held is not None:
        root, origin = held.root, held.origin
        table = _framework_table(held.table, origin)

    core_table = {k: v for k, v in table.items() if not isinstance(v, dict) or k in CORE_TABLES}
    plugin_tables = {k: dict(v) for k, v in table.items() if isinstance(v, dict) and k not in CORE_TABLES}

    core = _check(core_table.copy(), {**CORE_KEYS, **dict.fromkeys(CORE_TABLES, _table)}, where, origin)
    consumers_where = f"{where[:-1]}.consumers]"
    consumers = _check(core.pop("consumers", {}), CONSUMER_KEYS, consumers_where, origin)
    monitor = _check(core.pop("monitor", {}), MONITOR_KEYS, f"{where[:-1]}.monitor]", origin)
    store = _check(core.pop("store", {}), STORE_KEYS, f"{where[:-1]}.store]", origin)
    notify = _check(core.pop("notify", {}), NOTIFY_KEYS, f"{where[:-1]}.notify]", origin)
    web = _check(core.pop("web", {}), WEB_KEYS, f"{where[:-1]}.web]", origin)
    queues: dict[str, QueueConfig] = {}
    for name, queue_table in core.pop("queues", {}).items():
        queue_where = f"{where[:-1]}.queues.{name}]"
        if not isinstance(queue_table, dict):
            raise ConfigError(f"{origin}: 'queues.{name}' must be a table: write {queue_where}")
        queues[name] = replace(queue_defaults(name), **_check(queue_table, QUEUE_KEYS, queue_where, origin))

    # .env, .env.local, then the real environment: later wins.
    dotenv = _dotenv(root)
    variables = {k: v for k, (v, _path) in dotenv.items() if k.startswith(ENV_PREFIX)}
    variables.update({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
    sources: dict[str, str] = {}
    for name, raw in variables.items():
        if name in RESERVED_VARIABLES:
            continue
        target = ENV_KEYS.get(name)
        if target is None:
            table_name, sep, key = name[len(ENV_PREFIX) :].partition("__")
            if sep and table_name and key and table_name.lower() not in CORE_TABLES:
                # ICC_MAIL__DSN -> tables["mail"]["dsn"], a string: the plugin converts and validates it.
                plugin_table = plugin_tables.setdefault(table_name.lower(), {})
                plugin_table[key.lower()] = raw
                sources[f"{table_name.lower()}.{key.lower()}"] = _variable_origin(name, env, dotenv)
            continue  # other ICC_* variables belong to other parts of icc
        section, key = target
        convert = CORE_KEYS[key] if section is None else _SECTION_KEYS[section][key]
        try:
            value = convert(raw, True)
        except _Invalid as exc:
            source = _variable_origin(name, env, dotenv)
            raise ConfigError(f"{source} must be {exc}, not {_shown_value(key, raw)}") from None
        {
            None: core,
            "consumers": consumers,
            "monitor": monitor,
            "store": store,
            "notify": notify,
            "web": web,
        }[section][key] = value
        sources[key if section is None else f"{section}.{key}"] = _variable_origin(name, env, dotenv)

    if consumers.get("notify") is True and store.get("url") is None:
        origin = sources.get("consumers.notify") or origin
        raise ConfigError(
            f"{origin}: notify = true in {consumers_where} needs a PostgreSQL store: set [icc.store] url, or "
            "remove notify (with SQLite consumers poll, see --sleep)"
        )
    if notify.get("urls"):
        from icc.urls import apprise_missing  # lazy: only a config with notification URLs

        missing = apprise_missing()
        if missing is not None:
            where_set = sources.get("notify.urls") or f"{origin}: urls in {where[:-1]}.notify]"
            raise ConfigError(f"{where_set}: {missing}")
    if "state_dir" in core:
        core["state_dir"] = Path(core["state_dir"])
    if export:
        _export(dotenv)
    return Config(
        path=path,
        root=root,
        consumers=ConsumersConfig(**consumers),
        monitor=MonitorConfig(**monitor),
        store=StoreConfig(**store),
        notify=NotifyConfig(**notify),
        web=WebConfig(**web),
        queues=queues,
        tables={name: MappingProxyType(value) for name, value in plugin_tables.items()},
        sources=sources,
        **core,
    )
