"""``python -m icc.background [--config PATH] RUN_ID``: the detached supervisor of one background run.

Started by the tick as a fresh interpreter (never a fork of it), it loads the plugins, finds the run's job
and supervises it like a foreground run: job lock, time limit, recording.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from icc.config import load_config
    from icc.runner import run_background

    config_path: Path | None = None
    if argv[:1] == ["--config"]:
        config_path = Path(argv[1])
        argv = argv[2:]
    run_background(load_config(config_path), int(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
