"""icc's built-in queue plugin: the consumer cron jobs.

With ``consumers.mode = "cron"`` it adds ``consume:<queue>`` for each of ``consumers.queues``: every
minute, in the background, never two at once, each a command task
``python -m icc [--config PATH] consume QUEUE --time-limit S`` (an argv list, no shell), with a job
timeout of ``S + grace + 5`` seconds. A consumer interrupts a handler at its time limit and exits by
``S + grace`` on its own; the timeout backs that up for a process nothing in Python can stop (a handler
holding the GIL in C code): the runner kills its process group (SIGTERM, then SIGKILL after ``grace``).
With ``mode = "service"`` it adds nothing, so ``icc scan`` removes those jobs and systemd runs the
consumers.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from icc.hookspecs import hookimpl

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


def consumer_argv(config: Config, queue: str) -> list[str]:
    """The command a consumer cron job runs for ``queue``: this interpreter, not whatever ``icc`` is on
    cron's PATH, and the same configuration file the scan used."""
    argv = [sys.executable, "-m", "icc"]
    if config.path is not None:
        argv += ["--config", str(config.path)]
    return [*argv, "consume", queue, "--time-limit", f"{config.consumers.time_limit:g}"]


# Seconds a consumer job's timeout leaves on top of the consumer's own time limit and grace: the
# interpreter's start-up, and the abandoned handler's bookkeeping.
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
        scheduler.add(
            consumer_argv(config, queue),
            name=f"consume:{queue}",
            description=f"drain the {queue!r} queue for up to {limit:g}s (consumers.mode = cron)",
        ).every_minute().in_background().without_overlapping().timeout(consumer_timeout(config))
