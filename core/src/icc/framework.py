"""The framework seam: what a web framework's integration (``icc.contrib.django``, ``icc.contrib.flask``) adds to
icc's own processes, without icc importing it.

An integration :func:`install`\\ s a :class:`Framework` in the process that loads it (Django's
``AppConfig.ready()``, Flask's ``Icc(app)``); every process icc forks from there inherits it. icc then:

- takes its configuration from the framework's settings (:func:`config_table`) when no config file is named;
- calls ``before_fork`` before every ``os.fork()`` of the process (database connections must not cross a fork);
- runs every piece of user code (a job's callable, a predicate, a callback, a run hook, a queue handler) inside
  ``around()`` (:func:`user_code`): an application context, stale connections closed before and after;
- builds ``scheduler.command(...)`` jobs with ``command`` (a management command run in the job's process);
- calls icc again (crontab lines, systemd units, the tick's own scan) with ``argv``;
- writes the snapshot a framework project's idle minute reads (:mod:`icc.tick.snapshot`) with ``snapshot``
  whenever icc runs in the framework (``icc scan``, ``icc crontab``, a full ``icc run``), and prints the crontab
  line that reads it with ``crontab``.

Standard library only: the idle paths may import this module.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from icc.records import record

__all__ = [
    "ConfigTable",
    "Framework",
    "argv",
    "command_task",
    "config_table",
    "crontab_argv",
    "install",
    "installed",
    "user_code",
    "write_snapshot",
]


@record(frozen=True)
class ConfigTable:
    """icc's configuration held by the framework's settings: the same keys as ``[icc]`` in ``icc.toml``."""

    table: Mapping[str, Any]
    root: Path  # the project directory: relative paths (state_dir) are read from it, runs start in it
    origin: str  # where it is set, for messages: "Django setting ICC (mysite.settings)"


@record(frozen=True)
class Framework:
    """One framework's hooks into icc; each is optional."""

    name: str
    before_fork: Callable[[], None] | None = None
    around: Callable[[], contextlib.AbstractContextManager[object]] | None = None
    config: Callable[[], ConfigTable | None] | None = None
    # command(name, args, options) -> (the job's callable, its default job name)
    command: Callable[[str, tuple[Any, ...], dict[str, Any]], tuple[Callable[[], object], str]] | None = None
    argv: Callable[[], list[str]] | None = None  # how to call this project's icc again
    # The idle check a crontab line runs before the framework (icc.tick.snapshot): snapshot(config) writes what
    # it reads; crontab(config, run_args) is the crontab line's command (it writes the snapshot too).
    snapshot: Callable[[Any], object] | None = None
    crontab: Callable[[Any, list[str]], list[str]] | None = None


_installed: dict[str, Framework] = {}
_fork_hook_registered = False


def _before_fork() -> None:
    for framework in list(_installed.values()):
        if framework.before_fork is not None:
            with contextlib.suppress(Exception):  # a fork must not fail over a connection that will not close
                framework.before_fork()


def install(framework: Framework) -> None:
    """Install ``framework`` in this process (again: replaces the one of the same name)."""
    global _fork_hook_registered
    _installed[framework.name] = framework
    if not _fork_hook_registered:
        os.register_at_fork(before=_before_fork)
        _fork_hook_registered = True


def uninstall(name: str) -> None:
    """Remove the framework ``name`` (tests; an application that stops using it)."""
    _installed.pop(name, None)


def installed() -> tuple[Framework, ...]:
    return tuple(_installed.values())


@contextlib.contextmanager
def user_code() -> Iterator[None]:
    """Around one piece of user code: every installed framework's ``around()``, in install order."""
    with contextlib.ExitStack() as stack:
        for framework in list(_installed.values()):
            if framework.around is not None:
                stack.enter_context(framework.around())
        yield


def config_table() -> ConfigTable | None:
    """The configuration the first installed framework holds, or None."""
    for framework in _installed.values():
        if framework.config is not None:
            found = framework.config()
            if found is not None:
                return found
    return None


def command_task(
    name: str, args: tuple[Any, ...], options: dict[str, Any]
) -> tuple[Callable[[], object], str]:
    """The job of ``scheduler.command(name, *args, **options)``; raises LookupError without a framework that
    runs commands."""
    for framework in _installed.values():
        if framework.command is not None:
            return framework.command(name, args, options)
    raise LookupError(name)


def argv() -> list[str] | None:
    """How to call icc again in this project, when a framework says (``manage.py icc``), else None."""
    for framework in _installed.values():
        if framework.argv is not None:
            return framework.argv()
    return None


def icc_argv(config_path: Path | None) -> list[str]:
    """How to call this install's icc again (crontab lines, systemd units, the dashboard's run now): what a
    framework says (``manage.py icc``, with its settings module and directory), else the script beside this
    interpreter (or ``python -m icc``), with the config file made absolute."""
    called = argv()
    if called is not None:
        return called
    script = Path(sys.executable).parent / "icc"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "icc"]
    if config_path is not None:
        command += ["--config", str(config_path.resolve())]
    return command


def write_snapshot(config: Any) -> None:
    """Write the idle check's snapshot of ``config`` (an :class:`icc.config.Config`), when a framework keeps one."""
    for framework in _installed.values():
        if framework.snapshot is not None:
            framework.snapshot(config)
            return


def crontab_argv(config: Any, run_args: list[str]) -> list[str] | None:
    """The crontab line's command for ``config`` when a framework says (its idle check first), else None."""
    for framework in _installed.values():
        if framework.crontab is not None:
            return framework.crontab(config, run_args)
    return None
