"""Notifications through apprise (icc.notify.notifications): real ticks, the real ``mail`` queue, a real
``icc consume`` and apprise's ``json://`` against a real HTTP server on 127.0.0.1 that records the payloads."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from icc.errors import ScheduleError
from icc.notify.notifications import decide
from icc.schedule import Schedule
from pingkit import PingServer
from projectkit import Project, at

FAILING = """
@icc.hookimpl
def schedule(scheduler):
    def boom():
        print("step 1")
        print("step 2: about to fail")
        raise RuntimeError("the disk is full")
    scheduler.add(boom, name="boom").every_minute()
"""


def notify_config(url: str, extra: str = "") -> str:
    return f'\n[icc.notify]\nurls = ["{url}"]\n{extra}'


def json_url(server: PingServer, path: str = "hook") -> str:
    return server.url.replace("http://", "json://") + f"/{path}"


def queued(project: Project, name: str = "notify.send") -> int:
    """Messages named ``name`` waiting on the mail queue (any state but failed)."""
    from icc.config import load_config
    from icc.store import open_transport

    transport = open_transport(load_config(project.config))
    stats = transport.stats().get("mail")
    return 0 if stats is None else stats.messages


def consume(project: Project) -> str:
    proc = project.icc("consume", "mail", "--stop-when-empty", "--time-limit", "60", check=True)
    return proc.stdout + proc.stderr


def payloads(server: PingServer) -> list[dict[str, object]]:
    return [json.loads(hit.body) for hit in server.hits if hit.method == "POST"]


@pytest.mark.both_stores
def test_a_failed_run_notifies_the_configured_url_with_job_outcome_slot_error_output_and_host(
    project: Project, ping_server: PingServer
) -> None:
    project.write_config(notify_config(json_url(ping_server)))
    project.write_plugin(FAILING)
    project.icc("scan", check=True)
    project.icc("run", "--at", at(1))
    project.wait_for(lambda: queued(project) == 1, what="the notification queued")
    assert ping_server.hits == []  # queued, not sent by the run
    consume(project)
    [payload] = payloads(ping_server)
    assert payload["type"] == "failure"
    assert payload["title"] == f"[icc] boom failed on {socket.gethostname()}"
    message = str(payload["message"])
    assert "job: boom" in message
    assert "outcome: failed" in message
    assert f"slot: {at(1)[:16]}" in message.replace(" ", " ")  # the slot, as an ISO time (UTC)
    assert "error: RuntimeError: the disk is full" in message
    assert "step 2: about to fail" in message  # the output's tail
    assert f"host: {socket.gethostname()}" in message
    evidence = os.environ.get("NOTIFY_EVIDENCE")  # the session note's material: the payload as received
    if evidence:
        with open(evidence, "a") as out:
            out.write(f"```json\n{json.dumps(payload, indent=2)}\n```\n\n")


@pytest.mark.both_stores
def test_notifications_are_flood_limited_first_then_counted_then_recovered(
    project: Project, ping_server: PingServer
) -> None:
    project.write_config(notify_config(json_url(ping_server)))
    project.write_plugin(
        """
        @icc.hookimpl
        def schedule(scheduler):
            def flaky():
                marker = os.path.join(os.environ["MARKER_DIR"], "ok")
                if not os.path.exists(marker):
                    raise RuntimeError("not yet")
            scheduler.add(flaky, name="flaky").every_minute()
        """
    )
    project.icc("scan", check=True)
    for minute in (1, 2, 3):
        project.icc("run", "--at", at(minute))
    project.wait_for(
        lambda: (
            len(project.runs("flaky")) == 3 and all(r["outcome"] == "failed" for r in project.runs("flaky"))
        ),
        what="three failures",
    )
    (project.root / "ok").write_text("")
    project.icc("run", "--at", at(4))
    project.wait_for(lambda: queued(project) == 2, what="first + recovered queued")
    consume(project)
    titles = [str(p["title"]) for p in payloads(ping_server)]
    host = socket.gethostname()
    assert titles == [f"[icc] flaky failed on {host}", f"[icc] flaky recovered on {host} after 3 failures"]
    assert [p["type"] for p in payloads(ping_server)] == ["failure", "success"]


@pytest.mark.both_stores
def test_failures_within_the_interval_are_counted_and_sent_with_the_next_one_after_it(
    project: Project, ping_server: PingServer
) -> None:
    project.write_config(notify_config(json_url(ping_server), "interval = 10\n"))
    project.write_plugin(
        """
        @icc.hookimpl
        def schedule(scheduler):
            def flaky():
                if not os.path.exists(os.path.join(os.environ["MARKER_DIR"], "ok")):
                    raise RuntimeError("not yet")
            scheduler.add(flaky, name="flaky").every_minute()
        """
    )
    project.icc("scan", check=True)
    project.icc("run", "--at", at(1))
    project.icc("run", "--at", at(2))
    first, second = project.runs("flaky")
    assert second["ended_at"] - first["ended_at"] < 10, "the second failure must come within the interval"
    project.wait_for(lambda: time.time() > first["ended_at"] + 10.1, what="the interval to pass")
    project.icc("run", "--at", at(3))  # the first failure after the interval: sent with the count
    (project.root / "ok").write_text("")
    project.icc("run", "--at", at(4))
    assert [r["outcome"] for r in project.runs("flaky")] == ["failed"] * 3 + ["succeeded"]
    project.wait_for(lambda: queued(project) == 3, what="first, repeat and recovered queued")
    consume(project)
    host = socket.gethostname()
    sent = payloads(ping_server)
    assert [str(p["title"]) for p in sent] == [
        f"[icc] flaky failed on {host}",
        f"[icc] flaky failed on {host} (2 failures since the last notification)",
        f"[icc] flaky recovered on {host} after 3 failures",
    ]
    assert "failures: 2" in str(sent[1]["message"])


@pytest.mark.both_stores
def test_a_job_notify_on_failure_url_is_notified_without_a_configured_one(
    project: Project, ping_server: PingServer
) -> None:
    url = json_url(ping_server, "job-hook")
    project.write_plugin(FAILING.replace(".every_minute()", f".every_minute().notify_on_failure({url!r})"))
    project.icc("scan", check=True)
    project.icc("run", "--at", at(1))
    project.wait_for(lambda: queued(project) == 1, what="the notification queued")
    consume(project)
    assert [h.path for h in ping_server.hits] == ["/job-hook"]


@pytest.mark.both_stores
def test_notify_urls_from_the_environment_are_notified_like_configured_ones(
    project: Project, ping_server: PingServer
) -> None:
    project.env["ICC_NOTIFY_URLS"] = f"{json_url(ping_server, 'one')}, {json_url(ping_server, 'two')}"
    project.write_plugin(FAILING)
    project.icc("scan", check=True)
    project.icc("run", "--at", at(1))
    project.wait_for(lambda: queued(project) == 2, what="one notification per URL queued")
    consume(project)
    assert sorted(h.path for h in ping_server.hits) == ["/one", "/two"]
    assert {str(p["title"]) for p in payloads(ping_server)} == {
        f"[icc] boom failed on {socket.gethostname()}"
    }


def attempts(project: Project) -> list[int]:
    """The delivery attempts of each message waiting on the mail queue (counted when a consumer leases it)."""
    sql = "SELECT attempts FROM messages WHERE queue = 'mail' ORDER BY id"
    if project.store_url is not None:
        import psycopg

        with psycopg.connect(project.store_url, options="-c search_path=icc", autocommit=True) as conn:
            return [int(row[0]) for row in conn.execute(sql).fetchall()]
    import sqlite3

    db = sqlite3.connect(project.state_dir / "queue.sqlite3")
    try:
        return [int(row[0]) for row in db.execute(sql).fetchall()]
    finally:
        db.close()


@pytest.mark.both_stores
def test_a_notifier_that_is_down_never_delays_the_run_and_is_retried_later(
    project: Project, ping_server: PingServer
) -> None:
    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        down = probe.getsockname()[1]
    project.write_config(
        notify_config(f"json://127.0.0.1:{down}/hook", "\n[icc.queues.mail]\ndelay = 0.5\nmultiplier = 1\n")
    )
    project.write_plugin(FAILING)
    project.icc("scan", check=True)
    project.icc("run", "--at", at(1))
    # The tick is over and its run recorded before anything tried to reach the notifier: the message waits,
    # never leased, so no send was attempted on the tick's time.
    assert project.runs("boom")[-1]["outcome"] == "failed"
    project.wait_for(lambda: queued(project) == 1, what="the notification queued")
    assert attempts(project) == [0]
    out = consume(project)
    assert "not delivered" in out
    assert queued(project) == 1  # still there, retried later: at least once
    assert attempts(project) == [1]
    # The notifier comes back on its port: the next consumer delivers the message, once.
    hits: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", down), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        time.sleep(0.6)  # the mail queue's retry delay here (0.5 s): the message is leasable again
        consume(project)
    finally:
        server.shutdown()
        server.server_close()
    assert [h["title"] for h in hits] == [f"[icc] boom failed on {socket.gethostname()}"]
    assert queued(project) == 0


def test_notify_on_failure_refuses_a_url_that_is_not_one_with_one_line() -> None:
    with pytest.raises(
        ScheduleError, match=r"^notify_on_failure\('\*\*\*'\) is not valid: give an apprise URL"
    ):
        Schedule().notify_on_failure("hooks.example.org/icc")
    with pytest.raises(ScheduleError, match="needs at least one URL"):
        Schedule().notify_on_failure()
    schedule = Schedule().notify_on_failure("json://127.0.0.1/x", "slack://T000/B000/XXXX")
    rebuilt = Schedule.from_definition(schedule.definition())
    assert rebuilt.notifications.notify_on_failure == ("json://127.0.0.1/x", "slack://T000/B000/XXXX")


def test_scan_refuses_a_notify_on_failure_url_apprise_does_not_know(project: Project) -> None:
    project.write_plugin(
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["true"], name="ok").every_minute().notify_on_failure("nosuchservice://x/y")
        """
    )
    proc = project.icc("scan")
    assert proc.returncode != 0
    assert "nosuchservice://x/***" in proc.stderr or "nosuchservice://x/***" in proc.stdout
    assert "is not one apprise knows" in proc.stderr + proc.stdout


