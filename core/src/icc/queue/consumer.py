"""The consumer loop: lease, handle, acknowledge; retry with backoff; give up into the failed store.

Delivery is at least once. The attempt is counted when a message is leased, before its handler runs, so
a handler that kills its process still uses up its retries: the lease expires, the message comes back
with the crashed attempt counted, and past its retries it goes to failed instead of running again.

Throughput comes from batches: one transaction acknowledges the messages handled since the last one
and leases the next batch. The first batch is one message; later ones adapt to the handlers' measured
speed (about a quarter second of work, and never more than a fraction of the lease), so slow handlers
are leased one or a few at a time and a second consumer can share the work. While messages are held, a
heartbeat thread extends their lease; a watchdog thread gives back the rest of the batch as soon as one
handler runs long. A consumer that stops (limits, SIGTERM) acknowledges what it handled and releases
what it never started, taking back their attempts.

An idle consumer sleeps ``Limits.sleep`` between polls; :meth:`Consumer.stop` (a signal, the watchdog, another
thread) cuts the sleep short. A transport with a ``wait(queues, timeout)`` method wakes it sooner:
- PostgreSQL with ``[icc.consumers] notify`` waits for a notification in short steps, and the consumer leases again
  as soon as one names one of its queues; a :class:`QueueError` from it is reported once and the consumer polls.
- SQLite (whose transport also has ``interrupt()``, which :meth:`Consumer.stop` calls) waits in one piece until
  its queue database changes (inotify) or the first of its queues' messages comes due, and ``_RECHECK`` seconds at
  the most: an idle consumer then wakes for nothing (issue 17), yet a message dispatched to it is handled at
  once, not at the next poll. Where there is no inotify it polls every ``Limits.sleep``.
The heartbeat and watchdog threads sleep until a batch is leased.

The time limit is hard. A handler still running at the limit is interrupted: the watchdog sends the main
thread a signal whose handler raises :class:`HandlerInterrupted` (a ``BaseException``, so ``except
Exception`` in a handler does not swallow it); the message is retried or failed like any failure, with
its attempt counted. A handler that does not return within the grace period (it swallowed the
interruption, or it is blocked where signals cannot reach it) is abandoned: when the consumer owns its
process (``hard_exit`` given, as ``icc consume`` does), the watchdog records the message's failure,
acknowledges and releases what it holds, and ends the process with ``os._exit``. Code that holds the GIL
(a long C call) stops even the watchdog; the cron job's timeout kills the process group then.

A queue database that stops answering (a frozen server, a partition the kernel does not notice) holds the
consumer in a call to its transport, where no signal helps. The transport is told the time limit
(``limit_time(seconds)``: PostgreSQL derives its connect, statement and lock timeouts from it), and a guard
thread ends a consumer that owns its process :func:`stuck_bound` seconds past its time limit when it is
still waiting there (and ``grace`` later when a handler runs, should the watchdog be stuck too): the messages it
leased come back when their lease expires.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from icc import framework
from icc.errors import QueueError, UnrecoverableMessageError
from icc.queue.limits import rss_bytes
from icc.queue.message import Envelope, ErrorRecord, decode_payload, error_record
from icc.queue.retry import RetryPolicy, backoff, max_attempts
from icc.queue.transport import Transport

__all__ = [
    "HUNG_EXIT_CODE",
    "ConsumeStats",
    "Consumer",
    "Handler",
    "HandlerInterrupted",
    "Limits",
    "QueuePolicy",
]

Handler = Callable[[dict[str, Any]], object]


class HandlerInterrupted(BaseException):
    """Raised inside a handler that is still running when its consumer must stop (the time limit, or
    the grace after SIGTERM/SIGINT). A ``BaseException``: ``except Exception`` does not swallow it."""


# Work per batch the adaptive batch size aims for, and the bounds of that size. The first batch is one
# message; each later one at most doubles, and never holds more than _LEASE_SHARE of the lease's work.
_BATCH_SECONDS = 0.25
_LEASE_SHARE = 0.25
_MAX_BATCH = 200
# A handler running this long (seconds) gives back the rest of its batch at once, for other consumers.
_SLOW_HANDLER = 1.0
# How often (seconds) the watchdog looks at the running handler, at most (it wakes on time for the
# moments it knows of: the slow-handler mark and the interruption).
_WATCH_STEP = 0.25
# The signal the watchdog interrupts a handler with (delivered to the main thread).
INTERRUPT_SIGNAL = signal.SIGUSR2
# The exit code of a consumer that abandoned a handler which ignored its interruption.
HUNG_EXIT_CODE = 1
# Handled messages are acknowledged with the next lease, and at least this often (seconds): a crash
# then redoes at most this much finished work.
_ACK_INTERVAL = 1.0
# Idle sleeps on PostgreSQL's LISTEN are cut into steps this long so that limits and signals are noticed quickly.
_IDLE_STEP = 0.1
# The longest an idle consumer waits on a change watch (SQLite's, see the transport's ``wait``) before it looks
# at its queues anyway: what no watch sees (the wall clock stepped, a lost event) is noticed within this.
_RECHECK = 15.0
# Seconds between two looks at the control requests (`icc consume --stop`, `icc pause --queues`).
_CONTROL_INTERVAL = 0.5


def stuck_bound(grace: float) -> float:
    """Seconds past its time limit after which a consumer still waiting for its queue database (no handler
    running) ends its process: half the grace, between 1 and 5 seconds."""
    return max(1.0, min(5.0, max(0.0, grace) / 2))


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
    # An interrupted handler gets half of it to return before the consumer abandons it (hard exit), and
    # the running handler gets half of it after SIGTERM/SIGINT before it is interrupted.
    grace: float = 10.0


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


class _Wake:
    """:class:`threading.Event`'s ``set`` and ``wait`` for the one thread that waits (the consumer's loop), on a
    bare lock held until set: an Event's ``wait(timeout)`` goes through a Condition and a new lock each time,
    which makes an idle consumer's wake-up once a second cost half as much again (issue 17, bench_tick 1b).
    ``set`` may be called from any thread and from a signal handler."""

    __slots__ = ("_is_set", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._is_set = False

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        with contextlib.suppress(RuntimeError):  # two threads setting it at once: one release is enough
            self._lock.release()

    def is_set(self) -> bool:
        return self._is_set

    def wait(self, timeout: float) -> bool:
        if self._is_set:
            return True
        if self._lock.acquire(True, max(0.0, timeout)):
            with contextlib.suppress(RuntimeError):  # released twice by two setters meanwhile
                self._lock.release()  # set: every later wait returns at once, as an Event's
            return True
        return False


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(6).hex()}"


class Consumer:
    """Drains ``queues`` in the order given: a later queue is only leased from when the earlier ones
    have nothing available.

    ``hard_exit``, when given, lets the consumer end its process when a handler ignores its
    interruption: it is called (from the watchdog thread) with the stats once the message is recorded,
    to print the summary, and then the process exits with :data:`HUNG_EXIT_CODE`. Only a command that
    owns its process should pass it.
    """

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
        hard_exit: Callable[[ConsumeStats], None] | None = None,
        paused: Callable[[], bool] | None = None,
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
        self.hard_exit = hard_exit
        self.owner = _owner()
        self.stats = ConsumeStats()
        self._stop_reason: str | None = None
        self._wake = _Wake()
        self._acks: list[int] = []  # handled, not yet acknowledged; the watchdog flushes them too
        self._ack_lock = threading.Lock()
        self._last_ack = time.monotonic()
        self._per_message = 0.0  # moving average of handler seconds; 0 until measured
        self._last_batch = 0
        self._failures = 0
        # Lease state shared with the heartbeat thread.
        self._holding = False
        self._held_lease = 0.0
        self._valid_until = 0.0
        self._state = threading.Lock()
        # Set while a batch is leased: the watchdog has nothing to watch without one, and waits on it.
        self._leased = threading.Event()
        # Shared with the watchdog thread (under _state): the leased messages not started yet, the
        # message whose handler runs now and since when, and when a running handler is interrupted.
        self._rest: list[int] = []
        self._current: Envelope | None = None  # (set alone: one assignment is atomic)
        self._current_started = 0.0  # set before _current
        self._interrupt_at = math.inf
        self._interrupt_why = ""
        self._interrupting: int | None = None  # the id of the message the interrupt signal is for
        self._interrupted_at = 0.0
        self._main_ident: int | None = None  # set while the interrupt signal handler is installed
        self._started = time.monotonic()
        # Control: a stop request made after this consumer started stops it; ``paused`` (the queues are
        # paused with `icc pause --queues`) holds it idle without leasing.
        self.paused = paused
        self._started_wall = time.time()
        self._control_checked = -math.inf
        self._held = False
        # Idle (the last poll found nothing), the pause is read right before the next lease rather than at every
        # look at the control requests: an idle consumer's poll then stats one file (issue 17, bench_tick 1b).
        self._idle_polls = False
        self._pause_deferred = False

    # --- control --------------------------------------------------------------------------------

    def stop(self, reason: str = "stopped") -> None:
        """Stop after the current message. Safe from signal handlers and other threads."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._wake.set()
        interrupt: Callable[[], None] | None = getattr(self.transport, "interrupt", None)
        if interrupt is not None:
            interrupt()  # a wait on the transport (SQLite's change watch) returns now

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        first = self._stop_reason is None
        self.stop(name)
        # The running handler may finish within half the grace; a second signal interrupts it now.
        delay = max(0.0, self.limits.grace) / 2 if first else 0.0
        at = time.monotonic() + delay
        if at < self._interrupt_at:
            self._interrupt_at = at
            self._interrupt_why = f"still running {delay:g}s after the consumer received {name}"

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        current = self._current
        if current is not None and current.id == self._interrupting:
            self._interrupting = None
            raise HandlerInterrupted(self._interrupt_why)

    @contextlib.contextmanager
    def _signals(self, install: bool) -> Iterator[None]:
        if not install or threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = {signal.SIGTERM: self._on_signal, signal.SIGINT: self._on_signal}
        signals[INTERRUPT_SIGNAL] = self._on_interrupt
        previous = {sig: signal.signal(sig, handler) for sig, handler in signals.items()}
        self._main_ident = threading.get_ident()
        try:
            yield
        finally:
            self._main_ident = None
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _poll_control(self) -> None:
        """Look at the stop requests and the queue pause, at most every ``_CONTROL_INTERVAL`` seconds."""
        now = time.monotonic()
        if now - self._control_checked < _CONTROL_INTERVAL:
            return
        self._control_checked = now
        requested = getattr(self.transport, "stop_requested_at", None)
        if requested is not None:
            at = requested()
            if at is not None and at >= self._started_wall:
                self.stop("stop requested (icc consume --stop)")
        if self.paused is not None:
            if self._idle_polls and not self._held and not self.limits.stop_when_empty:
                self._pause_deferred = True  # read by _next_batch before it leases
            else:
                self._held = self.paused()

    def _limit_reached(self, deadline: float | None) -> str | None:
        limits = self.limits
        self._poll_control()
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

    def run(self, *, install_signal_handlers: bool = True, started: float | None = None) -> ConsumeStats:
        """Consume until a limit, a signal or :meth:`stop`; return what was done.

        With ``install_signal_handlers`` (in the main thread), SIGTERM and SIGINT stop the consumer and
        a handler still running at the time limit is interrupted. ``started`` (``time.monotonic()``) counts
        the time limit and the elapsed time from an earlier moment: the light minute's consumer waited for
        messages before it became this one (:mod:`icc.tick.light`)."""
        started = self._started = time.monotonic() if started is None else started
        deadline = started + self.limits.time_limit if self.limits.time_limit is not None else None
        if deadline is not None:
            self._interrupt_at = deadline
            self._interrupt_why = f"still running at the consumer's time limit of {self.limits.time_limit:g}s"
        threads_stop = threading.Event()
        finished = threading.Event()  # set once the last acknowledgement is written: the guard stands down
        threads = [
            threading.Thread(target=target, args=(threads_stop,), name=name, daemon=True)
            for target, name in (
                (self._heartbeat, "icc-queue-heartbeat"),
                (self._watchdog, "icc-queue-watchdog"),
            )
        ]
        if deadline is not None and self.hard_exit is not None:
            threads.append(
                threading.Thread(
                    target=self._guard, args=(finished, deadline), name="icc-queue-guard", daemon=True
                )
            )
        with self._signals(install_signal_handlers):
            for thread in threads:
                thread.start()
            try:
                limit_time = getattr(self.transport, "limit_time", None)
                if deadline is not None and limit_time is not None:
                    limit_time(max(0.0, deadline - time.monotonic()))
                while True:
                    reason = self._limit_reached(deadline)
                    if reason is not None:
                        self.stats.stop_reason = reason
                        break
                    if self._held:  # icc pause --queues: lease nothing until it ends
                        if self.limits.stop_when_empty:
                            self.stats.stop_reason = "queues paused"
                            break
                        self._idle(deadline, at_least=_CONTROL_INTERVAL, wake=False)
                        continue
                    batch = self._next_batch()
                    if batch is None:
                        continue  # icc pause --queues, read as it was about to lease: held from now on
                    if not batch:
                        if self.limits.stop_when_empty:
                            self.stats.stop_reason = "queues empty"
                            break
                        self._idle(deadline)
                        continue
                    with self._state:
                        self._rest = [envelope.id for envelope in batch]
                    for index, envelope in enumerate(batch):
                        if index:
                            reason = self._limit_reached(deadline)
                            if reason is not None or self._held:
                                break  # held (icc pause --queues): the rest is released below
                        if time.monotonic() >= self._valid_until:
                            # The heartbeat could not keep the lease: others may hold these now.
                            self.report(
                                "lease lost (queue database too busy?); dropping the rest of the batch"
                            )
                            with self._state:
                                self._rest = []
                            break
                        with self._state:
                            if not self._rest or self._rest[0] != envelope.id:
                                break  # the watchdog gave the rest back (a slow handler)
                            self._rest.pop(0)
                        took = time.perf_counter()
                        self._process(envelope)
                        took = time.perf_counter() - took
                        self._per_message = (
                            took if self._per_message == 0 else 0.8 * self._per_message + 0.2 * took
                        )
                        if self._acks and time.monotonic() - self._last_ack >= _ACK_INTERVAL:
                            self._flush_acks()
                    if reason is not None:
                        self.stats.stop_reason = reason
                        break
                    self._release_rest()
            finally:
                threads_stop.set()
                self._leased.set()  # the watchdog, idle, waits on it
                try:
                    self._flush_acks()
                    self._release_rest()
                finally:
                    finished.set()
                    with self._state:
                        self._holding = False
                    for thread in threads:
                        thread.join(timeout=5)
                    self.stats.elapsed = time.monotonic() - started
        return self.stats

    def _guard(self, finished: threading.Event, deadline: float) -> None:
        """End the process when the consumer is still at work :func:`stuck_bound` seconds past its time
        limit with no handler running: it waits for a queue database that stopped answering. A running
        handler is the watchdog's to interrupt and abandon; past ``grace`` more, the watchdog is stuck too."""
        until = deadline + stuck_bound(self.limits.grace)
        last = until + max(0.0, self.limits.grace)
        while not finished.wait(max(0.0, until - time.monotonic())):
            now = time.monotonic()
            if self._current is not None and now < last:
                until = now + _WATCH_STEP  # a handler runs: the watchdog interrupts or abandons it
                continue
            what = "its queue database" if self._current is None else "its handler and its queue database"
            self.report(
                f"still waiting for {what} {now - deadline:.1f}s past the time limit of "
                f"{self.limits.time_limit or 0:g}s; exiting without it (the messages it leased come back when "
                "their lease expires)"
            )
            self.stats.stop_reason = (
                f"time limit of {self.limits.time_limit or 0:g}s reached; the queue database did not answer"
            )
            self.stats.elapsed = now - self._started
            if self.hard_exit is not None:
                self.hard_exit(self.stats)
            os._exit(HUNG_EXIT_CODE)

    def _release_rest(self) -> None:
        with self._state:
            rest, self._rest = self._rest, []
        if rest:
            self.transport.release(rest, owner=self.owner)

    def _batch_size(self, lease: float) -> int:
        if self._per_message <= 0:
            size = 1  # nothing measured yet: a slow handler must not take a big batch
        else:
            fits = min(_BATCH_SECONDS, _LEASE_SHARE * lease) / self._per_message
            size = max(1, min(self.max_batch, 2 * self._last_batch, int(fits)))
        if self.limits.limit is not None:
            size = max(1, min(size, self.limits.limit - self.stats.processed))
        return size

    def _next_batch(self) -> list[Envelope] | None:
        """The next batch, or none: empty when nothing is available, None when a pause it read is in force."""
        acks = self._take_acks()
        probe: Callable[[Sequence[str]], bool] | None = getattr(self.transport, "available", None)
        if not acks and probe is not None and not probe(self.queues):
            # Nothing to lease and nothing to acknowledge: a read, not a write transaction (SQLite). An
            # idle consumer then takes no write lock and writes nothing between its polls.
            with self._state:
                self._holding = False
                self._leased.clear()
            self._idle_polls = True
            return []
        self._idle_polls = False
        if self._pause_deferred and self.paused is not None:
            self._pause_deferred = False
            self._held = self.paused()
            if self._held:  # icc pause --queues came while it was idle: the loop holds
                if acks:
                    self._put_back_acks(acks)
                return None
        try:
            for queue in self.queues:
                lease = self.policy(queue).lease
                size = self._batch_size(lease)
                leased_at = time.monotonic()
                batch = self.transport.lease(queue, owner=self.owner, limit=size, lease=lease, ack=acks)
                acks = []
                self._last_ack = leased_at
                if batch:
                    self._last_batch = len(batch)
                    with self._state:
                        self._holding = True
                        self._leased.set()
                        self._held_lease = lease
                        self._valid_until = leased_at + lease
                    return batch
            with self._state:
                self._holding = False
                self._leased.clear()
            return []
        finally:
            if acks:  # the lease failed before acknowledging: keep them for the next try
                self._put_back_acks(acks)

    def _take_acks(self) -> list[int]:
        with self._ack_lock:
            acks, self._acks = self._acks, []
        return acks

    def _put_back_acks(self, acks: list[int]) -> None:
        with self._ack_lock:
            self._acks[:0] = acks

    def _flush_acks(self) -> None:
        acks = self._take_acks()
        if acks:
            try:
                self.transport.ack(acks, owner=self.owner)
            except BaseException:
                self._put_back_acks(acks)
                raise
        self._last_ack = time.monotonic()

    def _idle(self, deadline: float | None, *, at_least: float = 0.0, wake: bool = True) -> None:
        """Sleep ``limits.sleep`` (at least ``at_least``), cut short by a stop, the time limit, and, when
        ``wake`` and the transport can, a new message on one of the queues: PostgreSQL with ``notify`` (its
        ``wait``, in short steps), or a transport whose ``wait`` :meth:`stop` can interrupt (SQLite's change
        watch), waited on in one piece until a change or a message comes due, and ``_RECHECK`` at the most."""
        start = time.monotonic()
        sleep = max(0.0, self.limits.sleep, at_least)
        waiter: Callable[[Sequence[str], float], bool | None] | None = (
            getattr(self.transport, "wait", None) if wake else None
        )
        whole = waiter is not None and getattr(self.transport, "interrupt", None) is not None
        end = start + (max(sleep, _RECHECK) if whole else sleep)
        if deadline is not None:
            end = min(end, deadline)
        while self._stop_reason is None:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            if waiter is None:
                # stop() (from a signal handler, another thread or the watchdog) sets _wake: one wait for
                # the whole sleep is as prompt as short steps, and an idle consumer wakes once per poll.
                self._wake.wait(remaining)
                continue
            # Short steps on the LISTEN connection, as without it: signals, stop() and limits stay prompt. A
            # wait that stop() interrupts is waited on whole.
            step = remaining if whole else min(_IDLE_STEP, remaining)
            try:
                woken = waiter(self.queues, step)
            except QueueError as exc:  # polling instead; the transport listens again later
                self.report(str(exc))
                woken = None
            if woken:
                if whole:
                    self._control_checked = -math.inf  # the change may be a stop request: look at once
                return
            if woken is not None:
                continue
            if whole:
                # None: no change watch here (no inotify): poll every limits.sleep, as without it.
                waiter = None
                end = min(end, start + sleep)
                continue
            # None: no LISTEN now (it failed; the transport tries again later): sleep the step.
            self._wake.wait(step)

    def _heartbeat(self, stop: threading.Event) -> None:
        interval = max(0.05, min(self.policy(q).lease for q in self.queues) / 3)
        while not stop.is_set():
            if not self._leased.is_set():
                # Idle: no lease to extend, so no wake-ups until one is taken (run() sets it as it ends, too).
                self._leased.wait()
                continue
            if stop.wait(interval):
                return
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

    # --- the watchdog ---------------------------------------------------------------------------

    def _watchdog(self, stop: threading.Event) -> None:
        """Give back the rest of a batch when a handler runs long; interrupt a handler at the time
        limit (or the grace after a signal); abandon one that ignores the interruption."""
        grace = max(0.0, self.limits.grace)
        unwind = max(grace / 2, 0.5)  # an interrupted handler's time to return
        wait = _WATCH_STEP
        while not stop.wait(max(0.01, wait)):
            if not self._leased.is_set():
                # Idle: no batch, so no handler to watch; wake when one is leased (or run() ends), not before.
                self._leased.wait()
                continue
            now = time.monotonic()
            wait = _WATCH_STEP
            with self._state:
                current, started = self._current, self._current_started
                if current is not None:  # wake on time for what comes next
                    for mark in (started + _SLOW_HANDLER, self._interrupt_at):
                        if mark > now:
                            wait = min(wait, mark - now)
                slow = current is not None and now - started >= _SLOW_HANDLER
                due = current is not None and now >= self._interrupt_at
                rest = self._rest if (slow or due) else []
                if rest:
                    self._rest = []
            if slow or due:
                try:
                    if rest:
                        self.transport.release(rest, owner=self.owner)
                    self._flush_acks()  # what it handled before this handler: done, whatever comes
                except Exception as exc:  # they come back when the lease expires
                    self.report(f"could not give back the rest of the batch: {exc}")
            if current is None or not due:
                continue
            wait = 0.05
            if self._interrupting is None and self._interrupted_at == 0.0:
                self._interrupt(current)
            elif self._interrupted_at and now - self._interrupted_at >= unwind and self.hard_exit:
                self._abandon(current, max(grace / 2, 1.0))
                return

    def _interrupt(self, envelope: Envelope) -> None:
        self._interrupted_at = time.monotonic()
        if self._main_ident is None:
            return  # not the main thread: nothing can interrupt the handler
        self._interrupting = envelope.id
        try:
            signal.pthread_kill(self._main_ident, INTERRUPT_SIGNAL)
        except (OSError, ValueError):
            self._interrupting = None

    def _abandon(self, envelope: Envelope, budget: float) -> None:
        """The handler of ``envelope`` ignored its interruption: record its failure, acknowledge and
        release what the consumer holds, and end the process. The bookkeeping gets ``budget``
        seconds (the handler may hold a lock it needs); past that the lease expiring does it."""
        policy = self.policy(envelope.queue)
        label = f"message {envelope.id} {envelope.name!r} ({envelope.queue})"
        why = (
            f"HandlerInterrupted: {self._interrupt_why}, and it did not stop within "
            f"{time.monotonic() - self._interrupted_at:.1f}s of being interrupted; the consumer exited without it"
        )

        def record() -> None:
            self.report(f"{label}: its handler ignored its interruption ({self._interrupt_why}); exiting")
            self._failures += 1
            self._handler_failed(envelope, policy, error_record(envelope.attempts, why), label)
            with self._state:
                self._holding = False
            self._flush_acks()
            self._release_rest()
            self.stats.stop_reason = f"abandoned the handler of {label}: it ignored its interruption"
            self.stats.elapsed = time.monotonic() - self._started
            if self.hard_exit is not None:
                self.hard_exit(self.stats)

        worker = threading.Thread(target=record, name="icc-queue-abandon", daemon=True)
        worker.start()
        worker.join(budget)
        os._exit(HUNG_EXIT_CODE)

    # --- one message ----------------------------------------------------------------------------

    def _process(self, envelope: Envelope) -> None:
        policy = self.policy(envelope.queue)
        allowed = max_attempts(policy)
        label = f"message {envelope.id} {envelope.name!r} ({envelope.queue})"
        if envelope.malformed is not None:
            self._fail(envelope, f"malformed row: {envelope.malformed}", label)
            return
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
        error: BaseException | None = None
        try:
            self._current_started = time.monotonic()
            self._current = envelope
            try:
                with framework.user_code():  # a framework's app context; its stale connections closed
                    handler(payload)
            finally:
                self._current = None
        except KeyboardInterrupt:
            self._current = None
            raise  # Ctrl-C where the consumer installed no signal handlers: the caller's to handle
        except BaseException as exc:
            # SystemExit too: a handler calling sys.exit() fails its message, it does not end the consumer.
            error = exc
        # Again: the interruption may have landed in the inner finally, before it cleared it.
        self._current = None
        if error is None:
            with self._ack_lock:
                self._acks.append(envelope.id)
            self.stats.handled += 1
            self._count(envelope)
            return
        self._failures += 1
        record = error_record(envelope.attempts, error)
        if isinstance(error, UnrecoverableMessageError):
            self._fail(envelope, f"unrecoverable: {record.get('error')}", label, record)
            return
        self._handler_failed(envelope, policy, record, label)
        if isinstance(error, HandlerInterrupted) and self._stop_reason is None:  # else a signal's
            self.stop(f"time limit of {self.limits.time_limit or 0:g}s reached")

    def _handler_failed(
        self, envelope: Envelope, policy: QueuePolicy, record: ErrorRecord, label: str
    ) -> None:
        """Its handler failed: a retry after the backoff, or failed past the retries."""
        allowed = max_attempts(policy)
        if envelope.attempts >= allowed:
            error = record.get("error")
            self._fail(envelope, lambda history: _gave_up(envelope.attempts, history, error), label, record)
            return
        delay = backoff(policy, envelope.attempts, key=f"{envelope.queue}:{envelope.id}")
        if self.transport.retry(envelope, record, owner=self.owner, delay=delay):
            self.report(
                f"{label} failed (attempt {envelope.attempts}/{allowed}): {record.get('error')}; retry in {delay:g}s"
            )
        self.stats.retried += 1
        self._count(envelope)

    def _fail(
        self,
        envelope: Envelope,
        reason: str | Callable[[list[ErrorRecord]], str],
        label: str,
        record: ErrorRecord | None = None,
        *,
        attempts: int | None = None,
    ) -> None:
        if record is None and attempts is None and isinstance(reason, str):
            record = error_record(envelope.attempts, reason)
        written = self.transport.fail(envelope, reason, record, owner=self.owner, attempts=attempts)
        if written:
            self.report(f"{label} moved to failed: {written if isinstance(written, str) else reason}")
        self.stats.failed += 1
        self._count(envelope)

    def _count(self, envelope: Envelope) -> None:
        self.stats.by_queue[envelope.queue] = self.stats.by_queue.get(envelope.queue, 0) + 1


_EXPIRED = "lease expired"


def _gave_up(attempts: int, history: list[ErrorRecord], error: object) -> str:
    """The reason of a message failed past its retries: how often its handler failed, not counting
    deliveries lost to an expired lease (those are attempts, but the handler may not have run)."""
    expired = sum(1 for r in history if str(r.get("error", "")).startswith(_EXPIRED))
    failures = max(1, attempts - expired)
    text = f"failed {failures} time{'s' if failures != 1 else ''}"
    if expired:
        text += f" (and {expired} lease{'s' if expired != 1 else ''} expired)"
    return f"{text}; last error: {error}"
