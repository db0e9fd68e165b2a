"""Shared fixtures: a throw-away icc project on disk, driven through real `icc` processes."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgkit import pg_server, pg_url  # noqa: F401  (fixtures: a throw-away PostgreSQL server, a fresh database)
from pingkit import ping_server  # noqa: F401  (a fixture: a real HTTP server recording pings)
from projectkit import Project
from queuekit import backend, make_config, store_url  # noqa: F401  (fixtures: queue tests on SQLite and PostgreSQL)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path / "proj")
    proj.root.mkdir()
    proj.write_config()
    yield proj
    # Leave no background run behind (the database may be the one a test broke on purpose).
    try:
        runs = proj.runs() if proj.db.exists() else []
    except sqlite3.DatabaseError:
        runs = []
    for run in runs:
        if run.get("task_pid") and run["outcome"] == "running":
            with contextlib.suppress(OSError):
                os.killpg(run["task_pid"], signal.SIGKILL)
