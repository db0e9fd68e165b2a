"""Leases on the shared PostgreSQL store: renewal while a run lasts, runs of dead hosts recorded abandoned after
their lease, and fencing of a live host that lost the database (its task stopped before its lease can pass, its
late finish refused). Real ``icc`` processes per simulated host, a real server, ``[icc.store] lease = 5``; a log
of start/stop times written by the task proves that no two runs of the exclusive job overlap."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil
import pytest
from conftest import migrated_url
from projectkit import Project, at
from proxykit import TcpProxy

LEASE = 5.0

HOLD = """
import signal

def hold():
    host, markers = os.environ["HOST"], os.environ["MARKERS"]

    def note(what):
        with open(os.path.join(markers, "log"), "a") as f:
            f.write(f"{what} {host} {time.time():.3f}\\n")

    def on_term(signum, frame):
        note("term")
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)
    note("start")
    release = os.path.join(markers, "release-" + host)
    deadline = time.time() + 120
    while not os.path.exists(release) and time.time() < deadline:
        time.sleep(0.05)
    note("end")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(hold, name="hold").every_minute().in_background()
"""


@pytest.fixture
def shared_url(pg_url: str) -> str:
    return migrated_url(pg_url)


def host(tmp_path: Path, url: str, name: str, markers: Path, lease: float = LEASE) -> Project:
    proj = Project(tmp_path / name, store_url=url, host_id=name)
    proj.root.mkdir()
    proj.write_config()
    with proj.config.open("a") as f:  # the [icc.store] table is the last one
        f.write(f"lease = {lease:g}\n")
    proj.write_plugin(HOLD)
    proj.env.update({"MARKERS": str(markers), "HOST": name})
    return proj


def log(markers: Path) -> list[tuple[str, str, float]]:
    path = markers / "log"
    if not path.exists():
        return []
    return [(w, h, float(t)) for w, h, t in (line.split() for line in path.read_text().splitlines())]


def intervals(markers: Path) -> list[tuple[str, float, float]]:
    """Each run of the task: (host, start, end or stop time; still running: infinity)."""
    found: list[tuple[str, float, float]] = []
    open_: dict[str, float] = {}
    for what, who, when in log(markers):
        if what == "start":
            open_[who] = when
        elif who in open_:
            found.append((who, open_.pop(who), when))
    found += [(who, since, float("inf")) for who, since in open_.items()]
    return found


def assert_no_overlap(markers: Path) -> None:
    runs = sorted(intervals(markers), key=lambda r: r[1])
    for before, after in itertools.pairwise(runs):
        assert before[2] <= after[1], f"runs overlap: {before} and {after}"


def hold_runs(proj: Project) -> list[dict[str, Any]]:
    return proj.runs("hold")


def running_run(proj: Project) -> dict[str, Any]:
    proj.wait_for(
        lambda: [r for r in hold_runs(proj) if r["outcome"] == "running" and r["task_pid"]], what="run"
    )
    return next(r for r in hold_runs(proj) if r["outcome"] == "running")


def wait_abandoned_in_status(proj: Project, dead_host: str) -> None:
    """``icc status`` on ``proj`` shows the dead host's run abandoned once its lease passed."""

    def shown() -> bool:
        job = next(j for j in proj.status()["jobs"] if j["name"] == "hold")
        last = job["last_run"]
        return bool(last and last["outcome"] == "abandoned" and f"host {dead_host}" in (last["error"] or ""))

    proj.wait_for(shown, timeout=LEASE * 4, what=f"{dead_host}'s run shown abandoned")


