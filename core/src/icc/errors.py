"""The one exception tree: every error a user can cause is an :class:`IccError`.

Messages say what is wrong and how to fix it; the CLI prints them without a traceback and exits non-zero.
"""

from __future__ import annotations


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
