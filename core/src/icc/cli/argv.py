"""How to call this install's ``icc`` (for crontab lines and systemd units)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from icc.config import Config


def icc_argv(config: Config) -> list[str]:
    """How to call this install's icc: :func:`icc.framework.icc_argv` for ``config``'s file."""
    from icc import framework  # lazy: crontab lines and units only

    return framework.icc_argv(config.path)
