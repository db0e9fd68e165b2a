"""Plugins add CLI commands through `register_commands`; core commands stay icc's."""

from __future__ import annotations

import json

from icc.config import load_config
from icc.queue.dispatch import dispatch
from projectkit import Project, at


def test_plugin_command_is_available_and_core_commands_cannot_be_replaced(project: Project) -> None:
    project.write_plugin(
        """
        import click

        @icc.hookimpl
        def register_commands(cli):
            @cli.command()
            @click.argument("who")
            def hello(who):
                \"\"\"Say hello.\"\"\"
                click.echo(f"hello {who}")

            @cli.command(name="run")
            def fake_run():
                click.echo("hijacked")
        """
    )
    assert project.icc("hello", "world", check=True).stdout.strip() == "hello world"
    assert "hello" in project.icc("--help", check=True).stdout
    proc = project.icc("run", "--help", check=True)
    assert "One tick" in proc.stdout


def test_unknown_command_is_a_usage_error(project: Project) -> None:
    proc = project.icc("no-such-command")
    assert proc.returncode == 2
    assert "No such command" in proc.stderr


# --- a name two plugins use: only that name is left out ------------------------------------------------

CLASHING_PLUGIN = """
def export():
    pass

def mine():
    with open(os.path.join(os.environ["MARKER_DIR"], "{me}.ran"), "a") as f:
        f.write("ran\\n")

def handle_render(payload):
    pass

def handle_mine(payload):
    with open(os.path.join(os.environ["MARKER_DIR"], "{me}.handled"), "a") as f:
        f.write(str(payload["n"]) + "\\n")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(export, name="export").weekly()
    scheduler.add(mine, name="{me}-job").every_minute()

@icc.hookimpl
def register_handlers(register):
    register("report.render", handle_render)
    register("{me}.message", handle_mine)
"""


def _clash(project: Project) -> None:
    """plug_a is scanned alone; then plug_b, which uses plug_a's job and handler names, is installed."""
    project.write_plugin(CLASHING_PLUGIN.replace("{me}", "plug_a"), name="plug_a")
    project.write_plugin(CLASHING_PLUGIN.replace("{me}", "plug_b"), name="plug_b")
    project.write_config(plugins=("plug_a",))
    project.icc("scan", check=True)
    project.write_config(plugins=("plug_a", "plug_b"))


def test_job_name_two_plugins_use_is_left_out_and_every_other_job_runs(project: Project) -> None:
    _clash(project)

    scan = project.icc("scan")
    assert scan.returncode == 2
    assert "job name 'export' is used by two plugins: plugin 'plug_a' and plugin 'plug_b'" in scan.stderr
    assert "nothing was written" in scan.stderr
    assert "Traceback" not in scan.stderr
    assert "plug_b-job" not in {j["name"] for j in project.status()["jobs"]}

    tick = project.icc("run", "--at", at(1))
    assert tick.returncode == 0, tick.stderr
    assert "'export' is used by two plugins" in tick.stderr
    assert project.marker_lines("plug_a.ran") == ["ran"]

    assert project.icc("exec", "plug_a-job").returncode == 0
    assert project.marker_lines("plug_a.ran") == ["ran", "ran"]
    refused = project.icc("exec", "export")
    assert refused.returncode == 2
    assert "plugin 'plug_a' and plugin 'plug_b'" in refused.stderr.strip().splitlines()[-1]

    status = project.icc("status", "--json")
    assert status.returncode == 0
    errors = json.loads(status.stdout)["plugin_errors"]
    assert [(e["plugin"], e["hook"]) for e in errors] == [
        ("plug_b", "schedule"),
        ("plug_b", "register_handlers"),
    ]
    assert "plugin 'plug_a' and plugin 'plug_b'" in errors[0]["error"]


def test_handler_name_two_plugins_register_is_left_out_and_consume_handles_the_rest(
    project: Project,
) -> None:
    _clash(project)
    config = load_config(project.config, environ={})
    dispatch("plug_a.message", {"n": 1}, config=config)
    dispatch("plug_b.message", {"n": 2}, config=config)

    consume = project.icc("consume", "async", "--stop-when-empty")

    assert consume.returncode == 0, consume.stderr
    assert "message handler 'report.render' is registered by two plugins" in consume.stderr
    assert "plugin 'plug_a' and plugin 'plug_b'" in consume.stderr
    assert project.marker_lines("plug_a.handled") == ["1"]
    assert project.marker_lines("plug_b.handled") == ["2"]


