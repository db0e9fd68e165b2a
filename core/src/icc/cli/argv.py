"""How to call this install's ``icc`` (for crontab lines and systemd units)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from icc.config import Config


def icc_argv(config: Config) -> list[str]:
    """How to call this install's icc: the script beside this interpreter, with the config made absolute; or
    what a framework says (``manage.py icc``, with its settings module and directory)."""
    from icc import framework  # lazy: crontab lines and units only

    called = framework.argv()
    if called is not None:
        return called
    script = Path(sys.executable).parent / "icc"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "icc"]
    if config.path is not None:
        argv += ["--config", str(config.path.resolve())]
    return argv
