"""The built-in queue plugin: consumer cron jobs in "cron" mode, none in "service" mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from icc.config import load_config
from icc.plugins import load_plugins

pytest.importorskip("icc.schedule")

NO_AUTOLOAD = {"ICC_DISABLE_PLUGIN_AUTOLOAD": "1"}


def jobs_for(tmp_path: Path, consumers: str) -> dict[str, object]:
    config_file = tmp_path / "icc.toml"
    config_file.write_text(f'[icc]\nstate_dir = "state"\n[icc.consumers]\n{consumers}\n')
    return dict(load_plugins(load_config(config_file), environ=NO_AUTOLOAD).collect_jobs())


def test_cron_mode_adds_one_consumer_job_per_queue(tmp_path: Path) -> None:
    jobs = jobs_for(tmp_path, 'mode = "cron"\ntime_limit = 45')
    consumers = {name: job for name, job in jobs.items() if name.startswith("consume:")}
    assert sorted(consumers) == ["consume:async", "consume:mail"]
    job = consumers["consume:mail"]
    config = str(tmp_path / "icc.toml")
    assert job.argv == [
        sys.executable,
        "-m",
        "icc",
        "--config",
        config,
        "consume",
        "mail",
        "--time-limit",
        "45",
    ]  # type: ignore[attr-defined]
    schedule = job.schedule  # type: ignore[attr-defined]
    assert schedule.expression == "* * * * *"
    assert schedule.background and not schedule.overlapping
    assert "mail" in job.description  # type: ignore[attr-defined]
    assert job.provenance.plugin == "icc.queue.builtin"  # type: ignore[attr-defined]


def test_cron_mode_follows_the_configured_queues(tmp_path: Path) -> None:
    jobs = jobs_for(tmp_path, 'mode = "cron"\nqueues = ["mail", "reports"]')
    assert sorted(n for n in jobs if n.startswith("consume:")) == ["consume:mail", "consume:reports"]


def test_service_mode_adds_no_consumer_job(tmp_path: Path) -> None:
    assert not [n for n in jobs_for(tmp_path, 'mode = "service"') if n.startswith("consume:")]
