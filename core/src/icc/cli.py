"""The ``icc`` command group. Rendering goes through :mod:`icc.ui`."""

from __future__ import annotations

from pathlib import Path

import click

from icc._version import __version__


class Env:
    """The click context object: the ``--config`` option and the configuration, loaded on first use."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self._config: object | None = None

    @property
    def config(self):  # type: ignore[no-untyped-def]
        if self._config is None:
            from icc.config import load_config

            self._config = load_config(self.config_path)
        return self._config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="ICC_CONFIG",
    help="Config file (icc.toml or pyproject.toml); default: found by walking up from the working directory.",
)
@click.version_option(__version__, prog_name="icc")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """icc: plugin-based task runner. One crontab line, `* * * * * icc run`, drives every job."""
    ctx.obj = Env(config_path)


# --- commands contributed by other modules (one line each) ---
