"""Queues: messages, the embedded SQLite transport, the consumer loop, retries and failed messages."""

from __future__ import annotations

from icc.queue.consumer import Consumer, ConsumeStats, Handler, HandlerInterrupted, Limits
from icc.queue.dispatch import dispatch, open_transport
from icc.queue.message import MAX_PAYLOAD_BYTES, Envelope, ErrorRecord, FailedMessage
from icc.queue.retry import backoff, max_attempts
from icc.queue.sqlite import SqliteTransport
from icc.queue.transport import FailedStore, Transport

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
