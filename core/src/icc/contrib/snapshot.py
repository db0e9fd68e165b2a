"""The writer of a framework project's idle-check snapshot; its reader, and what the check does with it, is
:mod:`icc.tick.snapshot`. Django's and Flask's integrations say what is framework-specific (:class:`Call`: how
the project calls icc, from where, with which variables, and which files its settings come from); this module
writes the snapshot (JSON, 0600, in the state directory) and builds the crontab line that reads it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icc import logs
from icc._version import __version__
from icc.errors import IccError
from icc.statedir import FILE_MODE, ensure_state_dir, state_file_problem
from icc.tick.snapshot import FILENAME, FORMAT, OPTION, variables

if TYPE_CHECKING:
    from icc.config import Config


@dataclass(frozen=True)
class Call:
    """How a framework project calls icc, for the crontab line and its snapshot."""

    framework: str
    cwd: str  # the directory the line starts in (env -C)
    environment: dict[str, str]  # variables the line sets (DJANGO_SETTINGS_MODULE)
    command: list[str]  # how the project calls icc: [python, /abs/manage.py, "icc"]
    sources: list[str]  # the files the settings come from: a change makes the snapshot stale


def path(config: Config) -> Path:
    return config.state_dir / FILENAME


def module_files(top: str) -> list[str]:
    """The files of the loaded modules of package ``top`` (and ``top`` itself), sorted."""
    found = set()
    for name, module in list(sys.modules.items()):
        if name == top or name.startswith(top + "."):
            file = getattr(module, "__file__", None)
            if isinstance(file, str) and os.path.isfile(file):
                found.add(os.path.abspath(file))
    return sorted(found)


def _stamp(file: str) -> list[int] | None:
    try:
        info = os.stat(file)
    except FileNotFoundError:
        return None
    return [info.st_mtime_ns, info.st_size]


def _set(value: object) -> bool | None:
    return True if value not in (None, "", [], ()) else None


def content(config: Config, call: Call) -> dict[str, Any]:
    """What :func:`icc.tick.snapshot.load` reads."""
    sources = list(call.sources)
    if config.path is not None:  # ICC_CONFIG: a file, not the framework's settings
        sources.append(str(config.path))
    sources += [str(config.root / name) for name in (".env", ".env.local")]  # ICC_* variables there count too
    store: dict[str, Any] | None = None
    if config.store.url is not None:
        store = {"url": config.store.url, "schema": config.store.schema}
        if config.store.host_id is not None:
            store["host_id"] = config.store.host_id
    consumers = config.consumers
    # What the light minute (icc.tick.light) reads of the configuration, resolved: when only the consumer jobs
    # are due it starts them without the framework; a consumer with a message execs `COMMAND consume`.
    # A run hook's setting counts only by being set (icc.tick.light's acts()): written as true or null, so no
    # secret of a plugin table, a ping or notification URL lands in the snapshot.
    light: dict[str, Any] = {
        **{name: {key: _set(value) for key, value in table.items()} for name, table in config.tables.items()},
        "consumers": {
            "mode": consumers.mode,
            "queues": list(consumers.queues),
            "time_limit": consumers.time_limit,
            "skip_empty": consumers.skip_empty,
        },
        "grace": config.grace,
        "keep_runs": config.keep_runs,
        "keep_skipped": config.keep_skipped,
        "output_limit": config.output_limit,
        "monitor": {"ping_url": _set(config.monitor.ping_url)},
        "notify": {"urls": _set(config.notify.urls)},
    }
    return {
        "format": FORMAT,
        "icc": __version__,
        "framework": call.framework,
        "cwd": call.cwd,
        "command": call.command,
        "environment": call.environment,
        "icc_variables": variables(),
        "sources": [[file, _stamp(file)] for file in dict.fromkeys(sources)],
        "state_dir": str(config.state_dir),
        "timezone": config.timezone,
        "scan": config.scan,
        "store": store,
        "light": light,
    }


def write(config: Config, call: Call | Callable[[], Call]) -> Path | None:
    """Write the snapshot of ``config`` for ``call`` unless the one there says the same; its path, or None
    (and a warning) when it cannot be written: the crontab line then runs the full tick every minute. Never
    raises: a snapshot must not stop the scan or the run that writes it."""
    target = path(config)
    temporary = target.with_name(f".{FILENAME}.{os.getpid()}")
    try:
        called = call() if callable(call) else call
        data = (json.dumps(content(config, called), indent=1, ensure_ascii=False) + "\n").encode()
        ensure_state_dir(config.state_dir)
        problem = state_file_problem(target)
        if problem is not None:
            raise IccError(problem)
        try:
            with open(target, "rb") as fh:
                if fh.read() == data and os.stat(target).st_mode & 0o777 == FILE_MODE:
                    return target
        except FileNotFoundError:
            pass
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except Exception as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        logs.logger.warning(
            "icc: cannot write the framework snapshot %s (%s): the crontab line's idle check runs the full "
            "tick every minute",
            target,
            exc,
        )
        return None
    return target


def crontab_argv(config: Config, call: Call, run_args: list[str]) -> list[str]:
    """The crontab line's command: ``env -C CWD VARS... icc RUN_ARGS --framework-snapshot PATH -- COMMAND``,
    which runs ``COMMAND RUN_ARGS`` (the framework set up) only when the idle check cannot say "nothing due".
    Writes the snapshot."""
    write(config, call)
    script = Path(sys.executable).parent / "icc"
    icc = [str(script)] if script.exists() else [sys.executable, "-m", "icc"]
    env = shutil.which("env") or "/usr/bin/env"
    variables = [f"{k}={v}" for k, v in call.environment.items()]
    return [env, "-C", call.cwd, *variables, *icc, *run_args, OPTION, str(path(config)), "--", *call.command]
