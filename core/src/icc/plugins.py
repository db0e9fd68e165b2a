"""The plugin host: finds icc's plugins, isolates them from one another, and calls their hooks.

Writing a plugin
================

A plugin is a Python module with functions marked ``@icc.hookimpl``, each named after a hook of
:mod:`icc.hookspecs`. Implement only the hooks you need::

    # myplugin/tasks.py
    import icc

    def cleanup_sessions() -> None:
        ...

    @icc.hookimpl
    def schedule(scheduler: icc.Scheduler) -> None:
        scheduler.add(cleanup_sessions).daily().at(3)
        scheduler.add(["myplugin-export", "--full"], name="myplugin-export").weekly()

Installed packages advertise the module through the ``icc.tasks`` entry point group; name the entry
point after the distribution, because entry point names are global and a second plugin with the same
name is not loaded::

    # pyproject.toml of the distribution "myplugin"
    [project.entry-points."icc.tasks"]
    myplugin = "myplugin.tasks"

A module of the project itself needs no packaging: list it in the configuration, where it is imported
with the configuration file's directory on ``sys.path``::

    [tool.icc]
    plugins = ["myapp.tasks"]

Load order: entry points (sorted by name), then local modules (in the configured order), then icc's
built-in plugins (:data:`BUILTIN_PLUGINS`), which are written as plugins too.

Isolation: a plugin that fails to import, or raises in a hook (any ``BaseException``, and ``os._exit()``,
see :func:`plugin_code`), is recorded in :attr:`PluginHost.failures` with its name, distribution and error,
and the other plugins keep working; what it prints goes to stderr. A job or handler name two plugins use is
left out and recorded the same way. ``strict=True`` (``icc scan --strict``) raises :class:`icc.PluginError`
instead. A hook implementation whose name matches no hook (``def shedule(...)``) is reported too, with the
closest hook name.

Environment: ``ICC_DISABLE_PLUGIN_AUTOLOAD=1`` loads no entry points; ``ICC_PLUGINS=a,b`` loads only the
named entry points and local modules (built-ins always load; an empty value loads none). The plugins left
out this way are in :attr:`PluginHost.not_loaded`: ``icc scan`` keeps their jobs.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, TypeVar

import pluggy

from icc import hookspecs, logs
from icc._version import DISTRIBUTION, __version__
from icc.errors import ExitGuard, PluginError, ProcessExitCalled, ScheduleError
from icc.hookspecs import Handler
from icc.jobs import Job, Provenance, RunContext, RunResult, Scheduler
from icc.records import record
from icc.statedir import in_state_dir

if TYPE_CHECKING:
    import importlib.metadata

    import click

    from icc.config import Config

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "HandlerSpec",
    "PluginFailure",
    "PluginHost",
    "PluginInfo",
    "StrictPluginError",
    "drift_stamp",
    "installed_fingerprint",
    "load_only",
    "load_plugins",
]

ENTRY_POINT_GROUP = "icc.tasks"

# icc's own plugins, by module name, loaded after every other plugin. A module that does not exist
# (yet) is skipped without a word.
BUILTIN_PLUGINS: list[str] = [
    "icc.queue.builtin",
    "icc.notify.pings",
    "icc.notify.notifications",
    "icc.notify.freshness",
    "icc.crontab",
]
# Plugins whose jobs are defined from every plugin (the consumer jobs, from every plugin's handlers): a run of
# one of their jobs loads every plugin, never only its own (tick.coordinator.prepare_run).
JOBS_FROM_EVERY_PLUGIN = frozenset({"icc.queue.builtin"})

Source = Literal["entry-point", "local", "builtin"]

log = logs.get(__name__)

_FALSE = frozenset({"", "0", "false", "no", "off"})


@record(frozen=True)
class PluginInfo:
    """A loaded plugin: its name, where it comes from and what was imported."""

    name: str  # entry point name, or module name for local and built-in plugins
    distribution: str | None  # None for local modules
    version: str | None
    source: Source
    module: str = ""  # the entry point's value, or the module name

    @property
    def provenance(self) -> Provenance:
        return Provenance(self.name, self.distribution, self.version)


@record(frozen=True)
class PluginFailure:
    """A plugin that failed to import or raised in a hook (``hook`` is None for an import failure)."""

    plugin: str
    distribution: str | None
    error: str
    hook: str | None = None
    version: str | None = None
    exception_type: str | None = None  # e.g. "ImportError", "ScheduleError"; None for a check failure
    traceback: str | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        where = f"plugin {self.plugin!r}"
        if self.distribution:
            where += f" ({self.distribution}{' ' + self.version if self.version else ''})"
        if self.hook is None:
            return f"{where} failed to load: {self.error}"
        return f"{where} failed in hook {self.hook!r}: {self.error}"


class StrictPluginError(PluginError):
    """Raised under ``strict=True`` for plugin failures; ``failures`` holds what went wrong."""

    def __init__(self, failures: list[PluginFailure]) -> None:
        self.failures = tuple(failures)
        lines = [str(f) for f in failures]
        super().__init__(
            "; ".join(lines) + " (fix or uninstall the plugin; without --strict icc reports it and goes on)"
        )


class HandlerSpec(NamedTuple):
    """A queue message handler registered by a plugin."""

    queue: str
    handler: Handler
    provenance: Provenance


# --- discovery --------------------------------------------------------------------------------------


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """The ``icc.tasks`` entry points, each (distribution, name) once, sorted by name.

    A distribution seen twice on ``sys.path`` (``lib64`` a symlink to ``lib``) yields its entry points
    twice; only the first is kept.
    """
    import importlib.metadata  # lazy: not on a run's path with local plugins only (load_only)

    seen: set[tuple[str, str]] = set()
    unique: list[importlib.metadata.EntryPoint] = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (_normalize(ep.dist.name) if ep.dist is not None else "", ep.name)
        if key not in seen:
            seen.add(key)
            unique.append(ep)
    return sorted(unique, key=lambda ep: ep.name)


def _dist(ep: importlib.metadata.EntryPoint) -> tuple[str | None, str | None]:
    if ep.dist is None:
        return None, None
    return ep.dist.name, ep.dist.version


def _fingerprint(entry_points: list[importlib.metadata.EntryPoint], config: Config) -> str:
    items = [f"entry-point {ep.name}={ep.value} {' '.join(map(str, _dist(ep)))}" for ep in entry_points]
    items += [f"local {name}" for name in config.plugins]
    items += [f"builtin {name} {__version__}" for name in BUILTIN_PLUGINS]
    import hashlib  # lazy: not a run's supervisor's (load_only); OpenSSL's load is a due tick's import time

    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16]


def installed_fingerprint(config: Config) -> str:
    """What :meth:`PluginHost.fingerprint` returns, from installed metadata only: no plugin is imported."""
    return _fingerprint(_entry_points(), config)


def _module_files(module: str, root: Path | None) -> list[str]:
    """The source files of a plugin module as the scan found it: its file, or every ``.py`` file of its
    package; a local module that failed to import is looked for under ``root``."""
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None)
    if not isinstance(file, str) and root is not None:
        base = root.joinpath(*module.split("."))
        file = next((str(p) for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)
    if not isinstance(file, str):
        return []
    if os.path.basename(file) != "__init__.py":
        return [file]
    found: list[str] = []
    for folder, dirs, names in os.walk(os.path.dirname(file)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    return found


def drift_stamp(config: Config, host: PluginHost) -> str:
    """The ``drift_stamp`` meta value a scan stores, for :func:`icc.tick.idle.drift` to compare with stat
    calls: the config file's and the plugin modules' mtimes and sizes, and the mtimes of the ``site-packages``
    directories on ``sys.path`` (an install or removal there changes them)."""
    files = [str(config.path)] if config.path is not None else []
    for info in host.plugins:
        if info.source != "builtin":
            module = info.module.partition(":")[0].strip()
            files += _module_files(module, config.root if info.source == "local" else None)
    for failure in host.failures:  # a local module that failed to import: fixing it is a change too
        if failure.distribution is None and failure.plugin in config.plugins:
            files += _module_files(failure.plugin, config.root)
    lines = [DRIFT_HEADER]
    for file in dict.fromkeys(files):
        with contextlib.suppress(OSError):
            info_ = os.stat(file)
            lines.append(f"file\t{file}\t{info_.st_mtime_ns}\t{info_.st_size}")
    for entry in dict.fromkeys(sys.path):
        if os.path.basename(entry) in ("site-packages", "dist-packages") and os.path.isdir(entry):
            with contextlib.suppress(OSError):
                lines.append(f"dir\t{entry}\t{os.stat(entry).st_mtime_ns}")
    return "\n".join(line for line in lines if line.count("\t") <= 3 and "\n" not in line)


DRIFT_HEADER = "icc drift 1"  # icc.tick.idle's _DRIFT_HEADER


def _selected(environ: Mapping[str, str]) -> set[str] | None:
    """The plugin names ``ICC_PLUGINS`` allows, or None when it is not set (all are allowed)."""
    value = environ.get("ICC_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _builtin_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


# --- running plugin code ----------------------------------------------------------------------------


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """What plugin code prints goes to stderr: ``print`` and writes to file descriptor 1 alike, so it never
    mixes into ``icc status --json`` or shows under ``icc run --quiet``."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    saved: int | None = None
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no stdout or no stderr: nothing to keep apart
        if saved is not None:
            os.close(saved)
            saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


