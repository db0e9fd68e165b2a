"""``icc.dispatch``: put a message on a queue, from application code.

Cheap to import and to call: no plugin loading, no click or rich. The configuration is found the way the
``icc`` command finds it (``ICC_CONFIG``, or walking up from the working directory) and remembered per
working directory and ``ICC_*`` environment (and loaded again when the config file changes); outside a
project it raises instead of creating state. The opened queue database is kept per state directory
(and reopened in a forked child, where an inherited SQLite connection must not be used).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icc import framework
from icc.errors import QueueError
from icc.queue.message import encode_payload, is_finite_delay, validate_name
from icc.store import SYNCHRONOUS_VARIABLE, open_transport

if TYPE_CHECKING:
    from icc.config import Config
    from icc.plugins import HandlerSpec

__all__ = [
    "SYNCHRONOUS_VARIABLE",
    "dispatch",
    "handler_queue_warnings",
    "known_queues",
    "open_transport",
    "validate_queue",
]

_lock = threading.Lock()
_configs: dict[tuple[str, tuple[tuple[bytes, bytes], ...]], tuple[Config, int | None]] = {}


def known_queues(config: Config) -> tuple[str, ...]:
    """The queues of ``consumers.queues`` and of ``[queues.<name>]`` tables, in that order."""
    return tuple(dict.fromkeys((*config.consumers.queues, *config.queues)))


def handler_queue_warnings(config: Config, specs: Mapping[str, HandlerSpec]) -> list[str]:
    """A handler registered for a queue that is not configured: reported, not refused.

    Consumers find handlers by message name, whatever the queue, so such a handler still runs for
    messages dispatched to a real queue; refusing it would stop every consumer over one plugin's typo.
    But ``icc.dispatch`` to that queue fails, so it is most likely a mistake worth a line."""
    known = known_queues(config)
    return [
        f"plugin {spec.provenance.plugin} registers handler {name!r} for queue {spec.queue!r}, which is not "
        f"configured (queues: {', '.join(known)}); messages cannot be dispatched to it. Fix the plugin's "
        f"queue= or add a [queues.{spec.queue}] table"
        for name, spec in sorted(specs.items())
        if spec.queue not in known
    ]


def validate_queue(config: Config, queue: object) -> str:
    known = known_queues(config)
    if not isinstance(queue, str) or queue not in known:
        where = f" in {config.path}" if config.path else ""
        origin = config.sources.get("consumers.queues")  # set by ICC_CONSUMERS_QUEUES: name the variable
        raise QueueError(
            f"unknown queue {queue!r}; the queues are: {', '.join(known)}. Add it to "
            f"{origin or 'consumers.queues'} or give it a [queues.{queue}] table{where}"
        )
    return queue


def _environment() -> tuple[tuple[bytes, bytes], ...]:
    """The ``ICC_*`` variables, as a cache key. Read from ``os.environ``'s own bytes mapping where it has
    one (CPython on POSIX): decoding every variable through ``os.environ.items()`` on each dispatch costs
    more than the dispatch's own write."""
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict):
        return tuple(item for item in data.items() if item[0][:4] == b"ICC_")
    return tuple((k.encode(), v.encode()) for k, v in os.environ.items() if k.startswith("ICC_"))


def _mtime(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _config() -> Config:
    """The configuration ``icc`` would use here: ``ICC_CONFIG``, or the first ``icc.toml`` (or
    ``pyproject.toml`` with ``[tool.icc]``) walking up from the working directory.

    Remembered per working directory and ``ICC_*`` environment, and loaded again when the config file's
    modification time changes. Raises :class:`icc.QueueError` when there is no project: a message put in a
    queue database no consumer reads would be lost silently.
    """
    cwd = os.getcwd()
    key = (cwd, _environment())
    with _lock:
        cached = _configs.get(key)
    if cached is not None and _mtime(cached[0].path) == cached[1]:
        return cached[0]
    from icc.config import load_config

    config = load_config(cwd=Path(cwd))
    if config.path is None and framework.config_table() is None:
        raise QueueError(
            f"no icc project found from {cwd}: set ICC_CONFIG or run inside the project "
            "(a directory with icc.toml, or pyproject.toml with [tool.icc], or below it)"
        )
    with _lock:
        _configs[key] = (config, _mtime(config.path))
    return config


def dispatch(
    name: str,
    payload: Mapping[str, Any],
    *,
    queue: str = "async",
    delay: float = 0,
    config: Config | None = None,
) -> int:
    """Queue message ``name`` with ``payload`` (a JSON object) on ``queue``; return its id.

    The message is durable when this returns. ``delay`` (seconds) holds it back before its first
    delivery. ``config`` overrides the configuration found from the environment. Raises
    :class:`icc.QueueError`, writing nothing, for a payload that is not a JSON object or is larger than
    :data:`icc.queue.message.MAX_PAYLOAD_BYTES`, for an unknown queue, and when no ``config`` is given and no
    project configuration can be found (creating nothing).
    """
    validate_name(name)
    text = encode_payload(payload)
    if not is_finite_delay(delay):
        raise QueueError(f"delay must be a finite number of seconds >= 0, not {delay!r}")
    if config is None:
        config = _config()
    validate_queue(config, queue)
    return open_transport(config).send(queue, name, text, delay=float(delay))
