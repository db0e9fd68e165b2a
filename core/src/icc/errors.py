"""The one exception tree: every error a user can cause is an :class:`IccError`.

Messages say what is wrong and how to fix it; the CLI prints them without a traceback and exits non-zero.
"""

from __future__ import annotations

import os


class IccError(Exception):
    """Base class of every error a user of icc can cause."""

    exit_code = 2


class ScheduleError(IccError, ValueError):
    """A schedule that cannot be built: a value out of range, a bad expression, an unknown zone."""


class ConfigError(IccError):
    """The configuration file, `.env` or an `ICC_*` variable holds something icc cannot use."""


class PluginError(IccError):
    """A plugin failed to load or to run a hook, or two plugins clash."""


class StateError(IccError):
    """The state store cannot be used: corrupt, unreadable, or owned by someone else."""


class JobNotFoundError(IccError, LookupError):
    """A job name given on the command line is not in the state store."""


class QueueError(IccError):
    """A message that cannot be dispatched or a queue that cannot be used."""


class UnrecoverableMessageError(QueueError):
    """Raised by a message handler when retrying cannot help: the message goes to failed at once."""


class ProcessExitCalled(BaseException):
    """Raised instead of ending the process when a plugin calls ``os._exit()`` while icc runs its code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"the plugin called os._exit({code}); icc went on without it")
        self.code = code


class ExitGuard:
    """``with ExitGuard():`` an ``os._exit()`` called by plugin code in this process raises
    :class:`ProcessExitCalled` instead (a process the plugin forked still exits). The one guard for every
    process that imports plugins: :func:`icc.plugins.plugin_code` and the light minute's supervisors
    (:mod:`icc.tick.plain`, :mod:`icc.tick.background`). A class, not ``contextlib``: the light paths import
    this module (and ``os``, which every interpreter has loaded) and nothing more."""

    def __enter__(self) -> None:
        self._real = real = os._exit
        pid = os.getpid()

        def guarded_exit(status: int) -> None:
            if os.getpid() != pid:
                real(status)
            raise ProcessExitCalled(status)

        os._exit = guarded_exit  # type: ignore[assignment]

    def __exit__(self, *_exc: object) -> None:
        os._exit = self._real


def plugin_failure(exc: BaseException) -> str:
    """A plugin's failure as icc says it: the guard's sentence for ``os._exit()``, else ``Type: message``."""
    if isinstance(exc, ProcessExitCalled):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
