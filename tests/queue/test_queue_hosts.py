"""Several hosts, one PostgreSQL queue: real `icc consume` processes from three project directories (own
state directory, own ``[icc.store] host_id``) drain the same queue while one of them is killed -9."""

from __future__ import annotations

import signal
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from projectkit import QueueProject
from queuekit import migrated

N = 10_000
LEASE = 2  # seconds: how long the killed host's messages stay out of reach

HANDLERS = """
import os
import icc
import psycopg

_conn = None
_out = None


def record(payload):
    # The attempt counted for this delivery (read before acknowledging, so the row is still there), and
    # one line per handler run, appended with O_APPEND to one file all hosts share.
    global _conn, _out
    if _conn is None:
        _conn = psycopg.connect(os.environ["QTEST_STORE_URL"], autocommit=True)
        _out = os.open(os.environ["QTEST_MARKER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    message_id = int(os.environ["QTEST_FIRST_ID"]) + payload["i"]
    row = _conn.execute("SELECT attempts FROM icc.messages WHERE id = %s", (message_id,)).fetchone()
    os.write(_out, f"{payload['i']} {row[0] if row else -1} {os.getpid()}\\n".encode())


@icc.hookimpl
def register_handlers(register):
    register("record", record)
"""

CONFIG = f"""
[icc]
state_dir = "state"
plugins = ["mhandlers"]

[icc.consumers]
mode = "service"

[icc.queues.async]
lease = {LEASE}
"""


@pytest.mark.slow
def test_three_hosts_drain_10000_messages_at_least_once_through_a_kill_9(tmp_path: Path, pg_url: str) -> None:
    migrated(pg_url)
    marker = tmp_path / "handled"
    hosts = []
    for n in (1, 2, 3):
        root = tmp_path / f"host{n}"
        root.mkdir()
        hosts.append(QueueProject(root, CONFIG, HANDLERS, "mhandlers", store_url=pg_url, host_id=f"web-{n}"))
    ids = [hosts[0].dispatch("record", {"i": i}) for i in range(N)]
    assert ids == list(range(ids[0], ids[0] + N))  # the handlers find a message's row by its id
    for host in hosts:
        host.env.update(QTEST_STORE_URL=pg_url, QTEST_MARKER=str(marker), QTEST_FIRST_ID=str(ids[0]))

    def consume(host: QueueProject) -> subprocess.Popen[str]:
        return host.popen("consume", "async", "--time-limit", "120", "--sleep", "0.2")

    def handled() -> list[tuple[int, int, int]]:
        text = marker.read_text() if marker.exists() else ""
        return [tuple(map(int, line.split())) for line in text.splitlines()]  # type: ignore[misc]

    consumers = [consume(host) for host in hosts]
    try:
        victim = consumers[1]
        owner = f"%:{victim.pid}:%"  # a consumer's owner token is host:pid:random

        def victim_holds_messages() -> bool:
            return hosts[0].query("SELECT count(*) FROM messages WHERE lease_owner LIKE ?", (owner,)) != [
                (0,)
            ]

        hosts[0].wait_for(
            lambda: len(handled()) >= N // 3 and victim_holds_messages(),
            timeout=60,
            what="a third of the messages handled, and the victim in the middle of a batch",
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        # What the dead host held: back after its lease, attempt counted again.
        held = {
            i - ids[0]
            for (i,) in hosts[0].query("SELECT id FROM messages WHERE lease_owner LIKE ?", (owner,))
        }
        consumers[1] = consume(hosts[1])  # the host restarts its consumer
        hosts[0].wait_for(
            lambda: hosts[0].query("SELECT count(*) FROM messages") == [(0,)],
            timeout=90,
            what="the queue drained",
        )
    finally:
        for proc in consumers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        outputs = [proc.communicate(timeout=30) for proc in consumers]
    for proc, (_out, err) in zip(consumers, outputs, strict=True):
        assert proc.returncode == 0, err

    runs = handled()
    attempts: dict[int, list[int]] = defaultdict(list)
    for i, attempt, _pid in runs:
        attempts[i].append(attempt)
    assert set(attempts) == set(range(N))  # every message handled at least once: none lost
    assert hosts[0].query("SELECT count(*) FROM messages") == [(0,)]  # none left
    assert hosts[0].query("SELECT count(*) FROM failed") == [(0,)]
    assert held, "the killed consumer held no message (killed between batches?)"
    for i, seen in attempts.items():
        # Every delivery counted its own attempt, before its handler ran.
        assert min(seen) >= 1 and len(set(seen)) == len(seen), (i, seen)
        if i in held:
            assert max(seen) >= 2, (i, seen)  # redelivered after the kill: a second attempt counted
    redelivered = sum(1 for seen in attempts.values() if max(seen) >= 2)
    assert redelivered >= len(held)
    # The three hosts shared the work (and the restarted consumer took part).
    assert len({pid for _i, _a, pid in runs}) >= 3