# --- plugin code cannot corrupt output or end the process ------------------------------------------------

HEALTHY = """
def tick():
    with open(os.path.join(os.environ["MARKER_DIR"], "tick.ran"), "a") as f:
        f.write("ran\\n")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(tick, name="tick").every_minute()
"""


def test_plugin_output_goes_to_stderr_never_into_status_json_or_a_quiet_run(project: Project) -> None:
    project.write_plugin(
        """
        print("printed at import")
        os.write(1, b"written to fd 1 at import\\n")

        def tick():
            pass

        @icc.hookimpl
        def configure(config):
            print("printed in configure")

        @icc.hookimpl
        def schedule(scheduler):
            print("printed in schedule")
            scheduler.add(tick, name="tick").every_minute()

        @icc.hookimpl
        def before_run(job, run):
            print("printed in before_run")
        """
    )
    project.icc("scan", check=True)

    status = project.icc("status", "--json", check=True)
    assert json.loads(status.stdout)["jobs"][0]["name"] == "tick"
    assert "printed at import" in status.stderr
    assert "written to fd 1 at import" in status.stderr

    quiet = project.icc("run", "--quiet", "--at", at(1), check=True)
    assert quiet.stdout == ""
    for line in ("printed at import", "written to fd 1", "in configure", "in schedule"):
        assert line in quiet.stderr
    # A run hook runs in a child of the run's supervisor: what it prints is stored with the run.
    assert "in before_run" not in quiet.stderr
    [run] = project.runs("tick")
    assert run["outcome"] == "succeeded" and "printed in before_run" in run["output"]


def test_keyboard_interrupt_or_os_exit_at_plugin_import_fails_only_that_plugin(project: Project) -> None:
    project.write_plugin("raise KeyboardInterrupt\n", name="interrupting")
    project.write_plugin("os._exit(3)\n", name="exiting")
    project.write_plugin("class Stop(SystemExit):\n    pass\nraise Stop(4)\n", name="stopping")
    project.write_plugin(HEALTHY)
    project.write_config(plugins=("interrupting", "exiting", "stopping", "tasks_plugin"))

    scan = project.icc("scan")
    assert scan.returncode == 0, scan.stderr
    assert "plugin interrupting failed: KeyboardInterrupt" in scan.stderr
    assert "plugin exiting failed: the plugin called os._exit(3)" in scan.stderr
    assert "plugin stopping failed: Stop: 4" in scan.stderr
    project.icc("run", "--at", at(1), check=True)
    assert project.marker_lines("tick.ran") == ["ran"]
    errors = {e["plugin"]: e["error"] for e in project.status()["plugin_errors"]}
    assert set(errors) == {"interrupting", "exiting", "stopping"}


def test_plugin_that_crashes_the_interpreter_at_import_is_named_in_the_crash_report(
    project: Project,
) -> None:
    path = project.write_plugin("import signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", name="crashing")
    project.write_config(plugins=("crashing",))

    proc = project.icc("status")

    assert proc.returncode != 0
    assert "Fatal Python error" in proc.stderr
    assert str(path) in proc.stderr  # the stack names the plugin's file
    project.env["ICC_PLUGINS"] = ""  # the documented way to leave it out
    assert project.icc("status").returncode == 0


def test_plugin_failure_is_printed_once(project: Project) -> None:
    project.write_plugin("import icc_module_that_does_not_exist\n")

    for command in (("scan",), ("status",), ("consume", "async", "--stop-when-empty")):
        proc = project.icc(*command)
        assert proc.stderr.count("icc_module_that_does_not_exist") == 1, (command, proc.stderr)


