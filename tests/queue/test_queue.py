"""The queue in-process: dispatch validation, the transports' leases (SQLite and PostgreSQL), backoff, sizes.

Every test taking ``config`` or ``make_config`` runs against both transports (tests/queuekit.py); the
file-mode tests are about SQLite's files and run on it alone."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from icc.config import Config, QueueConfig, load_config
from icc.errors import QueueError, UnrecoverableMessageError
from icc.queue import Consumer, Limits, SqliteTransport, backoff, dispatch, max_attempts, open_transport
from icc.queue.limits import parse_size, rss_bytes
from icc.queue.message import MAX_PAYLOAD_BYTES, encode_payload, error_record
from icc.queue.retry import RETRY_JITTER
from icc.statedir import FileWatch
from queuekit import MakeConfig


@pytest.fixture
def config(make_config: MakeConfig) -> Config:
    return make_config(**{"async": QueueConfig(retries=1, delay=0, lease=0.3)})


def consumer(config: Config, handlers: dict[str, Any], *queues: str, **limits: Any) -> Consumer:
    limits.setdefault("time_limit", 5)
    limits.setdefault("stop_when_empty", True)
    return Consumer(
        open_transport(config), handlers, queues or ("async",), policy=config.queue, limits=Limits(**limits)
    )


# --- dispatch ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ([1, 2], "must be a dict"),
        ("text", "must be a dict"),
        ({"when": object()}, "not JSON-serialisable"),
        ({"tags": {1, 2}}, "not JSON-serialisable"),
        ({"x": math.nan}, "not JSON-serialisable"),
        ({"x": math.inf}, "not JSON-serialisable"),
        ({"blob": "a" * MAX_PAYLOAD_BYTES}, "more than the 262144 allowed"),
    ],
)
def test_dispatch_refuses_what_is_not_a_small_json_object_and_writes_nothing(
    config: Config, payload: Any, words: str
) -> None:
    with pytest.raises(QueueError, match=words):
        dispatch("job", payload, config=config)
    assert open_transport(config).pending() == 0


def test_dispatch_accepts_a_payload_of_exactly_the_maximum_size(config: Config) -> None:
    payload = {"blob": "a" * (MAX_PAYLOAD_BYTES - len('{"blob":""}'))}
    assert dispatch("job", payload, config=config) >= 1
    with pytest.raises(QueueError):
        dispatch("job", {"blob": payload["blob"] + "é"}, config=config)  # counted in UTF-8 bytes


def test_dispatch_refuses_an_unknown_queue_naming_the_valid_ones(config: Config) -> None:
    with pytest.raises(QueueError, match=r"unknown queue 'reports'; the queues are: mail, async"):
        dispatch("job", {}, queue="reports", config=config)
    assert open_transport(config).pending() == 0


@pytest.mark.parametrize("name", ["", " padded", 42, "x" * 201])
def test_dispatch_refuses_a_bad_name(config: Config, name: Any) -> None:
    with pytest.raises(QueueError, match="message name"):
        dispatch(name, {}, config=config)


@pytest.mark.parametrize("delay", [-1, math.nan, math.inf, "5", True])
def test_dispatch_refuses_a_bad_delay(config: Config, delay: Any) -> None:
    with pytest.raises(QueueError, match="delay"):
        dispatch("job", {}, delay=delay, config=config)


def test_dispatch_finds_the_configuration_like_the_command_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "icc.toml").write_text('[icc]\nstate_dir = "var/icc"\n[icc.queues.reports]\nretries = 1\n')
    (tmp_path / "app").mkdir()
    monkeypatch.chdir(tmp_path / "app")
    monkeypatch.delenv("ICC_CONFIG", raising=False)
    first = dispatch("report.render", {"id": 42}, queue="reports")
    second = dispatch("report.render", {"id": 43}, queue="reports", delay=60)
    assert second == first + 1
    state = tmp_path / "var" / "icc"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "queue.sqlite3").stat().st_mode) == 0o600
    transport = open_transport(load_config())
    assert transport.pending("reports") == 2
    # The delayed one is not leasable yet.
    leased = transport.lease("reports", owner="t", limit=10, lease=5)
    assert [e.id for e in leased] == [first]


def test_dispatch_outside_a_project_raises_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd, home = tmp_path / "elsewhere", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    for name in [name for name in os.environ if name.startswith("ICC_")]:
        monkeypatch.delenv(name)
    with pytest.raises(QueueError, match=r"no icc project found from .*elsewhere: set ICC_CONFIG"):
        dispatch("job", {"i": 1})
    assert list(tmp_path.rglob("*")) == [cwd, home]


def test_dispatch_reloads_the_configuration_when_its_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = tmp_path / "icc.toml"
    config_file.write_text('[icc]\nstate_dir = "one"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ICC_CONFIG", raising=False)
    dispatch("job", {"i": 1})
    config_file.write_text('[icc]\nstate_dir = "two"\n')
    os.utime(config_file, ns=(0, config_file.stat().st_mtime_ns + 1_000_000_000))  # a later mtime, surely
    dispatch("job", {"i": 2})
    assert (tmp_path / "one" / "queue.sqlite3").is_file()
    assert open_transport(load_config()).pending("async") == 1  # the second went to "two"


# --- transport ---------------------------------------------------------------------------------------


def test_lease_counts_the_attempt_and_release_takes_it_back(config: Config) -> None:
    transport = open_transport(config)
    ids = [dispatch("job", {"i": i}, config=config) for i in range(3)]
    batch = transport.lease("async", owner="a", limit=10, lease=30)
    assert [(e.id, e.attempts, e.redelivered) for e in batch] == [(i, 1, False) for i in ids]
    assert transport.lease("async", owner="b", limit=10, lease=30) == []  # all held by a
    transport.release(ids[1:], owner="b")  # not b's: nothing happens
    transport.release(ids[1:], owner="a")
    again = transport.lease("async", owner="b", limit=10, lease=30)
    assert [(e.id, e.attempts) for e in again] == [(ids[1], 1), (ids[2], 1)]
    transport.ack([ids[0]], owner="b")  # not b's
    assert transport.pending() == 3
    transport.lease("async", owner="a", limit=1, lease=30, ack=[ids[0]])
    assert transport.pending() == 2


def test_an_expired_lease_comes_back_alone_and_marked(config: Config) -> None:
    transport = open_transport(config)
    ids = [dispatch("job", {"i": i}, config=config) for i in range(3)]
    assert len(transport.lease("async", owner="dead", limit=10, lease=0.05)) == 3
    time.sleep(0.1)
    first = transport.lease("async", owner="b", limit=10, lease=30)
    assert [(e.id, e.attempts, e.redelivered, e.crashed) for e in first] == [(ids[0], 2, True, False)]
    transport.ack([ids[0]], owner="b")
    # A message leased alone and expired: its handler surely ran.
    transport.lease("async", owner="dead", limit=1, lease=0.05)
    time.sleep(0.1)
    again = {e.id: e for _ in range(2) for e in transport.lease("async", owner="c", limit=10, lease=30)}
    assert (again[ids[1]].attempts, again[ids[1]].crashed) == (3, True)
    assert (again[ids[2]].attempts, again[ids[2]].crashed) == (2, False)


def test_a_crash_in_a_batch_never_sends_its_neighbours_to_failed_unrun(make_config: MakeConfig) -> None:
    config = make_config(**{"async": QueueConfig(retries=0, lease=0.3)})
    transport = open_transport(config)
    for i in range(3):
        dispatch("job", {"i": i}, config=config)
    transport.lease("async", owner="dead", limit=10, lease=0.05)  # a consumer that died holding three
    time.sleep(0.1)
    seen: list[int] = []
    stats = consumer(config, {"job": lambda p: seen.append(p["i"])}).run(install_signal_handlers=False)
    assert sorted(seen) == [0, 1, 2]
    assert stats.failed == 0 and transport.pending() == 0


def test_failed_retry_keeps_the_id_and_history_and_resets_attempts(config: Config) -> None:
    transport = open_transport(config)
    message_id = dispatch("job", {"i": 1}, config=config)

    def broken(payload: dict[str, Any]) -> None:
        raise UnrecoverableMessageError("no such customer")

    stats = consumer(config, {"job": broken}).run(install_signal_handlers=False)
    assert stats.failed == 1
    failed = transport.failed_get(message_id)
    assert (
        failed is not None and failed.reason == "unrecoverable: UnrecoverableMessageError: no such customer"
    )
    assert transport.failed_retry([message_id, 999]) == [message_id]
    assert transport.failed_list() == []
    leased = transport.lease("async", owner="a", limit=10, lease=30)
    assert [(e.id, e.attempts) for e in leased] == [(message_id, 1)]
    transport.fail(leased[0], "again", error_record(1, "again"), owner="a")
    assert transport.failed_get(message_id) is not None
    assert len(transport.failed_get(message_id).errors) == 2  # type: ignore[union-attr]
    assert transport.failed_remove(None) == [message_id]


def test_fail_replaces_a_stale_failed_record_of_the_same_id(config: Config) -> None:
    """Ids are never reused, so a failed record with the message's id is a stale copy of it: fail() writes over it
    (icc.store.sqlqueue says that insert once for both transports)."""
    transport: Any = open_transport(config)
    message_id = dispatch("job", {"i": 1}, config=config)
    transport._transaction(  # planted through the transport's own connection, on either backend
        lambda conn: conn.execute(
            transport._t(
                "INSERT INTO {s}.failed (id, queue, name, payload, created_at, failed_at, attempts, reason, errors) "
                "VALUES (%s, 'old', 'old', '{}', 1.0, 1.0, 9, 'stale', '[]')"
            ),
            (message_id,),
        )
    )
    [leased] = transport.lease("async", owner="a", limit=10, lease=30)
    assert transport.fail(leased, "boom", error_record(1, "boom"), owner="a") == "boom"
    [failed] = transport.failed_list()
    assert (failed.id, failed.queue, failed.name, failed.reason, failed.attempts, len(failed.errors)) == (
        message_id,
        "async",
        "job",
        "boom",
        1,
        1,
    )
    assert transport.pending() == 0


def test_queues_are_consumed_in_the_order_given(make_config: MakeConfig) -> None:
    config = make_config()
    order: list[str] = []
    for _i in range(3):
        dispatch("job", {"q": "async"}, queue="async", config=config)
        dispatch("job", {"q": "mail"}, queue="mail", config=config)
    consumer(config, {"job": lambda p: order.append(p["q"])}, "mail", "async").run(
        install_signal_handlers=False
    )
    assert order == ["mail"] * 3 + ["async"] * 3


def test_limit_stops_after_n_messages_and_releases_the_rest(config: Config) -> None:
    for i in range(10):
        dispatch("job", {"i": i}, config=config)
    seen: list[int] = []
    stats = consumer(config, {"job": lambda p: seen.append(p["i"])}, limit=4).run(
        install_signal_handlers=False
    )
    assert seen == [0, 1, 2, 3]
    assert stats.stop_reason == "limit of 4 messages reached"
    assert open_transport(config).pending() == 6


def test_stop_from_another_thread_while_idle(config: Config) -> None:
    c = consumer(config, {}, time_limit=30, stop_when_empty=False, sleep=10)
    threading.Timer(0.2, c.stop).start()
    started = time.monotonic()
    assert c.run(install_signal_handlers=False).stop_reason == "stopped"
    assert time.monotonic() - started < 1


def test_the_heartbeat_keeps_a_long_handler_leased(config: Config) -> None:  # lease is 0.3 s
    dispatch("job", {}, config=config)
    calls: list[int] = []

    def long(payload: dict[str, Any]) -> None:
        calls.append(1)
        time.sleep(1.0)
        # Nobody else can take it meanwhile.
        assert open_transport(config).lease("async", owner="other", limit=1, lease=1) == []

    stats = consumer(config, {"job": long}).run(install_signal_handlers=False)
    assert stats.handled == 1 and calls == [1]


def _sqlite_config(tmp_path: Path) -> Config:
    return Config(path=None, root=tmp_path, state_dir=Path("state"))


def test_an_idle_sqlite_consumer_is_not_held_up_by_a_long_writer(tmp_path: Path) -> None:
    """An idle consumer takes no write lock to look at its queue (it reads), and after a change only tries the
    lock without waiting, to tell a commit still in progress: a long writer (a backup, an admin command, a burst
    of dispatches) neither blocks it nor hides what it commits. A consumer that leased to poll, or waited for
    the lock, would wait up to its 30 s busy timeout."""
    config = _sqlite_config(tmp_path)
    open_transport(config)  # the database exists
    holder = sqlite3.connect(tmp_path / "state" / "queue.sqlite3", isolation_level=None)
    handled: list[float] = []
    c = consumer(
        config,
        {"job": lambda payload: handled.append(time.monotonic())},
        time_limit=None,
        stop_when_empty=False,
        sleep=0.05,
    )
    runner = threading.Thread(target=c.run, kwargs={"install_signal_handlers": False})
    try:
        holder.execute("BEGIN IMMEDIATE")
        runner.start()
        time.sleep(1.0)  # waiting, the lock held all along
        now = time.time()
        holder.execute(
            "INSERT INTO messages (id, queue, name, payload, created_at, available_at) "
            "VALUES (1, 'async', 'job', '{}', ?, ?)",
            (now, now),
        )
        time.sleep(0.5)
        committed = time.monotonic()
        holder.execute("COMMIT")
        deadline = time.monotonic() + 10
        while not handled and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handled and handled[0] - committed < 5
        holder.execute("BEGIN IMMEDIATE")  # held again while it waits: stop() is noticed at once
        time.sleep(1.0)
        asked = time.monotonic()
        c.stop()
        runner.join(timeout=15)
        assert not runner.is_alive() and c.stats.stop_reason == "stopped"
        assert time.monotonic() - asked < 5
    finally:
        c.stop()
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        runner.join(timeout=15)


def test_an_idle_sqlite_consumer_takes_a_message_once_it_is_available(tmp_path: Path) -> None:
    config = _sqlite_config(tmp_path)
    taken = threading.Event()
    seen: list[int] = []

    def job(payload: dict[str, Any]) -> None:
        seen.append(payload["i"])
        if len(seen) == 2:
            taken.set()

    c = consumer(config, {"job": job}, time_limit=None, stop_when_empty=False, sleep=0.05)
    runner = threading.Thread(target=c.run, kwargs={"install_signal_handlers": False})
    runner.start()
    try:
        dispatch("job", {"i": 1}, config=config, delay=0.3)  # not available at first: polled until it is
        dispatch("job", {"i": 2}, config=config)
        assert taken.wait(30)
    finally:
        c.stop()
        runner.join(timeout=30)
    assert seen == [2, 1] and c.stats.handled == 2
    assert open_transport(config).pending() == 0


def _reads(transport: SqliteTransport) -> list[str]:
    """The statements the transport's connection runs from now on."""
    statements: list[str] = []
    transport._conn.set_trace_callback(statements.append)
    return statements


