"""What Django adds to icc's processes (:mod:`icc.framework`): the configuration from ``settings.ICC``, each
installed app's ``icc_tasks`` module as a plugin, database connections closed before a fork and checked around
user code, management commands as jobs, and ``manage.py icc`` as the way icc is called again."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import django
from django.apps import apps
from django.conf import settings
from django.db import close_old_connections, connections

from icc import framework
from icc.contrib import snapshot
from icc.errors import ConfigError, ScheduleError

NAME = "django"
TASKS_MODULE = "icc_tasks"
TASKS_PLUGIN = "icc.contrib.django.tasks"
TASKS_BACKEND = f"{TASKS_PLUGIN}.IccTaskBackend"

# How this process was started as `manage.py icc ...` (set by the management command): argv[0] and directory.
_invoked: tuple[str, str] | None = None


@functools.cache
def _found_task_modules() -> tuple[str, ...]:
    """Looked for once per process: the installed apps do not change after ``django.setup()``."""

    found: list[str] = []
    for app in apps.get_app_configs():
        module = f"{app.name}.{TASKS_MODULE}"
        with contextlib.suppress(ImportError, ValueError):
            if importlib.util.find_spec(module) is not None:
                found.append(module)
    return tuple(found)


def task_modules() -> list[str]:
    """Every installed app's ``icc_tasks`` module, in ``INSTALLED_APPS`` order (found, not imported: an import
    error is reported by icc's plugin host like any plugin failure)."""
    return list(_found_task_modules())


