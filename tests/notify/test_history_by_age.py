"""``[icc] keep_runs_days``: history kept by age alongside ``keep_runs``, pruned in batches by real ticks, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest
from icc.config import load_config
from icc.errors import ConfigError
from icc.store import open_store
from icc.tick.coordinator import PRUNE_BATCH
from projectkit import Project, at

OLD_RUNS = 2500  # more than two batches


def execute(project: Project, sql: str, rows: list[tuple[Any, ...]] | None = None) -> list[tuple[Any, ...]]:
    if project.store_url is not None:
        import psycopg

        with psycopg.connect(project.store_url, options="-c search_path=icc", autocommit=True) as conn:
            if rows is not None:
                with conn.cursor() as cur:
                    cur.executemany(sql.replace("?", "%s"), rows)
                return []
            return [tuple(r) for r in conn.execute(sql.replace("?", "%s")).fetchall()]
    db = sqlite3.connect(project.db)
    try:
        if rows is not None:
            db.executemany(sql, rows)
            db.commit()
            return []
        return db.execute(sql).fetchall()
    finally:
        db.close()


def old_history(project: Project, count: int, days: float, *, failure: bool = True) -> None:
    """``count`` finished runs of job ``ok`` that ended ``days`` ago (with ``failure``, the oldest failed)."""
    ended = time.time() - days * 86_400
    rows = [
        (
            "ok",
            int(ended) - 60 * (count - i),
            "scheduled",
            "failed" if i == 0 and failure else "succeeded",
            ended - 1,
            ended,
        )
        for i in range(count)
    ]
    execute(
        project,
        "INSERT INTO runs (job, slot, kind, outcome, started_at, ended_at) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )


def count(project: Project, where: str = "") -> int:
    return int(execute(project, f"SELECT COUNT(*) FROM runs {where}")[0][0])


@pytest.mark.both_stores
def test_keep_runs_days_prunes_old_runs_at_most_a_batch_per_tick_keeping_the_last_failure(
    project: Project,
) -> None:
    project.write_config("keep_runs = 1000000\nkeep_runs_days = 30\n")
    project.write_plugin(
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["true"], name="ok").every_minute()
        """
    )
    project.icc("scan", check=True)
    old_history(project, OLD_RUNS, days=40)
    old_history(project, 5, days=10, failure=False)  # younger than keep_runs_days: kept
    cutoff = f"WHERE ended_at < {time.time() - 30 * 86_400}"
    assert count(project, cutoff) == OLD_RUNS
    for minute, left in ((1, OLD_RUNS - PRUNE_BATCH), (2, OLD_RUNS - 2 * PRUNE_BATCH), (3, 1), (4, 1)):
        project.icc("run", "--at", at(minute), check=True)
        assert count(project, cutoff) == left, minute
    # the one left is the job's last failure; the young ones and the ticks' own runs are all there
    assert execute(project, f"SELECT outcome FROM runs {cutoff}") == [("failed",)]
    young = f"WHERE ended_at BETWEEN {time.time() - 11 * 86_400} AND {time.time() - 9 * 86_400}"
    assert count(project, young) == 5


@pytest.mark.both_stores
def test_prune_old_runs_is_batched_and_oldest_first_on_the_store(project: Project) -> None:
    project.write_plugin(
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["true"], name="ok").every_minute()
        """
    )
    project.icc("scan", check=True)
    old_history(project, 50, days=40)
    store = open_store(load_config(project.config))
    try:
        assert store.prune_old_runs(time.time() - 30 * 86_400, 20) == 20
        assert store.prune_old_runs(time.time() - 30 * 86_400, 20) == 20
        # the last success and the last failure stay, whatever their age
        assert store.prune_old_runs(time.time() - 30 * 86_400, 20) == 8
        assert store.prune_old_runs(time.time() - 30 * 86_400, 20) == 0
    finally:
        store.close()
    assert sorted(r[0] for r in execute(project, "SELECT outcome FROM runs")) == ["failed", "succeeded"]


def test_keep_runs_days_must_be_a_positive_number(project: Project) -> None:
    project.write_config("keep_runs_days = 0\n")
    with pytest.raises(ConfigError, match=r"'keep_runs_days' in \[icc\] must be a number above 0"):
        load_config(project.config)
