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
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
DEFAULT_LEVEL = "info"
PREFIX = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.CRITICAL: "error: "}

logger = logging.getLogger("icc")
_zone: str | None = None  # the configured time zone, once known
_stream: TextIO | None = None  # where the lines go instead of sys.stderr (see keep_stderr)


class _Stderr(logging.Handler):
    """Writes each record to the ``sys.stderr`` of the moment (a test or click may have replaced it), flushed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = _stream if _stream is not None else sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except Exception:  # logging must never take the command down
            self.handleError(record)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if getattr(record, "bare", False) else PREFIX.get(record.levelno, "")
        text = prefix + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


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


def configure(
    level: str | None = None, fmt: Literal["text", "json"] | str = "text", *, verbose: bool = False
) -> None:
    """Set the ``icc`` logger up (again): one stderr handler, replacing any earlier one, so no line is printed
    twice. ``verbose`` is ``debug``; an explicit ``level`` wins over it."""
    chosen = level.lower() if level else ("debug" if verbose else DEFAULT_LEVEL)
    handler = _Stderr()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(chosen.upper())
    logger.propagate = False


def keep_stderr() -> None:
    """In a forked process about to point its stderr at a run's output (a bounded callback or hook): keep icc's
    own lines going to the stderr it has now, the tick's (an operator hears a warning such as failing pings),
    while what user code prints goes to the run's output. Call before the ``dup2``."""
    global _stream
    try:
        _stream = open(os.dup(2), "w", encoding="utf-8", errors="replace")  # noqa: SIM115 - lives with the process
    except OSError:
        _stream = None


def ensure() -> logging.Logger:
    """The ``icc`` logger, set up with the defaults if nothing configured it yet (an error before the group ran)."""
    if not logger.handlers:
        configure()
    return logger


def set_zone(zone: str) -> None:
    """The configured zone, for the ``time`` of JSON lines."""
    global _zone
    _zone = zone


def zone() -> str | None:
    """The configured zone, once the command loaded the configuration (forked processes inherit it)."""
    return _zone
