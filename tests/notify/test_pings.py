"""Heartbeat pings (icc.notify.pings, a built-in plugin) against a real HTTP server on 127.0.0.1.

The hooks are driven through a real plugin host (``load_plugins``) with real jobs, run contexts and results;
``icc status JOB`` runs as a real process to show a recorded failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from icc.config import Config, MonitorConfig, load_config
from icc.errors import ConfigError, ScheduleError
from icc.jobs import Job, RunContext, RunResult
from icc.plugins import PluginHost, load_plugins
from icc.schedule import Schedule
from icc.store.sqlite.state import SQLiteStateStore
from icc.urls import redact
from pingkit import PingServer
from projectkit import Project, at

KEY = "0f3c9a1e-5b7d-4e2a-9c8b-1d2e3f4a5b6c"  # a ping key: never printed in full


def host_for(tmp_path: Path, ping_url: str | None, timeout: float = 5.0) -> PluginHost:
    config = Config(
        path=None, root=tmp_path, state_dir=Path("state"), monitor=MonitorConfig(ping_url, timeout)
    )
    SQLiteStateStore(config.state_dir).close()  # the store failures are recorded in
    return load_plugins(config, environ={"ICC_PLUGINS": ""})  # icc's built-ins only


def job(name: str, schedule: Schedule | None = None) -> Job:
    return Job(name, lambda: None, schedule or Schedule())


def context(name: str) -> RunContext:
    return RunContext(name, 1, datetime(2026, 11, 22, 10, 0, tzinfo=UTC), "scheduled", "production")


def run_once(host: PluginHost, the_job: Job, result: RunResult) -> None:
    ctx = context(the_job.name)
    host.call_before_run(the_job, ctx)
    host.call_after_run(the_job, ctx, result)


def ping_meta(tmp_path: Path, name: str) -> dict[str, object] | None:
    store = SQLiteStateStore(tmp_path / "state")
    try:
        value = store.get_meta(f"ping:{name}")
    finally:
        store.close()
    return json.loads(value) if value else None


def test_ping_url_gets_start_then_success_then_fail_with_the_output_tail(
    tmp_path: Path, ping_server: PingServer
) -> None:
    host = host_for(tmp_path, f"{ping_server.url}/{KEY}/{{job}}")
    the_job = job("probe.boom")
    run_once(host, the_job, RunResult("succeeded", exit_code=0, output="all good\n"))
    run_once(
        host, the_job, RunResult("failed", exit_code=1, output="step 1\nstep 2\n", error="Traceback: boom")
    )
    run_once(host, the_job, RunResult("timed_out", output="slow\n", error="timed out after 5s"))
    assert [(h.method, h.path) for h in ping_server.hits] == [
        ("GET", f"/{KEY}/probe.boom/start"),
        ("POST", f"/{KEY}/probe.boom"),
        ("GET", f"/{KEY}/probe.boom/start"),
        ("POST", f"/{KEY}/probe.boom/fail"),
        ("GET", f"/{KEY}/probe.boom/start"),
        ("POST", f"/{KEY}/probe.boom/fail"),
    ]
    assert ping_server.hits[1].body == b"all good\n"
    assert ping_server.hits[3].body == b"step 1\nstep 2\nTraceback: boom"
    assert host.failures == []
    assert ping_meta(tmp_path, "probe.boom") is None  # nothing failed: nothing written


def test_job_name_is_url_quoted_and_outcomes_that_did_not_run_send_nothing(
    tmp_path: Path, ping_server: PingServer
) -> None:
    host = host_for(tmp_path, f"{ping_server.url}/{KEY}/{{job}}?create=1")
    the_job = job("app.tasks:clean up/old")
    ctx = context(the_job.name)
    for outcome in ("skipped", "missed", "stopped"):
        host.call_after_run(the_job, ctx, RunResult(outcome))
    assert ping_server.hits == []
    host.call_after_run(the_job, ctx, RunResult("abandoned", error="its supervisor died"))
    assert [h.path for h in ping_server.hits] == [f"/{KEY}/app.tasks%3Aclean%20up%2Fold/fail?create=1"]


def test_laravel_style_per_job_pings_and_without_pings(tmp_path: Path, ping_server: PingServer) -> None:
    host = host_for(tmp_path, f"{ping_server.url}/{KEY}/{{job}}")
    base = ping_server.url
    schedule = (
        Schedule()
        .without_pings()
        .ping_before(f"{base}/before")
        .then_ping(f"{base}/then")
        .ping_on_success(f"{base}/success")
        .ping_on_failure(f"{base}/failure")
    )
    the_job = job("own", Schedule.from_definition(schedule.definition()))  # as a later tick rebuilds it
    run_once(host, the_job, RunResult("succeeded"))
    assert sorted(h.path for h in ping_server.hits) == ["/before", "/success", "/then"]
    ping_server.hits.clear()
    run_once(host, the_job, RunResult("failed", error="boom"))
    assert sorted(h.path for h in ping_server.hits) == ["/before", "/failure", "/then"]
    ping_server.hits.clear()
    host.call_after_run(the_job, context("own"), RunResult("stopped"))
    assert [h.path for h in ping_server.hits] == ["/then"]


def test_a_hanging_ping_server_is_given_up_after_the_timeout_and_recorded(
    tmp_path: Path, ping_server: PingServer
) -> None:
    ping_server.hang = threading.Event()
    host = host_for(tmp_path, f"{ping_server.url}/{KEY}/{{job}}", timeout=1)
    the_job = job("hangs")
    host.call_after_run(the_job, context("hangs"), RunResult("succeeded", output="done"))
    assert not ping_server.hang.is_set()  # returned while the server still hangs (it would for 60 s)
    assert len(ping_server.hits) == 1
    assert host.failures == []  # a ping never fails the hook, let alone the run
    state = ping_meta(tmp_path, "hangs")
    assert state is not None
    failed = state["failed"]
    assert isinstance(failed, dict)
    assert failed["event"] == "succeeded"
    assert "no answer within 1s" in failed["error"]
    assert KEY not in json.dumps(state)
    assert failed["url"] == f"{ping_server.url}/***/hangs"

    # The next job's ping in this process does not wait for the hung host again: recorded as not sent.
    host.call_before_run(job("next"), context("next"))
    assert not ping_server.hang.is_set() and len(ping_server.hits) == 1
    later = ping_meta(tmp_path, "next")
    assert later is not None and "not sent: 127.0.0.1:" in json.dumps(later)


def test_a_failing_ping_is_retried_then_shown_by_icc_status_without_its_key(
    tmp_path: Path, ping_server: PingServer
) -> None:
    ping_server.status = 503
    (tmp_path / "icc.toml").write_text(
        f'[icc]\nstate_dir = "state"\nplugins = ["tasks"]\n[icc.consumers]\nmode = "service"\n'
        f'[icc.monitor]\nping_url = "{ping_server.url}/{KEY}/{{job}}"\n'
    )
    (tmp_path / "tasks.py").write_text(
        "import icc\n\n"
        "def flaky():\n    raise RuntimeError('boom')\n\n"
        "@icc.hookimpl\n"
        "def schedule(scheduler):\n    scheduler.add(flaky, name='flaky').hourly()\n".replace(
            "hourly", "every_hour"
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")} | {"ICC_PLUGINS": "tasks"}
    icc = [sys.executable, "-m", "icc"]
    subprocess.run([*icc, "scan"], cwd=tmp_path, env=env, check=True, capture_output=True)
    host = load_plugins(load_config(cwd=tmp_path), environ={"ICC_PLUGINS": "tasks"})
    flaky = host.collect_jobs()["flaky"]
    host.call_after_run(flaky, context("flaky"), RunResult("failed", error="boom"))
    assert [h.path for h in ping_server.hits] == [f"/{KEY}/flaky/fail"] * 3  # retried: a 5xx may pass

    shown = subprocess.run([*icc, "status", "flaky"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "ping failed" in shown.stdout and "(failed)" in shown.stdout
    assert f"{ping_server.url}/***/flaky/fail: HTTP 503" in " ".join(shown.stdout.split())
    assert KEY not in shown.stdout + shown.stderr
    as_json = subprocess.run(
        [*icc, "status", "flaky", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    failure = json.loads(as_json.stdout)["ping_failure"]
    assert failure["event"] == "failed" and failure["ok_since"] is False
    assert KEY not in as_json.stdout

    ping_server.status = 200
    host.call_after_run(flaky, context("flaky"), RunResult("succeeded"))
    as_json = subprocess.run(
        [*icc, "status", "flaky", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(as_json.stdout)["ping_failure"]["ok_since"] is True


def test_ping_url_config_is_validated_and_never_printed_in_full(tmp_path: Path) -> None:
    (tmp_path / "icc.toml").write_text(f'[icc.monitor]\nping_url = "ftp://hc-ping.com/{KEY}/{{job}}"\n')
    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path)
    assert "ping_url" in str(info.value) and "http" in str(info.value)
    assert KEY not in str(info.value)
    (tmp_path / "icc.toml").write_text('[icc.monitor]\npings_url = "https://hc-ping.com/x"\n')
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'pings_url' in \[icc.monitor\]; did you mean 'ping_url'\? known keys: ping_url",
    ):
        load_config(cwd=tmp_path)
    (tmp_path / "icc.toml").write_text("[icc]\n")
    with pytest.raises(ConfigError, match="ICC_MONITOR_PING_URL") as info:
        load_config(cwd=tmp_path, environ={"ICC_MONITOR_PING_URL": f"hc-ping.com/{KEY}"})
    assert KEY not in str(info.value)
    config = load_config(cwd=tmp_path, environ={"ICC_MONITOR_PING_URL": f"https://hc-ping.com/{KEY}/{{job}}"})
    assert config.monitor == MonitorConfig(f"https://hc-ping.com/{KEY}/{{job}}", 5.0)


def test_per_job_ping_urls_are_checked_and_never_printed_in_full() -> None:
    with pytest.raises(ScheduleError) as info:
        Schedule().ping_on_failure(f"ftp://user:secret@example.org/{KEY}?token=abc")
    message = str(info.value)
    assert KEY not in message and "secret" not in message and "abc" not in message
    assert "ftp://***@example.org/***?***" in message


def test_redact_keeps_host_and_placeholder_only() -> None:
    assert redact(f"https://hc-ping.com/{KEY}/{{job}}", keep={"{job}"}) == "https://hc-ping.com/***/{job}"
    assert (
        redact("https://uptime.betterstack.com/api/v1/heartbeat/TOKEN")
        == "https://uptime.betterstack.com/***"
    )
    assert (
        redact("https://u:p@cronitor.link:8443/p/KEY/job?state=run")
        == "https://***@cronitor.link:8443/***?***"
    )
    assert redact("not a url") == "***"


def test_a_redirect_to_an_ftp_url_is_not_followed(tmp_path: Path, ping_server: PingServer) -> None:
    import socket

    with socket.socket() as ftp:  # where the redirect points: a listener nobody may connect to
        ftp.bind(("127.0.0.1", 0))
        ftp.listen(1)
        ftp.setblocking(False)
        ping_server.status = 302
        ping_server.location = f"ftp://127.0.0.1:{ftp.getsockname()[1]}/{KEY}"
        host = host_for(tmp_path, f"{ping_server.url}/{KEY}/{{job}}", timeout=2)
        host.call_after_run(job("moved"), context("moved"), RunResult("succeeded"))
        with pytest.raises(BlockingIOError):
            ftp.accept()  # nothing connected: the redirect was refused
    assert len(ping_server.hits) == 1  # refused for good: not asked again
    state = ping_meta(tmp_path, "moved")
    assert state is not None and "redirect refused to a ftp: URL" in json.dumps(state)
    assert KEY not in json.dumps(state)


def test_a_redirect_to_another_http_path_is_still_followed(tmp_path: Path, ping_server: PingServer) -> None:
    ping_server.status = 302
    ping_server.location = f"{ping_server.url}/elsewhere"
    host = host_for(tmp_path, f"{ping_server.url}/{KEY}/{{job}}", timeout=2)

    host.call_before_run(job("moved"), context("moved"))
    # The server answers 302 every time, so urllib gives up after its redirect limit: each hop was followed.
    assert "/elsewhere" in {h.path for h in ping_server.hits}


def test_user_info_in_a_ping_url_is_sent_as_basic_auth_and_left_out_of_the_host(
    tmp_path: Path, ping_server: PingServer
) -> None:
    import base64

    url = ping_server.url.replace("http://", "http://monitor:s%40cret@")
    host = host_for(tmp_path, f"{url}/{KEY}/{{job}}", timeout=5)
    host.call_before_run(job("authed"), context("authed"))
    [hit] = ping_server.hits
    assert hit.path == f"/{KEY}/authed/start"
    assert hit.authorization == "Basic " + base64.b64encode(b"monitor:s@cret").decode()
    assert ping_meta(tmp_path, "authed") is None  # no failure recorded


def test_basic_auth_of_a_ping_url_is_not_sent_on_to_a_redirects_host(
    tmp_path: Path, ping_server: PingServer
) -> None:
    ping_server.status = 302
    ping_server.location = ping_server.url.replace("127.0.0.1", "localhost") + "/elsewhere"
    url = ping_server.url.replace("http://", "http://monitor:secret@")
    host = host_for(tmp_path, f"{url}/{KEY}/{{job}}", timeout=2)
    host.call_before_run(job("authed"), context("authed"))
    first = [h.authorization for h in ping_server.hits if h.path != "/elsewhere"]
    moved = [h.authorization for h in ping_server.hits if h.path == "/elsewhere"]
    assert first and all(first)  # each attempt at the configured URL carries it
    assert moved and not any(moved)  # never the redirect's (another host)


def test_quiet_ticks_with_the_monitoring_endpoint_down_warn_once_an_hour_and_status_and_metrics_show_it(
    project: Project,
) -> None:
    import socket

    with socket.socket() as closed:  # a port nothing listens on: every ping is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    project.write_config(f'[icc.monitor]\nping_url = "http://127.0.0.1:{port}/{KEY}/{{job}}"\ntimeout = 2\n')
    project.write_plugin(
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["true"], name="a").every_minute()
            scheduler.add(["true"], name="b").every_minute()
        """
    )
    project.icc("scan", check=True)
    first = project.icc("run", "--quiet", "--at", at(0), check=True)
    lines = [line for line in first.stderr.splitlines() if "ping" in line]
    assert len(lines) == 1, first.stderr  # one endpoint, one line (not 2 per job)
    assert (
        f"pings to http://127.0.0.1:{port} are failing" in lines[0] and "not repeated for an hour" in lines[0]
    )
    assert KEY not in first.stderr
    second = project.icc("run", "--quiet", "--at", at(1), check=True)
    assert "ping" not in second.stderr, second.stderr
    assert second.stdout == ""

    assert "ping failed" in project.icc("status", "a", check=True).stdout
    metrics = project.icc("metrics", check=True).stdout
    assert 'icc_job_ping_failing{job="a"} 1' in metrics and 'icc_job_ping_failing{job="b"} 1' in metrics
    assert 'icc_job_ping_last_failure_timestamp_seconds{job="a"}' in metrics
