"""`icc db migrate`, `icc db status` and `icc db copy-from-sqlite` against a real PostgreSQL server, through real
`icc` processes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from icc.store.postgres.connection import migrations
from projectkit import Project, at

PLUGIN = """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(["true"], name="every").every_minute()
    scheduler.add(["true"], name="nightly").daily()
    scheduler.add(["true"], name="off").every_minute()
"""


def use_store(project: Project, url: str, schema: str = "icc") -> None:
    project.write_config(extra=f'\n[icc.store]\nurl = "{url}"\nschema = "{schema}"\n')


def rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def tables(url: str, schema: str = "icc") -> set[str]:
    return {r[0] for r in rows(url, "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))}


# -- migrate -------------------------------------------------------------------------------------------------


def test_db_migrate_applies_the_schema_once_then_is_up_to_date(project: Project, pg_url: str) -> None:
    use_store(project, pg_url)
    first = project.icc("db", "migrate", check=True)
    assert "applied 0001_init" in first.stdout
    assert {"jobs", "runs", "meta", "messages", "failed", "migrations"} <= tables(pg_url)
    second = project.icc("db", "migrate", check=True)
    assert "up to date" in second.stdout and "applied" not in second.stdout
    assert rows(pg_url, "SELECT version FROM icc.migrations ORDER BY version") == [(1,), (2,), (3,)]
    # 0002: the due column is indexed (a tick reads only the jobs it reached).
    assert rows(
        pg_url, "SELECT indexname FROM pg_indexes WHERE tablename = 'jobs' AND indexname = 'jobs_next_due'"
    )
    # 0003: the dashboard's actions (icc web), looked up by target.
    assert "web_actions" in tables(pg_url)
    assert rows(pg_url, "SELECT indexname FROM pg_indexes WHERE indexname = 'web_actions_target'")


def test_db_migrate_from_three_processes_at_once_applies_each_migration_once(
    tmp_path: Path, pg_url: str
) -> None:
    hosts = []
    for n in range(3):
        host = Project(tmp_path / f"host{n}")
        host.root.mkdir()
        use_store(host, pg_url)
        hosts.append(host)
    procs = [host.popen("db", "migrate") for host in hosts]
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], results
    applied = [out for out, _err in results if "applied 0001_init" in out]
    assert len(applied) == 1, results
    assert sum("up to date" in out for out, _err in results) == 2, results
    assert rows(pg_url, "SELECT version, name FROM icc.migrations ORDER BY version") == [
        (m.version, m.name) for m in migrations()
    ]
    assert {"jobs", "runs", "messages", "failed"} <= tables(pg_url)


def test_db_migrate_uses_the_configured_schema(project: Project, pg_url: str) -> None:
    use_store(project, pg_url, schema="tenant_a")
    project.icc("db", "migrate", check=True)
    assert "jobs" in tables(pg_url, "tenant_a")
    assert tables(pg_url, "icc") == set()


# -- status --------------------------------------------------------------------------------------------------


def test_db_status_before_migrate_exits_1_and_names_the_command(project: Project, pg_url: str) -> None:
    use_store(project, pg_url)
    proc = project.icc("db", "status")
    assert proc.returncode == 1, proc.stderr
    assert "pending: 0001_init" in proc.stdout
    assert "icc db migrate" in proc.stdout
    document = json.loads(project.icc("db", "status", "--json").stdout)
    assert document["current"] is False
    assert document["pending"] == [{"version": m.version, "name": m.name} for m in migrations()]
    assert document["run"] == "icc db migrate"


def test_db_status_after_migrate_lists_applied_migrations_with_dates(project: Project, pg_url: str) -> None:
    use_store(project, pg_url)
    project.icc("db", "migrate", check=True)
    proc = project.icc("db", "status", check=True)
    assert "applied: 0001_init" in proc.stdout and "up to date" in proc.stdout
    document = json.loads(project.icc("db", "status", "--json", check=True).stdout)
    assert document["current"] is True and document["run"] is None
    assert document["schema"] == "icc" and document["url"] == pg_url
    applied = document["applied"][0]
    assert applied["version"] == 1 and applied["name"] == "init"
    assert applied["applied_at"].endswith("+00:00")  # ISO 8601 in the configured zone (UTC)
    assert len(document["applied"]) == len(migrations())


def test_db_status_on_a_schema_migrated_by_a_newer_icc_says_to_upgrade(project: Project, pg_url: str) -> None:
    use_store(project, pg_url)
    project.icc("db", "migrate", check=True)
    rows(pg_url, "INSERT INTO icc.migrations (version, name) VALUES (9999, 'future') RETURNING version")
    proc = project.icc("db", "status")
    assert proc.returncode == 1
    assert "newer than this icc" in proc.stdout and "upgrade icc" in proc.stdout
    assert json.loads(project.icc("db", "status", "--json").stdout)["unknown"] == [9999]
    refused = project.icc("db", "migrate")
    assert refused.returncode == 2 and "upgrade icc" in refused.stderr


# -- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["migrate"], ["status"], ["copy-from-sqlite"]])
def test_db_commands_without_a_store_url_say_to_set_it(project: Project, command: list[str]) -> None:
    proc = project.icc("db", *command)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "[icc.store] url" in line and "ICC_STORE_URL" in line
    assert "Traceback" not in proc.stderr


def _password_role(pg_server: Any) -> None:
    """A role that must log in with a password (the test server trusts everyone else)."""
    pg_server.admin(
        "DO $$ BEGIN CREATE ROLE pwuser LOGIN PASSWORD 'right'; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    hba = Path(pg_server.datadir) / "pg_hba.conf"
    rule = "host all pwuser 127.0.0.1/32 scram-sha-256\n"
    text = hba.read_text()
    if rule not in text:
        hba.write_text(rule + text)
        pg_server.pg_ctl("reload")


@pytest.mark.parametrize("command", [["migrate"], ["status"], ["copy-from-sqlite"]])
@pytest.mark.parametrize("problem", ["wrong password", "unreachable"])
def test_db_commands_that_cannot_connect_print_one_line_without_the_password(
    project: Project, pg_server: Any, pg_url: str, command: list[str], problem: str
) -> None:
    dbname = pg_url.rsplit("/", 1)[1]
    if command == ["copy-from-sqlite"]:  # something to copy, so that the command gets to the connection
        project.write_plugin(PLUGIN)
        project.icc("scan", check=True)
    if problem == "wrong password":
        _password_role(pg_server)
        url = f"postgresql://pwuser:s3cr3t-pw@127.0.0.1:{pg_server.port}/{dbname}"
    else:  # nothing listens on port 1
        url = f"postgresql://pwuser:s3cr3t-pw@127.0.0.1:1/{dbname}"
    use_store(project, url)
    proc = project.icc("db", *command)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "s3cr3t-pw" not in proc.stderr + proc.stdout
    assert "cannot connect" in lines[0] and "pwuser:***@127.0.0.1" in lines[0]
    if problem == "wrong password":
        assert "password authentication failed" in lines[0]


@pytest.mark.parametrize(
    "command",
    [["run"], ["status"], ["consume", "async", "--time-limit", "1"], ["db", "status"], ["db", "migrate"]],
)
@pytest.mark.parametrize(
    "userinfo", ["icc:S3cret%ZZ", "S3cret%ZZ", "icc:S3cret%ZZ@x", "icc:%53%33cret%ZZ"], ids=str
)
def test_a_store_url_libpq_cannot_parse_is_reported_without_its_user_info(
    project: Project, command: list[str], userinfo: str
) -> None:
    # libpq quotes the token it cannot decode ("invalid percent-encoded token: "S3cret%ZZ""), every minute in
    # cron's mail: no part of the user info, as written or decoded, may reach the output.
    project.write_config(extra=f'\n[icc.store]\nurl = "postgresql://{userinfo}@127.0.0.1:1/app"\n')
    proc = project.icc(*command)
    assert proc.returncode != 0
    assert "S3cret" not in proc.stdout + proc.stderr and "%ZZ" not in proc.stdout + proc.stderr
    assert "invalid percent-encoded token" in proc.stderr, proc.stderr


def test_redacted_hides_each_part_of_the_user_info_and_nothing_else() -> None:
    from icc.store.postgres.connection import redacted

    url = "postgresql://icc:p%40ss%2Fw0rd@db.internal/app"
    assert redacted("p@ss/w0rd, p%40ss%2Fw0rd, icc:p@ss/w0rd", url) == "***, ***, ***"
    assert redacted('password authentication failed for user "icc"', url).endswith('for user "***"')
    assert redacted('relation "icc.runs" does not exist', url) == 'relation "icc.runs" does not exist'
    assert redacted(f"no answer from {url}", url) == "no answer from postgresql://icc:***@db.internal/app"


def test_dispatch_to_a_store_url_libpq_cannot_parse_hides_the_password(project: Project) -> None:
    project.write_config(extra='\n[icc.store]\nurl = "postgresql://icc:S3cret%ZZ@127.0.0.1:1/app"\n')
    code = "import icc\ntry:\n    icc.dispatch('x', {})\nexcept icc.QueueError as exc:\n    print(exc)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project.root,
        env=project.environ(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "invalid percent-encoded token" in proc.stdout and "S3cret" not in proc.stdout + proc.stderr


def test_db_migrate_without_psycopg_gives_the_install_hint(
    project: Project, pg_url: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    (blocker / "psycopg").mkdir(parents=True)
    (blocker / "psycopg" / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    project.env["PYTHONPATH"] = str(blocker)
    use_store(project, pg_url)
    proc = project.icc("db", "migrate")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "pip install 'icc-runner[postgres]'" in line


# -- copy-from-sqlite ----------------------------------------------------------------------------------------


def _sqlite_install(project: Project) -> None:
    """A SQLite install with jobs (one disabled), runs, a pause, pending messages and a failed message."""
    from icc.config import load_config
    from icc.queue.dispatch import dispatch

    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    project.icc("disable", "off", check=True)
    project.icc("run", "--at", at(0), check=True)
    project.icc("run", "--at", at(1), check=True)
    project.icc("pause", "--reason", "moving to PostgreSQL", check=True)
    config = load_config(project.config)
    ids = [dispatch("report.render", {"n": n}, queue="async", config=config) for n in range(3)]
    assert ids == [1, 2, 3]
    queue_db = sqlite3.connect(project.state_dir / "queue.sqlite3")
    with queue_db:
        queue_db.execute(
            "INSERT INTO failed (id, queue, name, payload, created_at, failed_at, attempts, reason, errors) "
            "VALUES (7, 'mail', 'mail.send', '{\"to\": \"x\"}', 1.0, 2.0, 3, 'retries used up', '[]')"
        )
    queue_db.close()


def _snapshot(state_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(state_dir.iterdir()) if p.name.endswith(".sqlite3")}


def test_copy_from_sqlite_moves_jobs_runs_meta_and_messages_keeping_ids(
    project: Project, pg_url: str
) -> None:
    _sqlite_install(project)
    sqlite_state = sqlite3.connect(project.db)
    jobs_before = sqlite_state.execute(
        "SELECT name, definition, enabled, next_due FROM jobs ORDER BY name"
    ).fetchall()
    runs_before = sqlite_state.execute("SELECT id, job, slot, outcome FROM runs ORDER BY id").fetchall()
    meta_before = dict(sqlite_state.execute("SELECT key, value FROM meta WHERE key != 'schema_version'"))
    counts_before = sorted(sqlite_state.execute("SELECT job, outcome, n FROM run_counts"))
    with sqlite_state:  # an action taken through the dashboard (icc web) before the move
        sqlite_state.execute(
            "INSERT INTO web_actions (at, action, target, remote, detail) "
            "VALUES (1.5, 'disable', 'off', '10.0.0.7', 'disabled')"
        )
    sqlite_state.close()
    assert runs_before and "pause" in meta_before and "watermark" in meta_before
    files_before = _snapshot(project.state_dir)

    use_store(project, pg_url)
    project.icc("db", "migrate", check=True)
    proc = project.icc("db", "copy-from-sqlite", check=True)
    assert "copied 3 jobs" in proc.stdout and "3 messages and 1 failed message from" in proc.stdout

    jobs = rows(pg_url, "SELECT name, definition, enabled, next_due FROM icc.jobs ORDER BY name")
    assert jobs == [(n, d, bool(e), nd) for n, d, e, nd in jobs_before]
    assert dict((n, e) for n, _d, e, _nd in jobs)["off"] is False
    assert rows(pg_url, "SELECT id, job, slot, outcome FROM icc.runs ORDER BY id") == runs_before
    meta = dict(rows(pg_url, "SELECT key, value FROM icc.meta"))
    assert meta == meta_before
    assert sorted(rows(pg_url, "SELECT job, outcome, n FROM icc.run_counts")) == counts_before
    assert rows(pg_url, "SELECT at, action, target, remote, detail FROM icc.web_actions") == [
        (1.5, "disable", "off", "10.0.0.7", "disabled")
    ]
    messages = rows(pg_url, "SELECT id, queue, name, payload FROM icc.messages ORDER BY id")
    assert [(m[0], m[1], m[2], json.loads(m[3])) for m in messages] == [
        (n + 1, "async", "report.render", {"n": n}) for n in range(3)
    ]
    assert rows(pg_url, "SELECT id, queue, attempts, reason FROM icc.failed") == [
        (7, "mail", 3, "retries used up")
    ]
    # New ids come after every copied one (the failed message kept id 7), and after the copied runs.
    [(new_message,)] = rows(
        pg_url,
        "INSERT INTO icc.messages (queue, name, payload, created_at, available_at) "
        "VALUES ('async', 'x', '{}', 0, 0) RETURNING id",
    )
    assert new_message == 8
    [(new_run,)] = rows(
        pg_url,
        "INSERT INTO icc.runs (job, kind, outcome) VALUES ('every', 'manual', 'succeeded') RETURNING id",
    )
    assert new_run == max(r[0] for r in runs_before) + 1
    assert _snapshot(project.state_dir) == files_before  # the SQLite files are left as they were


def test_copy_from_sqlite_into_a_store_that_has_data_refuses_and_writes_nothing(
    project: Project, pg_url: str
) -> None:
    _sqlite_install(project)
    use_store(project, pg_url)
    project.icc("db", "migrate", check=True)
    project.icc("db", "copy-from-sqlite", check=True)
    rows(pg_url, "DELETE FROM icc.jobs WHERE name = 'nightly' RETURNING name")
    before = rows(pg_url, "SELECT count(*) FROM icc.runs"), rows(pg_url, "SELECT count(*) FROM icc.jobs")
    proc = project.icc("db", "copy-from-sqlite")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "not empty" in line and "nothing copied" in line and "icc db migrate" in line
    after = rows(pg_url, "SELECT count(*) FROM icc.runs"), rows(pg_url, "SELECT count(*) FROM icc.jobs")
    assert after == before


def test_copy_from_sqlite_before_migrate_says_to_migrate(project: Project, pg_url: str) -> None:
    _sqlite_install(project)
    use_store(project, pg_url)
    proc = project.icc("db", "copy-from-sqlite")
    assert proc.returncode == 2
    assert "icc db migrate" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_copy_from_sqlite_from_another_state_dir(project: Project, pg_url: str, tmp_path: Path) -> None:
    _sqlite_install(project)
    moved = tmp_path / "old-state"
    project.state_dir.rename(moved)
    use_store(project, pg_url)
    project.icc("db", "migrate", check=True)
    missing = project.icc("db", "copy-from-sqlite")
    assert missing.returncode == 2 and "--state-dir" in missing.stderr
    document = json.loads(
        project.icc("db", "copy-from-sqlite", "--state-dir", str(moved), "--json", check=True).stdout
    )
    assert document["copied"] == {"jobs": 3, "runs": document["copied"]["runs"], "messages": 3, "failed": 1}
    assert rows(pg_url, "SELECT count(*) FROM icc.jobs") == [(3,)]


def test_copy_from_sqlite_records_a_run_in_flight_as_abandoned(project: Project, pg_url: str) -> None:
    _sqlite_install(project)
    db = sqlite3.connect(project.db)
    with db:
        db.execute(
            "INSERT INTO runs (job, slot, kind, outcome, started_at, pid, host) "
            "VALUES ('every', 42, 'scheduled', 'running', 1.0, 1, 'old')"
        )
    db.close()
    use_store(project, pg_url)
    project.icc("db", "migrate", check=True)
    project.icc("db", "copy-from-sqlite", check=True)
    [(outcome, ended, error)] = rows(pg_url, "SELECT outcome, ended_at, error FROM icc.runs WHERE slot = 42")
    assert outcome == "abandoned" and ended is not None and "in flight" in error


def test_db_commands_take_the_password_from_pgpassword_and_never_show_it(
    project: Project, pg_server: Any, pg_url: str
) -> None:
    _password_role(pg_server)
    dbname = pg_url.rsplit("/", 1)[1]
    use_store(project, f"postgresql://pwuser@127.0.0.1:{pg_server.port}/{dbname}")
    project.env["PGPASSWORD"] = "right"
    refused = project.icc("db", "migrate")  # pwuser may not create a schema in this database yet
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert "permission denied" in line and "Traceback" not in refused.stderr
    assert rows(pg_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'icc'") == [(0,)]

    pg_server.admin(f'GRANT CREATE ON DATABASE "{dbname}" TO pwuser')
    project.icc("db", "migrate", check=True)
    use_store(project, f"postgresql://pwuser:right@127.0.0.1:{pg_server.port}/{dbname}")
    del project.env["PGPASSWORD"]
    shown = project.icc("db", "status", check=True)
    assert f"pwuser:***@127.0.0.1:{pg_server.port}/{dbname}" in shown.stdout
    assert "right@" not in shown.stdout
    assert json.loads(project.icc("db", "status", "--json", check=True).stdout)["url"].startswith(
        "postgresql://pwuser:***@"
    )
