"""The plugin host, against real modules and real distributions on disk.

Installed plugins are real: a ``<name>-<version>.dist-info`` directory with METADATA and entry_points.txt
beside the module, on ``sys.path``; importlib.metadata finds it exactly as if pip had installed it.
"""

from __future__ import annotations

import functools
import importlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import icc
import pytest
from icc.config import Config
from icc.jobs import Job, Provenance, RunContext, RunResult
from icc.plugins import (
    BUILTIN_PLUGINS,
    PluginHost,
    StrictPluginError,
    installed_fingerprint,
    load_plugins,
)

FIXTURES = Path(__file__).parents[1] / "plugin_fixtures"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Restore sys.path and forget the plugin modules a test imported from tmp_path."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("ICC_PLUGINS", raising=False)
    monkeypatch.delenv("ICC_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    importlib.invalidate_caches()
    yield
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site-packages directory on sys.path."""
    path = tmp_path / "site-packages"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


@pytest.fixture
def no_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests of local plugins: keep whatever icc plugins the venv holds out of the way."""
    monkeypatch.setenv("ICC_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def install(site: Path, dist: str, version: str, *, entry_point: str, module: str, fixture: str) -> None:
    """Write distribution ``dist`` into ``site``: its metadata, one icc.tasks entry point, one module."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[icc.tasks]\n{entry_point} = {module}\n")
    shutil.copy(FIXTURES / f"{fixture}.py", site / f"{module}.py")
    importlib.invalidate_caches()


def local(project: Path, module: str, fixture: str) -> None:
    shutil.copy(FIXTURES / f"{fixture}.py", project / f"{module}.py")


def config(project: Path, *plugins: str, **tables: dict[str, object]) -> Config:
    return Config(path=None, root=project, plugins=plugins, tables=tables)


def ours(host: PluginHost, *names: str) -> list[str]:
    """The loaded plugins among ``names`` (the venv may hold other icc plugins)."""
    return [p.name for p in host.plugins if p.name in names]


# --- loading and isolation --------------------------------------------------------------------------


def test_plugin_with_import_error_is_reported_and_healthy_plugin_keeps_its_jobs(
    site: Path, project: Path
) -> None:
    install(site, "good-plugin", "1.2.0", entry_point="good", module="good_tasks", fixture="healthy")
    install(site, "bad-plugin", "0.3", entry_point="bad", module="bad_tasks", fixture="broken_import")

    host = load_plugins(config(project))
    jobs = host.collect_jobs()

    assert jobs["good_tasks:nightly"].provenance == Provenance("good", "good-plugin", "1.2.0")
    [failure] = [f for f in host.failures if f.plugin == "bad"]
    assert failure.distribution == "bad-plugin"
    assert failure.version == "0.3"
    assert failure.hook is None
    assert failure.exception_type == "ModuleNotFoundError"
    assert "icc_dependency_that_is_not_installed" in failure.error
    assert "plugin 'bad' (bad-plugin 0.3) failed to load" in str(failure)
    assert ours(host, "good", "bad") == ["good"]


def test_strict_load_raises_plugin_error_naming_plugin_distribution_and_error(
    site: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(site, "good-plugin", "1.2.0", entry_point="good", module="good_tasks", fixture="healthy")
    install(site, "bad-plugin", "0.3", entry_point="bad", module="bad_tasks", fixture="broken_import")
    monkeypatch.setenv("ICC_PLUGINS", "good,bad")  # whatever else the venv holds stays out

    with pytest.raises(icc.PluginError, match=r"plugin 'bad' \(bad-plugin 0.3\) failed to load") as info:
        load_plugins(config(project), strict=True)
    assert isinstance(info.value, StrictPluginError)
    assert [f.plugin for f in info.value.failures] == ["bad"]


def test_installed_plugin_jobs_record_distribution_and_version(site: Path, project: Path) -> None:
    install(site, "acme-reports", "2.5.1", entry_point="acme-reports", module="acme_tasks", fixture="healthy")

    host = load_plugins(config(project))

    [info] = [p for p in host.plugins if p.name == "acme-reports"]
    assert (info.distribution, info.version, info.source, info.module) == (
        "acme-reports",
        "2.5.1",
        "entry-point",
        "acme_tasks",
    )
    jobs = host.collect_jobs()
    expected = Provenance("acme-reports", "acme-reports", "2.5.1")
    assert {jobs[name].provenance for name in jobs if name.startswith("acme_tasks")} == {expected}


@pytest.mark.usefixtures("no_autoload")
def test_callable_task_is_named_module_qualname_and_command_task_keeps_its_argv(project: Path) -> None:
    local(project, "myapp_tasks", "healthy")

    jobs = load_plugins(config(project, "myapp_tasks")).collect_jobs()

    nightly = jobs["myapp_tasks:nightly"]
    assert nightly.kind == "callable"
    assert nightly.description == "nightly cleanup"
    assert "myapp_tasks:Reports.weekly" in jobs
    echo = jobs["myapp_tasks-echo"]
    assert echo.kind == "command"
    assert echo.argv == ["echo", "hello"]
    assert nightly.provenance == Provenance("myapp_tasks", None, None)


@pytest.mark.usefixtures("no_autoload")
def test_local_plugin_is_imported_from_the_config_root(project: Path) -> None:
    local(project, "myapp_tasks", "healthy")

    host = load_plugins(config(project, "myapp_tasks"))

    [info] = [p for p in host.plugins if p.name == "myapp_tasks"]
    assert (info.source, info.distribution, info.version) == ("local", None, None)
    assert sys.modules["myapp_tasks"].__file__ == str(project / "myapp_tasks.py")


@pytest.mark.usefixtures("no_autoload")
def test_local_plugin_that_does_not_exist_is_reported(project: Path) -> None:
    host = load_plugins(config(project, "not_a_module_anywhere"))

    [failure] = [f for f in host.failures if f.plugin == "not_a_module_anywhere"]
    assert failure.distribution is None
    assert "No module named 'not_a_module_anywhere'" in failure.error


@pytest.mark.usefixtures("no_autoload")
def test_schedule_hook_that_raises_loses_its_jobs_and_others_keep_theirs(project: Path) -> None:
    local(project, "sync_tasks", "raising_schedule")
    local(project, "myapp_tasks", "healthy")

    host = load_plugins(config(project, "sync_tasks", "myapp_tasks"))
    jobs = host.collect_jobs()

    assert "myapp_tasks:nightly" in jobs
    assert "sync_tasks:sync" not in jobs
    [failure] = [f for f in host.failures if f.plugin == "sync_tasks"]
    assert failure.hook == "schedule"
    assert failure.error == "RuntimeError: database unreachable"
    assert "plugin 'sync_tasks' failed in hook 'schedule'" in str(failure)


@pytest.mark.usefixtures("no_autoload")
def test_schedule_hook_that_raises_under_strict_raises_plugin_error(project: Path) -> None:
    local(project, "sync_tasks", "raising_schedule")

    host = load_plugins(config(project, "sync_tasks"), strict=True)
    with pytest.raises(
        icc.PluginError, match=r"'sync_tasks' failed in hook 'schedule'.*database unreachable"
    ):
        host.collect_jobs()


@pytest.mark.usefixtures("no_autoload")
def test_invalid_schedule_is_a_failure_naming_the_plugin(project: Path) -> None:
    local(project, "tick_tasks", "bad_schedule")
    local(project, "myapp_tasks", "healthy")

    host = load_plugins(config(project, "tick_tasks", "myapp_tasks"))
    jobs = host.collect_jobs()

    assert "myapp_tasks:nightly" in jobs
    assert "tick_tasks:tick" not in jobs
    [failure] = [f for f in host.failures if f.plugin == "tick_tasks"]
    assert (failure.hook, failure.exception_type) == ("schedule", "ScheduleError")

    strict = load_plugins(config(project, "tick_tasks"), strict=True)
    with pytest.raises(icc.PluginError, match="tick_tasks") as info:
        strict.collect_jobs()
    assert isinstance(info.value.__cause__, icc.ScheduleError)


def test_job_name_two_plugins_use_is_left_out_and_reported_naming_both(site: Path, project: Path) -> None:
    install(site, "export-one", "1.0", entry_point="export-one", module="export_one", fixture="shared_name")
    install(site, "export-two", "2.0", entry_point="export-two", module="export_two", fixture="shared_name")
    install(site, "export-three", "3.0", entry_point="export-three", module="export_3", fixture="shared_name")
    install(site, "good-plugin", "1.2.0", entry_point="good", module="good_tasks", fixture="healthy")

    host = load_plugins(config(project))
    jobs = host.collect_jobs()

    assert "export" not in jobs  # a third plugin with the name does not get it either
    assert "good_tasks:nightly" in jobs
    failures = [f for f in host.failures if f.plugin.startswith("export")]
    assert [(f.plugin, f.hook) for f in failures] == [
        ("export-three", "schedule"),
        ("export-two", "schedule"),
    ]
    message = failures[1].error
    assert "'export'" in message
    assert "plugin 'export-one' (export-one 1.0)" in message
    assert "plugin 'export-two' (export-two 2.0)" in message
    assert host.left_out["export"] == failures[1].error

    strict = load_plugins(config(project), strict=True)
    with pytest.raises(StrictPluginError, match="'export' is used by two plugins"):
        strict.collect_jobs()


def test_entry_point_name_taken_by_another_distribution_is_reported(site: Path, project: Path) -> None:
    install(site, "reports-a", "1.0", entry_point="reports", module="reports_a", fixture="healthy")
    install(site, "reports-b", "1.0", entry_point="reports", module="reports_b", fixture="healthy")

    host = load_plugins(config(project))

    assert ours(host, "reports") == ["reports"]
    [failure] = [f for f in host.failures if f.plugin == "reports"]
    assert "name the entry point after its distribution" in failure.error


def test_distribution_found_twice_on_sys_path_is_loaded_once(
    site: Path, project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install(site, "twice-plugin", "1.0", entry_point="twice", module="twice_tasks", fixture="healthy")
    lib64 = tmp_path / "lib64-site-packages"
    lib64.symlink_to(site, target_is_directory=True)
    monkeypatch.syspath_prepend(str(lib64))

    host = load_plugins(config(project))
    jobs = host.collect_jobs()

    assert ours(host, "twice") == ["twice"]
    assert not [f for f in host.failures if f.plugin == "twice"]
    assert jobs["twice_tasks:nightly"].provenance.distribution == "twice-plugin"


# --- environment ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "yes", "on"])
def test_disable_plugin_autoload_skips_entry_points_but_not_local_plugins(
    site: Path, project: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    install(site, "good-plugin", "1.0", entry_point="good", module="good_tasks", fixture="healthy")
    local(project, "myapp_tasks", "healthy")
    monkeypatch.setenv("ICC_DISABLE_PLUGIN_AUTOLOAD", value)

    host = load_plugins(config(project, "myapp_tasks"))

    assert ours(host, "good", "myapp_tasks") == ["myapp_tasks"]
    assert not [p for p in host.plugins if p.source == "entry-point"]


@pytest.mark.parametrize("value", ["0", "false", ""])
def test_disable_plugin_autoload_set_to_false_loads_entry_points(
    site: Path, project: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    install(site, "good-plugin", "1.0", entry_point="good", module="good_tasks", fixture="healthy")
    monkeypatch.setenv("ICC_DISABLE_PLUGIN_AUTOLOAD", value)

    assert ours(load_plugins(config(project)), "good") == ["good"]


def test_icc_plugins_limits_loading_to_the_named_plugins(
    site: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(site, "good-plugin", "1.0", entry_point="good", module="good_tasks", fixture="healthy")
    install(site, "other-plugin", "1.0", entry_point="other", module="other_tasks", fixture="healthy")
    local(project, "myapp_tasks", "healthy")
    local(project, "extra_tasks", "healthy")
    monkeypatch.setenv("ICC_PLUGINS", "good, myapp_tasks")

    host = load_plugins(config(project, "myapp_tasks", "extra_tasks"))

    assert ours(host, "good", "other", "myapp_tasks", "extra_tasks") == ["good", "myapp_tasks"]
    assert "other_tasks" not in sys.modules
    assert not host.failures


def test_icc_plugins_naming_a_missing_plugin_is_reported(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICC_PLUGINS", "no-such-plugin")

    host = load_plugins(config(project))

    [failure] = host.failures
    assert failure.plugin == "no-such-plugin"
    assert "ICC_PLUGINS" in failure.error


def test_empty_icc_plugins_loads_no_plugin(
    site: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(site, "good-plugin", "1.0", entry_point="good", module="good_tasks", fixture="healthy")
    local(project, "myapp_tasks", "healthy")
    monkeypatch.setenv("ICC_PLUGINS", "")

    host = load_plugins(config(project, "myapp_tasks"))

    assert {p.source for p in host.plugins} <= {"builtin"}


# --- hooks ------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_autoload")
def test_misspelled_hook_implementation_is_reported_with_the_closest_hook(project: Path) -> None:
    local(project, "typo_tasks", "misspelled_hook")

    host = load_plugins(config(project, "typo_tasks"))

    [failure] = [f for f in host.failures if f.plugin == "typo_tasks"]
    assert failure.hook == "shedule"
    assert "did you mean 'schedule'?" in failure.error
    # the plugin's correct hooks still work
    assert "typo_tasks.ping" in host.collect_handlers()
    with pytest.raises(icc.PluginError, match="shedule"):
        load_plugins(config(project, "typo_tasks"), strict=True)


@pytest.mark.usefixtures("no_autoload")
def test_configure_hook_receives_the_plugins_own_table(project: Path) -> None:
    local(project, "mailer", "configurable")

    host = load_plugins(config(project, "mailer", mailer={"sender": "noreply@example.org"}))

    assert sys.modules["mailer"].SEEN == [{"sender": "noreply@example.org"}]
    assert not host.failures
    assert "mailer:send" in host.collect_jobs()
    host.configure()  # idempotent: load_plugins called it already
    assert len(sys.modules["mailer"].SEEN) == 1


@pytest.mark.usefixtures("no_autoload")
def test_configure_hook_that_raises_config_error_disables_the_plugin(project: Path) -> None:
    local(project, "mailer", "configurable")
    local(project, "myapp_tasks", "healthy")

    host = load_plugins(config(project, "mailer", "myapp_tasks", mailer={"sender": "nobody"}))

    [failure] = host.failures
    assert (failure.plugin, failure.hook, failure.exception_type) == ("mailer", "configure", "ConfigError")
    assert "sender must be an e-mail address" in failure.error
    assert ours(host, "mailer", "myapp_tasks") == ["myapp_tasks"]
    jobs = host.collect_jobs()
    assert "mailer:send" not in jobs
    assert "myapp_tasks:nightly" in jobs

    with pytest.raises(icc.PluginError, match="sender must be an e-mail address"):
        load_plugins(config(project, "mailer", mailer={"sender": "nobody"}), strict=True)


def test_register_handlers_collects_handlers_with_queue_and_provenance(site: Path, project: Path) -> None:
    install(
        site, "acme-reports", "2.0", entry_point="acme-reports", module="acme_handlers", fixture="handlers"
    )

    handlers = load_plugins(config(project)).collect_handlers()

    queue, handler, provenance = handlers["report.render"]
    assert queue == "async"
    assert handler is sys.modules["acme_handlers"].render
    assert provenance == Provenance("acme-reports", "acme-reports", "2.0")
    assert handlers["acme_handlers.mail"].queue == "mail"


@pytest.mark.usefixtures("no_autoload")
def test_handler_name_two_plugins_register_is_left_out_and_reported_naming_both(project: Path) -> None:
    local(project, "handlers_one", "handlers")
    local(project, "handlers_two", "handlers")

    host = load_plugins(config(project, "handlers_one", "handlers_two"))
    handlers = host.collect_handlers()

    assert "report.render" not in handlers
    assert {"handlers_one.mail", "handlers_two.mail"} <= set(handlers)
    [failure] = host.failures
    assert (failure.plugin, failure.hook) == ("handlers_two", "register_handlers")
    assert "'report.render'" in failure.error
    assert "'handlers_one' and plugin 'handlers_two'" in failure.error


@pytest.mark.usefixtures("no_autoload")
def test_register_commands_adds_a_command_and_refuses_to_replace_one(project: Path) -> None:
    local(project, "hello_commands", "commands")
    local(project, "hijack_commands", "hijack")

    @click.group()
    def cli() -> None:
        pass

    @cli.command()
    def status() -> None:
        click.echo("the real status")

    host = load_plugins(config(project, "hello_commands", "hijack_commands"))
    host.register_commands(cli)

    assert set(cli.commands) == {"hello", "status"}
    assert cli.commands["status"] is status
    [failure] = host.failures
    assert (failure.plugin, failure.hook) == ("hijack_commands", "register_commands")
    assert "'status' exists already" in failure.error


@pytest.mark.usefixtures("no_autoload")
def test_run_hooks_are_called_and_a_raising_one_never_breaks_the_run(project: Path) -> None:
    local(project, "observer", "run_hooks")
    local(project, "myapp_tasks", "healthy")
    host = load_plugins(config(project, "observer", "myapp_tasks"), strict=True)
    job: Job = host.collect_jobs()["myapp_tasks:nightly"]
    run = RunContext(job=job.name, run_id=1, slot=None, kind="manual", environment="production")

    host.call_before_run(job, run)
    host.call_after_run(job, run, RunResult("succeeded"))  # raises inside, even under strict: only recorded

    assert sys.modules["observer"].CALLS == [("before", "myapp_tasks:nightly"), ("after", "succeeded")]
    [failure] = host.failures
    assert (failure.plugin, failure.hook) == ("observer", "after_run")
    assert "metrics server down" in failure.error


# --- fingerprint ------------------------------------------------------------------------------------


def test_fingerprint_changes_when_a_plugin_is_installed_and_matches_installed_fingerprint(
    site: Path, project: Path
) -> None:
    cfg = config(project)
    before = load_plugins(cfg).fingerprint()
    assert before == installed_fingerprint(cfg)

    install(site, "good-plugin", "1.0", entry_point="good", module="good_tasks", fixture="healthy")
    after = load_plugins(cfg).fingerprint()

    assert after != before
    assert after == installed_fingerprint(cfg)
    assert installed_fingerprint(config(project, "myapp_tasks")) != after


def test_installed_fingerprint_imports_no_plugin(site: Path, project: Path) -> None:
    install(site, "loud-plugin", "1.0", entry_point="loud", module="loud_tasks", fixture="side_effect")

    installed_fingerprint(config(project))

    assert "loud_tasks" not in sys.modules


def test_fingerprint_changes_with_a_plugin_version(site: Path, project: Path, tmp_path: Path) -> None:
    install(site, "good-plugin", "1.0", entry_point="good", module="good_tasks", fixture="healthy")
    first = installed_fingerprint(config(project))
    shutil.rmtree(site / "good_plugin-1.0.dist-info")
    install(site, "good-plugin", "1.1", entry_point="good", module="good_tasks2", fixture="healthy")

    assert installed_fingerprint(config(project)) != first


def test_builtin_plugins_are_listed_by_module_name() -> None:
    assert all(isinstance(name, str) and name.startswith("icc.") for name in BUILTIN_PLUGINS)


@pytest.mark.usefixtures("no_autoload")
def test_hook_wrapper_is_reported_once_and_never_called(project: Path) -> None:
    local(project, "wrapping", "wrapper_hook")
    local(project, "myapp_tasks", "healthy")

    host = load_plugins(config(project, "wrapping", "myapp_tasks"))
    host.collect_jobs()

    [failure] = host.failures
    assert (failure.plugin, failure.hook) == ("wrapping", "schedule")
    assert "wrappers are not supported" in failure.error
    assert "myapp_tasks:nightly" in host.collect_jobs()


class _Callable:
    def __call__(self) -> None:
        pass


def test_default_name_is_stable_for_callables_without_a_qualname() -> None:
    from icc.jobs import default_name

    assert default_name(test_builtin_plugins_are_listed_by_module_name) == (
        f"{__name__}:test_builtin_plugins_are_listed_by_module_name"
    )
    # never a repr() with a memory address: the name keys the job in the state store
    assert default_name(_Callable()) == f"{__name__}:_Callable"
    assert default_name(functools.partial(print, "x")) == "functools:partial"


def test_a_manager_prepared_before_a_fork_is_taken_by_the_child_once_never_by_the_parent(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick prepares pluggy's manager (hook specifications, no plugin) before it forks its runs'
    supervisors (icc.plugins.prepare_manager): each child's first PluginHost takes it, a second builds its own,
    and the tick's own never does (else a plugin registered there would reach the children)."""
    import os

    import icc.plugins

    monkeypatch.setattr(icc.plugins, "_PREPARED", [])
    icc.plugins.prepare_manager()
    prepared = icc.plugins._PREPARED[0][1]
    config = Config(path=None, root=project)
    assert PluginHost(config).pm is not prepared
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports and exits
        try:
            first, second = PluginHost(config), PluginHost(config)
            ok = first.pm is prepared and second.pm is not prepared and hasattr(first.pm.hook, "schedule")
            os.write(write_fd, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    assert os.read(read_fd, 1) == b"1"
    os.close(read_fd)
    assert [(os.getpid(), prepared)] == icc.plugins._PREPARED, "the parent keeps it for its next children"