@contextlib.contextmanager
def _exit_guard() -> Iterator[None]:
    """``os._exit()`` called by plugin code in this process raises :class:`ProcessExitCalled` instead (a
    process the plugin forked still exits), and a fatal signal prints the Python stack naming the plugin."""
    enabled = faulthandler.is_enabled()
    if not enabled:
        with contextlib.suppress(Exception):  # no usable stderr: nothing to print to
            faulthandler.enable()
    try:
        with ExitGuard():
            yield
    finally:
        if not enabled:
            faulthandler.disable()


@contextlib.contextmanager
def plugin_code() -> Iterator[None]:
    """Around every import of a plugin and every call of a hook: see the two guards above."""
    with _stdout_to_stderr(), _exit_guard():
        yield


# --- the host ---------------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ProcessExitCalled | PluginError):  # icc's own words about the plugin
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _check_output_files(jobs: Mapping[str, Job], config: Config) -> None:
    """A ``send_output_to``/``append_output_to`` path in the state directory is a :class:`ScheduleError`: each
    run would overwrite the store (``send_output_to(".icc/state.sqlite3")``)."""
    for name, job in jobs.items():
        if job.schedule.output_to is None:
            continue
        path, append = job.schedule.output_to
        if in_state_dir(config.root / Path(path).expanduser(), config.state_dir):
            which = "append_output_to" if append else "send_output_to"
            raise ScheduleError(
                f"job {name!r}: {which}({path!r}) is inside the state directory {config.state_dir}; each run "
                "would overwrite icc's own store: write the output elsewhere"
            )


