"""A plugin whose schedule hook raises after adding a job: none of its jobs may survive."""

import icc


def sync() -> None:
    pass


@icc.hookimpl
def schedule(scheduler: icc.Scheduler) -> None:
    scheduler.add(sync).every_minute()
    raise RuntimeError("database unreachable")