def test_an_idle_sqlite_transport_reads_again_only_when_its_files_change_or_a_message_comes_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 17: an idle service consumer asks available() and stop_requested_at() once a second; while the
    # queue database's files stay as they were, the answers read last hold, without a read.
    monkeypatch.setattr(FileWatch, "RACY", 0.0)  # files written just now count as settled (no other writer)
    mine, other = SqliteTransport.open(tmp_path / "s"), SqliteTransport.open(tmp_path / "s")
    reads = _reads(mine)
    assert not mine.available(["async"]) and mine.stop_requested_at() is None
    assert reads, "the first asks read"
    reads.clear()
    time.sleep(0.15)  # past the stat calls one poll shares
    assert not mine.available(["async"]) and mine.stop_requested_at() is None
    assert reads == []
    other.send("async", "job", "{}", delay=0.5)  # another connection writes: read again
    time.sleep(0.15)
    assert not mine.available(["async"])
    assert reads
    reads.clear()
    time.sleep(0.15)
    assert not mine.available(["async"]) and reads == []  # not due yet, nothing written
    time.sleep(0.4)
    assert mine.available(["async"])  # due now: read again though no file changed
    assert mine.available(["mail", "async"])
    at = other.request_stop()
    time.sleep(0.15)
    assert mine.stop_requested_at() == pytest.approx(at)


