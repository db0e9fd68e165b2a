"""icc's built-in queue plugin: the consumer cron jobs.

With ``consumers.mode = "cron"`` it adds ``consume:<queue>`` for each of ``consumers.queues``: every
minute, in the background, never two at once, with a job timeout of ``S + grace + 5`` seconds (``S`` is
``consumers.time_limit``). Its task is :class:`ConsumerTask`, a callable: the tick forks the background
supervisor, which forks the consumer, both from the tick's process with icc and the plugins already
loaded, so a consumer costs no interpreter start and no second plugin load (what ``icc consume`` would).
The consumer opens its own queue database connection in its process (:func:`icc.queue.dispatch.
open_transport` never hands a connection across a fork). It interrupts a handler at its time limit and
exits by ``S + grace`` on its own; the timeout backs that up for a process nothing in Python can stop (a
handler holding the GIL in C code): the supervisor kills its process group (SIGTERM, then SIGKILL after
``grace``). With ``consumers.skip_empty = true`` a queue with no message in it (ready, delayed or leased)
gets no consumer that minute: a read-only count decides, and the run is recorded ``skipped``.
With ``mode = "service"`` it adds nothing, so ``icc scan`` removes those jobs and systemd runs the
consumers.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING

from icc.errors import IccError
from icc.hookspecs import hookimpl
from icc.plugins import loaded_host
from icc.queue.consumer import Consumer, ConsumeStats, Limits
from icc.queue.dispatch import handler_queue_warnings, open_transport, validate_queue
from icc.store import queue_is_empty

if TYPE_CHECKING:
    from icc.config import Config
    from icc.jobs import Scheduler

# The configuration handed to ``configure``; the plugin is this module, registered once per host, and a
# host calls ``configure`` before ``schedule``.
_config: Config | None = None


@hookimpl
def configure(config: Config) -> None:
    global _config
    _config = config


class ConsumerTask:
    """The task of the ``consume:<queue>`` cron job: ``icc consume QUEUE --time-limit S`` in this process
    (a forked child of the background supervisor), with the plugins the tick loaded."""

    def __init__(self, config: Config, queue: str) -> None:
        self.config = config
        self.queue = queue

    def __call__(self) -> None:

        try:
            consume_in_process(self.config, self.queue)
        except IccError as exc:  # as `icc consume` reports it: one line, its exit code
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(exc.exit_code) from None


def consume_in_process(config: Config, queue: str, *, started: float | None = None) -> None:
    """What ``icc consume QUEUE --time-limit consumers.time_limit`` does, without starting an interpreter:
    the same warnings on stderr, the same summary line on stdout, the same hard exit. ``started``
    (``time.monotonic()``): when the time limit began (the light minute's consumer, :mod:`icc.tick.light`,
    waited before it loaded the plugins)."""

    validate_queue(config, queue)
    host = loaded_host(config)
    specs = host.collect_handlers()
    for failure in host.failures:
        print(f"warning: {failure}", file=sys.stderr)
    for line in handler_queue_warnings(config, specs):
        print(f"warning: {line}", file=sys.stderr)

    def hard_exit(stats: ConsumeStats) -> None:
        print(stats.summary())
        sys.stdout.flush()
        sys.stderr.flush()

    consumer = Consumer(
        # Opened here, after the forks: a new connection of this process, with timeouts that fit the time limit.
        open_transport(config, limit=config.consumers.time_limit),
        {name: spec.handler for name, spec in specs.items()},
        (queue,),
        policy=config.queue,
        limits=Limits(time_limit=config.consumers.time_limit, grace=config.grace),
        report=lambda line: print(line, file=sys.stderr),
        hard_exit=hard_exit,
    )
    print(consumer.run(started=started).summary())


# Seconds a consumer job's timeout leaves on top of the consumer's own time limit and grace: the
# supervisor's and consumer's start-up, and the abandoned handler's bookkeeping.
TIMEOUT_MARGIN = 5.0


def consumer_timeout(config: Config) -> float:
    """The job timeout of a consumer cron job: the consumer's own deadline (time limit plus grace),
    plus a margin; it only fires when the consumer could not stop itself."""
    return config.consumers.time_limit + config.grace + TIMEOUT_MARGIN


def minute_warning(config: Config) -> str | None:
    """Why a consumer cron job may outlive its minute (its next run is then skipped), or None."""
    worst = consumer_timeout(config) + config.grace  # the timeout, then SIGTERM ... SIGKILL
    if config.consumers.mode != "cron" or worst < 60:
        return None
    return (
        f"a hung consumer may run {worst:g}s (consumers.time_limit {config.consumers.time_limit:g} + "
        f"2 x grace {config.grace:g} + {TIMEOUT_MARGIN:g}), past its minute: the next minute's run of its "
        "queue is then skipped. Lower consumers.time_limit or grace"
    )


@hookimpl
def schedule(scheduler: Scheduler) -> None:
    config = _config
    if config is None or config.consumers.mode != "cron":
        return
    limit = config.consumers.time_limit
    for queue in config.consumers.queues:
        job = (
            scheduler.add(
                ConsumerTask(config, queue),
                name=f"consume:{queue}",
                description=f"drain the {queue!r} queue for up to {limit:g}s (consumers.mode = cron)",
            )
            .every_minute()
            .on_each_host()  # with a shared store every host drains the queues
            .in_background()
            .without_overlapping()
            .timeout(consumer_timeout(config))
        )
        if config.consumers.skip_empty:
            job.skip(functools.partial(queue_is_empty, config, queue))
