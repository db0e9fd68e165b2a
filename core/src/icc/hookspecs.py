"""The ``hookspec``/``hookimpl`` markers of the ``icc`` project and every hook a plugin can implement.

A plugin is a module (or any object) with functions marked ``@icc.hookimpl`` and named after these specs.
Implement only the hooks you need, with only the parameters you use. Each spec has a heading in
``docs/plugins.md``; a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

from icc.markers import hookimpl

if TYPE_CHECKING:
    import click

    from icc.config import Config
    from icc.jobs import Job, RunContext, RunResult, Scheduler

__all__ = ["Handler", "RegisterHandler", "hookimpl", "hookspec"]

PROJECT_NAME = "icc"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
# hookimpl: icc.markers', pluggy-free (a plugin's import does not import pluggy), re-exported here

Handler = Callable[[dict[str, Any]], None]
"""A queue message handler: called with the message's JSON payload."""


class RegisterHandler(Protocol):
    """The ``register`` callback handed to :func:`register_handlers`."""

    def __call__(self, name: str, handler: Handler, queue: str = "async") -> None: ...


# -------------------------------------------------------------------------------------------------
# Configuration
# -------------------------------------------------------------------------------------------------


@hookspec
def configure(config: Config) -> None:
    """Validate and keep this plugin's own configuration table.

    Called once, before any other hook. Read your table with ``config.tables.get("myplugin", {})``
    (``[tool.icc.myplugin]``, plus ``ICC_MYPLUGIN__<KEY>`` variables as strings) and raise
    :class:`icc.ConfigError` naming the key and where it is set (``config.source("myplugin.key")``: the
    ``ICC_*`` variable that set it, else the config file) when a value is wrong; the plugin is then disabled
    and reported.

    :param config: the loaded configuration, shared by every plugin; do not modify it.
    """


# -------------------------------------------------------------------------------------------------
# Definitions: tasks, queue handlers, commands
# -------------------------------------------------------------------------------------------------


@hookspec
def schedule(scheduler: Scheduler) -> None:
    """Add tasks with their schedules.

    Call ``scheduler.add(task, name=..., description=...)`` for each task and chain the schedule on the
    result: ``scheduler.add(cleanup).daily().at(3)``. Jobs record this plugin's distribution and version.
    A :class:`icc.ScheduleError` raised here is reported against this plugin; its jobs are left out.

    :param scheduler: collects this plugin's jobs; ``scheduler.timezone`` and ``scheduler.environment``
        hold the configured zone and environment.
    """


@hookspec
def register_handlers(register: RegisterHandler) -> None:
    """Register queue message handlers.

    Call ``register(name, handler, queue="async")`` once per message name; ``handler(payload: dict)``
    receives the JSON payload given to ``icc.dispatch(name, payload)``. Names are unique across plugins.

    :param register: ``register(name: str, handler: Callable[[dict], None], queue: str = "async")``.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``icc`` command line.

    Use ``@cli.command()`` or ``cli.add_command(...)``. A command may not replace one of icc's own.

    :param cli: the ``icc`` click group.
    """


# -------------------------------------------------------------------------------------------------
# Runs
# -------------------------------------------------------------------------------------------------


@hookspec
def before_run(job: Job, run: RunContext) -> None:
    """Called just before a job runs (in the process that runs it).

    An exception here is reported against the plugin and never stops the run.

    :param job: the job about to run.
    :param run: this run: run id, slot, kind (scheduled, manual, missed) and environment.
    """


@hookspec
def after_run(job: Job, run: RunContext, result: RunResult, outcome: str) -> None:
    """Called after every run and every recorded slot, with how it ended.

    Called for every outcome: ``succeeded``, ``failed``, ``timed_out``, ``stopped``, ``skipped``, ``missed``
    and ``abandoned``; for a background run in its supervisor, for ``missed``, ``skipped`` (by a condition)
    and ``abandoned`` in the tick that records them. An exception here is reported (stderr and the run's
    error) and never changes the outcome.

    :param job: the job; ``job.name`` is its name. For a job whose plugin no longer loads, a stand-in built
        from the stored definition (its task cannot be called, it has no callbacks).
    :param run: this run: run id, slot (aware, in the job's zone), kind (scheduled, manual, missed), environment.
    :param result: an :class:`icc.RunResult`: outcome, exit code, error, stored output, duration, start and end.
    :param outcome: deprecated, ``result.outcome``; kept so implementations written for
        ``after_run(job, run, outcome)`` keep working.
    """


@hookspec
def job_stale(job: str, alert: Mapping[str, Any]) -> None:
    """Called once per staleness episode of a job with ``expect_success_within`` (icc's freshness check):
    its last success is older than that, or it never succeeded since its first scan.

    Called in the consumer of the ``mail`` queue (never in the tick), after the pings' ``/fail``; icc-mail
    mails ``mail.alert_to`` here. An exception here is reported and never retried.

    :param job: the job's name.
    :param alert: ``job``, ``outcome`` (``"stale"``), ``error`` (what is overdue, one line), ``host`` (the
        host whose tick noticed), ``stale_since`` (ISO time, UTC), ``last_success`` (epoch seconds or None)
        and ``within`` (the seconds given to ``expect_success_within``).
    """
