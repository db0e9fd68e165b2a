"""The idle tick on a PostgreSQL store (icc.store.postgres.idle): libpq through ctypes, no psycopg, no click; the same
answer and output as the full tick, and the full tick for anything that may need it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import icc.store.postgres.connection
import psycopg
import pytest
from icc.store.postgres import idle as fastpath_pg
from projectkit import Project, at, slot
from statekit import TWO_JOBS, scanned

HOURLY = """
def task():
    pass

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(task, name="hourly").every_hour()
"""


@pytest.fixture
def store_backend() -> str:
    return "postgres"  # every `project` here keeps its state in a fresh, migrated PostgreSQL database


def tick(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """`icc run` with -X importtime, so the test sees which path it took and what it imported."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", *project.argv("run", *args)[1:]],
        cwd=project.root,
        env=project.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def imported(proc: subprocess.CompletedProcess[str], module: str) -> bool:
    return any(line.rstrip().endswith(f"| {module}") for line in proc.stderr.splitlines())


def full_tick(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """The full command on the same store: an ICC_STORE_URL (the same URL) is a doubt for the fast path."""
    project.env["ICC_STORE_URL"] = project.store_url or ""
    try:
        proc = tick(project, *args)
    finally:
        del project.env["ICC_STORE_URL"]
    assert imported(proc, "icc.config"), proc.stderr[-2000:]
    return proc


def sql(project: Project, statement: str) -> None:
    assert project.store_url is not None
    with psycopg.connect(project.store_url, autocommit=True) as conn:
        conn.execute(statement)


def idle_project(project: Project) -> None:
    """Scanned, one hourly job that ran at minute 0: minutes 1-59 are idle."""
    scanned(project, HOURLY)
    project.icc("run", "--at", at(0), check=True)


@pytest.mark.parametrize("quiet", [True, False])
def test_idle_postgresql_tick_answers_without_psycopg_and_prints_what_the_full_tick_prints(
    project: Project, quiet: bool
) -> None:
    idle_project(project)
    args = ("--quiet", "--at", at(1)) if quiet else ("--at", at(1))
    full = full_tick(project, *args)
    fast = tick(project, *args)
    assert fast.returncode == full.returncode == 0, fast.stderr[-2000:]
    assert not imported(fast, "icc.config") and not imported(fast, "psycopg"), fast.stderr[-3000:]
    assert fast.stdout == full.stdout
    if quiet:
        assert fast.stdout == ""
    else:
        assert fast.stdout.startswith("icc run: nothing due at ") and fast.stdout.endswith(" (UTC)\n")


def test_a_due_job_on_postgresql_still_runs_after_idle_ticks(project: Project) -> None:
    idle_project(project)
    assert not imported(tick(project, "--quiet", "--at", at(30)), "icc.config")
    proc = tick(project, "--quiet", "--at", at(60))  # the next hour: due
    assert proc.returncode == 0 and imported(proc, "icc.config"), proc.stderr[-2000:]
    outcomes = [(r["job"], r["slot"], r["outcome"]) for r in project.runs()]
    assert ("hourly", slot(60), "succeeded") in outcomes


def test_postgresql_idle_tick_leaves_this_hosts_unfinished_run_to_the_full_tick(project: Project) -> None:
    idle_project(project)
    sql(
        project,
        "INSERT INTO icc.runs (job, slot, kind, outcome, pid, host, lease_until) VALUES "
        f"('hourly', {slot(-60)}, 'scheduled', 'running', 999999, 'host-a', "
        "extract(epoch from clock_timestamp()) + 600)",
    )
    proc = tick(project, "--quiet", "--at", at(1))
    assert imported(proc, "icc.config"), proc.stderr[-2000:]
    assert any(r["outcome"] == "abandoned" for r in project.runs())  # the full tick recovered it


def test_postgresql_idle_tick_ignores_another_hosts_live_run_but_not_an_expired_lease(
    project: Project,
) -> None:
    idle_project(project)
    sql(
        project,
        "INSERT INTO icc.runs (job, slot, kind, outcome, pid, host, lease_until) VALUES "
        f"('hourly', {slot(-60)}, 'scheduled', 'running', 999999, 'host-b', "
        "extract(epoch from clock_timestamp()) + 600)",
    )
    assert not imported(
        tick(project, "--quiet", "--at", at(1)), "icc.config"
    )  # its live lease: host-b's business
    sql(
        project,
        "UPDATE icc.runs SET lease_until = extract(epoch from clock_timestamp()) - 1 WHERE host = 'host-b'",
    )
    assert imported(tick(project, "--quiet", "--at", at(2)), "icc.config")  # expired: the full tick decides


def test_postgresql_idle_tick_leaves_on_each_host_jobs_to_the_full_tick(project: Project) -> None:
    scanned(
        project,
        """
        def task():
            pass

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(task, name="local").every_hour().on_each_host()
        """,
    )
    project.icc("run", "--at", at(0), check=True)
    # Another host's tick saved the shared next slot; this host's own run of the slot may still be due.
    proc = tick(project, "--quiet", "--at", at(1))
    assert imported(proc, "icc.config"), proc.stderr[-2000:]


@pytest.mark.parametrize(
    "change",
    [
        "DELETE FROM icc.migrations",  # behind this icc
        "INSERT INTO icc.migrations (version, name) VALUES (9999, 'future')",  # ahead of it
        "DELETE FROM icc.meta WHERE key = 'plugins_fingerprint'",  # never scanned
        "INSERT INTO icc.meta (key, value) VALUES ('pause', '{}')",  # icc pause
    ],
)
def test_postgresql_idle_tick_leaves_an_unusual_store_to_the_full_tick(project: Project, change: str) -> None:
    idle_project(project)
    sql(project, change)
    proc = tick(project, "--quiet", "--at", at(1))
    assert imported(proc, "icc.config"), proc.stderr[-2000:]


def test_postgresql_idle_tick_falls_through_when_the_server_is_unreachable(project: Project) -> None:
    scanned(project, TWO_JOBS)
    project.store_url = "postgresql://icc@127.0.0.1:1/app"
    project.write_config()
    proc = tick(project, "--quiet", "--at", at(1))
    assert proc.returncode == 2 and imported(proc, "icc.config"), proc.stderr[-2000:]
    assert "cannot connect to the PostgreSQL store" in proc.stderr


def test_fast_path_connection_settings_are_icc_pgs() -> None:
    for name in (
        "STATEMENT_TIMEOUT_MS",
        "LOCK_TIMEOUT_MS",
        "IDLE_IN_TRANSACTION_TIMEOUT_MS",
        "CONNECT_TIMEOUT_S",
    ):
        assert getattr(fastpath_pg, name) == getattr(icc.store.postgres.connection, name), name
    assert fastpath_pg._migrations() == ",".join(
        str(m.version) for m in icc.store.postgres.connection.migrations()
    )


def test_fast_config_reader_checks_exactly_the_store_keys_of_icc_config() -> None:
    from icc import config, fastconfig

    assert set(fastconfig.STORE_CHECKS) == set(config.STORE_KEYS)


def test_fast_config_reader_hands_over_a_store_table_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icc import fastconfig

    for key in ("ICC_STORE_URL", "ICC_CONFIG", "ICC_STATE_DIR", "ICC_TIMEZONE", "ICC_ENVIRONMENT"):
        monkeypatch.delenv(key, raising=False)
    path = tmp_path / "icc.toml"
    path.write_text(
        '[icc]\nstate_dir = "state"\n[icc.store]\nurl = "postgresql://icc@db/app"\nschema = "jobs"\n'
    )
    store: dict[str, object] = {}
    assert fastconfig.read_config(str(path), store) == (str(tmp_path / "state"), "UTC")
    assert store == {"url": "postgresql://icc@db/app", "schema": "jobs"}
    url = 'url = "postgresql://icc@db/app"\n'
    for bad in (
        url + 'schema = "Jobs"',
        url + 'host_id = "-web"',
        url + "lease = 1",
        'url = "mysql://db/app"',
    ):
        path.write_text(f"[icc]\n[icc.store]\n{bad}\n")
        assert fastconfig.read_config(str(path), {}) is None, bad  # the full loader says what is wrong
    path.write_text('[icc]\n[icc.store]\nurl = "postgresql://icc@db/app"\n')
    monkeypatch.setenv("ICC_STORE_URL", "postgresql://icc@db/other")
    assert fastconfig.read_config(str(path), {}) is None  # a store variable: the full loader merges it
