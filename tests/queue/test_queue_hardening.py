"""Queues and consumers under hostile handlers, rows and input: nothing may stop consuming silently.

Real `icc consume` processes against real SQLite files; a few checks run the consumer in-process.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from icc.config import Config, QueueConfig, load_config
from icc.errors import QueueError
from icc.queue import Consumer, Limits, dispatch, open_transport
from projectkit import QueueProject
from queuekit import MakeConfig

HANDLERS = """
import os, sys, time
import icc

OUT = os.environ["QTEST_DIR"]


def _log(name, text):
    fd = os.open(os.path.join(OUT, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (text + "\\n").encode())
    finally:
        os.close(fd)


def record(payload):
    _log("handled", str(payload["i"]))


def hang(payload):
    _log("started", str(payload.get("i")))
    if payload.get("hang"):
        while True:
            time.sleep(1)


def hang_catching_exceptions(payload):
    _log("started", "x")
    while True:
        try:
            time.sleep(1)
        except Exception:
            pass


def hang_catching_everything(payload):
    _log("started", "x")
    while True:
        try:
            time.sleep(1)
        except BaseException:
            _log("swallowed", "x")


def slow(payload):  # runs until the test creates OUT/go (at most 60 s)
    _log("started", str(payload["i"]))
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(OUT, "go")) and time.monotonic() < deadline:
        time.sleep(0.05)


def quits(payload):
    sys.exit(3)


@icc.hookimpl
def register_handlers(register):
    for handler in (record, hang, hang_catching_exceptions, hang_catching_everything, slow, quits):
        register(handler.__name__, handler)
    if os.environ.get("QTEST_ELSEWHERE"):
        register("elsewhere", record, queue="nowhere")
"""

CONFIG = """
[icc]
state_dir = "state"
plugins = ["hhandlers"]
grace = 6

[icc.consumers]
mode = "service"

