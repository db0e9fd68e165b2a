"""Queue consumers as real processes: `python -m icc consume` and `icc failed` against real SQLite, and
(``qp`` is parametrised over both transports) against PostgreSQL."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from projectkit import QueueProject

HANDLERS = """
import os, sqlite3, time
import icc

OUT = os.environ["QTEST_DIR"]
_LEAK = []


def _log(name, text):
    fd = os.open(os.path.join(OUT, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (text + "\\n").encode())
    finally:
        os.close(fd)


def _attempts(name):
    if os.environ.get("QTEST_STORE_URL"):
        import psycopg

        with psycopg.connect(os.environ["QTEST_STORE_URL"]) as conn:
            sql = "SELECT attempts FROM icc.messages WHERE name = %s"
            return conn.execute(sql, (name,)).fetchone()[0]
    db = sqlite3.connect(os.path.join(OUT, "state", "queue.sqlite3"))
    try:
        return db.execute("SELECT attempts FROM messages WHERE name = ?", (name,)).fetchone()[0]
    finally:
        db.close()


def record(payload):
    _log("handled", f"{os.getpid()} {payload['i']}")


def slow(payload):
    attempts = _attempts("slow")
    _log("attempts", str(attempts))
    if attempts == 1:
        time.sleep(60)  # killed here by the test
    _log("finished", str(os.getpid()))


def sleepy(payload):
    _log("started", str(os.getpid()))
    time.sleep(payload["sleep"])
    _log("finished", str(os.getpid()))


def poison(payload):
    raise RuntimeError("poison " + str(payload.get("i")))


def killer(payload):
    _log("killer", str(os.getpid()))
    os._exit(3)


def leak(payload):
    _LEAK.append(b"\\x01" * (16 * 2**20))  # written, so resident
    _log("leaked", str(len(_LEAK)))


def flaky(payload):
    if os.path.exists(os.path.join(OUT, "broken")):
        raise icc.UnrecoverableMessageError("broken by the test")
    _log("flaky", str(payload["i"]))


@icc.hookimpl
def register_handlers(register):
    for handler in (record, slow, sleepy, poison, killer, leak, flaky):
        register(handler.__name__, handler)
"""

CONFIG = """
[icc]
state_dir = "state"
plugins = ["qhandlers"]

[icc.consumers]
mode = "service"

[icc.queues.async]
retries = 2
delay = 0.05
multiplier = 1
max_delay = 1
lease = 1

[icc.queues.crash]
retries = 1
delay = 0
lease = 0.5
"""


@pytest.fixture
def qp(tmp_path: Path, store_url: str | None) -> Iterator[QueueProject]:
    root = tmp_path / "proj"
    root.mkdir()
    project = QueueProject(root, CONFIG, HANDLERS, "qhandlers", store_url=store_url)
    if store_url is not None:
        project.env.update(QTEST_STORE_URL=store_url)
    return project


def sqlite_only(qp: QueueProject, why: str) -> None:
    if qp.store_url is not None:
        pytest.skip(why)


def test_two_consumers_handle_10000_messages_exactly_once(qp: QueueProject) -> None:
    sqlite_only(qp, "PostgreSQL: test_queue_hosts.py drains 10,000 messages on three hosts")
    for i in range(10_000):
        qp.dispatch("record", {"i": i}, queue="mail")
    consumers = [qp.popen("consume", "mail", "--stop-when-empty", "--time-limit", "60") for _ in range(2)]
    for proc in consumers:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    handled = [int(line.split()[1]) for line in qp.marker_lines("handled")]
    duplicates = [i for i, n in Counter(handled).items() if n > 1]
    assert duplicates == []
    assert set(handled) == set(range(10_000))
    assert qp.query("SELECT count(*) FROM messages") == [(0,)]
    assert qp.query("SELECT count(*) FROM failed") == [(0,)]


def test_sigkilled_consumer_message_is_handled_again_with_the_attempt_counted(qp: QueueProject) -> None:
    qp.dispatch("slow", {})
    first = qp.popen("consume", "async", "--time-limit", "30")
    qp.wait_for(lambda: qp.marker_lines("attempts") == ["1"])
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=5)
    # Within the lease (1 s) nobody may take it; after it, the next consumer does.
    second = qp.icc("consume", "async", "--limit", "1", "--time-limit", "10")
    assert second.returncode == 0, second.stderr
    assert qp.marker_lines("attempts") == ["1", "2"]
    assert len(qp.marker_lines("finished")) == 1
    assert qp.query("SELECT count(*) FROM messages") == [(0,)]


def test_a_handler_that_always_raises_ends_in_failed_after_its_retries(qp: QueueProject) -> None:
    message_id = qp.dispatch("poison", {"i": 7})
    proc = qp.icc("consume", "async", "--time-limit", "10", "--failure-limit", "3")
    assert proc.returncode == 0, proc.stderr
    assert "failure limit of 3 reached" in proc.stderr  # the summary is a log line
    assert "moved to failed" in proc.stderr
    shown = json.loads(qp.icc("failed", "show", str(message_id), "--json").stdout)
    assert shown["attempts"] == 3  # retries = 2
    assert shown["reason"].startswith("failed 3 times")
    assert [e["attempt"] for e in shown["errors"]] == [1, 2, 3]
    assert all("RuntimeError: poison 7" in e["error"] for e in shown["errors"])
    assert "Traceback" in shown["errors"][0]["traceback"]


def test_a_handler_that_kills_its_process_ends_in_failed_after_its_retries(qp: QueueProject) -> None:
    message_id = qp.dispatch("killer", {}, queue="crash")  # retries = 1, lease 0.5 s
    codes = [qp.icc("consume", "crash", "--limit", "1", "--time-limit", "10").returncode for _ in range(3)]
    assert codes == [3, 3, 0]  # two attempts killed their consumer; the third run gives up on it
    assert len(qp.marker_lines("killer")) == 2
    shown = json.loads(qp.icc("failed", "show", str(message_id), "--json").stdout)
    assert shown["reason"].startswith("crashed")
    assert shown["attempts"] == 2
    assert sum("lease expired" in e["error"] for e in shown["errors"]) == 2


def test_an_idle_consumer_stops_at_its_time_limit(qp: QueueProject) -> None:
    started = time.monotonic()
    proc = qp.icc("consume", "async", "mail", "--time-limit", "2")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 2  # not before its limit
    assert "time limit of 2s reached" in proc.stderr
    # Nor long after it: the consumer's own count, from when it began consuming (the interpreter's start-up
    # on a loaded machine is no part of its time limit).
    [elapsed] = re.findall(r" in (\d+\.\d)s; stopped: time limit", proc.stderr)
    assert 2 <= float(elapsed) < 3, proc.stderr


def test_memory_limit_stops_a_leaking_handler(qp: QueueProject) -> None:
    for i in range(40):
        qp.dispatch("leak", {"i": i})
    proc = qp.icc("consume", "async", "--memory-limit", "160M", "--time-limit", "20")
    assert proc.returncode == 0, proc.stderr
    assert "memory limit reached" in proc.stderr
    leaked = len(qp.marker_lines("leaked"))
    assert 0 < leaked < 40
    # What it never started is back in the queue, with no attempt counted.
    assert qp.query("SELECT count(*), max(attempts), count(lease_owner) FROM messages") == [
        (40 - leaked, 0, 0)
    ]


def test_sigterm_finishes_the_current_message_then_exits_0(qp: QueueProject) -> None:
    qp.dispatch("sleepy", {"sleep": 1.5})
    qp.dispatch("record", {"i": 1})
    qp.dispatch("record", {"i": 2})
    proc = qp.popen("consume", "async", "--time-limit", "30")
    qp.wait_for(lambda: len(qp.marker_lines("started")) == 1)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "stopped: SIGTERM" in err
    assert len(qp.marker_lines("finished")) == 1
    assert qp.marker_lines("handled") == []
    assert qp.query("SELECT name, attempts, lease_owner FROM messages ORDER BY id") == [
        ("record", 0, None),
        ("record", 0, None),
    ]


def test_malformed_rows_are_reported_and_moved_to_failed(qp: QueueProject) -> None:
    sqlite_only(qp, "rows written by hand into the SQLite file")
    qp.dispatch("record", {"i": 0})  # creates the database
    db = sqlite3.connect(qp.db_path)
    now = time.time()
    for payload in ("{not json", "[1, 2]", '{"a": NaN}', b"\xff\xfe"):
        db.execute(
            "INSERT INTO messages (queue, name, payload, created_at, available_at) VALUES ('async', 'record', ?, ?, ?)",
            (payload, now, now),
        )
    db.commit()
    db.close()
    qp.dispatch("record", {"i": 1})
    proc = qp.icc("consume", "async", "--stop-when-empty", "--time-limit", "10")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("malformed payload") == 4
    assert sorted(int(line.split()[1]) for line in qp.marker_lines("handled")) == [0, 1]
    reasons = [r for (r,) in qp.query("SELECT reason FROM failed")]
    assert len(reasons) == 4 and all(r.startswith("malformed payload") for r in reasons)


def test_failed_list_show_retry_remove(qp: QueueProject) -> None:
    (qp.root / "broken").touch()
    first = qp.dispatch("flaky", {"i": 1})
    second = qp.dispatch("flaky", {"i": 2})
    missing = qp.dispatch("nobody.handles", {"i": 3})
    proc = qp.icc("consume", "async", "--stop-when-empty", "--time-limit", "10")
    assert proc.returncode == 0, proc.stderr

    listed = qp.icc("failed", "list")
    assert listed.returncode == 0
    assert "3 failed messages" in listed.stdout
    assert "unrecoverable: UnrecoverableMessageError: broken by the test" in listed.stdout
    shown = qp.icc("failed", "show", str(missing))
    assert "no handler for 'nobody.handles'" in shown.stdout
    assert '"i":3' in shown.stdout
    assert qp.icc("failed", "show", "999").returncode != 0

    removed = qp.icc("failed", "remove", str(second), str(missing))
    assert removed.returncode == 0
    assert qp.icc("failed", "remove", "999").returncode == 1
    assert qp.icc("failed", "retry").returncode == 2  # ids or --all

    (qp.root / "broken").unlink()
    retried = qp.icc("failed", "retry", str(first))
    assert retried.returncode == 0, retried.stderr
    assert qp.query("SELECT id, attempts FROM messages") == [(first, 0)]
    proc = qp.icc("consume", "async", "--stop-when-empty", "--time-limit", "10")
    assert proc.returncode == 0, proc.stderr
    assert qp.marker_lines("flaky") == ["1"]
    assert qp.icc("failed", "list").stdout.strip() == "no failed messages"


def test_consume_refuses_an_unknown_queue_and_a_bad_memory_size(qp: QueueProject) -> None:
    proc = qp.icc("consume", "nope", "--time-limit", "1")
    assert proc.returncode == 2
    assert "unknown queue 'nope'" in proc.stderr and "mail, async, crash" in proc.stderr
    proc = qp.icc("consume", "async", "--memory-limit", "lots")
    assert proc.returncode == 2
    assert "128M" in proc.stderr
