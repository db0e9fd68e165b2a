"""``[icc.consumers] notify``: LISTEN/NOTIFY as an opt-in wake-up of idle consumers on PostgreSQL, with polling
always the fallback. Real `icc consume` processes with a long ``--sleep`` against a throw-away server."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from icc.config import Config, ConsumersConfig, QueueConfig, StoreConfig, load_config
from icc.queue import open_transport
from icc.store.postgres.queues import channel
from pgkit import PgServer
from projectkit import Project, QueueProject
from queuekit import migrated

HANDLERS = """
import os
import icc


def record(payload):
    with open(os.path.join(os.environ["QTEST_DIR"], "handled"), "a") as fh:
        fh.write(f"{payload['i']}\\n")


@icc.hookimpl
def register_handlers(register):
    register("record", record)
"""


def project(root: Path, pg_url: str, *, notify: bool) -> QueueProject:
    root.mkdir(exist_ok=True)
    config = f"""
[icc]
state_dir = "state"
plugins = ["nhandlers"]

[icc.consumers]
mode = "service"
notify = {str(notify).lower()}
"""
    return QueueProject(root, config, HANDLERS, "nhandlers", store_url=pg_url, host_id="web-1")


def listeners(pg_url: str) -> list[int]:
    """The backends LISTENing for the queues of this database (icc's LISTEN connections)."""
    database = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name LIKE 'icc consume-listen%%' "
            "AND query LIKE 'LISTEN%%' AND pid <> pg_backend_pid() ORDER BY pid",
            (database,),
        ).fetchall()
    return [int(row[0]) for row in rows]


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@pytest.fixture
def consumer(tmp_path: Path, pg_url: str) -> Iterator[tuple[QueueProject, subprocess.Popen[str]]]:
    """An idle `icc consume async --sleep 30` with notify on, once it listens and has looked at the queue."""
    migrated(pg_url)
    host = project(tmp_path / "host", pg_url, notify=True)
    proc = host.popen("consume", "async", "--sleep", "30", "--time-limit", "120")
    try:
        wait_until(lambda: listeners(pg_url), 30, "the consumer's LISTEN connection")
        time.sleep(0.5)  # it leases once more after it starts listening, then waits
        yield host, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_with_notify_a_dispatch_wakes_an_idle_consumer_long_before_its_sleep_ends(
    consumer: tuple[QueueProject, subprocess.Popen[str]],
) -> None:
    host, proc = consumer
    for i in range(3):
        host.dispatch("record", {"i": i})
        wanted = [str(n) for n in range(i + 1)]
        # --sleep 30: only the notification can have it handled within 10 s.
        wait_until(lambda: host.marker_lines("handled") == wanted, 10, f"message {i}")  # noqa: B023
    assert proc.poll() is None


def test_sigterm_during_a_listen_wait_stops_the_consumer_promptly(
    consumer: tuple[QueueProject, subprocess.Popen[str]],
) -> None:
    _host, proc = consumer
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)  # --sleep 30: a wait that ignored the signal would take longer
    assert proc.returncode == 0, err
    assert "stopped: SIGTERM" in err + out


def test_a_killed_listen_connection_falls_back_to_polling_and_listens_again(
    consumer: tuple[QueueProject, subprocess.Popen[str]], pg_url: str, pg_server: PgServer
) -> None:
    host, proc = consumer
    (first,) = listeners(pg_url)
    pg_server.admin(f"SELECT pg_terminate_backend({first})")
    host.dispatch("record", {"i": 0})
    # Not lost: handled once the consumer listens again (every 5 s) or polls (30 s), whichever comes first.
    wait_until(
        lambda: host.marker_lines("handled") == ["0"], 45, "the message sent while the listener was down"
    )
    wait_until(lambda: listeners(pg_url) not in ([], [first]), 30, "a new LISTEN connection")
    time.sleep(0.5)
    host.dispatch("record", {"i": 1})
    wait_until(
        lambda: host.marker_lines("handled") == ["0", "1"], 10, "the message sent once it listens again"
    )
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    warnings = [line for line in err.splitlines() if "while listening for new messages" in line]
    assert len(warnings) == 1, err
    assert "Traceback" not in err


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


def notifications(listener: psycopg.Connection[object]) -> list[str]:
    return [n.payload for n in listener.notifies(timeout=0.5)]


@pytest.mark.parametrize("notify", [False, True])
def test_what_notifies_a_listener_with_notify_on_and_nothing_with_it_off(
    config: Config, pg_url: str, notify: bool
) -> None:
    config = Config(
        path=None,
        root=config.root,
        state_dir=config.state_dir,
        store=config.store,
        queues=config.queues,
        consumers=ConsumersConfig(notify=notify),
    )
    transport = open_transport(config)
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute(f'LISTEN "{channel("icc")}"')
        transport.send("async", "job", "{}")
        assert notifications(listener) == (["async"] if notify else [])
        transport.send("mail", "job", "{}", delay=60)  # due later: polling finds it, nobody is woken
        assert notifications(listener) == []
        (leased,) = transport.lease("async", owner="a", limit=5, lease=30)
        transport.release([leased.id], owner="a")  # available again at once
        assert notifications(listener) == (["async"] if notify else [])
        (leased,) = transport.lease("async", owner="a", limit=5, lease=30)
        transport.fail(leased, "broken", owner="a")
        assert transport.failed_retry() == [leased.id]
        assert notifications(listener) == (["async"] if notify else [])
    transport.close()


def test_the_channel_is_the_schemas_and_fits_postgresqls_names() -> None:
    assert channel("icc") == "icc_icc_queue"
    long = channel("s" * 63)
    assert len(long) <= 63 and long.startswith("icc_") and long != channel("t" * 63)


# --- SQLite: notify = true is a configuration error ------------------------------------------------------------


def test_notify_without_a_postgresql_store_is_a_one_line_config_error(project: Project) -> None:
    project.config.write_text('[icc]\nstate_dir = "state"\n[icc.consumers]\nnotify = true\n')
    for argv in (("consume", "async", "--stop-when-empty"), ("run",), ("status",)):
        proc = project.icc(*argv)
        assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "notify = true in [icc.consumers] needs a PostgreSQL store" in lines[0]
        assert "[icc.store] url" in lines[0]


def test_notify_from_the_environment_is_read_and_checked(tmp_path: Path) -> None:
    (tmp_path / "icc.toml").write_text("[icc]\n")
    assert load_config(tmp_path / "icc.toml", environ={}).consumers.notify is False
    url = "postgresql://icc@db.example/icc"
    on = load_config(tmp_path / "icc.toml", environ={"ICC_CONSUMERS_NOTIFY": "1", "ICC_STORE_URL": url})
    assert on.consumers.notify is True
    with pytest.raises(Exception, match="environment variable ICC_CONSUMERS_NOTIFY: notify = true"):
        load_config(tmp_path / "icc.toml", environ={"ICC_CONSUMERS_NOTIFY": "true"})
