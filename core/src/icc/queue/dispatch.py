"""``icc.dispatch``: put a message on a queue, from application code.

Cheap to import and to call: no plugin loading, no click or rich. The configuration is found the way the
``icc`` command finds it (``ICC_CONFIG``, or walking up from the working directory) and remembered per
working directory and ``ICC_*`` environment; the opened queue database is kept per state directory
(and reopened in a forked child, where an inherited SQLite connection must not be used).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
_configs: dict[tuple[str, tuple[tuple[str, str], ...]], Config] = {}


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


def _config() -> Config:
    from icc.config import load_config

    key = (os.getcwd(), tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("ICC_"))))
    with _lock:
        config = _configs.get(key)
    if config is None:
        config = load_config()
        with _lock:
            _configs[key] = config
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
    :data:`icc.queue.message.MAX_PAYLOAD_BYTES`, and for an unknown queue.
    """
    validate_name(name)
    text = encode_payload(payload)
    if not is_finite_delay(delay):
        raise QueueError(f"delay must be a finite number of seconds >= 0, not {delay!r}")
    if config is None:
        config = _config()
    validate_queue(config, queue)
    return open_transport(config).send(queue, name, text, delay=float(delay))
