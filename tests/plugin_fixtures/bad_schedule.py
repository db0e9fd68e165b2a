"""A plugin with an out-of-range schedule."""

import icc


def tick() -> None:
    pass


@icc.hookimpl
def schedule(scheduler: icc.Scheduler) -> None:
    scheduler.add(tick).set_minute(60)
