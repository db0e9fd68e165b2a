"""icc behind pgbouncer in transaction mode: every connection goes through a real pgbouncer (the Debian package)
with two server connections per database, so that consecutive transactions of one client land on different
server sessions. The commands, the ticks of several hosts, leases, queues and the idle fast path must work
exactly as they do on a direct connection: no session state, no server-side prepared statements, no session
advisory locks."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgkit import PgBouncer, PgServer, start_pgbouncer, stop_pgbouncer
from projectkit import Project, QueueProject, at, slot

MARKING = """
def mark(name, sleep=0.0):
    def task():
        if sleep:
            time.sleep(sleep)
        with open(os.path.join(os.environ["MARKER_DIR"], name), "a") as f:
            f.write(f"{os.environ['HOST']}\\n")
    task.__name__ = task.__qualname__ = name
    return task

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("once"), name="once").every_minute()
    scheduler.add(mark("once_bg"), name="once_bg").every_minute().in_background()
    scheduler.add(mark("each"), name="each").every_minute().on_each_host()
    scheduler.add(mark("exclusive", 0.5), name="exclusive").every_minute().without_overlapping()
    scheduler.add(mark("hourly"), name="hourly").every_hour()
"""


@pytest.fixture
def bounced(pg_server: PgServer, pgbouncer: PgBouncer) -> Iterator[str]:
    """A fresh, empty database, reached through pgbouncer."""
    name = pg_server.new_database()
    try:
        yield pgbouncer.url(name)
    finally:
        pg_server.drop_database(name)


def host(base: Path, url: str, name: str, plugin: str = MARKING, lease: float | None = None) -> Project:
    proj = Project(base / name, store_url=url, host_id=name)
    proj.root.mkdir()
    proj.write_config()
    if lease is not None:
        with proj.config.open("a") as f:  # the [icc.store] table is the last one
            f.write(f"lease = {lease:g}\n")
    proj.write_plugin(plugin)
    proj.env["HOST"] = name
    return proj


def run_together(hosts: list[Project], *args: str) -> list[subprocess.CompletedProcess[str]]:
    procs = [h.popen(*args) for h in hosts]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def test_icc_db_migrate_from_three_hosts_at_once_through_pgbouncer_applies_the_schema_once(
    tmp_path: Path, bounced: str
) -> None:
    hosts = [host(tmp_path, bounced, f"web-{n}") for n in (1, 2, 3)]
    results = run_together(hosts, "db", "migrate")
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    assert sum("applied 0001_init" in r.stdout for r in results) == 1, [r.stdout for r in results]
    status = hosts[0].icc("db", "status", check=True)
    assert "up to date" in status.stdout


def test_hosts_ticking_the_same_slots_through_pgbouncer_run_each_slot_once(
    tmp_path: Path, bounced: str
) -> None:
    hosts = [host(tmp_path, bounced, f"web-{n}") for n in (1, 2, 3)]
    hosts[0].icc("db", "migrate", check=True)
    hosts[0].icc("scan", check=True)
    minutes = range(3)
    for minute in minutes:
        results = run_together(hosts, "run", "--quiet", "--at", at(minute))
        assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    hosts[0].wait_for(
        lambda: all(r["outcome"] not in ("pending", "running") for r in hosts[0].runs()),
        what="every run ended",
    )
    runs = hosts[0].runs()
    assert {r["outcome"] for r in runs} <= {"succeeded", "skipped"}, runs
    per_slot = Counter((r["job"], r["slot"]) for r in runs if r["outcome"] == "succeeded")
    for minute in minutes:
        for job in ("once", "once_bg"):
            assert per_slot[(job, slot(minute))] == 1, (job, minute, runs)
        assert per_slot[("each", slot(minute))] == 3  # on_each_host(): once on every host
        # without_overlapping() holds across hosts: one ran, the others were skipped or lost the claim.
        assert per_slot[("exclusive", slot(minute))] == 1
    assert per_slot[("hourly", slot(0))] == 1 and ("hourly", slot(1)) not in per_slot
    assert [h.marker_lines("each") for h in hosts] == [[h.env["HOST"]] * len(minutes) for h in hosts]
    # The commands that read: status (with the hosts table) and exec, through the pooler too.
    status = hosts[1].status()
    assert {j["name"] for j in status["jobs"]} >= {"once", "each", "hourly"}
    assert {h["host_id"] for h in status["hosts"]} == {"web-1", "web-2", "web-3"}
    hosts[2].icc("exec", "once", check=True)
    assert [r["host"] for r in hosts[0].runs("once") if r["kind"] == "manual"] == ["web-3"]


def test_the_idle_tick_through_pgbouncer_runs_what_is_due_and_records_nothing_else(
    tmp_path: Path, bounced: str
) -> None:
    web1 = host(
        tmp_path,
        bounced,
        "web-1",
        MARKING.split("@icc.hookimpl")[0]
        + '@icc.hookimpl\ndef schedule(scheduler):\n    scheduler.add(mark("hourly"), name="hourly").every_hour()\n',
    )
    web1.write_config('[icc.consumers]\nmode = "service"\n')
    web1.icc("db", "migrate", check=True)
    web1.icc("scan", check=True)
    web1.icc("run", "--quiet", "--at", at(0), check=True)
    for minute in (1, 2, 3):  # none due: the idle path (libpq through ctypes)
        done = web1.icc("run", "--quiet", "--at", at(minute))
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    web1.icc("run", "--quiet", "--at", at(60), check=True)
    assert [r["slot"] for r in web1.runs("hourly")] == [slot(0), slot(60)]
    assert web1.marker_lines("hourly") == ["web-1", "web-1"]


LONG = MARKING.split("@icc.hookimpl")[0] + (
    "@icc.hookimpl\ndef schedule(scheduler):\n"
    '    scheduler.add(mark("long", 8), name="long").every_hour().in_background()\n'
)


def test_a_background_run_through_pgbouncer_keeps_its_lease_past_several_renewals(
    tmp_path: Path, bounced: str
) -> None:
    """lease = 5: the run lasts 8 s, so only renewals through the pooler keep another host from recording it
    abandoned."""
    web1 = host(tmp_path, bounced, "web-1", LONG, lease=5)
    web2 = host(tmp_path, bounced, "web-2", LONG, lease=5)
    web1.icc("db", "migrate", check=True)
    web1.icc("scan", check=True)
    web1.icc("run", "--quiet", "--at", at(0), check=True)
    started = time.monotonic()
    web1.wait_for(lambda: web1.runs("long")[0]["outcome"] == "running", what="the run to start")
    while time.monotonic() - started < 6.5:  # past the lease: another host's ticks look for expired leases
        web2.icc("run", "--quiet", "--at", at(1), check=True)
        assert web2.runs("long")[0]["outcome"] == "running"
        time.sleep(0.5)
    web1.wait_for(lambda: web1.runs("long")[0]["outcome"] != "running", timeout=30, what="the run to end")
    [run] = web1.runs("long")
    assert (run["outcome"], run["host"]) == ("succeeded", "web-1"), run
    assert web1.marker_lines("long") == ["web-1"]


HANDLERS = """
import os
import icc


