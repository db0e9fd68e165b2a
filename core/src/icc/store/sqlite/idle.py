"""What the idle paths read from the SQLite files without loading anything: stdlib and icc.statedir (which
the light minute has loaded already) only at import.

Reached through :mod:`icc.store` (:func:`icc.store.sqlite_queue_is_empty`), the one module that names a backend.
"""

from __future__ import annotations

import os
import sqlite3

from icc.statedir import state_dir_problem, state_file_problem

QUEUE_FILE = "queue.sqlite3"  # icc.store.sqlite.queues.DATABASE_FILE, whose module imports far more


def sqlite_queue_is_empty(state_dir: str, queue: str) -> bool:
    """Whether ``queue`` in the SQLite queue database of ``state_dir`` holds no message (ready, delayed or
    leased): a read-only count that creates nothing; any doubt (no trustworthy file, an error) is False.
    Used by the light minute and by :func:`icc.store.queue_is_empty`."""

    path = os.path.join(state_dir, QUEUE_FILE)
    if state_dir_problem(state_dir) is not None:
        return False
    if not os.path.exists(path):
        return not os.path.lexists(path)
    if any(state_file_problem(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")):
        return False
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            (count,) = db.execute("SELECT count(*) FROM messages WHERE queue = ?", (queue,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return False
    return int(count) == 0
