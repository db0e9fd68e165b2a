"""A plugin with queue message handlers."""

from typing import Any

import icc


def render(payload: dict[str, Any]) -> None:
    pass


@icc.hookimpl
def register_handlers(register: Any) -> None:
    register("report.render", render)
    register(f"{__name__}.mail", render, queue="mail")
