"""The metrics of round 3 (icc_job_last_failure_timestamp_seconds, icc_job_duration_seconds, icc_job_stale), read
from a real ``icc metrics`` with prometheus_client's own parser, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest
from icc.config import load_config
from icc.notify import freshness
from icc.store import open_store
from projectkit import Project, at
from prometheus_client.parser import text_string_to_metric_families

PLUGIN = """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(["true"], name="ok").every_minute()
    scheduler.add(["sh", "-c", "echo no; exit 3"], name="boom").every_minute().expect_success_within(3600)
    scheduler.add(["true"], name="never").daily().at(3).expect_success_within(1)
"""


def samples(project: Project) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = project.icc("metrics", check=True).stdout
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.mark.both_stores
def test_metrics_export_last_failure_duration_histogram_and_staleness(project: Project) -> None:
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    project.icc("run", "--at", at(1))
    project.icc("run", "--at", at(2))
    store = open_store(load_config(project.config))
    try:
        seen = store.get_meta(freshness.FRESH_PREFIX + "never")
        [failure] = [r for r in store.runs("boom", limit=1)]
    finally:
        store.close()
    assert seen is not None
    due = float(json.loads(seen)["seen"]) + 1
    project.wait_for(lambda: time.time() > due + 0.01, what="never's window to pass")
    found = samples(project)

    assert value(found, "icc_job_last_failure_timestamp_seconds", job="boom") == pytest.approx(
        failure.ended_at
    )
    assert value(found, "icc_job_last_failure_timestamp_seconds", job="ok") is None

    for job in ("ok", "boom"):
        assert value(found, "icc_job_duration_seconds_count", job=job) == 2
        assert value(found, "icc_job_duration_seconds_bucket", job=job, le="+Inf") == 2
        assert value(found, "icc_job_duration_seconds_bucket", job=job, le="86400.0") == 2
        total = value(found, "icc_job_duration_seconds_sum", job=job)
        assert total is not None and 0 <= total < 120
    buckets = [
        (float(dict(labels)["le"]), v)
        for (name, labels), v in found.items()
        if name == "icc_job_duration_seconds_bucket" and dict(labels)["job"] == "ok"
    ]
    counts = [v for _le, v in sorted(buckets)]
    assert counts == sorted(counts)  # cumulative
    assert value(found, "icc_job_duration_seconds_count", job="never") is None  # never ran

    assert value(found, "icc_job_stale", job="boom") == 0  # failed, but within its hour since the scan
    assert value(found, "icc_job_stale", job="never") == 1
    assert value(found, "icc_job_stale", job="ok") is None  # no freshness check
    # the pseudo-outcomes that hold the histogram stay out of the runs counter
    assert {dict(labels)["outcome"] for (name, labels) in found if name == "icc_job_runs_total"} <= {
        "succeeded",
        "failed",
    }
