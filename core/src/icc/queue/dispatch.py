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
    from icc.queue.transport import QueueBackend

__all__ = [
    "SYNCHRONOUS_VARIABLE",
    "dispatch",
    "handler_queue_warnings",
    "known_queues",
    "open_transport",
    "validate_queue",
]

_lock = threading.Lock()


class _Found:
    """What dispatch found for one working directory and ``ICC_*`` environment: the configuration, its file
    (a string: what ``os.stat`` takes fastest) and that file's modification time when it was loaded, the
    configured queues, and the transport once one was opened (this process's: see :func:`_transport`)."""

    __slots__ = ("config", "file", "mtime", "queues", "transport")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.file = None if config.path is None else str(config.path)
        self.mtime = _mtime(self.file)
        self.queues = frozenset(known_queues(config))
        self.transport: QueueBackend | None = None


# Per working directory and ICC_* environment (read without the lock: one dict lookup is atomic).
_configs: dict[tuple[str, tuple[tuple[bytes, bytes], ...]], _Found] = {}


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


# The last environment seen, and its ``ICC_*`` variables: one tuple, so that threads swap it whole.
_seen_environment: tuple[dict[bytes, bytes], tuple[tuple[bytes, bytes], ...]] | None = None


def _environment() -> tuple[tuple[bytes, bytes], ...]:
    """The ``ICC_*`` variables, as a cache key. Read from ``os.environ``'s own bytes mapping where it has
    one (CPython on POSIX): decoding every variable through ``os.environ.items()`` on each dispatch costs
    more than the dispatch's own write. When the whole environment equals the one seen last (one comparison
    of two dicts), its ``ICC_*`` variables are the ones found then."""
    global _seen_environment
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict):
        seen = _seen_environment
        if seen is not None and data == seen[0]:
            return seen[1]
        found = tuple(item for item in data.items() if item[0][:4] == b"ICC_")
        _seen_environment = (dict(data), found)
        return found
    return tuple((k.encode(), v.encode()) for k, v in os.environ.items() if k.startswith("ICC_"))


def _mtime(path: str | None) -> int | None:
    if path is None:
        return None
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _config() -> _Found:
    """The configuration ``icc`` would use here, and what goes with it: ``ICC_CONFIG``, or the first
    ``icc.toml`` (or ``pyproject.toml`` with ``[tool.icc]``) walking up from the working directory.

    Remembered per working directory and ``ICC_*`` environment, and loaded again when the config file's
    modification time changes. Raises :class:`icc.QueueError` when there is no project: a message put in a
    queue database no consumer reads would be lost silently.
    """
    cwd = os.getcwd()
    key = (cwd, _environment())
    found = _configs.get(key)
    if found is not None and _mtime(found.file) == found.mtime:
        return found
    from icc.config import load_config  # lazy: only a dispatch given no configuration

    config = load_config(cwd=Path(cwd))
    if config.path is None and framework.config_table() is None:
        raise QueueError(
            f"no icc project found from {cwd}: set ICC_CONFIG or run inside the project "
            "(a directory with icc.toml, or pyproject.toml with [tool.icc], or below it)"
        )
    found = _Found(config)
    with _lock:
        _configs[key] = found
    return found


def _transport(found: _Found) -> QueueBackend:
    """``found``'s transport: :func:`icc.store.open_transport`'s, remembered here; opened again in a forked
    child, as there."""
    transport = found.transport
    if transport is None or transport.forked:
        transport = found.transport = open_transport(found.config)
    return transport


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
        found = _config()
        if queue not in found.queues:
            validate_queue(found.config, queue)  # raises, naming the queues
        return _transport(found).send(queue, name, text, delay=float(delay))
    validate_queue(config, queue)
    return open_transport(config).send(queue, name, text, delay=float(delay))
