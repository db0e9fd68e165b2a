"""Queues: messages, the embedded SQLite transport, the consumer loop, retries and failed messages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from icc.queue.consumer import Consumer, ConsumeStats, Handler, HandlerInterrupted, Limits
from icc.queue.dispatch import dispatch, open_transport
from icc.queue.message import MAX_PAYLOAD_BYTES, Envelope, ErrorRecord, FailedMessage
from icc.queue.retry import backoff, max_attempts
from icc.queue.transport import FailedStore, Transport

if TYPE_CHECKING:
    from icc.store.sqlite.queues import SqliteTransport


def __getattr__(name: str) -> Any:
    if name == "SqliteTransport":
        # lazy: the SQLite transport lives in icc.store.sqlite, which imports icc.queue.message (a cycle if eager)
        from icc.store.sqlite.queues import SqliteTransport

        return SqliteTransport
    raise AttributeError(f"module 'icc.queue' has no attribute {name!r}")


__all__ = [
    "MAX_PAYLOAD_BYTES",
    "ConsumeStats",
    "Consumer",
    "Envelope",
    "ErrorRecord",
    "FailedMessage",
    "FailedStore",
    "Handler",
    "HandlerInterrupted",
    "Limits",
    "SqliteTransport",
    "Transport",
    "backoff",
    "dispatch",
    "max_attempts",
    "open_transport",
]