def _check_schedules(jobs: Mapping[str, Job]) -> None:
    """What a schedule method cannot refuse when called, because a later call may complete it (``once()`` before
    ``starting()``), or because it depends on the task (``args()`` of a command): a :class:`ScheduleError`."""
    for name, job in jobs.items():
        problem = job.schedule.problem()
        if problem is None and job.kind == "command" and job.schedule.call_args is not None:
            problem = "args() is for callable tasks; put a command's arguments in its argv list"
        if problem is not None:
            raise ScheduleError(f"job {name!r}: {problem}")


# A plugin manager with icc's hook specifications and no plugin, built by a process about to fork the supervisors
# of its runs (prepare_manager), with the pid of that process.
_PREPARED: list[tuple[int, pluggy.PluginManager]] = []


def prepare_manager() -> None:
    """Build a plugin manager with icc's hook specifications (no plugin) now, before this process forks: the first
    :class:`PluginHost` of each forked child takes it instead of building its own (``add_hookspecs`` inspects
    every hook: about a millisecond per run's supervisor). This process itself never takes it."""
    if not _PREPARED:
        pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        _PREPARED.append((os.getpid(), pm))


def _plugin_manager() -> pluggy.PluginManager:
    """The prepared manager, once, in a process forked after :func:`prepare_manager`; else a new one."""
    if _PREPARED and _PREPARED[0][0] != os.getpid():
        _pid, pm = _PREPARED.pop()
        return pm
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


