"""The queue database's schema: ids never handed out twice (both transports), what one dispatch writes to
SQLite's WAL, and a queue file of schema 1 (AUTOINCREMENT) brought up to date with every message kept."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from icc.config import Config, QueueConfig
from icc.queue import Consumer, Limits, SqliteTransport, dispatch, open_transport
from icc.queue.message import error_record
from queuekit import MakeConfig

# The queue database as icc wrote it before schema 2, verbatim: AUTOINCREMENT's counter is one more page per
# dispatch.
SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a failed message keeps its id
    queue        TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,                   -- JSON object
    created_at   REAL    NOT NULL,
    available_at REAL    NOT NULL,                   -- leasable from (while leased: the lease expiry)
    attempts     INTEGER NOT NULL DEFAULT 0,         -- deliveries so far, counted when leased
    lease_owner  TEXT,                               -- the consumer holding it, NULL when not leased
    lease_batch  INTEGER NOT NULL DEFAULT 0,         -- how many messages that lease took together
    errors       TEXT    NOT NULL DEFAULT '[]'       -- JSON list of error records
);
CREATE INDEX IF NOT EXISTS messages_queue_available ON messages (queue, available_at);
CREATE INDEX IF NOT EXISTS messages_lease_owner ON messages (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS failed (
    id         INTEGER PRIMARY KEY,                  -- the message's id
    queue      TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    payload    TEXT    NOT NULL,                     -- as it was stored, even when malformed
    created_at REAL    NOT NULL,
    failed_at  REAL    NOT NULL,
    attempts   INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    errors     TEXT    NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS control (
    key   TEXT PRIMARY KEY,
    value REAL NOT NULL
);
PRAGMA user_version = 1;
"""


def drain(config: Config, *queues: str) -> list[tuple[str, int]]:
    """Consume every message of ``queues`` now available; (name, payload's n) in the order handled."""
    seen: list[tuple[str, int]] = []

    def handler(name: str) -> Any:
        return lambda payload: seen.append((name, int(payload["n"])))

    names = ("job", "first", "second", "later")
    Consumer(
        open_transport(config),
        {name: handler(name) for name in names},
        queues or ("async",),
        policy=config.queue,
        limits=Limits(time_limit=5, stop_when_empty=True),
    ).run(install_signal_handlers=False)
    return seen


def test_ids_are_never_handed_out_twice_once_the_newest_message_is_consumed_or_failed(
    make_config: MakeConfig,
) -> None:
    config = make_config(**{"async": QueueConfig(retries=0, delay=0, lease=30)})
    transport: Any = open_transport(config)
    first = dispatch("job", {"n": 1}, config=config)
    newest = dispatch("job", {"n": 2}, config=config)
    assert drain(config) == [("job", 1), ("job", 2)]  # the queue is empty: its newest message is gone
    after_drain = dispatch("job", {"n": 3}, config=config)
    assert after_drain > newest > first
    [leased] = transport.lease("async", owner="a", limit=10, lease=30)
    transport.fail(leased, "boom", error_record(1, "boom"), owner="a")  # the newest message, moved to failed
    assert transport.pending() == 0
    after_fail = dispatch("job", {"n": 4}, config=config)
    assert after_fail > after_drain
    # The failed message keeps its id, and retrying it meets no other message of that id.
    assert transport.failed_retry([after_drain]) == [after_drain]
    assert sorted(n for _name, n in drain(config)) == [3, 4]


def test_a_dispatch_writes_two_pages_to_the_wal_its_row_and_its_queue_index_entry(tmp_path: Path) -> None:
    """AUTOINCREMENT's counter was a third page, written (and, at FULL, synced) on every dispatch."""
    transport = SqliteTransport.open(tmp_path / "state", synchronous="NORMAL")
    path = transport.path
    transport.send("async", "job", '{"n": 0}')  # the first pages of each tree exist
    with sqlite3.connect(path, isolation_level=None) as watch:
        watch.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for n in range(10):
            transport.send("async", "job", f'{{"n": {n}}}')
        _busy, frames, _done = watch.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    transport.close()
    assert frames == 2 * 10


