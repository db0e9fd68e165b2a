"""A plugin that adds one command."""

import click
import icc


@icc.hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command()
    def hello() -> None:
        """Say hello."""
        click.echo("hello from a plugin")