class PluginHost:
    """The loaded plugins and the isolated calls to their hooks. Build it with :func:`load_plugins`."""

    def __init__(self, config: Config, *, strict: bool = False) -> None:
        self.config = config
        self.strict = strict
        self.pm = _plugin_manager()
        self.failures: list[PluginFailure] = []
        # Job and handler names two plugins claim, with why: neither plugin's gets them.
        self.left_out: dict[str, str] = {}
        # Plugins that exist but were not loaded on purpose, with why: ``icc scan`` keeps their jobs.
        self.not_loaded: dict[str, str] = {}
        self._infos: dict[str, PluginInfo] = {}
        self._fingerprint = ""
        self._configured = False
        self._jobs: dict[str, Job] | None = None
        self._handlers: dict[str, HandlerSpec] | None = None

    # -- what is loaded

    @property
    def plugins(self) -> list[PluginInfo]:
        """The plugins in load order (a plugin whose ``configure`` failed is no longer among them)."""
        return list(self._infos.values())

    def fingerprint(self) -> str:
        """A stable hash of the installed ``icc.tasks`` entry points, local and built-in plugin names.

        ``icc status`` compares it with the one stored by the last scan; :func:`installed_fingerprint`
        computes the same without importing any plugin.
        """
        return self._fingerprint

    # -- loading

    def _load(self, info: PluginInfo, loader: Callable[[], object]) -> None:
        existing = self._infos.get(info.name)
        if existing is not None:
            self._record(
                info,
                f"the plugin name {info.name!r} is taken by {existing.distribution or existing.source}; "
                "entry point names are global: name the entry point after its distribution",
            )
            return
        try:
            with plugin_code():
                plugin = loader()
        except BaseException as exc:  # KeyboardInterrupt and os._exit() too: only this plugin is lost
            self._record(info, exc)
            return
        try:
            with plugin_code():  # registering reads the plugin's attributes: its code may run
                if self.pm.is_registered(plugin):
                    return  # the same module reached twice (an entry point and a local module): load it once
                self.pm.register(plugin, name=info.name)
        except BaseException as exc:  # an invalid hook implementation, or the plugin's code raised
            if self.pm.get_plugin(info.name) is plugin:
                self.pm.unregister(name=info.name)
            self._record(info, exc)
            return
        self._infos[info.name] = info

    def _check_pending(self) -> None:
        """Report hook implementations whose name matches no hook (pluggy's check_pending, for all of
        them rather than the first), and hook wrappers, which icc cannot honour."""
        known = sorted(name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "icc_spec"))
        for name in list(vars(self.pm.hook)):
            if name.startswith("_"):
                continue
            caller = getattr(self.pm.hook, name)
            if caller.has_spec():
                # Each plugin's hooks are called on their own (for isolation), so wrappers cannot wrap.
                for impl in caller.get_hookimpls():
                    if impl.hookwrapper or impl.wrapper:
                        self._record(
                            self._info(impl.plugin_name),
                            f"hook wrappers are not supported ({name!r}); drop wrapper=True/hookwrapper=True",
                            hook=name,
                        )
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                import difflib  # lazy: only a misspelled hook

                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self._record(
                    self._info(impl.plugin_name),
                    f"@icc.hookimpl {name!r} matches no icc hook; {hint}hooks: {', '.join(known)}",
                    hook=name,
                )

    # -- failures

    def _info(self, name: str) -> PluginInfo:
        return self._infos.get(name) or PluginInfo(name, None, None, "local", name)

    def _record(self, info: PluginInfo, error: BaseException | str, hook: str | None = None) -> PluginFailure:
        if isinstance(error, BaseException):
            import traceback  # lazy: only a plugin that failed (1-2 ms of every supervisor and due tick)

            failure = PluginFailure(
                info.name,
                info.distribution,
                _describe(error),
                hook,
                info.version,
                type(error).__name__,
                "".join(traceback.format_exception(error)),
            )
        else:
            failure = PluginFailure(info.name, info.distribution, error, hook, info.version)
        self.failures.append(failure)
        log.debug("%s", failure)  # the commands print failures; a warning would print each twice
        return failure

    def _clashed(self, info: PluginInfo, clashes: dict[str, str], hook: str) -> None:
        """Names two plugins claim: left out, and reported like a failure of the second plugin's hook."""
        for name, error in clashes.items():
            self.left_out[name] = error
            self._failed(info, PluginError(error), hook)

    def _failed(self, info: PluginInfo, exc: BaseException, hook: str) -> None:
        """A hook raised: record it; under strict, raise it."""
        failure = self._record(info, exc, hook)
        if self.strict:
            raise StrictPluginError([failure]) from exc

    # -- calling hooks one plugin at a time

    def _impls(self, hook: str) -> Iterator[tuple[PluginInfo, Callable[..., object]]]:
        """Each plugin's implementation of ``hook``, in load order, as (plugin, call(**kwargs))."""
        caller = getattr(self.pm.hook, hook)
        # pluggy keeps implementations in registration order (and calls them in reverse).
        for impl in caller.get_hookimpls():
            if impl.hookwrapper or impl.wrapper:
                continue  # reported once, at load time (_check_pending)
            info = self._info(impl.plugin_name)

            def call(_impl: Any = impl, **kwargs: object) -> object:
                with plugin_code():
                    return _impl.function(*(kwargs[name] for name in _impl.argnames))

            yield info, call

    def configure(self) -> None:
        """Call every plugin's ``configure`` hook once; a plugin that raises is reported and disabled."""
        if self._configured:
            return
        self._configured = True
        for info, call in list(self._impls("configure")):
            try:
                call(config=self.config)
            except BaseException as exc:
                self.pm.unregister(name=info.name)
                del self._infos[info.name]
                self._failed(info, exc, "configure")

    def collect_jobs(self) -> dict[str, Job]:
        """Every plugin's jobs, each with its plugin's provenance, by name.

        Each plugin's ``schedule`` runs with a scheduler of its own: one that raises (a bad schedule too)
        loses its jobs and is reported, the others keep theirs. A job name used by two plugins is left out
        (in :attr:`left_out`) and reported as a ``schedule`` failure naming both; the plugins' other jobs
        are kept. Under strict it raises :class:`StrictPluginError`.
        """
        if self._jobs is None:
            jobs: dict[str, Job] = {}
            owners: dict[str, Provenance] = {}
            for info, call in self._impls("schedule"):
                found = self._scheduled(info, call)
                if found is None:
                    continue
                clashes = _add_unique(
                    jobs,
                    found,
                    owners,
                    "job name {!r} is used",
                    "pass name=... to scheduler.add() in one of them",
                )
                self._clashed(info, clashes, "schedule")
            self._jobs = jobs
        return dict(self._jobs)

    def jobs_of(self, plugin: str, job: str | frozenset[str] | None = None) -> dict[str, Job]:
        """The jobs of one loaded plugin: its ``schedule`` hook alone is called (a run's supervisor needs
        its own job, not every plugin's). A hook that raises is recorded as in :meth:`collect_jobs`.

        With ``job``, only that job (or those jobs, a set): the plugin's other schedules are recorded but not
        built (a run's supervisor, after a scan that checked them all, when the plugins did not change since;
        the intermediate that forks the background supervisors, for all of them)."""
        for info, call in self._impls("schedule"):
            if info.name == plugin:
                return self._scheduled(info, call, only=job) or {}
        return {}

    def _scheduled(
        self, info: PluginInfo, call: Callable[..., object], only: str | frozenset[str] | None = None
    ) -> dict[str, Job] | None:
        """One plugin's ``schedule`` hook called with a scheduler of its own, its jobs checked; None (the
        failure recorded) when the hook or a check raises."""
        scheduler = Scheduler(
            timezone=self.config.timezone,
            environment=self.config.environment,
            provenance=info.provenance,
            only=only,
        )
        try:
            call(scheduler=scheduler)
            _check_output_files(scheduler.jobs, self.config)
            _check_schedules(scheduler.jobs)
        except BaseException as exc:
            self._failed(info, exc, "schedule")
            return None
        return dict(scheduler.jobs)

    def collect_handlers(self) -> dict[str, HandlerSpec]:
        """Every plugin's queue message handlers by name. A name registered by two plugins is left out (in
        :attr:`left_out`) and reported as a ``register_handlers`` failure naming both."""
        if self._handlers is None:
            handlers: dict[str, HandlerSpec] = {}
            owners: dict[str, Provenance] = {}
            for info, call in self._impls("register_handlers"):
                mine: dict[str, HandlerSpec] = {}

                def register(
                    name: str,
                    handler: Handler,
                    queue: str = "async",
                    *,
                    _mine: dict[str, HandlerSpec] = mine,
                    _info: PluginInfo = info,
                ) -> None:
                    if not isinstance(name, str) or not name.strip():
                        raise PluginError(f"a handler name must be a non-empty string, not {name!r}")
                    if not callable(handler):
                        raise PluginError(f"handler {name!r} must be callable, not {handler!r}")
                    if not isinstance(queue, str) or not queue.strip():
                        raise PluginError(
                            f"handler {name!r}: queue must be a non-empty string, not {queue!r}"
                        )
                    if name in _mine:
                        raise PluginError(f"handler {name!r} is registered twice by plugin {_info.name!r}")
                    _mine[name] = HandlerSpec(queue, handler, _info.provenance)

                try:
                    call(register=register)
                except BaseException as exc:
                    self._failed(info, exc, "register_handlers")
                    continue
                clashes = _add_unique(
                    handlers, mine, owners, "message handler {!r} is registered", "rename one of them"
                )
                self._clashed(info, clashes, "register_handlers")
            self._handlers = handlers
        return dict(self._handlers)

    def register_commands(self, cli: click.Group) -> None:
        """Let every plugin add commands to ``cli``; a plugin may not replace one that is already there."""
        for info, call in self._impls("register_commands"):
            before = dict(cli.commands)
            try:
                call(cli=cli)
            except BaseException as exc:
                _restore(cli, before)
                self._failed(info, exc, "register_commands")
                continue
            replaced = sorted(
                name for name, command in before.items() if cli.commands.get(name) is not command
            )
            if replaced:
                for name in replaced:
                    cli.commands[name] = before[name]
                error = PluginError(
                    f"command {replaced[0]!r} exists already; give the plugin's command another name"
                )
                self._failed(info, error, "register_commands")

    def call_before_run(self, job: Job, run: RunContext) -> list[str]:
        """Every plugin's ``before_run``; one that raises is reported and never stops the run.

        Returns a line for each that raised, for the run's record."""
        return self._call_run_hook("before_run", job=job, run=run)

    def call_after_run(self, job: Job, run: RunContext, result: RunResult) -> list[str]:
        """Every plugin's ``after_run``; one that raises is reported and never changes the outcome.

        Returns a line for each that raised, for the run's record."""
        return self._call_run_hook("after_run", job=job, run=run, result=result, outcome=result.outcome)

    def hook_calls(self, hook: str) -> list[tuple[str, Callable[..., object]]]:
        """Each plugin's implementation of ``hook`` as (plugin name, call(**kwargs)), in load order: a run's
        supervisor calls each in a bounded child process of its own."""
        return [(info.name, call) for info, call in self._impls(hook)]

    def call_job_stale(self, job: str, alert: Mapping[str, Any]) -> list[str]:
        """Every plugin's ``job_stale`` (icc.notify.freshness); one that raises is reported, never retried."""
        return self._call_run_hook("job_stale", job=job, alert=alert)

    def _call_run_hook(self, hook: str, **kwargs: object) -> list[str]:
        problems: list[str] = []
        for info, call in self._impls(hook):
            try:
                call(**kwargs)
            except BaseException as exc:  # never strict: a run is never broken by an observer
                failure = self._record(info, exc, hook)
                problems.append(f"{hook} hook of plugin {info.name!r} failed: {failure.error}")
        return problems


