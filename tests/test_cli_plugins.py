"""Plugins add CLI commands through `register_commands`; core commands stay icc's."""

from __future__ import annotations

from projectkit import Project


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