def schema_1_queue(path: Path) -> None:
    """A queue file made as icc made it at schema 1, holding: two ready messages, a delayed one, one leased by a
    consumer that died, a failed one, and a consumed newest message (AUTOINCREMENT's counter is past every
    row's id)."""
    path.parent.mkdir(mode=0o700)
    now = time.time()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA_1)
    rows = [
        ("async", "first", '{"n": 1}', now - 9, now - 9, 0, None, 0),
        ("async", "second", '{"n": 2}', now - 8, now - 8, 0, None, 0),
        ("async", "later", '{"n": 3}', now - 7, now + 3600, 0, None, 0),
        ("async", "job", '{"n": 4}', now - 6, now - 1, 1, "dead-consumer", 1),  # its lease has expired
        ("async", "job", '{"n": 5}', now - 5, now - 5, 0, None, 0),
        ("async", "job", '{"n": 6}', now - 4, now - 4, 0, None, 0),
    ]
    conn.executemany(
        "INSERT INTO messages (queue, name, payload, created_at, available_at, attempts, lease_owner, "
        "lease_batch) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute(  # the fifth one failed
        "INSERT INTO failed (id, queue, name, payload, created_at, failed_at, attempts, reason) "
        "SELECT id, queue, name, payload, created_at, ?, 3, 'boom' FROM messages WHERE id = 5",
        (now,),
    )
    conn.execute("DELETE FROM messages WHERE id IN (5, 6)")  # the sixth, the newest, was consumed
    conn.close()


def test_a_queue_file_of_schema_1_is_brought_up_to_date_keeping_every_message(tmp_path: Path) -> None:
    config = Config(path=None, root=tmp_path, state_dir=Path("state"))
    path = config.state_dir / "queue.sqlite3"
    schema_1_queue(path)
    transport: Any = open_transport(config)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        (table,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()
        assert "AUTOINCREMENT" not in table
        kept = conn.execute("SELECT id, name, attempts, lease_owner FROM messages ORDER BY id").fetchall()
    assert kept == [
        (1, "first", 0, None),
        (2, "second", 0, None),
        (3, "later", 0, None),
        (4, "job", 1, "dead-consumer"),
    ]
    [failed] = transport.failed_list()
    assert (failed.id, failed.reason) == (5, "boom")
    # Past every id the old counter handed out (6, consumed), not only past the rows left.
    assert dispatch("job", {"n": 7}, config=config) == 7
    # In order: the ready ones, the one whose lease expired, the new one; the delayed one waits.
    assert drain(config) == [("first", 1), ("second", 2), ("job", 4), ("job", 7)]
    assert transport.pending() == 1
    assert transport.failed_retry([5]) == [5]
    assert drain(config) == [("job", 5)]
    assert dispatch("job", {"n": 8}, config=config) == 8


DISPATCHER = """
import os, sys
import icc

os.chdir(sys.argv[1])
out = os.fdopen(1, "w", buffering=1)
for n in range(1_000_000):
    message_id = icc.dispatch("job", {"n": n})
    out.write(f"{message_id} {n}\\n")  # only once dispatch returned: the message is durable
"""


def test_a_dispatcher_killed_with_sigkill_loses_no_message_it_returned_an_id_for(tmp_path: Path) -> None:
    (tmp_path / "icc.toml").write_text('[icc]\nstate_dir = "state"\n')
    env = {**os.environ, "ICC_QUEUE_SYNCHRONOUS": "NORMAL"}  # a process crash loses nothing even at NORMAL
    proc = subprocess.Popen(
        [sys.executable, "-c", DISPATCHER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None

    def pair(line: str) -> tuple[int, int]:
        message_id, n = line.split()
        return int(message_id), int(n)

    returned: list[tuple[int, int]] = []
    for line in proc.stdout:
        returned.append(pair(line))
        if len(returned) == 300:
            proc.send_signal(signal.SIGKILL)  # mid-stream: it is dispatching the next ones
            break
    proc.wait(timeout=60)
    returned += [pair(line) for line in proc.stdout if line.endswith("\n")]  # written before the kill
    config = Config(path=None, root=tmp_path, state_dir=Path("state"))
    with sqlite3.connect(config.state_dir / "queue.sqlite3") as conn:
        stored = dict(conn.execute("SELECT id, payload FROM messages").fetchall())
    for message_id, n in returned:
        assert stored.get(message_id) == f'{{"n":{n}}}', (message_id, n)
    newest = max(stored)
    assert dispatch("job", {"n": -1}, config=config) == newest + 1
    handled = drain(config)
    assert [n for _name, n in handled[: len(returned)]] == [n for _id, n in returned]  # in dispatch order
