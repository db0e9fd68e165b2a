"""Jobs as plugins declare them: :class:`Scheduler` collects tasks with their schedules.

A task is a callable (called with no argument, or with the :class:`RunContext` when it declares one
parameter) or an argv list, run without a shell.
"""

from __future__ import annotations

import inspect
import os
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import field
from datetime import datetime
from typing import TYPE_CHECKING, Literal, cast

from icc.errors import PluginError, ScheduleError
from icc.records import record

if TYPE_CHECKING:
    from icc.schedule import Schedule, UnbuiltSchedule

Task = Callable[..., object] | Sequence[str]


@record(frozen=True)
class Provenance:
    """Where a job comes from: the plugin that added it and that plugin's distribution."""

    plugin: str
    distribution: str | None = None
    version: str | None = None


@record
class Job:
    """One named task with its schedule and provenance."""

    name: str
    task: Task
    schedule: Schedule
    description: str | None = None
    provenance: Provenance = field(default_factory=lambda: Provenance("unknown"))

    @property
    def kind(self) -> Literal["callable", "command"]:
        return "callable" if callable(self.task) else "command"

    @property
    def argv(self) -> list[str]:
        """The argv of a command task."""
        if callable(self.task):
            raise TypeError(f"job {self.name!r} is a callable task, not a command")
        return list(self.task)

    def takes_context(self) -> bool:
        if not callable(self.task):
            return False
        try:
            params = [
                p
                for p in inspect.signature(self.task).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
            ]
        except (TypeError, ValueError):
            return False
        return len(params) == 1


@record(frozen=True)
class RunContext:
    """What a task that declares one parameter receives (and ``before_run``/``after_run`` and ``before``
    callbacks): ``slot`` is the run's minute as an aware datetime in the job's zone, None for ``icc exec``."""

    job: str
    run_id: int
    slot: datetime | None
    kind: Literal["scheduled", "manual", "missed"]
    environment: str | None


@record(frozen=True)
class RunResult:
    """How a run ended, as ``after_run`` hooks and per-job callbacks receive it.

    ``output`` is the stored tail of the run's stdout and stderr; ``duration``, ``started_at`` and ``exit_code``
    are None for a run that never started (missed, skipped, abandoned before its task began).
    """

    outcome: str
    exit_code: int | None = None
    error: str | None = None
    output: str = ""
    duration: float | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


def default_name(task: Callable[..., object]) -> str:
    """``module:qualname`` of a callable; for a callable object without a qualname, that of its class.

    Never ``repr()``: a name must be the same in every process, as it keys the job in the state store.
    """
    qualname = getattr(task, "__qualname__", None)
    if not isinstance(qualname, str):
        task = type(task)
        qualname = task.__qualname__
    module = getattr(task, "__module__", None) or "unknown"
    return f"{module}:{qualname}"


