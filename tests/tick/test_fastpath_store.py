"""The idle tick's fast path never answers for a PostgreSQL store: it reads only the SQLite file, which is stale
(or absent) once ``[icc.store] url`` or ``ICC_STORE_URL`` moves the state to PostgreSQL."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from icc import fastconfig
from icc.tick.idle import try_idle_tick
from projectkit import Project, at, slot
from statekit import TWO_JOBS, scanned

STORE = '\n[icc.store]\nurl = "{url}"\n'


def tick(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """`icc run` with -X importtime, so the test sees which path it took."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", *project.argv("run", *args)[1:]],
        cwd=project.root,
        env=project.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def full_command_ran(proc: subprocess.CompletedProcess[str]) -> bool:
    """The full command's mark: the full configuration loader (a due `icc run` goes without click)."""
    return any(line.rstrip().endswith("| icc.config") for line in proc.stderr.splitlines())


def stale_sqlite(project: Project) -> None:
    """A SQLite store that says "nothing due" for every slot of minute 0 (both jobs ran at minute 0)."""
    scanned(project, TWO_JOBS)
    project.icc("run", "--at", at(0), check=True)
    proc = tick(project, "--at", at(0, 30))
    assert "nothing due" in proc.stdout and not full_command_ran(proc)  # the fast path answers for SQLite


@pytest.mark.parametrize("where", ["table", "environment", "dotenv"])
def test_idle_tick_with_a_postgresql_store_falls_through_to_the_full_tick(
    project: Project, where: str
) -> None:
    stale_sqlite(project)
    url = "postgresql://icc@127.0.0.1:1/app"
    if where == "table":
        project.write_config(extra=STORE.format(url=url))
    elif where == "environment":
        project.env["ICC_STORE_URL"] = url
    else:
        (project.root / ".env").write_text(f"ICC_STORE_URL={url}\n")
    proc = tick(project, "--at", at(0, 30))
    assert "nothing due" not in proc.stdout
    assert full_command_ran(proc), proc.stderr[-2000:]


def test_fast_config_reader_doubts_every_store_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("ICC_STORE_URL", "ICC_CONFIG", "ICC_STATE_DIR", "ICC_TIMEZONE", "ICC_ENVIRONMENT"):
        monkeypatch.delenv(key, raising=False)
    config = tmp_path / "icc.toml"
    config.write_text('[icc]\nstate_dir = "state"\n')
    assert fastconfig.read_config(str(config)) == (str(tmp_path / "state"), "UTC")
    config.write_text('[icc]\nstate_dir = "state"\n[icc.store]\nurl = "postgresql://icc@db/app"\n')
    assert fastconfig.read_config(str(config)) is None
    config.write_text('[icc]\nstate_dir = "state"\n[icc.store]\nhost_id = "web-1"\n')
    assert fastconfig.read_config(str(config)) is None  # the full loader validates the table
    config.write_text('[icc]\nstate_dir = "state"\n')
    monkeypatch.setenv("ICC_STORE_URL", "postgresql://icc@db/app")
    assert fastconfig.read_config(str(config)) is None


def test_try_idle_tick_returns_none_for_a_postgresql_store(project: Project) -> None:
    stale_sqlite(project)
    project.write_config(extra=STORE.format(url="postgresql://icc@db.invalid/app"))
    cwd = os.getcwd()
    os.chdir(project.root)
    try:
        assert try_idle_tick(["--config", str(project.config), "run", "--quiet", "--at", at(0, 30)]) is None
    finally:
        os.chdir(cwd)


@pytest.mark.skipif(
    importlib.util.find_spec("icc.store.postgres.state") is None,
    reason="the PostgreSQL state store is not here yet",
)
def test_idle_tick_runs_a_job_due_in_postgresql_despite_a_stale_sqlite_file(
    project: Project, pg_url: str
) -> None:
    stale_sqlite(project)  # SQLite: nothing due in minute 0
    project.write_config(extra=STORE.format(url=pg_url))
    project.icc("db", "migrate", check=True)
    project.icc("scan", check=True)  # PostgreSQL: both jobs, never run, due at minute 0
    proc = tick(project, "--at", at(0, 30))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ran = conn.execute(
            "SELECT job, slot FROM icc.runs WHERE outcome = 'succeeded' ORDER BY job"
        ).fetchall()
    assert ran == [("a", slot(0)), ("b", slot(0))]
