"""Shared fixtures: a throw-away icc project on disk, driven through real `icc` processes."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from icc.errors import StateError
from pgkit import pg_server, pg_url, pgbouncer  # noqa: F401  (fixtures: a throw-away PostgreSQL server, a fresh database, pgbouncer)
from pingkit import ping_server  # noqa: F401  (a fixture: a real HTTP server recording pings)
from projectkit import Project
from queuekit import backend, make_config, store_url  # noqa: F401  (fixtures: queue tests on SQLite and PostgreSQL)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_stores: run the test's `project` on SQLite and on a PostgreSQL store"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_stores") and "project" in metafunc.fixturenames:
        metafunc.parametrize("store_backend", ["sqlite", "postgres"])


# Folders of tests/ whose tests start real icc processes, servers (PostgreSQL, pgbouncer, SMTP, HTTP) or
# virtual environments, the plugins' suites, and the property sweeps (properties/): all marked `slow`, so `nox -s tests -- -m "not slow"` is the quick inner loop (the
# model tests and the architecture checks; the time is in the README). A file elsewhere marks its slow tests.
SLOW_FOLDERS = frozenset(
    {"system", "tick", "supervise", "store", "queue", "cli", "notify", "properties", "contrib", "web"}
)
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:  # a plugin's tests (plugins/*/tests): real SMTP servers and ticks
            folder = "system"
        if folder in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def store_backend() -> str:
    """Where the `project` fixture keeps its state: "sqlite", or "postgres" for @pytest.mark.both_stores tests."""
    return "sqlite"


def migrated_url(url: str) -> str:
    """``url`` with icc's schema applied (as `icc db migrate` would)."""
    import icc.store.postgres.connection
    from icc.config import Config, StoreConfig

    config = Config(path=None, root=Path("."), store=StoreConfig(url=url, host_id="tests"))
    conn = icc.store.postgres.connection.connect(config)
    try:
        icc.store.postgres.connection.migrate(conn, config.store.schema)
    finally:
        conn.close()
    return url


@pytest.fixture
def project(tmp_path: Path, store_backend: str, request: pytest.FixtureRequest) -> Iterator[Project]:
    url = migrated_url(request.getfixturevalue("pg_url")) if store_backend == "postgres" else None
    proj = Project(tmp_path / "proj", store_url=url, host_id="host-a" if url else None)
    proj.root.mkdir()
    proj.write_config()
    yield proj
    # Leave no background run behind (the database may be the one a test broke on purpose).
    try:
        runs = proj.runs() if proj.has_store() else []
    except (sqlite3.DatabaseError, StateError):
        runs = []
    for run in runs:
        if run.get("task_pid") and run["outcome"] == "running":
            with contextlib.suppress(OSError):
                os.killpg(run["task_pid"], signal.SIGKILL)