def test_scan_refuses_a_configured_url_apprise_does_not_know(project: Project) -> None:
    project.write_config(notify_config("nosuchservice://hooks.example.org/SECRET"))
    project.write_plugin(FAILING)
    proc = project.icc("scan")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert (
        "[icc.notify] urls: notification URL nosuchservice://hooks.example.org/*** is not one apprise knows"
        in line
    )
    assert "SECRET" not in proc.stderr


def test_a_configured_url_without_apprise_is_a_one_line_config_error(
    project: Project, tmp_path: Path
) -> None:
    blocker = tmp_path / "noapprise"
    blocker.mkdir()
    # apprise is found by no finder, as when it is not installed
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoApprise:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'apprise':\n"
        "            raise ModuleNotFoundError('no apprise')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NoApprise())\n"
    )
    project.write_config(notify_config("json://127.0.0.1:9/hook"))
    project.env["PYTHONPATH"] = str(blocker)
    proc = project.icc("scan")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "notification URLs need apprise" in lines[0]
    assert "pip install 'icc-runner[notify]'" in lines[0]


def test_flood_control_rule_counts_after_the_first_until_the_interval() -> None:
    first = decide(None, "failed", 0.0, 3600)
    assert first.kind == "first"
    second = decide(first.state, "timed_out", 60.0, 3600)
    assert second.kind is None and second.unsent == 1
    later = decide(second.state, "abandoned", 3700.0, 3600)
    assert later.kind == "repeat" and later.unsent == 2 and later.total == 3
    recovered = decide(later.state, "succeeded", 3800.0, 3600)
    assert recovered.kind == "recovered" and recovered.state is None


