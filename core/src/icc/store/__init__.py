"""Where state and queues live, chosen in one place from the configuration.

Without ``[icc.store] url`` everything stays in SQLite files of ``state_dir`` (the embedded default). With a
PostgreSQL URL both the state store and the queue transport go to that database (:mod:`icc.store.postgres.state`,
:mod:`icc.store.postgres.queues`). The runner, the consumer, the CLI and the plugins call :func:`open_store` and
:func:`open_transport` and never name a backend.
"""

from __future__ import annotations

import os

from icc.errors import StateError

# This module is the parent of every backend module, so the idle ticks (icc.store.postgres.idle) and the light
# minute (icc.store.protocol, icc.store.sqlite.diagnosis) import it: it imports only what they load anyway.
TYPE_CHECKING = False  # not typing's: importing typing costs more than the PostgreSQL idle tick's query
if TYPE_CHECKING:
    from pathlib import Path

    from icc.config import Config
    from icc.queue.transport import QueueBackend
    from icc.store.protocol import StateStore


__all__ = [
    "host_id",
    "is_shared",
    "open_store",
    "open_transport",
    "queues_present",
    "store_label",
    "store_present",
]

HOST_ID_FILE = "host_id"


def is_shared(config: Config) -> bool:
    """True when state and queues live in a database server several hosts may share."""
    return config.store.url is not None


def store_label(config: Config) -> str:
    """The store for messages: the SQLite file, or the PostgreSQL URL without its password."""
    if config.store.url is None:
        return str(config.state_dir / "state.sqlite3")
    from icc.store.postgres.connection import shown_url

    return f"{shown_url(config.store.url)} (schema {config.store.schema})"


def host_id(config: Config) -> str:
    """This host's stable identity among the hosts sharing a store.

    ``[icc.store] host_id`` when set; else a UUID made once and kept in ``<state_dir>/host_id`` (0600), never
    the bare hostname (containers share hostnames). Without a writable state directory: the hostname.
    """
    import contextlib  # lazy: see the top of this module
    import uuid  # lazy: uuid imports platform

    if config.store.host_id:
        return config.store.host_id
    path = config.state_dir / HOST_ID_FILE
    kept = _read_host_id(path)
    if kept:
        return kept
    new = str(uuid.uuid4())
    try:
        from icc.statedir import ensure_state_dir

        ensure_state_dir(config.state_dir)
        # Written aside, then linked into place: the file appears complete or not at all, so a process racing
        # this one never reads it empty, and the first link wins for every process of this host.
        tmp = config.state_dir / f".{HOST_ID_FILE}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(new + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                if not _read_host_id(path):  # left empty by an older icc that died mid-write: replace it
                    os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except (OSError, StateError):
        import socket

        return socket.gethostname()
    return _read_host_id(path) or new


def _read_host_id(path: Path) -> str:
    import contextlib  # lazy: see the top of this module

    with contextlib.suppress(OSError, UnicodeDecodeError):
        return path.read_text(encoding="ascii").strip()
    return ""


def store_present(config: Config) -> bool:
    """Whether a store exists without creating one: the SQLite file is there; a PostgreSQL store is taken
    as present (opening it says when its schema is missing)."""
    if config.store.url is not None:
        return True
    from icc.store.sqlite.state import FILENAME

    return (config.state_dir / FILENAME).is_file()


def queues_present(config: Config) -> bool:
    """Whether the queue database exists (SQLite), without creating it; a PostgreSQL store always has one."""
    if config.store.url is not None:
        return True
    from icc.store.sqlite.queues import DATABASE_FILE

    return (config.state_dir / DATABASE_FILE).exists()


def open_store(config: Config) -> StateStore:
    """The state store of ``config``: a new connection of this process."""
    if config.store.url is not None:
        from icc.store.postgres.state import PostgresStateStore

        return PostgresStateStore(config)
    from icc.store.sqlite.state import SQLiteStateStore

    return SQLiteStateStore(config.state_dir)


def open_transport(config: Config) -> QueueBackend:
    """The queue transport of ``config`` (also the failed-message store), opened once per process."""
    from icc.queue.dispatch import open_transport as cached

    return cached(config)