def test_a_file_watch_moves_its_generation_on_every_write_and_trusts_no_recent_one(tmp_path: Path) -> None:
    path = tmp_path / "db"
    path.write_text("a")
    watch = FileWatch(str(path))
    now = time.time()
    first = watch.generation(now)
    assert first and watch.generation(now + 0.5) != first  # written just now: not trusted, read again
    old = now - 3600
    os.utime(path, (old, old))  # the change time stays recent: still not trusted
    recent = watch.generation(now + FileWatch.RACY - 1)
    assert watch.generation(now + FileWatch.RACY - 1) != recent
    later = now + FileWatch.RACY + 1  # the last change is older than RACY: trusted from here on
    settled = watch.generation(later)
    assert watch.generation(later + 1) == settled == watch.generation(later + 30)
    assert watch.generation(later + FileWatch.MAX_TRUST + 1) != settled  # read again now and then anyway
    settled = watch.generation(later + FileWatch.MAX_TRUST + 2)
    (tmp_path / "db-wal").write_text("frame")  # a WAL now: its stat tells from here on
    assert watch.generation(later + FileWatch.MAX_TRUST + 3) != settled
    wal = tmp_path / "db-wal"
    os.utime(wal, (old, old))
    settled = watch.generation(time.time() + FileWatch.RACY + 1)
    assert watch.generation(time.time() + FileWatch.RACY + 2) == settled
    with wal.open("a") as f:  # a commit
        f.write("frame")
    assert watch.generation(time.time() + FileWatch.RACY + 3) != settled