def test_two_hosts_on_a_shared_store_notify_a_failing_job_once_and_share_its_flood_control(
    tmp_path: Path, pg_url: str, ping_server: PingServer
) -> None:
    from conftest import migrated_url

    url = migrated_url(pg_url)
    shared = tmp_path / "shared"
    shared.mkdir()
    hosts = []
    for name in ("host-a", "host-b"):
        host = Project(tmp_path / name, store_url=url, host_id=name, env={"SHARED_DIR": str(shared)})
        host.root.mkdir()
        host.write_config(notify_config(json_url(ping_server)))
        host.write_plugin(
            """
            @icc.hookimpl
            def schedule(scheduler):
                def flaky():
                    if not os.path.exists(os.path.join(os.environ["SHARED_DIR"], "ok")):
                        raise RuntimeError("not yet")
                scheduler.add(flaky, name="flaky").every_minute()
            """
        )
        hosts.append(host)
    hosts[0].icc("scan", check=True)

    def tick_both(minute: int) -> None:
        ticks = [host.popen("run", "--at", at(minute)) for host in hosts]  # the same minute on both hosts
        for tick in ticks:
            tick.communicate(timeout=120)

    tick_both(1)
    tick_both(2)
    assert [r["outcome"] for r in hosts[0].runs("flaky")] == ["failed", "failed"]  # one run a minute
    assert queued(hosts[0]) == queued(hosts[1]) == 1  # the first failure; the second only counted
    (shared / "ok").write_text("")
    tick_both(3)
    assert [r["outcome"] for r in hosts[1].runs("flaky")] == ["failed", "failed", "succeeded"]
    assert queued(hosts[0]) == 2  # and "recovered"
    consumers = [
        host.popen("consume", "mail", "--stop-when-empty", "--time-limit", "60") for host in hosts
    ]  # both hosts' consumers on the one queue
    for consumer in consumers:
        out, err = consumer.communicate(timeout=120)
        assert consumer.returncode == 0, out + err
    # Two consumers on one queue send in parallel: the order the endpoint receives them in is not fixed.
    titles = sorted(str(p["title"]) for p in payloads(ping_server))
    assert len(titles) == 2, titles  # each sent once, by one of the hosts
    assert titles[0].startswith("[icc] flaky failed on "), titles
    assert titles[1].startswith("[icc] flaky recovered on ") and titles[1].endswith(" after 2 failures"), (
        titles
    )
    assert queued(hosts[0]) == 0
