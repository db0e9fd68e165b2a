"""The consumer loop: lease, handle, acknowledge; retry with backoff; give up into the failed store.

Delivery is at least once. The attempt is counted when a message is leased, before its handler runs, so
a handler that kills its process still uses up its retries: the lease expires, the message comes back
with the crashed attempt counted, and past its retries it goes to failed instead of running again.

Throughput comes from batches: one transaction acknowledges the messages handled since the last one
and leases the next batch. The batch adapts to the handlers' speed (about a quarter second of work per
batch), so slow handlers are leased one or a few at a time and a second consumer can share the work.
While messages are held, a heartbeat thread extends their lease. A consumer that stops (limits,
SIGTERM) acknowledges what it handled and releases what it never started, taking back their attempts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from icc.errors import UnrecoverableMessageError
from icc.queue.limits import rss_bytes
from icc.queue.message import Envelope, decode_payload, error_record
from icc.queue.retry import RetryPolicy, backoff, max_attempts
from icc.queue.transport import Transport

__all__ = ["ConsumeStats", "Consumer", "Handler", "Limits", "QueuePolicy"]

Handler = Callable[[dict[str, Any]], object]

# Work per batch the adaptive batch size aims for, and the bounds of that size.
_BATCH_SECONDS = 0.25
_MAX_BATCH = 200
# Handled messages are acknowledged with the next lease, and at least this often (seconds): a crash
# then redoes at most this much finished work.
_ACK_INTERVAL = 1.0
# Idle sleeps are cut into steps this long so that limits and signals are noticed quickly.
_IDLE_STEP = 0.1


class QueuePolicy(RetryPolicy, Protocol):
    """A queue's retry settings and lease (:class:`icc.config.QueueConfig` is one)."""

    @property
    def lease(self) -> float: ...


@dataclass(frozen=True)
class Limits:
    """When a consumer stops; ``None`` means no such limit."""

    time_limit: float | None = None  # seconds, holding while idle too
    limit: int | None = None  # messages processed (handled, retried or failed)
    memory_limit: int | None = None  # bytes of resident memory, checked between messages
    failure_limit: int | None = None  # handler failures (retried or failed)
    sleep: float = 1.0  # seconds between polls while every queue is empty
    stop_when_empty: bool = False


@dataclass
class ConsumeStats:
    """What one consumer run did."""

    handled: int = 0
    retried: int = 0
    failed: int = 0
    elapsed: float = 0.0
    stop_reason: str = ""
    by_queue: dict[str, int] = field(default_factory=dict)

    @property
    def processed(self) -> int:
        return self.handled + self.retried + self.failed

    def summary(self) -> str:
        return (
            f"consumed {self.processed} message{'s' if self.processed != 1 else ''} "
            f"({self.handled} handled, {self.retried} retried, {self.failed} failed) "
            f"in {self.elapsed:.1f}s; stopped: {self.stop_reason}"
        )


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(6).hex()}"


