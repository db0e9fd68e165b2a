"""icc's diagnostics: warnings, errors, the consumers' lines, debug lines, through the stdlib :mod:`logging`.

The command group configures the ``icc`` logger once (:func:`configure`: ``-v``, ``--log-level``,
``--log-format``); results (tables, JSON documents) stay on stdout and never go through here. Every line goes to
stderr, one line per record:

- ``text`` (default): the message, prefixed ``warning: `` or ``error: `` by its level (as icc always printed them);
  a record logged with ``extra={"bare": True}`` keeps no prefix (the consumers' own lines).
- ``json``: one object per line: ``time`` (ISO 8601 in the configured zone once the config is loaded, the host's
  zone before), ``level``, ``logger``, ``message``.

The ``icc`` logger does not propagate: an application that configures the root logger does not see icc's lines
twice. The idle fast path (``icc.tick.idle``) never imports this module.

:mod:`logging` itself (about 4 ms to import, a due tick's tenth) is imported only when a line is logged at an
enabled level (or :func:`configure` finds it imported already): :data:`logger` and the loggers :func:`get`
returns check the level themselves and hand the call to the real :mod:`logging` logger of the same name, set up
then as :func:`configure` said. Each line is the same as if it had been set up at once.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: a due tick logs nothing most minutes
if TYPE_CHECKING:
    import logging
    from typing import Literal, TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
DEFAULT_LEVEL = "info"
# logging's numbers, without importing it
DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
_NUMBERS = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR, "critical": CRITICAL}
PREFIX = {WARNING: "warning: ", ERROR: "error: ", CRITICAL: "error: "}


class _Setup:
    """What :func:`configure` said, and whether the real ``icc`` logger was set up with it yet."""

    level: int | None = None  # None: not configured
    fmt: str = "text"
    applied = False


_zone: str | None = None  # the configured time zone, once known
_stream: TextIO | None = None  # where the lines go instead of sys.stderr (see keep_stderr)


class Logger:
    """A :class:`logging.Logger` as icc uses it (``debug`` ... ``critical``, ``isEnabledFor``), which imports
    :mod:`logging` only when a line is logged at an enabled level: below the configured level a call costs
    one comparison. The line itself is logged by ``logging.getLogger(name)``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def isEnabledFor(self, level: int) -> bool:
        configured = _Setup.level
        if configured is None:  # icc as a library: logging decides, as the application set it up
            return self.real().isEnabledFor(level)
        return level >= configured

    def real(self) -> logging.Logger:
        """The :mod:`logging` logger of this name, with the ``icc`` logger set up as configured (when a command
        configured it; in an application that uses icc as a library it stays the application's business)."""
        import logging  # lazy: see the module docstring

        if _Setup.level is not None:
            _apply()
        return logging.getLogger(self.name)

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:
        if self.isEnabledFor(DEBUG):
            self.real().debug(msg, *args, **kwargs)  # type: ignore[arg-type]

    def info(self, msg: object, *args: object, **kwargs: object) -> None:
        if self.isEnabledFor(INFO):
            self.real().info(msg, *args, **kwargs)  # type: ignore[arg-type]

    def warning(self, msg: object, *args: object, **kwargs: object) -> None:
        if self.isEnabledFor(WARNING):
            self.real().warning(msg, *args, **kwargs)  # type: ignore[arg-type]

    def error(self, msg: object, *args: object, **kwargs: object) -> None:
        if self.isEnabledFor(ERROR):
            self.real().error(msg, *args, **kwargs)  # type: ignore[arg-type]

    def critical(self, msg: object, *args: object, **kwargs: object) -> None:
        if self.isEnabledFor(CRITICAL):
            self.real().critical(msg, *args, **kwargs)  # type: ignore[arg-type]


logger = Logger("icc")


def get(name: str) -> Logger:
    """The logger ``name`` (``icc.plugins``, ...; a child of ``icc``, whose handler writes its lines), as
    :data:`logger`: :mod:`logging` is imported when it logs a line."""
    return Logger(name)


def _stderr_handler() -> logging.Handler:
    import logging  # lazy: see the module docstring

    class Stderr(logging.Handler):
        """Writes each record to the ``sys.stderr`` of the moment (a test or click may have replaced it),
        flushed."""

        def emit(self, record: logging.LogRecord) -> None:
            try:
                line = self.format(record)
                stream = _stream if _stream is not None else sys.stderr
                stream.write(line + "\n")
                stream.flush()
            except Exception:  # logging must never take the command down
                self.handleError(record)

    return Stderr()


def _text_formatter() -> logging.Formatter:
    import logging  # lazy: see the module docstring

    class TextFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            prefix = "" if getattr(record, "bare", False) else PREFIX.get(record.levelno, "")
            text = prefix + record.getMessage()
            if record.exc_info:
                text += "\n" + self.formatException(record.exc_info)
            return text

    return TextFormatter()


def _json_formatter() -> logging.Formatter:
    import json  # lazy: only JSON lines
    import logging  # lazy: see the module docstring
    from datetime import UTC, datetime  # lazy: as above

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            moment = datetime.fromtimestamp(record.created, tz=UTC)
            if _zone is not None:
                from zoneinfo import ZoneInfo  # lazy: only JSON logs in a zone other than UTC

                shown = moment.astimezone(ZoneInfo(_zone))
            else:
                shown = moment.astimezone()
            entry = {
                "time": shown.isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info:
                entry["traceback"] = self.formatException(record.exc_info)
            return json.dumps(entry, ensure_ascii=False)

    return JsonFormatter()


def _apply() -> None:
    """Set the real ``icc`` logger up as :func:`configure` said: one stderr handler, replacing any earlier one,
    so no line is printed twice."""
    if _Setup.applied or _Setup.level is None:
        return
    import logging  # lazy: see the module docstring

    handler = _stderr_handler()
    handler.setFormatter(_json_formatter() if _Setup.fmt == "json" else _text_formatter())
    real = logging.getLogger("icc")
    for old in list(real.handlers):
        real.removeHandler(old)
    real.addHandler(handler)
    real.setLevel(_Setup.level)
    real.propagate = False
    _Setup.applied = True


def configure(
    level: str | None = None, fmt: Literal["text", "json"] | str = "text", *, verbose: bool = False
) -> None:
    """Set the ``icc`` logger up (again), at once when :mod:`logging` is imported already, else when it logs a
    first line. ``verbose`` is ``debug``; an explicit ``level`` wins over it."""
    chosen = level.lower() if level else ("debug" if verbose else DEFAULT_LEVEL)
    _Setup.level = _NUMBERS[chosen]
    _Setup.fmt = fmt
    _Setup.applied = False
    if "logging" in sys.modules:  # something may log to an icc.* logger through logging itself
        _apply()


def keep_stderr() -> None:
    """In a forked process about to point its stderr at a run's output (a bounded callback or hook): keep icc's
    own lines going to the stderr it has now, the tick's (an operator hears a warning such as failing pings),
    while what user code prints goes to the run's output. Call before the ``dup2``."""
    global _stream
    try:
        _stream = open(os.dup(2), "w", encoding="utf-8", errors="replace")  # noqa: SIM115 - lives with the process
    except OSError:
        _stream = None


def ensure() -> Logger:
    """The ``icc`` logger, set up with the defaults if nothing configured it yet (an error before the group ran)."""
    if _Setup.level is None:
        configure()
    return logger


def set_zone(zone: str) -> None:
    """The configured zone, for the ``time`` of JSON lines."""
    global _zone
    _zone = zone


def zone() -> str | None:
    """The configured zone, once the command loaded the configuration (forked processes inherit it)."""
    return _zone
