"""A plugin whose one job has a fixed name, so that two copies clash."""

import icc


def export() -> None:
    pass


@icc.hookimpl
def schedule(scheduler: icc.Scheduler) -> None:
    scheduler.add(export, name="export").daily()
