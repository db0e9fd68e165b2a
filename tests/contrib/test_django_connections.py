"""Django's database connections around icc's forks and runs, on a real PostgreSQL server with
CONN_MAX_AGE > 0 (persistent connections): none crosses a fork, and a server restart between two handled
messages costs no failed attempt."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from frameworkkit import DjangoSite, pg_database
from pgkit import PgServer
from projectkit import at

pytest.importorskip("django")

PERSISTENT = 600  # CONN_MAX_AGE: keep connections open between requests (and runs)


def site_on(tmp_path: Path, pg_url: str) -> DjangoSite:
    database = {**pg_database(pg_url), "CONN_MAX_AGE": PERSISTENT}
    site = DjangoSite(
        tmp_path, database=database
    )  # icc's store: SQLite in state/, so only Django's connections
    site.manage("migrate", "-v0")
    return site


def wait_for_lines(path: Path, count: int, proc: subprocess.Popen[str] | None = None) -> list[str]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if path.exists() and len(lines := path.read_text().splitlines()) >= count:
            return lines
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the consumer exited {proc.returncode}: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"{path} has not {count} lines: {path.read_text() if path.exists() else 'missing'}")


def test_no_database_connection_is_shared_across_a_fork(tmp_path: Path, pg_url: str) -> None:
    """The plugin's schedule hook opens a connection in the tick and in the run's supervisor; the job's
    process (forked from the supervisor) must open its own."""
    site = site_on(tmp_path, pg_url)
    site.tasks("""
        import os
        from pathlib import Path

        import icc
        from django.db import connection

        LOG = Path(__file__).parent.parent / "backends.txt"


        def backend(role):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pid = cursor.fetchone()[0]
            with open(LOG, "a") as f:
                f.write(f"{role} {os.getpid()} {pid}\\n")


        def job():
            backend("job")


        @icc.hookimpl
        def schedule(scheduler):
            backend("hook")
            scheduler.add(job, name="job").every_minutes(1)
    """)
    site.manage("icc", "scan")
    (tmp_path / "backends.txt").unlink()
    site.manage("icc", "run", "--at", at(0))
    rows = [line.split() for line in (tmp_path / "backends.txt").read_text().splitlines()]
    hooks = {backend for role, _pid, backend in rows if role == "hook"}
    jobs = [backend for role, _pid, backend in rows if role == "job"]
    assert len(jobs) == 1 and len(hooks) >= 1, rows
    assert jobs[0] not in hooks, f"the job used a connection opened before the fork: {rows}"


def test_a_postgresql_restart_between_two_messages_costs_no_failed_attempt(
    tmp_path: Path, pg_url: str, pg_server: PgServer
) -> None:
    site = site_on(tmp_path, pg_url)
    site.tasks("""
        from pathlib import Path

        import icc
        from django.contrib.auth.models import User


        def add_user(payload):
            User.objects.create(username=payload["name"])
            with open(Path(__file__).parent.parent / "handled.txt", "a") as f:
                f.write(payload["name"] + "\\n")


        @icc.hookimpl
        def register_handlers(register):
            register("add-user", add_user, queue="async")
    """)
    site.manage("icc", "scan")
    consumer = site.popen("icc", "consume", "async", "--sleep", "0.1", "--time-limit", "240")
    try:
        site.shell("import icc; icc.dispatch('add-user', {'name': 'first'})")
        wait_for_lines(tmp_path / "handled.txt", 1, consumer)
        pg_server.restart()
        site.shell("import icc; icc.dispatch('add-user', {'name': 'second'})")
        assert wait_for_lines(tmp_path / "handled.txt", 2, consumer) == ["first", "second"]
    finally:
        site.manage("icc", "consume", "--stop", check=False)
        try:
            out, err = consumer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            consumer.kill()
            out, err = consumer.communicate()
    assert "attempt" not in out + err, out + err  # no retry: the dropped connection was replaced before use
    assert "2 handled" in out + err or "handled 2" in out + err, out + err


def test_a_postgresql_restart_between_two_runs_costs_no_failed_run(
    tmp_path: Path, pg_url: str, pg_server: PgServer
) -> None:
    """icc's store in the Django database (ICC store.database) and persistent connections: the server restarts
    between two ticks' runs of an ORM job; the second run, its tick and its record reconnect."""
    database = {**pg_database(pg_url), "CONN_MAX_AGE": PERSISTENT}
    site = DjangoSite(tmp_path, database=database, icc={"store": {"database": "default"}})
    site.manage("migrate", "-v0")
    site.manage("icc", "db", "migrate")
    site.tasks("""
        import icc
        from django.contrib.auth.models import User


        def add_user():
            User.objects.create(username=f"user{User.objects.count()}")


        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(add_user, name="add-user").every_minutes(1)
    """)
    site.manage("icc", "scan")
    first = site.manage("icc", "run", "--at", at(0))
    assert "succeeded" in first.stdout, first.stdout
    pg_server.restart()
    second = site.manage("icc", "run", "--at", at(1))
    assert "succeeded" in second.stdout and "failed" not in second.stdout, second.stdout + second.stderr
    count = site.shell("from django.contrib.auth.models import User; print(User.objects.count())")
    assert count.strip() == "2"
