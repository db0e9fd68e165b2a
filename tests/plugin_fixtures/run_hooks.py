"""A plugin observing runs: before_run records, after_run raises."""

from typing import Any

import icc

CALLS: list[tuple[str, str]] = []


@icc.hookimpl
def before_run(job: Any, run: Any) -> None:
    CALLS.append(("before", job.name))


@icc.hookimpl
def after_run(job: Any, run: Any, result: Any) -> None:
    CALLS.append(("after", result.outcome))
    raise RuntimeError("metrics server down")


@icc.hookimpl
def job_stale(job: str, alert: Any) -> None:
    CALLS.append(("stale", job))