def test_plugin_config_error_from_a_variable_names_the_variable_not_the_config_file(project: Project) -> None:
    project.env.update({"ICC_DISABLE_PLUGIN_AUTOLOAD": "0", "ICC_PLUGINS": "icc-mail"})
    project.env["ICC_MAIL__TIMEOUT"] = "soon"
    first = project.icc("status")
    del project.env["ICC_MAIL__TIMEOUT"]
    (project.root / ".env").write_text("ICC_MAIL__SENDER=not an address\n")
    second = project.icc("status")

    [error] = [line for line in first.stderr.splitlines() if "icc-mail" in line]
    assert "mail.timeout must be a positive number of seconds, not 'soon' in environment variable" in error
    assert error.endswith("in environment variable ICC_MAIL__TIMEOUT")
    [error] = [line for line in second.stderr.splitlines() if "icc-mail" in line]
    assert error.endswith(f"in {project.root / '.env'}: ICC_MAIL__SENDER")
    assert "icc.toml" not in first.stderr + second.stderr


def test_plugin_whose_attributes_raise_when_registered_fails_only_that_plugin(project: Project) -> None:
    project.write_plugin("def __dir__():\n    raise RuntimeError('no attributes for you')\n", name="opaque")
    project.write_plugin(HEALTHY)
    project.write_config(plugins=("opaque", "tasks_plugin"))

    scan = project.icc("scan")

    assert scan.returncode == 0, scan.stderr
    assert "plugin opaque failed: RuntimeError: no attributes for you" in scan.stderr
    assert "tick" in {j["name"] for j in project.status()["jobs"]}


INSTALLED = """
import icc

def nightly():
    pass

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(nightly, name="acme-nightly").daily()
    scheduler.add(nightly, name="acme-hourly").every_minutes(30)
"""


def _installed_plugin(project: Project, body: str = INSTALLED) -> None:
    """Install the distribution acme-tasks (entry point "acme") into a site directory on PYTHONPATH."""
    site = project.root / "site-packages"
    info = site / "acme_tasks-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-tasks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[icc.tasks]\nacme = acme_tasks\n")
    (site / "acme_tasks.py").write_text(body)
    project.env.update({"PYTHONPATH": str(site), "ICC_DISABLE_PLUGIN_AUTOLOAD": "0", "ICC_PLUGINS": "acme"})


def _present(project: Project) -> set[str]:
    return {j["name"] for j in project.status()["jobs"] if not j["removed"]}


def test_scan_keeps_the_jobs_of_a_plugin_left_out_by_disable_plugin_autoload(project: Project) -> None:
    _installed_plugin(project)
    project.icc("scan", check=True)
    assert {"acme-nightly", "acme-hourly"} <= _present(project)

    del project.env["ICC_PLUGINS"]
    project.env["ICC_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    proc = project.icc("scan", check=True)
    assert "kept 2 jobs of plugin acme: not loaded (ICC_DISABLE_PLUGIN_AUTOLOAD)" in proc.stderr
    assert "acme-nightly" in proc.stdout and "kept" in proc.stdout
    assert {"acme-nightly", "acme-hourly"} <= _present(project)
    scan_json = json.loads(project.icc("scan", "--json", check=True).stdout)
    assert {j["name"]: j["change"] for j in scan_json["jobs"]}["acme-hourly"] == "kept"

    proc = project.icc("scan", "--prune", check=True)
    assert "kept" not in proc.stderr
    assert not {"acme-nightly", "acme-hourly"} & {j["name"] for j in project.status()["jobs"]}


def test_scan_keeps_the_jobs_of_a_plugin_that_failed_to_import_unless_pruned(project: Project) -> None:
    _installed_plugin(project)
    project.icc("scan", check=True)
    (project.root / "site-packages" / "acme_tasks.py").write_text("import icc_module_that_does_not_exist\n")

    proc = project.icc("scan", check=True)
    assert "kept 2 jobs of plugin acme: failed to load" in proc.stderr
    assert {"acme-nightly", "acme-hourly"} <= _present(project)

    project.icc("scan", "--prune", check=True)
    assert not {"acme-nightly", "acme-hourly"} & {j["name"] for j in project.status()["jobs"]}


def test_scan_keeps_the_jobs_of_a_local_plugin_left_out_by_icc_plugins(project: Project) -> None:
    project.write_plugin(
        "@icc.hookimpl\ndef schedule(scheduler):\n    scheduler.add(['true'], name='local-job').daily()\n"
    )
    project.icc("scan", check=True)
    project.env["ICC_PLUGINS"] = ""
    proc = project.icc("scan", check=True)
    assert "kept 1 job of plugin tasks_plugin: not loaded (not named in ICC_PLUGINS)" in proc.stderr
    assert "local-job" in _present(project)