[icc.queues.async]
retries = 1
delay = 0
lease = 30
"""


class HardeningProject(QueueProject):
    def __init__(self, root: Path) -> None:
        super().__init__(root, CONFIG, HANDLERS, "hhandlers")

    def insert_row(self, payload: object, available_at: object = None, name: str = "record") -> None:
        now = time.time()
        db = sqlite3.connect(self.db_path)
        db.execute(
            "INSERT INTO messages (queue, name, payload, created_at, available_at) VALUES ('async', ?, ?, ?, ?)",
            (name, payload, now, now if available_at is None else available_at),
        )
        db.commit()
        db.close()


@pytest.fixture
def hp(tmp_path: Path) -> HardeningProject:
    root = tmp_path / "proj"
    root.mkdir()
    return HardeningProject(root)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


# --- a hung handler (item 2) ---------------------------------------------------------------------


def test_a_handler_still_running_at_the_time_limit_is_interrupted_and_retried(hp: HardeningProject) -> None:
    hung = hp.dispatch("hang", {"hang": True})
    later = hp.dispatch("record", {"i": 1})
    proc = hp.icc("consume", "async", "--time-limit", "2", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "time limit of 2s reached" in proc.stderr
    assert "HandlerInterrupted" in proc.stderr
    rows = dict((r[0], r[1:]) for r in hp.query("SELECT id, attempts, lease_owner FROM messages"))
    assert rows[hung] == (1, None)  # back for a retry, its attempt counted
    assert rows[later] == (0, None)  # never started: released, no attempt counted
    (errors,) = hp.query("SELECT errors FROM messages WHERE id = ?", (hung,))[0]
    assert "still running at the consumer's time limit of 2s" in json.loads(errors)[0]["error"]


def test_a_handler_catching_exceptions_in_a_sleep_loop_is_still_interrupted(hp: HardeningProject) -> None:
    hp.dispatch("hang_catching_exceptions", {})
    proc = hp.icc("consume", "async", "--time-limit", "1", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert hp.query("SELECT attempts, lease_owner FROM messages") == [(1, None)]


def test_a_handler_that_swallows_the_interruption_is_abandoned_then_failed(hp: HardeningProject) -> None:
    message_id = hp.dispatch("hang_catching_everything", {})
    first = hp.icc("consume", "async", "--time-limit", "1", timeout=60)
    assert first.returncode == 1, (first.stdout, first.stderr)
    assert "ignored its interruption" in first.stderr
    assert "abandoned the handler" in first.stderr  # the summary is a log line
    assert hp.marker_lines("swallowed")  # it was interrupted, and swallowed it
    assert hp.query("SELECT attempts, lease_owner FROM messages") == [(1, None)]
    second = hp.icc("consume", "async", "--time-limit", "1", timeout=60)
    assert second.returncode == 1, second.stderr
    shown = json.loads(hp.icc("failed", "show", str(message_id), "--json").stdout)
    assert shown["attempts"] == 2  # retries = 1
    assert shown["reason"].startswith("failed 2 times; last error: HandlerInterrupted")
    assert "did not stop within" in shown["errors"][-1]["error"]


def test_a_long_handler_gives_back_the_rest_of_its_batch_and_sigterm_interrupts_it_after_half_the_grace(
    hp: HardeningProject,
) -> None:
    for i in range(30):
        hp.dispatch("hang", {"i": i})
    hp.dispatch("hang", {"i": 30, "hang": True})
    for i in range(31, 60):
        hp.dispatch("hang", {"i": i})
    proc = hp.popen("consume", "async", "--time-limit", "60")
    try:
        hp.wait_for(lambda: "30" in hp.marker_lines("started"), what="the hanging handler")
        # Only the hung message stays leased: the others are free for other consumers.
        hp.wait_for(
            lambda: hp.query("SELECT count(*) FROM messages WHERE lease_owner IS NOT NULL") == [(1,)],
            what="the rest of the batch released",
        )
        proc.send_signal(signal.SIGTERM)  # it may finish within half the grace (3 s), then it is interrupted
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped: SIGTERM" in err
    assert "HandlerInterrupted: still running 3s after the consumer received SIGTERM" in err
    hung = hp.query("SELECT attempts, lease_owner FROM messages WHERE payload LIKE '%hang%'")
    assert hung == [(1, None)]


def test_the_consumer_cron_job_has_a_timeout_past_the_time_limit_and_grace(tmp_path: Path) -> None:
    from icc.plugins import load_plugins

    config_file = tmp_path / "icc.toml"
    config_file.write_text(
        '[icc]\nstate_dir = "state"\ngrace = 7\n[icc.consumers]\nmode = "cron"\ntime_limit = 20\n'
    )
    host = load_plugins(load_config(config_file), environ={"ICC_DISABLE_PLUGIN_AUTOLOAD": "1"})
    job = host.collect_jobs()["consume:mail"]
    assert job.schedule.timeout_seconds == 20 + 7 + 5  # type: ignore[attr-defined]


# --- batches (item 8) ----------------------------------------------------------------------------


def test_the_first_lease_of_a_consumer_takes_one_message(hp: HardeningProject) -> None:
    for i in range(5):
        hp.dispatch("slow", {"i": i})
    proc = hp.popen("consume", "async", "--time-limit", "30")
    try:
        # The first handler runs until the test says go: a fixed sleep would let a slow test see the next batch.
        hp.wait_for(lambda: hp.marker_lines("started") == ["0"], what="the first handler")
        # The others wait for a second consumer (or this one's next, measured, batch).
        assert hp.query("SELECT count(*) FROM messages WHERE lease_owner IS NOT NULL") == [(1,)]
        proc.send_signal(signal.SIGTERM)
        (hp.root / "go").touch()
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0


def test_the_batch_grows_with_fast_handlers(make_config: MakeConfig) -> None:
    config = make_config()
    transport = open_transport(config)
    for i in range(600):
        dispatch("fast", {"i": i}, config=config)
    sizes: list[int] = []
    lease = transport.lease

    def counting_lease(*args: Any, **kwargs: Any) -> Any:
        batch = lease(*args, **kwargs)
        sizes.append(len(batch))
        return batch

    transport.lease = counting_lease  # type: ignore[method-assign]
    consumer = Consumer(
        transport,
        {"fast": lambda payload: None},
        ["async"],
        policy=config.queue,
        limits=Limits(time_limit=30, stop_when_empty=True),
    )
    try:
        assert consumer.run(install_signal_handlers=False).handled == 600
    finally:
        del transport.lease  # type: ignore[method-assign]
    assert sizes[:3] == [1, 2, 4]
    assert max(sizes) == 200


# --- poison messages and handlers (item 14) -----------------------------------------------------


def test_malformed_rows_go_to_failed_with_a_reason(hp: HardeningProject) -> None:
    hp.dispatch("record", {"i": 0})
    hp.insert_row('{"a":' * 100_000 + "1" + "}" * 100_000)  # nests deeper than the decoder's stack
    hp.insert_row('{"i": 1}', available_at="soon")  # never due, never reported before
    db = sqlite3.connect(hp.db_path)
    now = time.time()
    db.execute(  # TEXT that is not UTF-8
        "INSERT INTO messages (queue, name, payload, created_at, available_at) "
        "VALUES ('async', 'record', CAST(x'7b22ff223a317d' AS TEXT), ?, ?)",
        (now, now),
    )
    db.commit()
    db.close()
    hp.dispatch("record", {"i": 2})
    proc = hp.icc("consume", "async", "--stop-when-empty", "--time-limit", "20")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(hp.marker_lines("handled")) == ["0", "2"]
    reasons = sorted(r for (r,) in hp.query("SELECT reason FROM failed"))
    assert len(reasons) == 3
    assert reasons[0].startswith("malformed payload") and "nests too deeply" in " ".join(reasons)
    assert any(r.startswith("malformed row: available_at 'soon' is not a number") for r in reasons)
    assert hp.query("SELECT count(*) FROM messages") == [(0,)]


def test_a_handler_calling_sys_exit_fails_its_message_and_the_consumer_goes_on(hp: HardeningProject) -> None:
    message_id = hp.dispatch("quits", {})
    hp.dispatch("record", {"i": 1})
    proc = hp.icc("consume", "async", "--stop-when-empty", "--time-limit", "20")
    assert proc.returncode == 0, proc.stderr
    assert "SystemExit: 3" in proc.stderr
    assert hp.marker_lines("handled") == ["1"]
    shown = json.loads(hp.icc("failed", "show", str(message_id), "--json").stdout)
    assert shown["reason"] == "failed 2 times; last error: SystemExit: 3"


@pytest.mark.parametrize(
    ("name", "payload"), [("job", {"text": "bad \ud800 text"}), ("job\udcff", {}), ("job", {"\ud800": 1})]
)
def test_dispatch_refuses_a_lone_surrogate_with_a_queue_error(
    make_config: MakeConfig, name: str, payload: Any
) -> None:
    config = make_config()
    with pytest.raises(QueueError, match="not valid Unicode"):
        dispatch(name, payload, config=config)
    assert open_transport(config).pending() == 0


@pytest.mark.parametrize(
    ("option", "value"), [("--time-limit", "nan"), ("--time-limit", "inf"), ("--sleep", "nan")]
)
def test_consume_refuses_a_time_that_is_not_finite(hp: HardeningProject, option: str, value: str) -> None:
    line = one_error_line(hp.icc("consume", "async", "--stop-when-empty", option, value))
    assert option in line and "finite" in line


def test_an_emptied_queue_database_is_reported_not_recreated(hp: HardeningProject) -> None:
    hp.dispatch("record", {"i": 1})
    hp.db_path.write_bytes(b"")
    for args in (("failed", "list"), ("consume", "async", "--stop-when-empty")):
        line = one_error_line(hp.icc(*args))
        assert "is empty (0 bytes)" in line and str(hp.db_path) in line
    assert hp.db_path.stat().st_size == 0


# --- a broken database and out-of-range numbers (item 12) ---------------------------------------


def test_a_queue_database_that_is_not_a_database_is_one_error_line(hp: HardeningProject) -> None:
    hp.state_dir.mkdir(mode=0o700)
    garbage = b"this is not a database\n" * 200
    hp.db_path.write_bytes(garbage)
    hp.db_path.chmod(0o600)
    for args in (("failed", "list"), ("consume", "async", "--stop-when-empty"), ("failed", "show", "1")):
        line = one_error_line(hp.icc(*args))
        assert str(hp.db_path) in line and "cannot be read" in line
    code = "import icc\ntry:\n    icc.dispatch('record', {'i': 1})\nexcept icc.QueueError as exc:\n    print('QueueError', exc)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=hp.root,
        env=hp.environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("QueueError"), proc.stderr
    assert hp.db_path.read_bytes() == garbage


def test_ids_and_limits_past_64_bits_are_refused_in_one_line(hp: HardeningProject) -> None:
    huge = "99999999999999999999"
    hp.dispatch("record", {"i": 1})
    for verb in ("show", "retry", "remove"):
        line = one_error_line(hp.icc("failed", verb, huge))
        assert f"no failed message with id {huge}" in line
    proc = hp.icc("consume", "async", "--stop-when-empty", "--limit", huge, "--failure-limit", huge)
    assert proc.returncode == 0, proc.stderr
    assert hp.marker_lines("handled") == ["1"]


# --- reasons and registrations (item 20) ----------------------------------------------------------


def test_the_failure_reason_does_not_count_an_expired_lease_as_a_handler_run(make_config: MakeConfig) -> None:
    config = make_config(**{"async": QueueConfig(retries=1, delay=0, lease=30)})
    transport = open_transport(config)
    first = dispatch("boom", {}, config=config)
    dispatch("boom", {}, config=config)
    assert len(transport.lease("async", owner="dead", limit=2, lease=0.05)) == 2  # a consumer that died
    time.sleep(0.1)

    def boom(payload: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    consumer = Consumer(
        transport,
        {"boom": boom},
        ["async"],
        policy=config.queue,
        limits=Limits(time_limit=10, stop_when_empty=True),
    )
    consumer.run(install_signal_handlers=False)
    failed = transport.failed_get(first)
    assert failed is not None
    assert failed.attempts == 2
    assert failed.reason == "failed 1 time (and 1 lease expired); last error: RuntimeError: boom"


def test_a_handler_registered_for_an_unknown_queue_is_reported_naming_its_plugin(
    hp: HardeningProject,
) -> None:
    hp.env["QTEST_ELSEWHERE"] = "1"
    proc = hp.icc("consume", "async", "--stop-when-empty")
    assert proc.returncode == 0, proc.stderr
    assert (
        "warning: plugin hhandlers registers handler 'elsewhere' for queue 'nowhere', which is not configured"
        in proc.stderr
    )


def test_scan_warns_when_a_hung_cron_consumer_could_outlive_its_minute(tmp_path: Path) -> None:
    import os

    def scan(time_limit: int) -> subprocess.CompletedProcess[str]:
        (tmp_path / "icc.toml").write_text(
            f'[icc]\nstate_dir = "state"\ngrace = 10\n[icc.consumers]\nmode = "cron"\ntime_limit = {time_limit}\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")}
        env["ICC_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        return subprocess.run(
            [sys.executable, "-m", "icc", "--config", str(tmp_path / "icc.toml"), "scan"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    quiet = scan(20)
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr
    loud = scan(40)
    assert loud.returncode == 0, loud.stderr
    assert "warning: a hung consumer may run 65s" in loud.stderr


def test_handler_errors_that_are_hard_to_record_fail_the_message_not_the_consumer(
    make_config: MakeConfig,
) -> None:
    config = make_config(**{"async": QueueConfig(retries=0, delay=0, lease=30)})

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    class Custom(BaseException):
        pass

    def surrogate(payload: dict[str, Any]) -> None:
        raise FileNotFoundError("no such file: 'caf\udce9.txt'")

    def unprintable(payload: dict[str, Any]) -> None:
        raise Unprintable

    def custom(payload: dict[str, Any]) -> None:
        raise Custom("odd")

    handlers = {"surrogate": surrogate, "unprintable": unprintable, "custom": custom}
    ids = {name: dispatch(name, {}, config=config) for name in handlers}
    transport = open_transport(config)
    consumer = Consumer(
        transport,
        handlers,
        ["async"],
        policy=config.queue,
        limits=Limits(time_limit=20, stop_when_empty=True),
    )
    assert consumer.run(install_signal_handlers=False).failed == 3
    reasons = {name: transport.failed_get(i).reason for name, i in ids.items()}  # type: ignore[union-attr]
    assert (
        reasons["surrogate"] == "failed 1 time; last error: FileNotFoundError: no such file: 'caf\\udce9.txt'"
    )
    assert "str() of the exception failed" in reasons["unprintable"]
    assert reasons["custom"] == "failed 1 time; last error: Custom: odd"


def test_sigterm_interrupts_a_hung_handler_of_a_consumer_without_a_time_limit(tmp_path: Path) -> None:
    import os
    import threading

    config = Config(path=None, root=tmp_path, state_dir=Path("state"))
    message_id = dispatch("hang", {}, config=config)
    started = threading.Event()

    def hang(payload: dict[str, Any]) -> None:
        started.set()
        while True:
            time.sleep(0.05)

    def terminate() -> None:
        started.wait(20)
        os.kill(os.getpid(), signal.SIGTERM)

    consumer = Consumer(
        open_transport(config), {"hang": hang}, ["async"], policy=config.queue, limits=Limits(grace=0.4)
    )
    threading.Thread(target=terminate, daemon=True).start()
    stats = consumer.run()  # in the main thread: it installs its signal handlers
    assert (stats.retried, stats.stop_reason) == (1, "SIGTERM")
    db = sqlite3.connect(tmp_path / "state" / "queue.sqlite3")
    try:
        (row,) = db.execute("SELECT id, attempts, lease_owner, errors FROM messages").fetchall()
    finally:
        db.close()
    assert row[:3] == (message_id, 1, None)  # back for a retry, its attempt counted
    assert "still running 0.2s after the consumer received SIGTERM" in json.loads(row[3])[0]["error"]
