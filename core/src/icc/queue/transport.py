"""The transport protocol: the few operations the consumer, ``icc.dispatch`` and ``icc failed`` need.

The embedded SQLite transport (:mod:`icc.store.sqlite.queues`) implements it; PostgreSQL (``FOR UPDATE SKIP
LOCKED``) and Redis transports for multi-server installs can follow without touching the consumer.

Contract, shared by every implementation:

* ``lease`` takes up to ``limit`` available messages of one queue for ``owner`` and counts one attempt
  on each, in one atomic step, before any handler runs. A message whose lease expired is available
  again; it comes back alone (never batched) with ``redelivered=True``, and its history gets a
  "lease expired" record. A row that cannot be scheduled (its due time is not a number) is leased
  alone with ``malformed`` set, for the consumer to move to failed.
* Nothing is deleted before its replacement is safely written: ``fail`` writes the failed record and
  deletes the message in one transaction, ``failed_retry`` the reverse.
* Every operation on a leased message names its ``owner``; a message whose lease was lost (expired
  and taken by another consumer) is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from icc.queue.message import Envelope, ErrorRecord, FailedMessage

__all__ = ["FailedStore", "QueueBackend", "QueueStats", "Transport"]


@dataclass
class QueueStats:
    """One queue's messages now (``icc queue stats``)."""

    ready: int = 0
    delayed: int = 0
    in_flight: int = 0
    owners: dict[str, int] = field(default_factory=dict)  # consumer -> messages it holds
    oldest_age: float | None = None  # seconds since the oldest unacknowledged message was dispatched
    failed: int = 0
    handled_last_hour: int = 0  # messages acknowledged (handled) in the last hour: the queue's throughput

    @property
    def messages(self) -> int:
        """Not yet acknowledged: ready, delayed and in flight."""
        return self.ready + self.delayed + self.in_flight


@runtime_checkable
class Transport(Protocol):
    """Where messages wait: send, lease, acknowledge, retry later, or give up."""

    def send(self, queue: str, name: str, payload: str, *, delay: float = 0.0) -> int:
        """Store a message (``payload`` is validated JSON text); return its id once it is durable."""
        ...

    def lease(
        self, queue: str, *, owner: str, limit: int, lease: float, ack: Sequence[int] = ()
    ) -> list[Envelope]:
        """Lease up to ``limit`` messages of ``queue`` for ``lease`` seconds, counting an attempt on each.

        ``ack`` deletes those messages (handled by ``owner``) in the same transaction: a consumer
        acknowledges a batch while it takes the next one.
        """
        ...

    def ack(self, ids: Sequence[int], *, owner: str) -> None:
        """Delete messages ``owner`` handled successfully."""
        ...

    def release(self, ids: Sequence[int], *, owner: str) -> None:
        """Give back leased messages whose handler never ran (the consumer is stopping): the attempt
        counted at lease time is taken back and they are available at once."""
        ...

    def extend(self, *, owner: str, lease: float) -> int:
        """Push the lease of everything ``owner`` holds to ``lease`` seconds from now; how many rows."""
        ...

    def retry(self, envelope: Envelope, error: ErrorRecord, *, owner: str, delay: float) -> bool:
        """Make a failed message available again after ``delay`` seconds, appending ``error`` to its history."""
        ...

    def fail(
        self,
        envelope: Envelope,
        reason: str | Callable[[list[ErrorRecord]], str],
        error: ErrorRecord | None = None,
        *,
        owner: str,
        attempts: int | None = None,
    ) -> str | None:
        """Move a message to the failed store with ``reason`` (and ``error`` appended to its history);
        return the reason recorded, or None when ``owner`` no longer holds the message.

        ``reason`` may be a function of the error history (``error`` included) that returns it.
        ``attempts`` overrides the count recorded (a message given up on at lease time never ran that
        last delivery)."""
        ...

    def pending(self, queue: str | None = None) -> int:
        """Messages waiting (leased, delayed or available), of one queue or of all."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class FailedStore(Protocol):
    """Messages that used up their retries, for ``icc failed``."""

    def failed_list(self, *, queue: str | None = None, limit: int | None = None) -> list[FailedMessage]: ...

    def failed_get(self, message_id: int) -> FailedMessage | None: ...

    def failed_retry(self, ids: Sequence[int] | None = None) -> list[int]:
        """Move failed messages back to their queue (attempts reset, history kept); ``None``: all of them."""
        ...

    def failed_remove(self, ids: Sequence[int] | None = None) -> list[int]:
        """Delete failed messages for good; ``None``: all of them."""
        ...


class QueueBackend(Transport, FailedStore, Protocol):
    """What :func:`icc.store.open_transport` returns: a transport that is also the failed store, with the
    operating side (``icc queue stats``, ``icc consume --stop``) and fork detection."""

    @property
    def forked(self) -> bool:
        """True in a child process forked after this transport was opened: open a new one there."""
        ...

    def stats(self, now: float | None = None) -> dict[str, QueueStats]:
        """Per queue that holds anything: ready, delayed, in flight (by owner), oldest age, failed."""
        ...

    def request_stop(self, now: float | None = None) -> float:
        """Ask every consumer running now to stop after its current message; return the request's time."""
        ...

    def stop_requested_at(self) -> float | None:
        """The time of the last stop request, or None."""
        ...
