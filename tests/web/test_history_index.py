"""The job page's history queries walk an index on PostgreSQL (EXPLAIN), with 100,000 runs in the store: the
statements checked are the ones the store really sends, captured from its connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from conftest import migrated_url
from icc.config import Config, StoreConfig
from icc.store import open_store


def test_the_job_pages_queries_use_the_runs_index(pg_url: str) -> None:
    url = migrated_url(pg_url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO icc.runs (job, slot, kind, outcome, started_at, ended_at, exit_code, host, output) "
            "SELECT 'job-' || (n % 100), n * 60, 'scheduled', "
            "CASE WHEN n % 7 = 0 THEN 'failed' ELSE 'succeeded' END, n * 60, n * 60 + 1, 0, 'h', 'out' "
            "FROM generate_series(1, 100000) AS n"
        )
        conn.execute("ANALYZE icc.runs")
    config = Config(path=None, root=Path("."), store=StoreConfig(url=url, host_id="tests"))
    store = open_store(config)
    sent: list[tuple[str, Any]] = []
    original = store._read  # type: ignore[attr-defined]

    def capture(sql: str, params: Any = ()) -> list[Any]:
        sent.append((store._q(sql), params))  # type: ignore[attr-defined]
        return original(sql, params)  # type: ignore[no-any-return]

    store._read = capture  # type: ignore[attr-defined]
    try:
        newest = store.run_briefs("job-7", limit=51)
        assert len(newest) == 51 and newest[0].id > newest[-1].id
        older = store.run_briefs("job-7", limit=51, before=newest[-1].id)
        assert older[0].id < newest[-1].id
        assert len(store.runs("job-7", limit=20, before=newest[-1].id)) == 20
        last = store.last_runs_of("job-7")
        assert last["failure"].outcome == "failed" and last["success"].outcome == "succeeded"
        assert store.missed_count("job-7", 0, 10**10) == 0
    finally:
        store.close()
    assert len(sent) == 7  # two pages, runs(before=), last_runs_of (three), missed_count
    with psycopg.connect(url, autocommit=True) as conn:
        for sql, params in sent:
            plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + sql, params).fetchall())
            assert "Seq Scan" not in plan, (sql, plan)
            assert "runs_job" in plan or "runs_claim" in plan, (sql, plan)