class _Provided(Protocol):
    @property
    def provenance(self) -> Provenance: ...


_P = TypeVar("_P", bound=_Provided)


def _add_unique(
    into: dict[str, _P], items: Mapping[str, _P], owners: dict[str, Provenance], claim: str, fix: str
) -> dict[str, str]:
    """Add a plugin's jobs or handlers. A name another plugin claimed is taken out (``owners`` remembers
    who claimed it first, so a third claim stays out too); returns those names, each with an error naming
    both plugins."""
    clashes: dict[str, str] = {}
    for name, item in items.items():
        first = owners.get(name)
        if first is None:
            owners[name] = item.provenance
            into[name] = item
            continue
        into.pop(name, None)
        clashes[name] = (
            f"{claim.format(name)} by two plugins: {_who(first)} and {_who(item.provenance)}; "
            f"neither runs it until you {fix}"
        )
    return clashes


def _who(provenance: Provenance) -> str:
    if provenance.distribution:
        version = f" {provenance.version}" if provenance.version else ""
        return f"plugin {provenance.plugin!r} ({provenance.distribution}{version})"
    return f"plugin {provenance.plugin!r}"


def _restore(cli: click.Group, commands: dict[str, click.Command]) -> None:
    cli.commands.clear()
    cli.commands.update(commands)


