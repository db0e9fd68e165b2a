"""A plugin with a misspelled hook implementation, and one correct hook."""

from typing import Any

import icc


def tick() -> None:
    pass


@icc.hookimpl
def shedule(scheduler: icc.Scheduler) -> None:
    scheduler.add(tick)


@icc.hookimpl
def register_handlers(register: Any) -> None:
    register(f"{__name__}.ping", lambda payload: None)
