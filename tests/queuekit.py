"""Queue tests against both transports: the embedded SQLite one and PostgreSQL (a fresh database per test).

``backend`` is a fixture parametrised over ``["sqlite", "postgres"]``; ``make_config`` builds a
:class:`~icc.config.Config` on it (a PostgreSQL store is migrated first, as ``icc db migrate`` would). The
PostgreSQL server starts only when a postgres-parametrised test runs (``pg_url`` is requested lazily).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from icc.config import Config, QueueConfig, StoreConfig

BACKENDS = ["sqlite", "postgres"]

MakeConfig = Callable[..., Config]


def migrated(url: str, schema: str = "icc") -> None:
    """Apply icc's schema to the database at ``url``."""
    import icc.store.postgres.connection

    config = Config(path=None, root=Path("/"), store=StoreConfig(url=url, schema=schema, host_id="test"))
    conn = icc.store.postgres.connection.connect(config)
    try:
        icc.store.postgres.connection.migrate(conn, schema)
    finally:
        conn.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None for SQLite; a fresh, migrated PostgreSQL database's URL for postgres."""
    if backend == "sqlite":
        return None
    url = str(request.getfixturevalue("pg_url"))
    migrated(url)
    return url


@pytest.fixture
def make_config(tmp_path: Path, store_url: str | None) -> MakeConfig:
    """``make_config(**queues)``: a Config with those queue settings on the test's backend."""

    def make(**queues: QueueConfig) -> Config:
        store = StoreConfig(url=store_url, host_id="test") if store_url else StoreConfig()
        if queues:
            return Config(path=None, root=tmp_path, state_dir=Path("state"), queues=queues, store=store)
        return Config(path=None, root=tmp_path, state_dir=Path("state"), store=store)

    return make
