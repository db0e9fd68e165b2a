"""Where state and queues live, chosen in one place from the configuration.

Without ``[icc.store] url`` everything stays in SQLite files of ``state_dir`` (the embedded default). With a
PostgreSQL URL both the state store and the queue transport go to that database (:mod:`icc.store.postgres.state`,
:mod:`icc.store.postgres.queues`). The runner, the consumer, the CLI and the plugins call :func:`open_store` and
:func:`open_transport` and never name a backend.
"""

from __future__ import annotations

import _thread
import os

from icc.errors import QueueError
from icc.store.host import HOST_ID_FILE as HOST_ID_FILE  # re-exported
from icc.store.host import host_id as host_id  # re-exported

# This module is the parent of every backend module, so the idle ticks (icc.store.postgres.idle) and the light
# minute (icc.store.protocol, icc.store.sqlite.diagnosis) import it: it imports only what they load anyway.
TYPE_CHECKING = False  # not typing's: importing typing costs more than the PostgreSQL idle tick's query
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Literal

    from icc.config import Config
    from icc.queue.transport import QueueBackend
    from icc.store.protocol import StateStore


__all__ = [
    "HOST_ID_FILE",
    "SYNCHRONOUS_VARIABLE",
    "host_id",
    "idle_tick",
    "is_shared",
    "open_store",
    "open_transport",
    "queue_is_empty",
    "queues_present",
    "sqlite_file",
    "sqlite_queue_is_empty",
    "store_label",
    "store_present",
]

SYNCHRONOUS_VARIABLE = "ICC_QUEUE_SYNCHRONOUS"

_lock = _thread.allocate_lock()  # not threading's: importing threading costs the idle ticks
_transports: dict[Path | tuple[str, str], QueueBackend] = {}


def is_shared(config: Config) -> bool:
    """True when state and queues live in a database server several hosts may share."""
    return config.store.url is not None


def store_label(config: Config) -> str:
    """The store for messages: the SQLite file, or the PostgreSQL URL without its password."""
    if config.store.url is None:
        return str(config.state_dir / "state.sqlite3")
    from icc.store.postgres.connection import shown_url  # lazy: only on a PostgreSQL store

    return f"{shown_url(config.store.url)} (schema {config.store.schema})"


def sqlite_file(state_dir: Path) -> Path:
    """The SQLite state database in ``state_dir`` (the tick checks that the file it opened is still the one there)."""
    from icc.store.sqlite.state import FILENAME  # lazy: a backend (~70 ms); idle ticks import this package

    return state_dir / FILENAME


def store_present(config: Config) -> bool:
    """Whether a store exists without creating one: the SQLite file is there; a PostgreSQL store is taken
    as present (opening it says when its schema is missing)."""
    if config.store.url is not None:
        return True
    from icc.store.sqlite.state import FILENAME  # lazy: as in sqlite_file

    return (config.state_dir / FILENAME).is_file()


def queues_present(config: Config) -> bool:
    """Whether the queue database exists (SQLite), without creating it; a PostgreSQL store always has one."""
    if config.store.url is not None:
        return True
    from icc.store.sqlite.queues import DATABASE_FILE  # lazy: a backend; the idle ticks import this package

    return (config.state_dir / DATABASE_FILE).exists()


def open_store(config: Config) -> StateStore:
    """The state store of ``config``: a new connection of this process."""
    if config.store.url is not None:
        from icc.store.postgres.state import PostgresStateStore  # lazy: only on that store

        return PostgresStateStore(config)
    from icc.store.sqlite.state import SQLiteStateStore  # lazy: as in sqlite_file

    return SQLiteStateStore(config.state_dir)


def _synchronous() -> Literal["FULL", "NORMAL"]:
    value = os.environ.get(SYNCHRONOUS_VARIABLE, "FULL").strip().upper() or "FULL"
    if value == "FULL":
        return "FULL"
    if value == "NORMAL":
        return "NORMAL"
    raise QueueError(f"{SYNCHRONOUS_VARIABLE} must be FULL or NORMAL, not {value!r}")


def open_transport(config: Config, *, limit: float | None = None) -> QueueBackend:
    """The queue transport of ``config`` (also the failed-message store), opened once per process (and
    again in a forked child, where an inherited connection must not be used).

    SQLite: the queue database of ``config.state_dir``; durability is ``synchronous=FULL`` unless
    ``ICC_QUEUE_SYNCHRONOUS=NORMAL`` trades the last commits before a power loss for throughput (see
    :mod:`icc.store.sqlite.queues`). With ``[icc.store] url``: the PostgreSQL transport (:mod:`icc.store.postgres.queues`).
    ``limit``: a consumer's time limit; the PostgreSQL transport shortens its connections' timeouts to fit.
    """
    url = config.store.url
    # The state directory is already absolute: Config resolves it against its root.
    key: Path | tuple[str, str] = config.state_dir if url is None else (url, config.store.schema)
    with _lock:
        transport = _transports.get(key)
        if transport is not None and not transport.forked:
            limit_time = getattr(transport, "limit_time", None)
            if limit is not None and limit_time is not None:
                limit_time(limit)
            return transport
        if config.store.url is not None:
            from icc.store.postgres.queues import PostgresTransport  # lazy: only on that store

            transport = PostgresTransport(config, limit=limit)
        else:
            from icc.store.sqlite.queues import SqliteTransport  # lazy: only a process that opens a queue

            transport = SqliteTransport.open(config.state_dir, synchronous=_synchronous())
        _transports[key] = transport
        return transport


def idle_tick(
    config_path: str | None, quiet: bool, at: str | None, known: dict[str, object] | None = None
) -> int | None:
    """The idle tick on a PostgreSQL store (:mod:`icc.store.postgres.idle`): the exit code, or None when the
    full ``icc run`` must handle it. :mod:`icc.tick.idle` hands over when the configuration names a store URL
    (``known``: a framework's snapshot, :mod:`icc.tick.snapshot`, instead of the configuration file)."""
    from icc.store.postgres.idle import try_pg_idle_tick  # lazy: libpq through ctypes, only on that store

    return try_pg_idle_tick(config_path, quiet, at, known)


def sqlite_queue_is_empty(state_dir: str, queue: str) -> bool:
    """Whether ``queue`` of the SQLite queue database in ``state_dir`` holds no message; any doubt is False
    (:mod:`icc.store.sqlite.idle`: the light minute asks without loading a configuration)."""
    from icc.store.sqlite.idle import sqlite_queue_is_empty as empty  # lazy: only the light minute asks

    return empty(state_dir, queue)


def queue_is_empty(config: Config, queue: str) -> bool:
    """True when ``queue`` holds no message at all (ready, delayed or leased): a read-only count that
    creates nothing. Any doubt (no trustworthy file, an error) is False: the consumer starts and reports."""
    if config.store.url is not None:  # PostgreSQL: one count on the shared queues
        try:
            return open_transport(config).pending(queue) == 0
        except Exception:
            return False
    return sqlite_queue_is_empty(str(config.state_dir), queue)
