"""A plugin with a callable task, a method task and a command task."""

import icc


def nightly() -> None:
    pass


class Reports:
    def weekly(self) -> None:
        pass


@icc.hookimpl
def schedule(scheduler: icc.Scheduler) -> None:
    scheduler.add(nightly, description="nightly cleanup").daily().at(3)
    scheduler.add(Reports().weekly).weekly()
    scheduler.add(["echo", "hello"], name=f"{__name__}-echo").weekly()
