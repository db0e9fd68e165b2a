"""A run's supervisor imports its job's own plugin and the plugins with run hooks, no other.

``icc scan`` stores which plugins implement ``before_run``/``after_run`` (meta ``run_hook_plugins``). While
the tick's drift check says the plugins are as that scan saw them, each supervisor (and the concluder of the
rows the tick records) loads just those and the job's own plugin, and calls only that plugin's ``schedule``
hook; when they may have changed, it loads every plugin as before.
"""

from __future__ import annotations

import os

from projectkit import Project, at

PLUGINS = ("tasks_plugin", "other_plugin", "hooks_plugin")

IMPORTED = """
with open(os.path.join(os.environ["MARKER_DIR"], "imported.txt"), "a") as f:
    f.write(__name__ + "\\n")
"""

TASKS = (
    IMPORTED
    + """
def mine():
    print("mine ran")

@icc.hookimpl
def schedule(scheduler):
    if os.path.exists(os.path.join(os.environ["MARKER_DIR"], "defined")):
        scheduler.add(mine, name="mine").every_minute()
"""
)

OTHER = (
    IMPORTED
    + """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(lambda: None, name="nightly").cron("0 3 * * *")
"""
)

HOOKS = (
    IMPORTED
    + """
@icc.hookimpl
def after_run(job, run, result, outcome):
    with open(os.path.join(os.environ["MARKER_DIR"], "after_run.txt"), "a") as f:
        f.write(f"{job.name} {outcome}\\n")
"""
)


def three_plugins(project: Project) -> None:
    project.write_config(plugins=PLUGINS)
    project.write_plugin(TASKS, "tasks_plugin")
    project.write_plugin(OTHER, "other_plugin")
    project.write_plugin(HOOKS, "hooks_plugin")
    (project.root / "defined").write_text("")
    project.icc("scan", check=True)
    (project.root / "imported.txt").unlink()  # the scan imported all three


def test_a_runs_supervisor_imports_only_its_jobs_plugin_and_the_plugins_with_run_hooks(
    project: Project,
) -> None:
    three_plugins(project)
    proc = project.icc("run", "--at", at(0))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = project.runs("mine")
    assert run["outcome"] == "succeeded" and "mine ran" in run["output"]
    assert sorted(project.marker_lines("imported.txt")) == ["hooks_plugin", "tasks_plugin"]
    assert project.marker_lines("after_run.txt") == ["mine succeeded"]


def test_a_run_loads_every_plugin_when_the_plugins_changed_since_the_scan(project: Project) -> None:
    three_plugins(project)
    other = project.root / "other_plugin.py"
    stat = other.stat()
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # drift: not as scanned
    proc = project.icc("run", "--at", at(0))
    assert "plugins changed since the last scan" in proc.stdout + proc.stderr
    (run,) = project.runs("mine")
    assert run["outcome"] == "succeeded"
    assert sorted(project.marker_lines("imported.txt")) == ["hooks_plugin", "other_plugin", "tasks_plugin"]
    assert project.marker_lines("after_run.txt") == ["mine succeeded"]


def test_a_job_its_plugin_no_longer_defines_fails_with_the_clear_error_when_only_its_plugin_loads(
    project: Project,
) -> None:
    three_plugins(project)
    (project.root / "defined").unlink()  # no file of the plugin changes: no drift
    project.icc("run", "--at", at(0))
    (run,) = project.runs("mine")
    assert run["outcome"] == "failed"
    assert run["error"] == (
        "job 'mine' could not be loaded from its plugin (it is no longer defined); run `icc scan`"
    )
    assert "other_plugin" not in project.marker_lines("imported.txt")
    assert project.marker_lines("after_run.txt") == ["mine failed"]


QUIET_HOOKS = (
    IMPORTED
    + """
ICC_RUN_HOOK_SETTINGS = ("hooks.target",)

@icc.hookimpl
def after_run(job, run, result, outcome):
    with open(os.path.join(os.environ["MARKER_DIR"], "after_run.txt"), "a") as f:
        f.write(f"{job.name} {outcome}\\n")
"""
)

NOTIFIED = """
def mine():
    pass

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mine, name="mine").every_minute()
    scheduler.add(mine, name="told").every_minute().email_output_to("ops@example.com")
"""


def settings_gated(project: Project, extra: str = "") -> None:
    project.write_config(extra, plugins=("tasks_plugin", "hooks_plugin"))
    project.write_plugin(NOTIFIED, "tasks_plugin")
    project.write_plugin(QUIET_HOOKS, "hooks_plugin")
    project.icc("scan", check=True)
    (project.root / "imported.txt").unlink()


def test_run_hooks_whose_settings_are_unset_are_not_loaded_for_a_job_without_notifications_of_its_own(
    project: Project,
) -> None:
    settings_gated(project)
    proc = project.icc("run", "--at", at(0))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r["outcome"] for r in project.runs("mine")] == ["succeeded"]
    # "mine" has no notification settings: the hook plugin is not imported for it, nor called;
    # "told" has its own (email_output_to): the hook is called for it.
    assert project.marker_lines("after_run.txt") == ["told succeeded"]
    assert project.marker_lines("imported.txt").count("hooks_plugin") == 1


def test_run_hooks_whose_settings_are_set_are_called_for_every_job(project: Project) -> None:
    settings_gated(project, '\n[icc.hooks]\ntarget = "somewhere"\n')
    proc = project.icc("run", "--at", at(0))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(project.marker_lines("after_run.txt")) == ["mine succeeded", "told succeeded"]


MANY = """
def mine():
    print("mine ran")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mine, name="mine").every_minute()
    with open(os.path.join(os.environ["MARKER_DIR"], "expression")) as f:
        scheduler.add(mine, name="other").cron(f.read()).in_background()
"""


def test_a_runs_supervisor_builds_only_its_own_jobs_schedule(project: Project) -> None:
    # The supervisor needs its own job; the plugin's other schedules (10,000 in the scale bench) are recorded,
    # not built: one that no longer builds (the scan checked it) does not fail this run.
    project.write_config()
    project.write_plugin(MANY)
    (project.root / "expression").write_text("0 3 * * *")
    project.icc("scan", check=True)
    (project.root / "expression").write_text("0 3 30 2 *")  # 30 February: refused once built
    proc = project.icc("run", "--at", at(0))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = project.runs("mine")
    assert run["outcome"] == "succeeded" and "mine ran" in run["output"], run