def database_url(alias: str) -> str:
    """A libpq URL for Django database ``alias`` (PostgreSQL only)."""

    databases: Mapping[str, Mapping[str, Any]] = settings.DATABASES
    db = databases.get(alias)
    if db is None:
        raise ConfigError(
            f"Django setting ICC: store database {alias!r} is not in DATABASES ({', '.join(databases) or 'none'})"
        )
    engine = str(db.get("ENGINE", ""))
    if "postgresql" not in engine:
        raise ConfigError(
            f"Django setting ICC: store database {alias!r} uses {engine or 'no ENGINE'}; icc's store can share "
            "only a PostgreSQL database: remove 'database' (icc keeps its own SQLite file) or point it at a "
            "PostgreSQL alias"
        )
    user = quote(str(db.get("USER") or ""), safe="")
    password = quote(str(db.get("PASSWORD") or ""), safe="")
    host = str(db.get("HOST") or "")
    port = str(db.get("PORT") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    where = (f"[{host}]" if ":" in host else quote(host, safe="")) + (f":{port}" if port else "")
    url = f"postgresql://{auth}{where}/{quote(str(db.get('NAME') or ''), safe='')}"
    options = db.get("OPTIONS") or {}
    params = [
        f"{k}={quote(str(v), safe='')}" for k, v in options.items() if k in ("sslmode", "connect_timeout")
    ]
    if host.startswith("/"):  # a Unix socket directory
        params.append(f"host={quote(host, safe='')}")
        url = f"postgresql://{auth}/{quote(str(db.get('NAME') or ''), safe='')}"
    return url + ("?" + "&".join(params) if params else "")


def config_table() -> framework.ConfigTable:
    """``settings.ICC`` as icc's ``[icc]`` table: the timezone falls back to ``TIME_ZONE``, the apps'
    ``icc_tasks`` modules are added to ``plugins``, ``store.database`` becomes that database's URL."""

    origin = f"Django setting ICC ({settings.SETTINGS_MODULE or 'settings'})"
    raw = getattr(settings, "ICC", None) or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{origin} must be a dict with icc.toml's keys, not {type(raw).__name__}")
    table: dict[str, Any] = dict(raw)
    if "timezone" not in table and getattr(settings, "TIME_ZONE", None):
        table["timezone"] = settings.TIME_ZONE
    plugins = list(table.get("plugins") or ())
    found = task_modules()
    tasks = getattr(settings, "TASKS", None) or {}
    if any(isinstance(b, Mapping) and b.get("BACKEND") == TASKS_BACKEND for b in tasks.values()):
        found.append(TASKS_PLUGIN)  # the handler of Django's tasks
    table["plugins"] = plugins + [m for m in found if m not in plugins]
    store = table.get("store")
    if isinstance(store, Mapping) and "database" in store:
        store = dict(store)
        alias = store.pop("database")
        if "url" in store:
            raise ConfigError(f"{origin}: store has both 'database' and 'url'; keep one")
        store["url"] = database_url(str(alias))
        table["store"] = store
    base = getattr(settings, "BASE_DIR", None)
    root = Path(base) if base else Path(_invoked[1] if _invoked else os.getcwd())
    return framework.ConfigTable(table, root.absolute(), origin)


def _connections() -> list[Any]:

    return list(connections.all(initialized_only=True))


def before_fork() -> None:
    """Close this thread's database connections before a fork: a connection must never be shared by two
    processes. One inside a transaction (``atomic``) is left alone: closing it would break the transaction."""
    for conn in _connections():
        if not conn.in_atomic_block:
            conn.close()


def _fresh_connections() -> None:
    """``close_old_connections()``, and a connection the server dropped (a restart) closed too, so the user
    code reconnects instead of failing on its first query."""

    close_old_connections()
    for conn in _connections():
        if conn.connection is not None and not conn.in_atomic_block and not conn.is_usable():
            conn.close()


@contextlib.contextmanager
def around() -> Iterator[None]:
    """Around every job, callback and handled message: stale connections closed before and after."""
    _fresh_connections()
    try:
        yield
    finally:
        close_old_connections()


def command(name: str, args: tuple[Any, ...], options: dict[str, Any]) -> tuple[Callable[[], object], str]:
    """``scheduler.command(name, *args, **options)``: ``call_command`` in the job's process."""
    from django.core.management import get_commands  # lazy: only for scheduler.command()

    if name not in get_commands():
        raise ScheduleError(
            f"scheduler.command({name!r}): no such management command; `python manage.py help` lists them"
        )
    job_name = shlex.join(["manage.py", name, *map(str, args)] + [f"--{k}={v}" for k, v in options.items()])

    def run_command() -> None:

        if not apps.ready:  # a run started by a plain `icc run`: set Django up first
            django.setup()
        from django.core.management import call_command  # lazy: only in the job's process

        call_command(name, *args, stdout=sys.stdout, stderr=sys.stderr, **options)

    run_command.__qualname__ = run_command.__name__ = f"command:{name}"
    return run_command, job_name


def call() -> snapshot.Call:
    """How this project calls icc: absolute python and manage.py (or ``-m django``), from the directory it was
    started in, with its ``DJANGO_SETTINGS_MODULE``; the settings' package's files (and manage.py) are what
    the idle check's snapshot depends on."""

    script, cwd = _invoked if _invoked else (os.path.join(os.getcwd(), "manage.py"), os.getcwd())
    module = str(settings.SETTINGS_MODULE)
    command = (
        [sys.executable, "-m", "django", "icc"]
        if os.path.basename(script) == "__main__.py"
        else [sys.executable, script, "icc"]
    )
    sources = snapshot.module_files(module.partition(".")[0])
    if os.path.basename(script) != "__main__.py":
        sources.append(script)
    return snapshot.Call(NAME, cwd, {"DJANGO_SETTINGS_MODULE": module}, command, sources)


def argv() -> list[str]:
    """``manage.py icc`` as cron runs it: absolute python and manage.py, ``DJANGO_SETTINGS_MODULE``, and the
    working directory (``env -C``: cron starts in the home directory with a bare environment)."""
    called = call()
    env = shutil.which("env") or "/usr/bin/env"
    variables = [f"{k}={v}" for k, v in called.environment.items()]
    return [env, "-C", called.cwd, *variables, *called.command]


def invoked_as(script: str) -> None:
    """Called by ``manage.py icc``: how icc is called again from here."""
    global _invoked
    _invoked = (os.path.abspath(script), os.getcwd())


FRAMEWORK = framework.Framework(
    NAME,
    before_fork=before_fork,
    around=around,
    config=config_table,
    command=command,
    argv=argv,
    snapshot=lambda config: snapshot.write(config, call),
    crontab=lambda config, run_args: snapshot.crontab_argv(config, call(), run_args),
)


def install() -> None:
    framework.install(FRAMEWORK)