def lease_until(url: str, run_id: int) -> float | None:
    import psycopg

    with psycopg.connect(url, options="-c search_path=icc", autocommit=True) as conn:
        row = conn.execute("SELECT lease_until FROM runs WHERE id = %s", (run_id,)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_host_killed_mid_run_is_recorded_abandoned_after_its_lease_and_the_next_slot_runs_elsewhere(
    tmp_path: Path, shared_url: str
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    web1, web2 = host(tmp_path, shared_url, "web-1", markers), host(tmp_path, shared_url, "web-2", markers)
    web1.icc("scan", check=True)
    web1.icc("run", "--at", at(0), check=True)
    run = running_run(web1)
    os.kill(run["pid"], signal.SIGKILL)  # the host dies: its supervisor and its task
    os.killpg(run["task_pid"], signal.SIGKILL)
    wait_abandoned_in_status(web2, "web-1")
    web2.icc("run", "--at", at(1), check=True)  # records it abandoned, runs the next slot
    web2.wait_for(lambda: any(w == "start" and h == "web-2" for w, h, _t in log(markers)), what="web-2 runs")
    (markers / "release-web-2").touch()
    web2.wait_for(lambda: hold_runs(web2)[-1]["outcome"] == "succeeded", what="web-2's run done")
    first, second = hold_runs(web2)
    assert first["outcome"] == "abandoned" and "lease expired" in first["error"]
    assert "host web-1" in first["error"]
    assert (second["host"], second["outcome"]) == ("web-2", "succeeded")
    assert [h for w, h, _t in log(markers) if w == "start"] == ["web-1", "web-2"]  # the dead slot not re-run


@pytest.fixture
def proxy(pg_server: Any) -> Iterator[TcpProxy]:
    p = TcpProxy(pg_server.port)
    yield p
    p.close()


def test_a_host_cut_off_from_the_database_fences_itself_and_its_late_finish_is_refused(
    tmp_path: Path, shared_url: str, proxy: TcpProxy, pg_server: Any
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    parsed = urlparse(shared_url)
    cut_url = proxy.url(parsed.path.lstrip("/"), user=parsed.username or "postgres")
    web1, web2 = host(tmp_path, cut_url, "web-1", markers), host(tmp_path, shared_url, "web-2", markers)
    web2.icc("scan", check=True)
    web1.icc("run", "--at", at(0), check=True)
    run = running_run(web2)
    time.sleep(LEASE / 2)  # a renewal or two went through
    proxy.blackhole()
    web2.wait_for(lambda: any(w == "term" for w, _h, _t in log(markers)), timeout=LEASE * 3, what="fenced")
    expiry = lease_until(shared_url, run["id"])
    assert expiry is not None
    stopped = next(t for w, _h, t in log(markers) if w == "term")
    assert stopped < expiry  # the task was stopped before the lease could pass
    wait_abandoned_in_status(web2, "web-1")
    web2.icc("run", "--at", at(1), check=True)
    web2.wait_for(lambda: any(w == "start" and h == "web-2" for w, h, _t in log(markers)), what="web-2 runs")
    (markers / "release-web-2").touch()
    web2.wait_for(lambda: hold_runs(web2)[-1]["outcome"] == "succeeded", what="web-2's run done")
    proxy.heal()
    web2.wait_for(lambda: pid_gone(run["pid"]), timeout=60, what="web-1's supervisor tried its late finish")
    first = hold_runs(web2)[0]
    assert first["outcome"] == "abandoned" and "host web-1" in first["error"]  # not overwritten
    assert_no_overlap(markers)


def test_a_host_whose_connections_are_terminated_reconnects_and_keeps_its_lease(
    tmp_path: Path, shared_url: str, pg_server: Any
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    web1, web2 = host(tmp_path, shared_url, "web-1", markers), host(tmp_path, shared_url, "web-2", markers)
    web1.icc("scan", check=True)
    web1.icc("run", "--at", at(0), check=True)
    run = running_run(web1)
    ended = time.monotonic() + LEASE * 2
    while time.monotonic() < ended:  # over two leases: only renewals on new connections keep it
        pg_server.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'icc %web-1%'"
        )
        time.sleep(0.5)
    expiry = lease_until(shared_url, run["id"])
    assert expiry is not None and expiry > time.time()  # renewed (the server's clock is this machine's)
    web2.icc("run", "--at", at(1), check=True)  # finds web-1's run alive: the next slot is skipped
    assert [r["outcome"] for r in hold_runs(web1)][:1] == ["running"]
    assert not any(w == "term" for w, _h, _t in log(markers))
    (markers / "release-web-1").touch()
    web1.wait_for(lambda: hold_runs(web1)[0]["outcome"] == "succeeded", what="the run ends succeeded")
    assert [r["outcome"] for r in hold_runs(web1)] == ["succeeded", "skipped"]


def test_a_lease_renewal_whose_new_connections_are_dropped_too_is_tried_again_until_one_gets_through(
    tmp_path: Path, shared_url: str
) -> None:
    """A trigger drops the renewal's connection (the backend terminates itself inside the renewal's update) six
    times in a row: the idle connection found dead, then each new one. The renewer tries again on a new
    connection until a renewal gets through, well before the fence (2/3 of a 15 s lease): the run keeps its
    lease and its task is not stopped. Trying only twice per period, the renewer let six drops in a row
    (three periods) pass the fence, and the task was stopped."""
    import psycopg

    drops = 6
    markers = tmp_path / "markers"
    markers.mkdir()
    with psycopg.connect(shared_url, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE icc.renewal_drops")
        conn.execute("CREATE TABLE icc.renewal_drops_armed (armed boolean NOT NULL)")
        conn.execute("INSERT INTO icc.renewal_drops_armed VALUES (false)")
        # A renewal is the one update that moves the lease of a run that stays running.
        conn.execute(
            "CREATE FUNCTION icc.drop_renewal() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF OLD.outcome = 'running' AND NEW.outcome = 'running' "
            "AND NEW.lease_until IS DISTINCT FROM OLD.lease_until "
            "AND (SELECT armed FROM icc.renewal_drops_armed) "
            f"AND nextval('icc.renewal_drops') <= {drops} THEN "
            "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); END IF; "
            "RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER drop_renewal BEFORE UPDATE ON icc.runs FOR EACH ROW "
            "EXECUTE FUNCTION icc.drop_renewal()"
        )

    def dropped() -> int:
        with psycopg.connect(shared_url, autocommit=True) as conn:
            row = conn.execute("SELECT last_value, is_called FROM icc.renewal_drops").fetchone()
        assert row is not None
        return int(row[0]) if row[1] else 0

    web1 = host(tmp_path, shared_url, "web-1", markers, lease=15)
    web1.icc("scan", check=True)
    web1.icc("run", "--at", at(0), check=True)
    run = running_run(web1)
    with psycopg.connect(shared_url, autocommit=True) as conn:
        conn.execute("UPDATE icc.renewal_drops_armed SET armed = true")
    # Every drop taken, and one renewal more: it got through (or, fenced, the run is no longer renewed).
    web1.wait_for(
        lambda: dropped() > drops or any(w == "term" for w, _h, _t in log(markers)),
        timeout=60,
        what="the drops taken and a renewal through",
    )
    assert not any(w == "term" for w, _h, _t in log(markers)), hold_runs(web1)
    expiry = lease_until(shared_url, run["id"])
    assert expiry is not None and expiry > time.time()
    (markers / "release-web-1").touch()
    web1.wait_for(lambda: hold_runs(web1)[0]["outcome"] == "succeeded", what="the run ends succeeded")


def test_a_supervisor_stopped_past_its_lease_cannot_overwrite_the_abandoned_record(
    tmp_path: Path, shared_url: str
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    web1, web2 = host(tmp_path, shared_url, "web-1", markers), host(tmp_path, shared_url, "web-2", markers)
    web1.icc("scan", check=True)
    web1.icc("run", "--at", at(0), check=True)
    run = running_run(web1)
    os.kill(run["pid"], signal.SIGSTOP)
    try:
        wait_abandoned_in_status(web2, "web-1")
        web2.icc("run", "--at", at(1), check=True)
        web2.wait_for(lambda: hold_runs(web2)[0]["outcome"] == "abandoned", what="recorded abandoned")
    finally:
        os.kill(run["pid"], signal.SIGCONT)
    # Woken, it finds its lease lost: it stops its task and its finish is refused.
    web1.wait_for(lambda: any(w == "term" and h == "web-1" for w, h, _t in log(markers)), what="web-1 fenced")
    web1.wait_for(lambda: pid_gone(run["pid"]), timeout=60, what="web-1's supervisor ended")
    (markers / "release-web-2").touch()
    first = hold_runs(web2)[0]
    assert first["outcome"] == "abandoned" and "host web-1" in first["error"]


def test_a_foreground_run_cut_off_is_stopped_and_recorded_stopped_once_the_database_is_back(
    tmp_path: Path, shared_url: str, proxy: TcpProxy
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    parsed = urlparse(shared_url)
    cut_url = proxy.url(parsed.path.lstrip("/"), user=parsed.username or "postgres")
    web1 = host(tmp_path, cut_url, "web-1", markers)
    web1.icc("scan", check=True)
    proc = web1.popen("exec", "hold")  # icc exec: the foreground supervisor
    try:
        web1.wait_for(lambda: any(w == "start" for w, _h, _t in log(markers)), what="the run started")
        proxy.blackhole()
        web1.wait_for(
            lambda: any(w == "term" for w, _h, _t in log(markers)), timeout=LEASE * 3, what="fenced"
        )
        proxy.heal()
        proc.communicate(timeout=90)
    finally:
        proc.kill()
    (run,) = hold_runs(web1)
    assert run["outcome"] == "stopped" and "lost its lease" in run["error"]


def test_a_run_is_fenced_even_while_the_record_that_its_task_started_is_still_on_its_way(
    tmp_path: Path, shared_url: str, proxy: TcpProxy
) -> None:
    """The network is cut just as the task starts, while the supervisor's 'running' update is on its way (a
    trigger holds that update 12 s, so the cut lands inside it every run): its answer never arrives. The
    supervisor must still watch its lease from the task's first moment (the task is stopped after 2/3 of the
    lease, while that update still waits), and must not wait for the lost answer afterwards: it records the
    run stopped on a new connection once the network is back, and exits."""
    import psycopg

    markers = tmp_path / "markers"
    markers.mkdir()
    with psycopg.connect(shared_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION icc.slow_start() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.task_pid IS NOT NULL AND OLD.task_pid IS NULL THEN PERFORM pg_sleep(12); END IF; "
            "RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER slow_start BEFORE UPDATE ON icc.runs FOR EACH ROW EXECUTE FUNCTION icc.slow_start()"
        )

    def starting() -> int:
        with psycopg.connect(shared_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE "
                "'UPDATE \"icc\".runs SET outcome = ''running''%task_pid%'"
            ).fetchone()
        assert row is not None
        return int(row[0])

    parsed = urlparse(shared_url)
    web1 = host(
        tmp_path, proxy.url(parsed.path.lstrip("/"), user=parsed.username or "postgres"), "web-1", markers
    )
    web1.icc("scan", check=True)
    proc = web1.popen("exec", "hold")
    try:
        web1.wait_for(lambda: starting() == 1, what="the 'running' update on its way")
        proxy.blackhole()
        web1.wait_for(
            lambda: any(w == "term" for w, _h, _t in log(markers)), timeout=LEASE * 3, what="fenced"
        )
        assert starting() == 1, "fenced only after the 'running' update had returned"
        web1.wait_for(lambda: starting() == 0, what="the update's answer sent, into the cut")
        proxy.heal()
        proc.communicate(timeout=60)  # the lost answer is not waited for
    finally:
        proc.kill()
    (run,) = hold_runs(web1)
    assert run["outcome"] == "stopped" and "lost its lease" in run["error"], run


def test_a_woken_frozen_tick_shows_the_run_abandoned_as_the_store_keeps_it_not_stopped(
    tmp_path: Path, shared_url: str
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    web1, web2 = host(tmp_path, shared_url, "web-1", markers), host(tmp_path, shared_url, "web-2", markers)
    web1.write_plugin(HOLD.replace(".every_minute().in_background()", ".every_minute()"))  # foreground
    web1.icc("scan", check=True)
    tick = web1.popen("run", "--at", at(0))
    try:
        run = running_run(web1)
        # The run's supervisor, forked from the tick, keeps its lease: freeze it (and the task with it).
        supervisor = run["pid"]
        assert psutil.Process(supervisor).ppid() == tick.pid
        os.kill(supervisor, signal.SIGSTOP)
        try:
            wait_abandoned_in_status(web2, "web-1")
            (markers / "release-web-2").touch()  # web-2 runs the next slot in its foreground: done at once
            web2.icc("run", "--at", at(1), check=True)
            assert hold_runs(web2)[0]["outcome"] == "abandoned"
        finally:
            os.kill(supervisor, signal.SIGCONT)
        out, err = tick.communicate(timeout=120)
    finally:
        tick.kill()
    assert hold_runs(web2)[0]["outcome"] == "abandoned"
    [row] = [line for line in out.splitlines() if line.lstrip().startswith("hold")]
    assert "abandoned" in row and "stopped " not in row.split("abandoned")[0], out + err
    assert "this host stopped its task when it woke" in out, out + err


def test_pg_stat_activity_names_the_icc_command_and_host_not_the_config_option(
    tmp_path: Path, shared_url: str
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    h1 = host(tmp_path, shared_url, "h1", markers)
    h1.write_plugin(
        """
import psycopg

def look():
    with psycopg.connect(os.environ["DB"], autocommit=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'icc %'"
        )]
    with open(os.path.join(os.environ["MARKERS"], "names"), "w") as f:
        f.write("\\n".join(names))

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(look, name="look").every_minute()
"""
    )
    h1.env["DB"] = shared_url
    h1.icc("scan", check=True)
    assert h1.argv("run")[3:5] == ["--config", str(h1.config)]  # the option comes before the command
    h1.icc("run", "--at", at(0), check=True)
    names = set((markers / "names").read_text().splitlines())
    assert "icc run h1" in names, names
    assert not any("--config" in name for name in names), names