def _check_name(name: object) -> None:
    """A job name keys the job in the store, in crontab lines, tables and mail: text that encodes as UTF-8 (no
    lone surrogate), without control characters or surrounding spaces."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise ScheduleError(f"job name {name!r} must be a non-empty string, without surrounding spaces")
    if (
        name.isprintable()
    ):  # the common case, quickly: no control character, and no lone surrogate (category Cs)
        return
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ScheduleError(
            f"job name {name!r} is not valid: {name[exc.start]!r} at position {exc.start} cannot be stored as "
            "UTF-8 (a lone surrogate); give a name of plain text"
        ) from None
    bad = next((i for i, c in enumerate(name) if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise ScheduleError(
            f"job name {name!r} is not valid: control character {name[bad]!r} at position {bad}; give a name of "
            "plain text"
        )


def _check_argv(name: str, argv: Sequence[str]) -> None:
    """Every argument of a command must reach ``execve``: no NUL byte, nothing the file system encoding rejects."""
    for index, arg in enumerate(argv):
        problem = "a NUL byte" if "\0" in arg else None
        if problem is None:
            try:
                os.fsencode(arg)
            except UnicodeEncodeError:
                problem = "a character the file system encoding cannot pass (a lone surrogate)"
        if problem is not None:
            raise ScheduleError(
                f"job {name!r}: command argument {index} {arg!r} contains {problem}; no program can receive "
                "it: remove it"
            )


def _schedule_types() -> tuple[type[Schedule], type[UnbuiltSchedule]]:
    """:class:`Schedule` and :class:`UnbuiltSchedule`, imported on the first ``add`` (once, not per job)."""
    global _SCHEDULE_TYPES
    if _SCHEDULE_TYPES is None:
        # lazy: icc.schedule (and icc.cron) only once a plugin adds a job; RunResult's readers do not need it
        from icc.schedule import Schedule, UnbuiltSchedule

        _SCHEDULE_TYPES = (Schedule, UnbuiltSchedule)
    return _SCHEDULE_TYPES


_SCHEDULE_TYPES: tuple[type[Schedule], type[UnbuiltSchedule]] | None = None


class Scheduler:
    """Handed to every plugin's ``schedule`` hook; ``add`` returns the task's :class:`Schedule`."""

    def __init__(
        self,
        *,
        timezone: str = "UTC",
        environment: str | None = None,
        provenance: Provenance | None = None,
        only: str | frozenset[str] | None = None,
    ) -> None:
        self.timezone = timezone
        self.environment = environment
        self.jobs: dict[str, Job] = {}
        self._provenance = provenance or Provenance("unknown")
        # A lookup of one job (a run's supervisor, the plugins unchanged since the scan that checked them): the
        # others are passed over, their schedules recorded, not built (icc.schedule.UnbuiltSchedule). A set: the
        # jobs of several runs (the background supervisors' intermediate builds theirs once for all of them).
        self._only = frozenset((only,)) if isinstance(only, str) else only

    @property
    def provenance(self) -> Provenance:
        """The plugin whose jobs this scheduler collects; every added job records it."""
        return self._provenance

    def add(self, task: Task, *, name: str | None = None, description: str | None = None) -> Schedule:
        schedule_type, unbuilt_type = _SCHEDULE_TYPES or _schedule_types()
        if (
            self._only is not None
            and (name or (default_name(task) if callable(task) else None)) not in self._only
        ):
            return cast("Schedule", unbuilt_type(default_timezone=self.timezone))
        if callable(task):
            job_name = name or default_name(task)
        elif isinstance(task, (list, tuple)) and task and all(isinstance(a, str) for a in task):
            if name is None:
                raise ScheduleError(
                    f"command task {list(task)!r} needs a name: scheduler.add([...], name='my-job')"
                )
            job_name = name
        else:
            raise ScheduleError(
                f"a task is a callable or a non-empty argv list of strings, not {task!r} "
                "(commands run without a shell: write ['prog', 'arg'], not 'prog arg')"
            )
        _check_name(job_name)
        if not callable(task):
            _check_argv(job_name, task)
        existing = self.jobs.get(job_name)
        if existing is not None:
            first, second = existing.provenance.plugin, self._provenance.plugin
            by = f"twice by plugin {first!r}" if first == second else f"by plugins {first!r} and {second!r}"
            raise PluginError(f"job name {job_name!r} is used {by}; pass name=... to one of them")
        schedule = schedule_type(default_timezone=self.timezone)
        task_value: Task = task if callable(task) else tuple(task)
        self.jobs[job_name] = Job(job_name, task_value, schedule, description, self._provenance)
        return schedule

    def command(self, name: str, *args: object, **options: object) -> Schedule:
        """A job that runs the framework's management command ``name`` with ``args`` and ``options``
        (Django: ``call_command(name, *args, **options)`` in the job's process, its output kept as the run's).
        Its job name is the command line (``manage.py clearsessions``). Needs a framework integration
        (``icc.contrib.django`` in ``INSTALLED_APPS``)."""
        from icc import framework  # lazy: only plugins that schedule commands

        if not isinstance(name, str) or not name:
            raise ScheduleError(f"scheduler.command() needs a command name, not {name!r}")
        try:
            task, job_name = framework.command_task(name, args, dict(options))
        except LookupError:
            raise ScheduleError(
                f"scheduler.command({name!r}) needs a framework that runs management commands: add "
                "'icc.contrib.django' to INSTALLED_APPS and run icc as `python manage.py icc ...`"
            ) from None
        return self.add(task, name=job_name)