def load_plugins(
    config: Config, *, strict: bool = False, environ: Mapping[str, str] | None = None
) -> PluginHost:
    """Load the entry point, local and built-in plugins, and call their ``configure`` hooks.

    Failures are in :attr:`PluginHost.failures`; with ``strict=True`` any failure raises
    :class:`StrictPluginError` (an :class:`icc.PluginError`). ``environ`` defaults to ``os.environ``
    (``ICC_DISABLE_PLUGIN_AUTOLOAD``, ``ICC_PLUGINS``).
    """
    env = os.environ if environ is None else environ
    host = PluginHost(config, strict=strict)
    selected = _selected(env)
    found: set[str] = set()

    entry_points = _entry_points()
    host._fingerprint = _fingerprint(entry_points, config)
    autoload = env.get("ICC_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() in _FALSE
    for ep in entry_points:
        if not autoload:
            host.not_loaded[ep.name] = "not loaded (ICC_DISABLE_PLUGIN_AUTOLOAD)"
            continue
        if selected is not None and ep.name not in selected:
            host.not_loaded[ep.name] = "not loaded (not named in ICC_PLUGINS)"
            continue
        found.add(ep.name)
        distribution, version = _dist(ep)
        host._load(PluginInfo(ep.name, distribution, version, "entry-point", ep.value), ep.load)

    if config.plugins:
        root = str(config.root)
        if root not in sys.path:
            sys.path.insert(0, root)
        importlib.invalidate_caches()
        for module in config.plugins:
            if selected is not None and module not in selected:
                host.not_loaded[module] = "not loaded (not named in ICC_PLUGINS)"
                continue
            found.add(module)
            host._load(
                PluginInfo(module, None, None, "local", module),
                functools.partial(importlib.import_module, module),
            )

    for module in BUILTIN_PLUGINS:
        found.add(module)
        if _builtin_exists(module):
            host._load(
                PluginInfo(module, DISTRIBUTION, __version__, "builtin", module),
                functools.partial(importlib.import_module, module),
            )

    for name in sorted((selected or set()) - found):
        reason = (
            "entry points are off (ICC_DISABLE_PLUGIN_AUTOLOAD)"
            if not autoload
            else "no installed icc.tasks entry point or configured local module has this name"
        )
        host._record(
            PluginInfo(name, None, None, "local", name), f"named in ICC_PLUGINS but not loaded: {reason}"
        )

    host._check_pending()
    if strict and host.failures:
        raise StrictPluginError(host.failures)
    host.configure()
    global _loaded
    _loaded = host
    return host


RUN_HOOKS = ("before_run", "after_run")


def run_hook_plugins(host: PluginHost) -> str:
    """What ``icc scan`` stores under :data:`icc.tickwatch.RUN_HOOKS_META_KEY`: the loaded plugins that implement
    ``before_run`` or ``after_run``, as a JSON list of ``[name, distribution, settings]`` in load order (settings:
    its ``ICC_RUN_HOOK_SETTINGS``, or null), then those that failed or were left out (whether they have run
    hooks is unknown). A run's supervisor loads these and the
    job's own plugin, no other (:func:`load_only`)."""
    import json  # lazy: icc scan's alone

    with_hooks = {
        impl.plugin_name for hook in RUN_HOOKS for impl in getattr(host.pm.hook, hook).get_hookimpls()
    }
    listed: list[list[Any]] = [
        [p.name, p.distribution, _hook_settings(host.pm.get_plugin(p.name))]
        for p in host.plugins
        if p.name in with_hooks
    ]
    # A plugin that failed or was left out here may have run hooks where the tick runs: a run loads it too.
    unknown = {f.plugin: f.distribution for f in host.failures} | dict.fromkeys(host.not_loaded)
    listed += [[name, dist, None] for name, dist in unknown.items() if name not in {n[0] for n in listed}]
    return json.dumps(listed)


def _hook_settings(plugin: object) -> list[str] | None:
    """A plugin's ``ICC_RUN_HOOK_SETTINGS`` (the settings without which its run hooks do nothing for a job
    with no notification settings of its own), or None when it declares none (or not as ``"table.key"``)."""
    settings = getattr(plugin, "ICC_RUN_HOOK_SETTINGS", None)
    if not isinstance(settings, tuple | list) or not all(
        isinstance(s, str) and s.count(".") == 1 for s in settings
    ):
        return None
    return list(settings)


def load_only(
    config: Config, wanted: Mapping[str, str | None], *, environ: Mapping[str, str] | None = None
) -> PluginHost:
    """Load just the plugins named in ``wanted`` ({plugin name: distribution, None for a local module}), in
    the order :func:`load_plugins` would, and call their ``configure`` hooks: a run's supervisor needs its
    job's plugin and the plugins with run hooks, not every plugin. An entry point is looked up in its own
    distribution's metadata (no scan of every installed distribution). ``ICC_PLUGINS`` and
    ``ICC_DISABLE_PLUGIN_AUTOLOAD`` apply as in :func:`load_plugins`. A plugin that is no longer installed or
    configured is a failure in :attr:`PluginHost.failures`. The host is not the one :func:`loaded_host`
    returns (a queue consumer needs every plugin's handlers)."""
    env = os.environ if environ is None else environ
    host = PluginHost(config)
    selected = _selected(env)
    autoload = env.get("ICC_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() in _FALSE
    names = [n for n in wanted if selected is None or n in selected]
    builtins = [n for n in BUILTIN_PLUGINS if n in names]
    local = [n for n in config.plugins if n in names and n not in builtins]
    for name in sorted(set(names) - set(builtins) - set(local)):
        if not autoload:
            host.not_loaded[name] = "not loaded (ICC_DISABLE_PLUGIN_AUTOLOAD)"
            continue
        ep = _entry_point(name, wanted[name])
        if ep is None:
            host._record(
                PluginInfo(name, wanted[name], None, "entry-point", name),
                "no installed icc.tasks entry point or configured local module has this name "
                "(uninstalled, or removed from [icc] plugins?)",
            )
            continue
        distribution, version = _dist(ep)
        host._load(PluginInfo(ep.name, distribution, version, "entry-point", ep.value), ep.load)
    if local:
        root = str(config.root)
        if root not in sys.path:
            sys.path.insert(0, root)
        importlib.invalidate_caches()
    for module in local:
        host._load(
            PluginInfo(module, None, None, "local", module),
            functools.partial(importlib.import_module, module),
        )
    for module in builtins:
        if _builtin_exists(module):
            host._load(
                PluginInfo(module, DISTRIBUTION, __version__, "builtin", module),
                functools.partial(importlib.import_module, module),
            )
    host._check_pending()
    host.configure()
    return host


def _entry_point(name: str, distribution: str | None) -> importlib.metadata.EntryPoint | None:
    """The ``icc.tasks`` entry point ``name``: from ``distribution``'s own metadata when it is installed,
    else from every distribution's."""
    import importlib.metadata  # lazy: only an installed plugin named by its distribution

    if distribution is not None:
        try:
            found = importlib.metadata.distribution(distribution).entry_points.select(
                group=ENTRY_POINT_GROUP, name=name
            )
        except importlib.metadata.PackageNotFoundError:
            found = None
        if found:
            return next(iter(found))
    for ep in _entry_points():
        if ep.name == name:
            return ep
    return None


# The host load_plugins built last in this process (forked children inherit it).
_loaded: PluginHost | None = None


def loaded_host(config: Config) -> PluginHost:
    """The plugins loaded in this process for ``config`` (a background task forked from the tick runs
    with the tick's), or freshly loaded ones when none were."""
    if _loaded is not None and _loaded.config is config:
        return _loaded
    return load_plugins(config)
