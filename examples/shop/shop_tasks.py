"""The example shop's tasks, loaded as a local plugin (``plugins = ["shop_tasks"]`` in icc.toml)."""

from __future__ import annotations

import sys
import time

import icc
from icc.jobs import RunContext


def cleanup_sessions() -> None:
    """A callable task: called with no argument."""
    print("cleanup_sessions: removed 0 expired sessions")


def build_sitemap(run: RunContext) -> None:
    """A callable task that takes the run context; runs in its own process, in the background."""
    time.sleep(2)
    print(f"build_sitemap: run {run.run_id} for slot {run.slot}")


def send_newsletter() -> None:
    icc.dispatch("newsletter.render", {"issue": 42}, queue="async")


def render_newsletter(payload: dict[str, object]) -> None:
    print(f"rendered newsletter issue {payload['issue']}")


@icc.hookimpl
def schedule(scheduler: icc.Scheduler) -> None:
    scheduler.add(
        cleanup_sessions, name="cleanup-sessions", description="Delete expired sessions"
    ).every_minute()
    scheduler.add(build_sitemap, name="build-sitemap").every_minute().in_background().timeout(60)
    # A command task: an argv list, run without a shell.
    scheduler.add(
        [sys.executable, "-c", "print('export-orders: exported 3 orders')"],
        name="export-orders",
        description="Export yesterday's orders",
    ).every_minute()
    scheduler.add(send_newsletter, name="send-newsletter").weekly().on_mondays().at(9, 30)
    scheduler.add(cleanup_sessions, name="nightly-cleanup").daily().at(3)


@icc.hookimpl
def register_handlers(register) -> None:  # type: ignore[no-untyped-def]
    register("newsletter.render", render_newsletter, queue="async")
