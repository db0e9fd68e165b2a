"""tests/pgkit.py itself: the throw-away server starts wherever the tests run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pgkit import _bindir

HERE = Path(__file__).parents[1]  # tests/, where pgkit.py lives


@pytest.mark.skipif(os.geteuid() != 0, reason="runuser is only needed when the tests run as root")
@pytest.mark.skipif(_bindir() is None, reason="no PostgreSQL server binaries")
def test_server_starts_as_root_when_runuser_is_not_on_path() -> None:
    # cron's PATH (and some containers') has no /usr/sbin, where runuser lives.
    code = "import pgkit; s = pgkit.start_server(); print(s.as_user[0]); pgkit.stop_server(s)"
    env = {**os.environ, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(HERE)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("/runuser")
