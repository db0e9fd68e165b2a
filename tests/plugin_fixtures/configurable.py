"""A plugin that validates its own config table ([tool.icc.<module name>]) in the configure hook."""

from collections.abc import Mapping
from typing import Any

import icc

SEEN: list[Mapping[str, Any]] = []


def send() -> None:
    pass


@icc.hookimpl
def configure(config: Any) -> None:
    table = config.tables.get(__name__, {})
    SEEN.append(table)
    sender = table.get("sender", "")
    if "@" not in sender:
        raise icc.ConfigError(f"[tool.icc.{__name__}] sender must be an e-mail address, not {sender!r}")


@icc.hookimpl
def schedule(scheduler: icc.Scheduler) -> None:
    scheduler.add(send).every_minute()
