"""icc.framework, the seam web framework integrations install through: their settings as icc's configuration,
their management commands as jobs, their context around user code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import icc
import pytest
from icc import framework
from icc.config import load_config
from icc.errors import ConfigError, ScheduleError


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[list[str]]:
    calls: list[str] = []

    @contextlib.contextmanager
    def around() -> Iterator[None]:
        calls.append("enter")
        yield
        calls.append("exit")

    table = {"timezone": "Europe/Vienna", "state_dir": "var/icc", "consumers": {"queues": ("async",)}}
    framework.install(
        framework.Framework(
            "test",
            around=around,
            config=lambda: framework.ConfigTable(table, tmp_path, "test setting ICC"),
            command=lambda name, args, options: (lambda: calls.append(name), f"manage.py {name}"),
        )
    )
    try:
        yield calls
    finally:
        framework.uninstall("test")


def test_scheduler_command_without_a_framework_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError, match=r"add 'icc.contrib.django' to INSTALLED_APPS"):
        icc.Scheduler().command("clearsessions")


def test_scheduler_command_adds_the_frameworks_job(installed: list[str]) -> None:
    scheduler = icc.Scheduler()
    scheduler.command("clearsessions").daily()
    job = scheduler.jobs["manage.py clearsessions"]
    assert callable(job.task)
    job.task()
    assert installed == ["clearsessions"]


def test_an_installed_frameworks_settings_are_the_configuration(installed: list[str], tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "icc.toml").write_text('[icc]\ntimezone = "UTC"\n')
    config = load_config(cwd=tmp_path / "elsewhere", environ={})
    assert config.timezone == "Europe/Vienna"
    assert config.root == tmp_path and config.state_dir == tmp_path / "var" / "icc"
    assert config.consumers.queues == ("async",)
    # --config or ICC_CONFIG still win
    named = load_config(tmp_path / "elsewhere" / "icc.toml", environ={})
    assert named.timezone == "UTC"


def test_a_bad_key_in_the_frameworks_settings_names_the_setting(tmp_path: Path) -> None:
    framework.install(
        framework.Framework(
            "bad", config=lambda: framework.ConfigTable({"timezon": "UTC"}, tmp_path, "test ICC")
        )
    )
    try:
        with pytest.raises(ConfigError, match=r"^test ICC: unknown key 'timezon'.*did you mean 'timezone'"):
            load_config(cwd=tmp_path, environ={})
    finally:
        framework.uninstall("bad")


def test_user_code_runs_inside_every_installed_frameworks_context(installed: list[str]) -> None:
    with framework.user_code():
        installed.append("code")
    assert installed == ["enter", "code", "exit"]