class Consumer:
    """Drains ``queues`` in the order given: a later queue is only leased from when the earlier ones
    have nothing available."""

    def __init__(
        self,
        transport: Transport,
        handlers: Mapping[str, Handler],
        queues: Sequence[str],
        *,
        policy: Callable[[str], QueuePolicy],
        limits: Limits | None = None,
        report: Callable[[str], None] | None = None,
        max_batch: int = _MAX_BATCH,
    ) -> None:
        if not queues:
            raise ValueError("a consumer needs at least one queue")
        self.transport = transport
        self.handlers = dict(handlers)
        self.queues = tuple(dict.fromkeys(queues))
        self.policy = policy
        self.limits = limits or Limits()
        self.report = report or (lambda line: None)
        self.max_batch = max(1, max_batch)
        self.owner = _owner()
        self.stats = ConsumeStats()
        self._stop_reason: str | None = None
        self._wake = threading.Event()
        self._acks: list[int] = []
        self._last_ack = time.monotonic()
        self._per_message = 0.0  # moving average of handler seconds; 0 until measured
        self._failures = 0
        # Lease state shared with the heartbeat thread.
        self._holding = False
        self._held_lease = 0.0
        self._valid_until = 0.0
        self._state = threading.Lock()

    # --- control --------------------------------------------------------------------------------

    def stop(self, reason: str = "stopped") -> None:
        """Stop after the current message. Safe from signal handlers and other threads."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._wake.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop(signal.Signals(signum).name)

    @contextlib.contextmanager
    def _signals(self, install: bool) -> Iterator[None]:
        if not install or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _limit_reached(self, deadline: float | None) -> str | None:
        limits = self.limits
        if self._stop_reason is not None:
            return self._stop_reason
        if deadline is not None and time.monotonic() >= deadline:
            return f"time limit of {limits.time_limit:g}s reached"
        if limits.limit is not None and self.stats.processed >= limits.limit:
            return f"limit of {limits.limit} message{'s' if limits.limit != 1 else ''} reached"
        if limits.failure_limit is not None and self._failures >= limits.failure_limit:
            return f"failure limit of {limits.failure_limit} reached"
        if limits.memory_limit is not None:
            rss = rss_bytes()
            if rss >= limits.memory_limit:
                return f"memory limit reached ({rss // 2**20} MiB >= {limits.memory_limit // 2**20} MiB)"
        return None

    # --- the loop -------------------------------------------------------------------------------

    def run(self, *, install_signal_handlers: bool = True) -> ConsumeStats:
        """Consume until a limit, a signal or :meth:`stop`; return what was done."""
        started = time.monotonic()
        deadline = started + self.limits.time_limit if self.limits.time_limit is not None else None
        unstarted: list[int] = []
        heartbeat_stop = threading.Event()
        heartbeat = threading.Thread(
            target=self._heartbeat, args=(heartbeat_stop,), name="icc-queue-heartbeat", daemon=True
        )
        with self._signals(install_signal_handlers):
            heartbeat.start()
            try:
                while True:
                    reason = self._limit_reached(deadline)
                    if reason is not None:
                        self.stats.stop_reason = reason
                        break
                    batch = self._next_batch()
                    if not batch:
                        if self.limits.stop_when_empty:
                            self.stats.stop_reason = "queues empty"
                            break
                        self._idle(deadline)
                        continue
                    unstarted = [envelope.id for envelope in batch]
                    for index, envelope in enumerate(batch):
                        if index:
                            reason = self._limit_reached(deadline)
                            if reason is not None:
                                break
                        if time.monotonic() >= self._valid_until:
                            # The heartbeat could not keep the lease: others may hold these now.
                            self.report(
                                "lease lost (queue database too busy?); dropping the rest of the batch"
                            )
                            break
                        unstarted.pop(0)
                        self._process(envelope)
                        if self._acks and time.monotonic() - self._last_ack >= _ACK_INTERVAL:
                            self._flush_acks()
                    if reason is not None:
                        self.stats.stop_reason = reason
                        break
                    if unstarted:
                        self.transport.release(unstarted, owner=self.owner)
                        unstarted = []
            finally:
                heartbeat_stop.set()
                try:
                    self._flush_acks()
                    if unstarted:
                        self.transport.release(unstarted, owner=self.owner)
                finally:
                    with self._state:
                        self._holding = False
                    heartbeat.join(timeout=5)
                    self.stats.elapsed = time.monotonic() - started
        return self.stats

    def _batch_size(self) -> int:
        size = self.max_batch
        if self._per_message > 0:
            size = max(1, min(size, int(_BATCH_SECONDS / self._per_message)))
        if self.limits.limit is not None:
            size = max(1, min(size, self.limits.limit - self.stats.processed))
        return size

    def _next_batch(self) -> list[Envelope]:
        size = self._batch_size()
        acks, self._acks = self._acks, []
        try:
            for queue in self.queues:
                lease = self.policy(queue).lease
                leased_at = time.monotonic()
                batch = self.transport.lease(queue, owner=self.owner, limit=size, lease=lease, ack=acks)
                acks = []
                self._last_ack = leased_at
                if batch:
                    with self._state:
                        self._holding = True
                        self._held_lease = lease
                        self._valid_until = leased_at + lease
                    return batch
            with self._state:
                self._holding = False
            return []
        finally:
            if acks:  # the lease failed before acknowledging: keep them for the next try
                self._acks[:0] = acks

    def _flush_acks(self) -> None:
        if self._acks:
            acks, self._acks = self._acks, []
            try:
                self.transport.ack(acks, owner=self.owner)
            except BaseException:
                self._acks[:0] = acks
                raise
        self._last_ack = time.monotonic()

    def _idle(self, deadline: float | None) -> None:
        end = time.monotonic() + max(0.0, self.limits.sleep)
        if deadline is not None:
            end = min(end, deadline)
        while self._stop_reason is None:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            self._wake.wait(min(_IDLE_STEP, remaining))

    def _heartbeat(self, stop: threading.Event) -> None:
        interval = max(0.05, min(self.policy(q).lease for q in self.queues) / 3)
        while not stop.wait(interval):
            with self._state:
                holding, lease = self._holding, self._held_lease
            if not holding:
                continue
            started = time.monotonic()
            try:
                self.transport.extend(owner=self.owner, lease=lease)
            except Exception as exc:  # the main loop notices the lapsed lease
                self.report(f"could not extend the lease: {exc}")
                continue
            with self._state:
                if self._holding:
                    self._valid_until = max(self._valid_until, started + lease)

    # --- one message ----------------------------------------------------------------------------

    def _process(self, envelope: Envelope) -> None:
        policy = self.policy(envelope.queue)
        allowed = max_attempts(policy)
        label = f"message {envelope.id} {envelope.name!r} ({envelope.queue})"
        if envelope.redelivered and envelope.attempts > allowed and envelope.crashed:
            # Its last allowed attempt killed its consumer: give up without running it again. This
            # delivery never ran, so it is not counted.
            self._fail(
                envelope,
                f"crashed: its consumer died or was killed while handling it, and its {allowed} "
                f"attempt{'s' if allowed != 1 else ''} are used up (retries = {policy.retries})",
                label,
                attempts=envelope.attempts - 1,
            )
            return
        try:
            payload = decode_payload(envelope.payload)
        except ValueError as exc:
            self._fail(envelope, f"malformed payload: {exc}", label)
            return
        handler = self.handlers.get(envelope.name)
        if handler is None:
            known = ", ".join(sorted(self.handlers)) or "none"
            self._fail(
                envelope,
                f"no handler for {envelope.name!r} (is the plugin that registers it installed and "
                f"enabled?); handlers: {known}",
                label,
            )
            return
        started = time.perf_counter()
        try:
            handler(payload)
        except UnrecoverableMessageError as exc:
            self._failures += 1
            record = error_record(envelope.attempts, exc)
            self._fail(envelope, f"unrecoverable: {record.get('error')}", label, record)
        except Exception as exc:
            self._failures += 1
            record = error_record(envelope.attempts, exc)
            if envelope.attempts >= allowed:
                self._fail(
                    envelope,
                    f"failed {envelope.attempts} time{'s' if envelope.attempts != 1 else ''}; "
                    f"last error: {record.get('error')}",
                    label,
                    record,
                )
            else:
                delay = backoff(policy, envelope.attempts)
                if self.transport.retry(envelope, record, owner=self.owner, delay=delay):
                    self.report(
                        f"{label} failed (attempt {envelope.attempts}/{allowed}): {record.get('error')}; "
                        f"retry in {delay:g}s"
                    )
                self.stats.retried += 1
                self._count(envelope)
        else:
            self._acks.append(envelope.id)
            self.stats.handled += 1
            self._count(envelope)
        finally:
            took = time.perf_counter() - started
            self._per_message = took if self._per_message == 0 else 0.8 * self._per_message + 0.2 * took

    def _fail(
        self, envelope: Envelope, reason: str, label: str, record: Any = None, *, attempts: int | None = None
    ) -> None:
        if record is None and attempts is None:
            record = error_record(envelope.attempts, reason)
        if self.transport.fail(envelope, reason, record, owner=self.owner, attempts=attempts):
            self.report(f"{label} moved to failed: {reason}")
        self.stats.failed += 1
        self._count(envelope)

    def _count(self, envelope: Envelope) -> None:
        self.stats.by_queue[envelope.queue] = self.stats.by_queue.get(envelope.queue, 0) + 1
