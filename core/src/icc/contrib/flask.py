"""icc in a Flask application (extra ``icc-runner[flask]``)::

    from flask import Flask
    from icc.contrib.flask import Icc

    app = Flask(__name__)
    app.config["ICC"] = {"plugins": ["myapp.tasks"]}
    Icc(app)            # or: icc = Icc(); icc.init_app(app) in an application factory

- every job, queue handler and callback runs inside ``app.app_context()``;
- ``flask icc <command> ...`` runs every icc command (``flask --app myapp icc run``);
- the configuration is ``app.config["ICC"]`` (icc.toml's keys), read from the app's root path.

See docs/flask.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icc import framework
from icc.contrib import snapshot
from icc.errors import ConfigError

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["Icc"]

NAME = "flask"


class Icc:
    """The Flask extension: ``Icc(app)``, or ``Icc()`` then ``init_app(app)``."""

    def __init__(self, app: Flask | None = None) -> None:
        self.app: Flask | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        from icc.cli import cli  # lazy: click's group only when the app is set up

        self.app = app
        app.extensions["icc"] = self
        if "icc" not in app.cli.commands:
            app.cli.add_command(cli, name="icc")
        framework.install(
            framework.Framework(
                NAME,
                around=self._around,
                config=self._config,
                argv=self._argv,
                snapshot=lambda config: snapshot.write(config, self._call),
                crontab=lambda config, run_args: snapshot.crontab_argv(config, self._call(), run_args),
            )
        )

    def _flask(self) -> Flask:
        if self.app is None:
            raise ConfigError("icc.contrib.flask.Icc: call init_app(app) first")
        return self.app

    @contextlib.contextmanager
    def _around(self) -> Iterator[None]:
        with self._flask().app_context():
            yield

    def _config(self) -> framework.ConfigTable:
        app = self._flask()
        raw: Any = app.config.get("ICC") or {}
        origin = f"Flask config ICC ({app.import_name})"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{origin} must be a dict with icc.toml's keys, not {type(raw).__name__}")
        return framework.ConfigTable(dict(raw), Path(app.root_path).absolute(), origin)

    def _call(self) -> snapshot.Call:
        """``python -m flask --app NAME icc`` from this directory; the app's package and the .env files the
        flask command reads are what the idle check's snapshot depends on."""
        app = self._flask()
        cwd = os.getcwd()
        command = [sys.executable, "-m", "flask", "--app", app.import_name, "icc"]
        sources = snapshot.module_files(app.import_name.partition(".")[0])
        sources += [os.path.join(cwd, name) for name in (".env", ".flaskenv")]
        return snapshot.Call(NAME, cwd, {}, command, sources)

    def _argv(self) -> list[str]:
        """``flask --app NAME icc`` as cron runs it: absolute python, the app's directory."""
        env = shutil.which("env") or "/usr/bin/env"
        return [env, "-C", os.getcwd(), *self._call().command]
