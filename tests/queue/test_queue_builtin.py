"""The built-in queue plugin: consumer cron jobs in "cron" mode, none in "service" mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from icc.config import load_config
from icc.plugins import load_plugins
from icc.queue.builtin import ConsumerTask

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
    # A callable run in a fork of the tick (no second interpreter), the consumer of its queue.
    assert job.kind == "callable"  # type: ignore[attr-defined]
    assert isinstance(job.task, ConsumerTask) and job.task.queue == "mail"  # type: ignore[attr-defined]
    assert job.task.config.consumers.time_limit == 45  # type: ignore[attr-defined]
    schedule = job.schedule  # type: ignore[attr-defined]
    assert schedule.expression == "* * * * *"
    assert schedule.background and not schedule.overlapping
    assert schedule.per_host  # on a shared store every host drains its queues
    assert "mail" in job.description  # type: ignore[attr-defined]
    assert job.provenance.plugin == "icc.queue.builtin"  # type: ignore[attr-defined]


def test_cron_mode_follows_the_configured_queues(tmp_path: Path) -> None:
    jobs = jobs_for(tmp_path, 'mode = "cron"\nqueues = ["mail", "reports"]')
    assert sorted(n for n in jobs if n.startswith("consume:")) == ["consume:mail", "consume:reports"]


def test_service_mode_adds_no_consumer_job(tmp_path: Path) -> None:
    assert not [n for n in jobs_for(tmp_path, 'mode = "service"') if n.startswith("consume:")]


def test_scan_in_cron_then_service_mode_adds_then_removes_the_two_consumer_jobs(tmp_path: Path) -> None:
    import os
    import subprocess

    (tmp_path / "otherjobs.py").write_text(
        "import icc\n\n\ndef other():\n    pass\n\n\n@icc.hookimpl\ndef schedule(scheduler):\n"
        "    scheduler.add(other, name='other').daily()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")} | NO_AUTOLOAD

    def scan(mode: str) -> dict[str, str]:
        (tmp_path / "icc.toml").write_text(
            f'[icc]\nstate_dir = "state"\nplugins = ["otherjobs"]\n[icc.consumers]\nmode = "{mode}"\n'
        )
        proc = subprocess.run(
            [sys.executable, "-m", "icc", "--config", str(tmp_path / "icc.toml"), "scan"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        changes = {}
        for line in proc.stdout.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("other", "consume:mail", "consume:async"):
                changes[words[0]] = words[1]
        return changes

    assert scan("cron") == {"other": "added", "consume:mail": "added", "consume:async": "added"}
    assert scan("service") == {"other": "unchanged", "consume:mail": "removed", "consume:async": "removed"}