def test_the_database_file_is_private(tmp_path: Path) -> None:
    transport = SqliteTransport.open(tmp_path / "s")
    transport.send("async", "job", "{}")
    for name in ("queue.sqlite3", "queue.sqlite3-wal", "queue.sqlite3-shm"):
        path = tmp_path / "s" / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o700
    transport.close()


def test_a_forked_child_opens_its_own_connection(config: Config) -> None:
    parent = open_transport(config)
    dispatch("job", {}, config=config)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            code = 0 if open_transport(config) is not parent and dispatch("job", {}, config=config) else 1
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent.pending() == 2


# --- backoff and sizes --------------------------------------------------------------------------------

policies = st.builds(
    QueueConfig,
    retries=st.integers(0, 20),
    delay=st.floats(0, 1e4, allow_nan=False),
    multiplier=st.floats(1, 100, allow_nan=False),
    max_delay=st.floats(0, 1e6, allow_nan=False),
)


@given(policies, st.integers(1, 10_000))
def test_backoff_is_monotonic_and_capped(policy: QueueConfig, attempt: int) -> None:
    this, after = backoff(policy, attempt), backoff(policy, attempt + 1)
    assert 0 <= this <= after <= policy.max_delay
    assert backoff(policy, 1) == min(policy.delay, policy.max_delay)


