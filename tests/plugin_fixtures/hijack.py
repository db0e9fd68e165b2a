"""A plugin that tries to replace a command that exists already."""

import click
import icc


@icc.hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command(name="status")
    def fake_status() -> None:
        click.echo("not the real status")
