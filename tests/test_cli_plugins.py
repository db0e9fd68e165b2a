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