@given(policies, st.integers(1, 30))
def test_backoff_is_delay_times_multiplier_to_the_attempt(policy: QueueConfig, attempt: int) -> None:
    expected = min(policy.delay * policy.multiplier ** (attempt - 1), policy.max_delay)
    assert backoff(policy, attempt) == pytest.approx(expected)


def test_backoff_defaults_and_max_attempts() -> None:
    policy = QueueConfig()
    assert [backoff(policy, n) for n in (1, 2, 3, 13)] == [1, 2, 4, 3600]
    assert max_attempts(policy) == 4


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1024", 1024),
        ("512K", 512 * 1024),
        ("128M", 128 * 2**20),
        ("1G", 2**30),
        ("1.5gib", 3 * 2**29),
        ("2 MB", 2 * 2**20),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1M", "0", "1X", "M", "9" * 400])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(QueueError):
        parse_size(text)


def test_rss_is_the_current_resident_size() -> None:
    before = rss_bytes()
    block = b"\x01" * (64 * 2**20)
    assert rss_bytes() - before > 32 * 2**20
    del block


@given(policies, st.integers(1, 1_000), st.text(max_size=20))
def test_backoff_jitter_shortens_the_wait_by_a_stable_quarter_at_most(
    policy: QueueConfig, attempt: int, key: str
) -> None:
    base = backoff(policy, attempt)
    jittered = backoff(policy, attempt, key=key)
    assert base * (1 - RETRY_JITTER) <= jittered <= base
    assert backoff(policy, attempt, key=key) == jittered


def test_backoff_jitter_spreads_messages_that_failed_together() -> None:
    policy = QueueConfig(delay=60)
    waits = {backoff(policy, 1, key=f"async:{message_id}") for message_id in range(100)}
    assert len(waits) >= 90
    assert min(waits) >= 45 and max(waits) <= 60


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=5))
def test_a_payload_is_encoded_as_compact_json_with_the_prebuilt_encoder(payload: dict[str, Any]) -> None:
    # encode_payload uses a C encoder built once (dispatch's cost, issue 17): the text is json.dumps's.
    try:
        expected = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        expected.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates: refused, tested elsewhere
    assert encode_payload(payload) == expected


def test_a_payload_that_refers_to_itself_is_refused_as_circular_and_a_deep_one_as_too_deep() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = [cyclic]
    with pytest.raises(QueueError, match="Circular reference detected"):
        encode_payload(cyclic)
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(100_000):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(QueueError, match="nests too deeply"):
        encode_payload(deep)
