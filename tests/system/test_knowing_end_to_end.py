"""Heartbeat pings through real ticks: `icc run` (foreground and background runs) and a later tick that finds a
run abandoned, against a real HTTP server on 127.0.0.1 (the ``ping_server`` fixture)."""

from __future__ import annotations

import os
import signal

from icc.tick.coordinator import pid_alive
from pingkit import PingServer
from projectkit import Project, at

PLUGIN = """
def ok():
    print("all fine")

def boom():
    print("about to fail")
    raise ZeroDivisionError("division by zero")

def bg():
    print("in the background")

def slow():
    time.sleep(120)

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(ok, name="ok")
    scheduler.add(boom, name="boom")
    scheduler.add(bg, name="bg").in_background()
    scheduler.add(slow, name="slow").every_hour().in_background()
"""


def pings_of(server: PingServer, job: str) -> list[tuple[str, str]]:
    return [(hit.method, hit.path) for hit in server.hits if hit.path.split("/")[1] == job]


def test_a_real_tick_pings_start_then_success_or_fail_and_a_later_tick_pings_fail_for_an_abandoned_run(
    project: Project, ping_server: PingServer
) -> None:
    project.write_config(f'\n[icc.monitor]\nping_url = "{ping_server.url}/{{job}}"\n')
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)

    tick = project.icc("run", "--at", at(0))
    assert tick.returncode == 1, tick.stderr  # boom failed

    assert pings_of(ping_server, "ok") == [("GET", "/ok/start"), ("POST", "/ok")]
    assert pings_of(ping_server, "boom") == [("GET", "/boom/start"), ("POST", "/boom/fail")]
    (fail,) = [hit for hit in ping_server.hits if hit.path == "/boom/fail"]
    assert b"about to fail" in fail.body and b"ZeroDivisionError" in fail.body
    # The background run pings from its own supervisor, after the tick returned.
    project.wait_for(
        lambda: ("POST", "/bg") in pings_of(ping_server, "bg"), what="the background success ping"
    )
    assert pings_of(ping_server, "bg") == [("GET", "/bg/start"), ("POST", "/bg")]

    # A background supervisor killed with SIGKILL sends nothing; the next tick finds the run abandoned and pings
    # /fail for it.
    project.wait_for(lambda: project.runs("slow")[0]["task_pid"], what="the slow task to start")
    (run,) = project.runs("slow")
    assert pings_of(ping_server, "slow") == [("GET", "/slow/start")]
    os.kill(run["pid"], signal.SIGKILL)
    project.wait_for(lambda: not pid_alive(run["pid"]), what="the supervisor to die")
    project.icc("run", "--at", at(1))
    assert project.runs("slow")[0]["outcome"] == "abandoned"
    assert pings_of(ping_server, "slow") == [("GET", "/slow/start"), ("POST", "/slow/fail")]