def record(payload):
    fd = os.open(os.environ["QTEST_MARKER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{payload['i']}\\n".encode())
    finally:
        os.close(fd)


@icc.hookimpl
def register_handlers(register):
    register("record", record)
"""

QUEUE_CONFIG = """
[icc]
state_dir = "state"
plugins = ["bhandlers"]

[icc.consumers]
mode = "service"
"""


def count(url: str, table: str) -> int:
    """The rows of one of icc's tables (schema-qualified: pgbouncer drops a search_path given as an option)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        row = conn.execute(f"SELECT count(*) FROM icc.{table}").fetchone()
    assert row is not None
    return int(row[0])


def test_consumers_on_two_hosts_drain_a_queue_through_pgbouncer(tmp_path: Path, bounced: str) -> None:
    marker = tmp_path / "handled"
    hosts = []
    for n in (1, 2):
        root = tmp_path / f"host{n}"
        root.mkdir()
        hosts.append(
            QueueProject(root, QUEUE_CONFIG, HANDLERS, "bhandlers", store_url=bounced, host_id=f"web-{n}")
        )
        hosts[-1].env["QTEST_MARKER"] = str(marker)
    hosts[0].icc("db", "migrate", check=True)
    n = 500
    for i in range(n):
        hosts[i % 2].dispatch("record", {"i": i})
    consumers = [h.popen("consume", "async", "--time-limit", "60", "--sleep", "0.2") for h in hosts]
    try:
        hosts[0].wait_for(
            lambda: count(bounced, "messages") == 0,
            timeout=60,
            what="the queue drained",
        )
    finally:
        for proc in consumers:
            proc.terminate()
        outputs = [proc.communicate(timeout=30) for proc in consumers]
    # 0, or SIGTERM's own -15 for a consumer still starting when the other had drained the queue already.
    assert all(proc.returncode in (0, -15) for proc in consumers), outputs
    assert sum(int(out[1].split()[1]) for out in outputs if out[1].startswith("consumed ")) >= n, outputs
    handled = Counter(int(line) for line in marker.read_text().split())
    assert set(handled) == set(range(n))  # at least once each
    assert count(bounced, "failed") == 0


def test_a_pooler_that_refuses_icc_s_startup_options_is_one_line_naming_the_setting(
    tmp_path: Path, pg_server: PgServer
) -> None:
    bouncer = start_pgbouncer(pg_server, ignore_options=False)
    name = pg_server.new_database()
    try:
        url = bouncer.url(name)
        web1 = host(tmp_path, url, "web-1")
        done = web1.icc("db", "status")
        assert done.returncode == 2
        [line] = done.stderr.splitlines()
        assert line.startswith(f"error: cannot connect to the PostgreSQL store {url}: ")
        assert "ignore_startup_parameters = options" in line
    finally:
        stop_pgbouncer(bouncer)
        pg_server.drop_database(name)
