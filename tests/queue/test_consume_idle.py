"""An idle `icc consume` on SQLite waits on its queue database instead of polling it (issue 17: two idle service
consumers cost less than an idle tick per minute), and notices everything as promptly as before, or sooner.

The consumers here run with ``--sleep 30``: a consumer that polled would notice nothing for half a minute, so
each "within a few seconds" below is what the change watch (Linux's inotify) and the wait until the next due
message bring, not a lucky poll. Wake-ups are counted from Linux's per-thread schedstat (its run count)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from icc.queue.dispatch import dispatch
from icc.store.sqlite.changes import ChangeWatch
from projectkit import QueueProject

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify and schedstat: Linux")

HANDLERS = """
import os, time
import icc

OUT = os.environ["QTEST_DIR"]


def _log(name, text):
    fd = os.open(os.path.join(OUT, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (text + "\\n").encode())
    finally:
        os.close(fd)


def record(payload):
    _log("handled", f"{time.time()} {os.getpid()} {payload['i']}")


def stuck_once(payload):
    if not os.path.exists(os.path.join(OUT, "started")):
        _log("started", str(os.getpid()))
        time.sleep(60)  # killed here by the test
    _log("handled", f"{time.time()} {os.getpid()} again")


@icc.hookimpl
def register_handlers(register):
    register("record", record)
    register("stuck_once", stuck_once)
"""

CONFIG = """
[icc]
state_dir = "state"
plugins = ["idlehandlers"]

[icc.consumers]
mode = "service"

[icc.queues.crash]
retries = 2
delay = 0
lease = 6
"""

DISPATCH = """
from icc.config import load_config
from icc.queue.dispatch import dispatch

dispatch("record", {"i": 4}, queue="async", config=load_config("icc.toml"))
"""

BUSY = """
from icc.config import load_config
from icc.queue.dispatch import dispatch

config = load_config("icc.toml")
while True:
    dispatch("record", {"i": 0}, queue="mail", config=config)
"""

PROMPT = 5.0  # seconds: "at once", with room for a loaded machine; a polling consumer here takes 30


@pytest.fixture
def qp(tmp_path: Path) -> QueueProject:
    root = tmp_path / "proj"
    root.mkdir()
    return QueueProject(root, CONFIG, HANDLERS, "idlehandlers")


def wakeups(pid: int) -> int:
    """How many times the threads of ``pid`` were scheduled to run so far (schedstat's third field)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[2])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


@pytest.fixture
def idle_consumer(qp: QueueProject) -> Iterator[subprocess.Popen[str]]:
    """`icc consume async crash --sleep 30`, started and past its first polls: idle."""
    qp.dispatch("record", {"i": 0})  # creates the queue database; handled at the consumer's first lease
    proc = qp.popen("consume", "async", "crash", "--sleep", "30", "--time-limit", "120")
    try:
        qp.wait_for(lambda: len(qp.marker_lines("handled")) == 1, timeout=60, what="the first message")
        time.sleep(1.0)  # its acknowledgement written, and the wake-up that its own writes cause
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def handled_after(qp: QueueProject, count: int, timeout: float = PROMPT) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = qp.marker_lines("handled")
        if len(lines) >= count:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"not handled within {timeout:g}s: {qp.marker_lines('handled')}")


def stopped(proc: subprocess.Popen[str], timeout: float = PROMPT) -> str:
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the consumer did not stop within {timeout:g}s") from None
    assert proc.returncode == 0, err
    return err


def test_an_idle_consumer_wakes_up_for_nothing_while_nothing_changes(
    qp: QueueProject, idle_consumer: subprocess.Popen[str]
) -> None:
    # The design: no thread wakes while idle except the main thread's re-check every 15 s. A consumer that
    # polls once a second (the default --sleep) would wake at least 6 times in these 6 s; allow 2.
    polling = qp.popen("consume", "mail", "--time-limit", "30")
    try:
        time.sleep(3)  # past its start-up
        before = wakeups(idle_consumer.pid), wakeups(polling.pid)
        time.sleep(6)
        after = wakeups(idle_consumer.pid), wakeups(polling.pid)
        assert after[0] - before[0] <= 2
        assert after[1] - before[1] <= 2  # --sleep 1 too: the change watch, not a longer poll
    finally:
        polling.terminate()
        polling.communicate(timeout=30)


def test_a_busy_queue_database_wakes_an_idle_consumer_at_most_five_times_a_second(
    qp: QueueProject, idle_consumer: subprocess.Popen[str]
) -> None:
    # Messages for a queue it does not consume change its database all the time: it looks, then lets the
    # changes gather for 0.2 s. The design's bound: 5 looks a second, each a few scheduled runs of its one thread
    # (the wake-up, and SQLite's busy handler's sleeps while it waits up to 50 ms for the writer's commit: 1, 2,
    # 5, 10, 15, 20 ms). Without the gathering it would look at every commit (thousands of wake-ups here).
    writer = subprocess.Popen(
        [sys.executable, "-c", BUSY], cwd=qp.root, env={**qp.environ(), "ICC_QUEUE_SYNCHRONOUS": "NORMAL"}
    )
    try:
        time.sleep(1.5)  # past the writer's start-up: committing
        before = wakeups(idle_consumer.pid)
        commits = int(qp.query("SELECT count(*) FROM messages WHERE queue = 'mail'")[0][0])
        time.sleep(3)
        woke = wakeups(idle_consumer.pid) - before
        commits = int(qp.query("SELECT count(*) FROM messages WHERE queue = 'mail'")[0][0]) - commits
    finally:
        writer.kill()
        writer.wait(30)
    assert commits > 100  # the database was busy
    assert woke <= 3 * 5 * 8
    assert len(qp.marker_lines("handled")) == 1  # and it consumed nothing of the other queue


def test_a_message_dispatched_by_another_process_is_handled_at_once(
    qp: QueueProject, idle_consumer: subprocess.Popen[str]
) -> None:
    sent = time.time()
    qp.dispatch("record", {"i": 1})
    lines = handled_after(qp, 2)
    at, pid, i = lines[1].split()
    assert (int(pid), i) == (idle_consumer.pid, "1")
    assert float(at) - sent < PROMPT


def test_a_delayed_message_is_handled_when_it_comes_due(
    qp: QueueProject, idle_consumer: subprocess.Popen[str]
) -> None:
    sent = time.time()
    dispatch("record", {"i": 2}, queue="async", delay=3, config=qp.loaded)
    time.sleep(2)
    assert len(qp.marker_lines("handled")) == 1  # not before it is due
    lines = handled_after(qp, 2, timeout=1 + PROMPT)
    assert 3 <= float(lines[1].split()[0]) - sent < 3 + PROMPT


def test_a_message_whose_lease_expired_is_handled_when_it_expires(qp: QueueProject) -> None:
    qp.dispatch("stuck_once", {}, queue="crash")
    crashed = qp.popen("consume", "crash", "--time-limit", "120")
    try:
        qp.wait_for(lambda: qp.marker_lines("started"), timeout=60, what="the handler started")
    finally:
        crashed.kill()  # its lease (6 s) expires without it
        crashed.communicate(timeout=30)
    killed = time.time()
    consumer = qp.popen("consume", "crash", "--sleep", "30", "--time-limit", "120")
    try:
        lines = handled_after(qp, 1, timeout=6 + PROMPT + 5)  # + the start-up
        at, pid, what = lines[0].split()
        assert (int(pid), what) == (consumer.pid, "again")
        assert float(at) - killed < 6 + PROMPT + 5
    finally:
        consumer.terminate()
        consumer.communicate(timeout=30)


def test_consume_stop_is_noticed_at_once(qp: QueueProject, idle_consumer: subprocess.Popen[str]) -> None:
    assert qp.icc("consume", "--stop").returncode == 0
    assert "stopped: stop requested (icc consume --stop)" in stopped(idle_consumer)


def test_pause_holds_an_idle_consumer_and_resuming_releases_it(qp: QueueProject) -> None:
    # The default --sleep (1 s): held, a consumer looks at the pause every --sleep (at least 0.5 s), as before.
    qp.icc("scan", check=True)
    qp.dispatch("record", {"i": 0})
    consumer = qp.popen("consume", "async", "--time-limit", "120")
    try:
        handled_after(qp, 1, timeout=60)
        time.sleep(1.0)  # idle, on the change watch
        qp.icc("pause", "--queues", check=True)
        qp.dispatch("record", {"i": 3})  # wakes it: it reads the pause before it leases, and holds
        time.sleep(2)
        assert len(qp.marker_lines("handled")) == 1
        qp.icc("pause", check=True)  # a plain pause: the queues are no longer paused
        lines = handled_after(qp, 2)
        assert lines[1].split()[2] == "3"
    finally:
        consumer.terminate()
        consumer.communicate(timeout=30)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_an_idle_consumer_at_once(
    qp: QueueProject, idle_consumer: subprocess.Popen[str], signum: int
) -> None:
    idle_consumer.send_signal(signum)
    assert f"stopped: {signal.Signals(signum).name}" in stopped(idle_consumer)


def test_the_time_limit_ends_an_idle_consumer_on_time(qp: QueueProject) -> None:
    qp.dispatch("record", {"i": 0})
    proc = qp.popen("consume", "async", "--sleep", "30", "--time-limit", "3")
    err = stopped(proc, timeout=60)
    assert "stopped: time limit of 3s reached" in err
    elapsed = float(err.split(" in ")[1].split("s;")[0])
    assert 3 <= elapsed < 4


def test_the_queue_database_removed_and_made_again_under_an_idle_consumer(
    qp: QueueProject, idle_consumer: subprocess.Popen[str]
) -> None:
    # As before the change watch: the consumer keeps the database it opened (its connection holds the removed
    # file) and says nothing; it does not spin on the change, and it still stops as asked.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{qp.db_path}{suffix}").unlink(missing_ok=True)
    time.sleep(1)
    before = wakeups(idle_consumer.pid)
    time.sleep(3)
    assert wakeups(idle_consumer.pid) - before <= 2
    subprocess.run(  # another process makes a new database
        [sys.executable, "-c", DISPATCH], cwd=qp.root, env=qp.environ(), check=True, timeout=60
    )
    assert qp.query("SELECT name FROM messages") == [("record",)]
    time.sleep(1)
    before = wakeups(idle_consumer.pid)
    time.sleep(3)
    assert wakeups(idle_consumer.pid) - before <= 2
    idle_consumer.send_signal(signal.SIGTERM)
    err = stopped(idle_consumer)
    assert "consumed 1 message (1 handled, 0 retried, 0 failed)" in err
    assert "stopped: SIGTERM" in err
    assert qp.query("SELECT name FROM messages") == [("record",)]  # for the next consumer


# --- the change watch itself ------------------------------------------------------------------------


def test_the_change_watch_wakes_for_its_names_only_and_for_interrupt(tmp_path: Path) -> None:
    watch = ChangeWatch(str(tmp_path), ("queue.sqlite3", "queue.sqlite3-wal"))
    try:
        assert watch.wait(0) is True  # just begun: look now
        assert watch.wait(0.2) is False
        (tmp_path / "state.sqlite3-wal").write_bytes(b"x")  # another database in the directory
        assert watch.wait(0.3) is False
        (tmp_path / "queue.sqlite3-wal").write_bytes(b"x")
        assert watch.wait(5) is True
        assert watch.wait(0) is False  # read, not seen again
        os.replace(tmp_path / "state.sqlite3-wal", tmp_path / "queue.sqlite3")  # replaced by a rename
        assert watch.wait(5) is True
        timer = threading.Timer(0.3, watch.interrupt)
        timer.start()
        started = time.monotonic()
        assert watch.wait(30) is True
        assert time.monotonic() - started < 10
        timer.join()
    finally:
        watch.close()


def test_the_change_watch_of_a_missing_or_removed_directory(tmp_path: Path) -> None:
    missing = ChangeWatch(str(tmp_path / "missing"), ("queue.sqlite3",))
    assert missing.wait(0.1) is None  # nothing to wait on: the caller polls
    missing.close()
    directory = tmp_path / "state"
    directory.mkdir()
    watch = ChangeWatch(str(directory), ("queue.sqlite3",))
    try:
        assert watch.wait(0) is True
        directory.rmdir()
        assert watch.wait(5) is True  # the directory went
        assert watch.wait(0.1) is None
        directory.mkdir()
        assert watch.wait(0.1) is True  # watching again
    finally:
        watch.close()
