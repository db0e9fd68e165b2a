"""What only the PostgreSQL transport has to get right: dropped connections, the server's clock, forks,
hand-written rows and errors without the password. The shared contract is tested in test_queue.py."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from icc.config import Config, QueueConfig, StoreConfig
from icc.errors import QueueError
from icc.queue import Consumer, Limits, dispatch, open_transport
from icc.store.postgres.queues import PostgresTransport
from pgkit import PgServer
from queuekit import migrated


@pytest.fixture
def config(tmp_path: Path, pg_url: str) -> Config:
    migrated(pg_url)
    return Config(
        path=None,
        root=tmp_path,
        state_dir=Path("state"),
        store=StoreConfig(url=pg_url, host_id="test"),
        queues={"async": QueueConfig(retries=1, delay=0, lease=30)},
    )


def terminate(pg_server: PgServer, url: str) -> int:
    """pg_terminate_backend every other connection to the database of ``url``; how many."""
    database = url.rsplit("/", 1)[1]
    out = pg_server.admin(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
    return int(out)


def test_a_connection_the_server_dropped_is_reopened_and_a_dispatch_goes_through(
    config: Config, pg_server: PgServer
) -> None:
    transport = open_transport(config)
    first = dispatch("job", {"i": 1}, config=config)
    assert terminate(pg_server, str(config.store.url)) >= 1
    time.sleep(0.2)  # the server's farewell reaches the idle socket
    second = dispatch("job", {"i": 2}, config=config)  # not repeatable: must not meet the dead connection
    assert second > first
    leased = transport.lease("async", owner="a", limit=10, lease=30)
    assert [e.id for e in leased] == [first, second]
    terminate(pg_server, str(config.store.url))
    transport.ack([first, second], owner="a")
    assert transport.pending() == 0


def test_a_consumer_keeps_consuming_through_a_terminated_connection(
    config: Config, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blind the idle check, so that the operation meets the dead connection and is retried on a new one.
    monkeypatch.setattr(PostgresTransport, "_dropped", staticmethod(lambda conn: False))
    for i in range(20):
        dispatch("job", {"i": i}, config=config)
    seen: list[int] = []

    def handler(payload: dict[str, Any]) -> None:
        seen.append(payload["i"])
        if payload["i"] == 5:
            terminate(pg_server, str(config.store.url))

    stats = Consumer(
        open_transport(config),
        {"job": handler},
        ["async"],
        policy=config.queue,
        limits=Limits(time_limit=30, stop_when_empty=True),
    ).run(install_signal_handlers=False)
    assert sorted(set(seen)) == list(range(20))
    assert stats.failed == 0 and open_transport(config).pending() == 0


def test_leases_expire_on_the_servers_clock_not_the_hosts(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = open_transport(config)
    message_id = dispatch("job", {}, config=config)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # this host's clock is an hour behind
    assert [e.id for e in transport.lease("async", owner="slow-clock", limit=1, lease=30)] == [message_id]
    monkeypatch.setattr(time, "time", real)
    # Another host (the right time) must not see that lease as long expired.
    assert transport.lease("async", owner="other", limit=1, lease=30) == []
    stats = transport.stats()["async"]
    assert (stats.in_flight, stats.ready, stats.owners) == (1, 0, {"slow-clock": 1})


def test_a_stop_request_from_a_host_with_a_skewed_clock_stops_consumers_started_before_it(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = open_transport(config)
    started = time.time()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # the requesting host is an hour behind
    transport.request_stop()
    monkeypatch.setattr(time, "time", real)
    at = transport.stop_requested_at()
    assert at is not None and started - 1 <= at <= real() + 1  # on this host's clock: just now


def test_a_row_that_is_never_due_is_leased_alone_as_malformed(config: Config, pg_server: PgServer) -> None:
    transport = open_transport(config)
    good = dispatch("job", {}, config=config)
    database = str(config.store.url).rsplit("/", 1)[1]
    pg_server.admin(
        "INSERT INTO icc.messages (queue, name, payload, created_at, available_at) "
        "VALUES ('async', 'job', '{}', 0, 'NaN')",
        dbname=database,
    )
    (bad,) = transport.lease("async", owner="a", limit=10, lease=30)
    assert bad.malformed is not None and "never due" in bad.malformed
    assert [e.id for e in transport.lease("async", owner="a", limit=10, lease=30)] == [good]


def test_a_forked_child_never_uses_the_parents_connection(config: Config, pg_server: PgServer) -> None:
    parent = open_transport(config)
    dispatch("job", {}, config=config)
    database = str(config.store.url).rsplit("/", 1)[1]

    def connections() -> int:
        return int(pg_server.admin(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"))

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            # The parent's transport object, used in the child: it opens its own connection.
            before = connections()
            code = 0 if parent.forked and parent.pending() == 1 and connections() == before + 1 else 1
            parent.send("async", "job", "{}")
            parent.close()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent.pending() == 2  # its connection still works: the child neither used nor closed it
    assert parent.lease("async", owner="a", limit=10, lease=30) != []


def test_errors_are_one_line_queue_errors_without_the_password(tmp_path: Path, pg_server: PgServer) -> None:
    url = f"postgresql://icc:s3cret@127.0.0.1:{pg_server.port}/nosuchdb"
    config = Config(path=None, root=tmp_path, store=StoreConfig(url=url, host_id="t"))
    with pytest.raises(QueueError) as caught:
        PostgresTransport(config)
    text = str(caught.value)
    assert "s3cret" not in text and "\n" not in text and "nosuchdb" in text


def test_a_database_without_the_schema_names_the_command_to_run(tmp_path: Path, pg_url: str) -> None:
    config = Config(path=None, root=tmp_path, store=StoreConfig(url=pg_url, host_id="t"))
    with pytest.raises(Exception, match="icc db migrate"):
        PostgresTransport(config)


def test_dispatch_to_a_database_without_the_schema_raises_queue_error(tmp_path: Path, pg_url: str) -> None:
    # icc.dispatch documents QueueError: application code catching it must not miss a StateError.
    config = Config(path=None, root=tmp_path, store=StoreConfig(url=pg_url, host_id="t"))
    with pytest.raises(QueueError, match=r"has no icc schema yet; run `icc db migrate`"):
        dispatch("report.render", {"id": 1}, config=config)


def restart(pg_server: PgServer) -> None:
    """pg_ctl restart, its output (the new server's too) to the server's log, not to a pipe we would wait on."""
    log = pg_server.datadir.parent / "log"
    pg_ctl = [*pg_server.as_user, str(pg_server.bindir / "pg_ctl"), "-D", str(pg_server.datadir)]
    subprocess.run(
        [*pg_ctl, "-l", str(log), "-w", "-t", "60", "-m", "fast", "restart"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=90,
    )


def test_the_transport_carries_on_after_the_server_restarted(config: Config, pg_server: PgServer) -> None:
    transport = open_transport(config)
    first = dispatch("job", {"i": 1}, config=config)
    restart(pg_server)
    second = dispatch("job", {"i": 2}, config=config)
    assert [e.id for e in transport.lease("async", owner="a", limit=10, lease=30)] == [first, second]
    restart(pg_server)
    transport.ack([first, second], owner="a")
    assert transport.pending() == 0


def test_a_connection_on_a_descriptor_past_1024_is_kept(config: Config, pg_server: PgServer) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("cannot open 1,200 descriptors here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # an application with many files open
    database = str(config.store.url).rsplit("/", 1)[1]

    def backends() -> str:
        return pg_server.admin(f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}'")

    try:
        transport = PostgresTransport(config)
        transport.pending()
        before = backends()
        for i in range(3):
            transport.send("async", "job", f'{{"i": {i}}}')
        assert backends() == before  # the same connection throughout, not a new one per call
        transport.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_lease_whose_answer_was_lost_gives_its_batch_back_when_retried(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib
    from collections.abc import Iterator

    import psycopg

    transport = open_transport(config)
    ids = [dispatch("job", {"i": i}, config=config) for i in range(3)]
    real_tx = PostgresTransport._tx
    broke: list[int] = []

    @contextlib.contextmanager
    def losing_tx(self: PostgresTransport, conn: Any) -> Iterator[Any]:
        with real_tx(self, conn):
            yield conn
        if not broke:  # committed, then the connection dies before the answer arrives
            broke.append(1)
            conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(PostgresTransport, "_tx", losing_tx)
    batch = transport.lease("async", owner="a", limit=2, lease=30)
    assert broke == [1]
    assert [(e.id, e.attempts) for e in batch] == [(ids[0], 1), (ids[1], 1)]
    transport.ack([e.id for e in batch], owner="a")
    # Nothing stays held by "a" unknown to it: the lost try's batch came back, its attempts taken back.
    assert [(e.id, e.attempts) for e in transport.lease("async", owner="b", limit=10, lease=30)] == [
        (ids[2], 1)
    ]


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "with-a-message"])
def test_a_consumer_whose_server_stops_answering_exits_soon_after_its_time_limit(
    tmp_path: Path, pg_server: PgServer, pg_url: str, busy: bool
) -> None:
    # A frozen server (or a partition the kernel does not notice: the proxy's kernel acknowledges everything)
    # answers nothing, so no timeout of the server's and no TCP timeout fires: only the consumer's own guard.
    from projectkit import Project
    from proxykit import TcpProxy

    migrated(pg_url)
    proxy = TcpProxy(pg_server.port)
    try:
        project = Project(tmp_path / "proj", store_url=proxy.url(pg_url.rsplit("/", 1)[1]), host_id="h1")
        project.root.mkdir()
        project.write_config(extra='\n[icc.consumers]\nmode = "service"\n')
        project.write_plugin(
            """
            @icc.hookimpl
            def register_handlers(register):
                register("job.slow", lambda payload: time.sleep(0.5))
            """
        )
        if busy:  # frozen while it acknowledges a handled message, with the next one leased
            for n in range(20):
                dispatch(
                    "job.slow",
                    {"n": n},
                    config=Config(path=None, root=tmp_path, store=StoreConfig(url=pg_url)),
                )
        proc = project.popen("consume", "async", "--time-limit", "3", "--sleep", "0.2")
        try:
            project.wait_for(lambda: _consumer_polled(pg_server, pg_url), what="the consumer's first lease")
            proxy.blackhole()
            try:
                out, err = proc.communicate(timeout=60)  # before: still waiting after 600 s
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    "the consumer was still waiting for the frozen server 60 s later"
                ) from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        proxy.close()
    assert proc.returncode == 1, out + err
    assert "past the time limit of 3s; exiting without it" in err, err
    assert "the queue database did not answer" in out + err


def _consumer_polled(pg_server: PgServer, pg_url: str) -> bool:
    """The consumer is past its start-up (the schema check): it asked for stop requests, or leased."""
    database = pg_url.rsplit("/", 1)[1]
    found = pg_server.admin(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'icc % h1' "
        f"AND datname = '{database}' AND (query LIKE '%.control %' OR query LIKE '%.messages%' "
        "OR query = 'COMMIT' OR query LIKE 'SET statement_timeout%')"
    )
    return int(found) > 0


def test_a_consumers_connections_get_timeouts_that_fit_its_time_limit(config: Config) -> None:
    from icc.store.postgres.connection import timeouts

    assert timeouts(None) == (30_000, 10_000, 10)  # icc's defaults: dispatch, ticks, icc db
    assert timeouts(8) == (8_000, 8_000, 8)
    assert timeouts(0.2) == (1_000, 1_000, 2)  # libpq waits 2 s at least
    transport = PostgresTransport(config, limit=8)
    show = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
    assert transport._run(lambda conn: conn.execute(show).fetchone()) == ("8s", "8s")
    transport.limit_time(3)  # for the connections opened from now on
    transport._run(lambda conn: conn.close())
    assert transport._run(lambda conn: conn.execute(show).fetchone()) == ("3s", "3s")
