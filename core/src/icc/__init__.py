"""icc: a plugin-based task runner and scheduler.

The public API is re-exported here explicitly. Names are resolved lazily so that
``import icc`` (and the idle ``icc run`` tick) does not pay for pluggy, croniter or rich.
"""

from __future__ import annotations

from icc._version import __version__
from icc.errors import (
    ConfigError,
    IccError,
    JobNotFoundError,
    PluginError,
    QueueError,
    ScheduleError,
    StateError,
    UnrecoverableMessageError,
)

TYPE_CHECKING = False  # not typing's: ``import icc`` (and the idle tick) does not import typing
if TYPE_CHECKING:
    from typing import Any

    from icc.hookspecs import hookspec
    from icc.jobs import RunResult, Scheduler
    from icc.markers import hookimpl
    from icc.queue.dispatch import dispatch
    from icc.schedule import Schedule

__all__ = [
    "ConfigError",
    "IccError",
    "JobNotFoundError",
    "PluginError",
    "QueueError",
    "RunResult",
    "Schedule",
    "ScheduleError",
    "Scheduler",
    "StateError",
    "UnrecoverableMessageError",
    "__version__",
    "dispatch",
    "hookimpl",
    "hookspec",
]

_LAZY = {
    "RunResult": "icc.jobs",
    "Schedule": "icc.schedule",
    "Scheduler": "icc.jobs",
    "hookimpl": "icc.markers",
    "hookspec": "icc.hookspecs",
    "dispatch": "icc.queue.dispatch",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'icc' has no attribute {name!r}")
    import importlib  # lazy: only a name exported lazily pays for it

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
