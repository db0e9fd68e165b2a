"""The run hooks and callbacks of one run, said once for every supervisor: the run's context, the plugins it
loads (its job's own and those with run hooks, within a time limit), its ``before``/``after`` observers (each
callback and hook in a bounded child: :func:`bounded_observers`), and which plugins' run hooks can act on it
(:func:`acting_hook_plugins`). The full tick's supervisors (:func:`icc.tick.coordinator.prepare_run`), its concluder,
and the light minute's supervisors (:mod:`icc.tick.light`, :mod:`icc.tick.plain`: :class:`LightHooks`) use
these, and :func:`icc.supervise.supervisor.conclude` hands each run's result to the ``after`` observers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from icc.store.protocol import FAILURES
from icc.supervise.process import within
from icc.supervise.supervisor import RunSpec, conclude, run_bounded

if TYPE_CHECKING:
    from icc.config import Config
    from icc.jobs import Job, RunContext, RunResult
    from icc.plugins import PluginHost
    from icc.store.protocol import JobRecord, RunKind


def standin_job(record: JobRecord) -> Job:
    """A job whose plugin no longer loads, as the run hooks see it: built from its stored definition (name,
    description, schedule without callbacks, provenance); calling its task raises :class:`icc.PluginError`."""
    from icc.jobs import Job, Provenance  # lazy: the plugins' model: a stand-in job only
    from icc.schedule import Schedule  # lazy: as above

    def unloadable() -> None:
        from icc.errors import PluginError  # lazy: only when the stand-in is called

        raise PluginError(f"job {record.name!r} could not be loaded from its plugin {record.plugin!r}")

    task: Any = tuple(record.definition["argv"]) if record.kind == "command" else unloadable
    return Job(
        record.name,
        task,
        Schedule.from_definition(record.definition["schedule"]),
        record.definition.get("description"),
        Provenance(record.plugin, record.distribution, record.version),
    )


def callback_name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def bounded_observers(
    host: PluginHost | None, job: Job, ctx: RunContext, config: Config, spec: RunSpec
) -> tuple[Callable[[], list[str]], Callable[[RunResult], list[str]]]:
    """The ``before`` and ``after`` of a run, for its supervisor: the job's own callbacks, then every plugin's
    ``before_run`` / ``after_run``, each in a child process of its own, in the project root with ``ICC_CONFIG``,
    for at most ``callback_timeout`` seconds, its output collected into ``spec.preamble`` (stored with the run).
    Each returns a line per callback or hook that raised, exited or was killed; none of them changes the run."""
    schedule = job.schedule

    def bounded(label: str, title: str, fn: Callable[[], object]) -> list[str]:
        done = run_bounded(
            label,
            fn,
            limit=config.callback_timeout,
            output=spec.preamble,
            cwd=config.root,
            config_path=config.path,
            title=f"icc: {title} {job.name}{spec.title_suffix}",
        )
        return [done.note] if done.note else []

    def callbacks(which: str, arg: object) -> list[str]:
        return [
            note
            for fn in schedule.run_callbacks(which)
            for note in bounded(
                f"{which} callback {callback_name(fn)}", f"callback {which}", partial(fn, arg)
            )
        ]

    def hooks(hook: str, **kwargs: object) -> list[str]:
        if host is None:
            return []
        return [
            note
            for plugin, call in host.hook_calls(hook)
            for note in bounded(f"{hook} hook of plugin {plugin!r}", f"hook {hook}", partial(call, **kwargs))
        ]

    def before() -> list[str]:
        return callbacks("before", ctx) + hooks("before_run", job=job, run=ctx)

    def after(result: RunResult) -> list[str]:
        which = ["after"]
        if result.outcome == "succeeded":
            which.append("on_success")
        elif result.outcome in FAILURES:
            which.append("on_failure")
        notes = [note for w in which for note in callbacks(w, result)]
        return notes + hooks("after_run", job=job, run=ctx, result=result, outcome=result.outcome)

    return before, after


PLUGIN_LOAD_LIMIT = (
    60.0  # seconds a run's supervisor waits for the plugins to load, for a job without timeout()
)


def slot_title(slot: int | None, zone: str) -> str:
    """The tail of a run's process titles: `` (slot 03:00)`` in the job's zone, `` (manual)`` without slot."""
    if slot is None:
        return " (manual)"
    from zoneinfo import ZoneInfo  # lazy: loaded already in a tick (its zone)

    moment = datetime.fromtimestamp(slot, tz=UTC).astimezone(ZoneInfo(zone))
    return f" (slot {moment.strftime('%H:%M:%S' if slot % 60 else '%H:%M')})"


def run_context(
    record_name: str, run_id: int, slot: int | None, kind: RunKind, zone: str, env: str
) -> RunContext:
    """The :class:`icc.RunContext` of a run; its slot is aware, in the job's zone."""
    from zoneinfo import ZoneInfo  # lazy: as in slot_title

    from icc.jobs import RunContext  # lazy: the plugins' model: supervisors only

    moment = None if slot is None else datetime.fromtimestamp(slot, tz=UTC).astimezone(ZoneInfo(zone))
    return RunContext(record_name, run_id, moment, kind, env)


def plugins_wanted(
    record: JobRecord, hook_plugins: Mapping[str, str | None] | None
) -> dict[str, str | None] | None:
    """The plugins a run of ``record`` loads ({name: distribution}): its job's own and those with run hooks
    (``hook_plugins``); None for every plugin: when the plugins changed since the scan (``hook_plugins`` None),
    and for a job defined from every plugin (a consumer job: its consumer needs every plugin's handlers)."""
    from icc.plugins import JOBS_FROM_EVERY_PLUGIN  # lazy: the supervisor's, loaded with the plugins

    if hook_plugins is None or record.plugin in JOBS_FROM_EVERY_PLUGIN:
        return None
    return {record.plugin: record.distribution, **hook_plugins}


def load_within(
    config: Config,
    limit: float,
    only: Mapping[str, str | None] | None = None,
    jobs_of: str | None = None,
    job: str | None = None,
) -> tuple[PluginHost, dict[str, Job]] | None:
    """The plugins and their jobs, loaded in this (forked) process; None when that took longer than ``limit``
    seconds (:func:`within`). ``only``: just these plugins ({name: distribution}, :func:`icc.plugins.load_only`),
    and with ``jobs_of`` just that plugin's jobs (with ``job``, just that one built:
    :meth:`icc.plugins.PluginHost.jobs_of`)."""
    from icc.plugins import load_only, load_plugins  # lazy: the plugin host: supervisors, concluder, icc exec

    loaded: list[tuple[PluginHost, dict[str, Job]]] = []

    def load() -> None:
        host = load_plugins(config) if only is None else load_only(config, only)
        loaded.append(
            (host, host.collect_jobs() if only is None or jobs_of is None else host.jobs_of(jobs_of, job))
        )

    return loaded[0] if within(limit, load) and loaded else None


def setting_is_set(config: Config, setting: str) -> bool:
    """Whether ``table.key`` (an ``ICC_RUN_HOOK_SETTINGS`` entry) is set in ``config``, by the file or by its
    variable: ``monitor.ping_url``, ``mail.alert_to``."""
    from icc.config import CORE_TABLES  # lazy: only to check a run hook's setting

    table, _, key = setting.partition(".")
    section: Any = getattr(config, table, None) if table in CORE_TABLES else config.tables.get(table)
    value = section.get(key) if isinstance(section, Mapping) else getattr(section, key, None)
    return value not in (None, "", [], ())


def acting_hook_plugins(
    found: list[tuple[str, str | None, tuple[str, ...] | None]], config: Config, record: JobRecord | None
) -> dict[str, str | None]:
    """The plugins with run hooks (``found``: the last scan's, :func:`icc.tickwatch.parse_run_hook_plugins`)
    that a run of ``record`` loads. For a job with no notification settings of its own, not those whose
    ``ICC_RUN_HOOK_SETTINGS`` are all unset: their hooks would do nothing for it (icc's pings without
    ``monitor.ping_url``, icc-mail without ``mail.alert_to``), so they are neither imported nor called."""
    schedule = record.definition.get("schedule", {}) if record is not None else {}
    # notification settings of its own, or a freshness check (icc.notify.freshness acts on its successes)
    own = record is None or bool(schedule.get("notify") or schedule.get("expect_success_within"))
    return {
        name: dist
        for name, dist, settings in found
        if own or settings is None or any(setting_is_set(config, s) for s in settings)
    }


def not_loaded(limit: float) -> str:
    """The error of a run whose plugins did not load within ``limit`` seconds (its task was not started)."""
    return (
        f"its plugins did not load within {limit:g}s (an import hangs?); the task was not started. "
        "Run `icc scan` to see which plugin"
    )


class RunHooks:
    """One run's observers in a light supervisor: :meth:`before` before its task starts (their output is in
    :attr:`preamble`, stored first in the run's output), :meth:`conclude` once the run is recorded (as
    :func:`icc.supervise.supervisor.supervise` ends: the ``after`` observers, their output and notes stored)."""

    def __init__(self, store: Any, spec: RunSpec) -> None:
        self.store = store
        self.spec = spec

    @property
    def preamble(self) -> bytes:
        return bytes(self.spec.preamble)

    def before(self) -> list[str]:
        return self.spec.before() if self.spec.before is not None else []

    def conclude(self, notes: list[str]) -> None:
        self.spec.preamble.clear()  # what the after observers print is collected here
        conclude(
            self.store, self.spec.run_id, self.spec.after, self.spec.job, notes, output=self.spec.preamble
        )


class LightHooks:
    """The run hooks of a light supervisor's runs (:mod:`icc.tick.light`'s consumer supervisors,
    :mod:`icc.tick.plain`'s foreground one), which record their runs with a few SQLite statements of their
    own: once the light minute finds that a plugin's run hooks can act (one of its ``ICC_RUN_HOOK_SETTINGS`` is
    set), the supervisor loads the configuration (:func:`icc.config.load_config`) and opens the state store,
    and for each run loads what the full tick's supervisor loads for it (:func:`icc.tick.coordinator.prepare_run`:
    its job's plugin and the run hook plugins the last scan stored that can act on it, within the job's timeout
    or :data:`PLUGIN_LOAD_LIMIT`) and calls the same bounded observers."""

    def __init__(self, config_path: str | None) -> None:
        from pathlib import Path  # lazy: only a light supervisor whose runs have hooks gets here

        from icc.config import load_config  # lazy: as above
        from icc.store import open_store  # lazy: as above
        from icc.tickwatch import RUN_HOOKS_META_KEY, parse_run_hook_plugins  # lazy: as above

        self.config = load_config(None if config_path is None else Path(config_path))
        self.store = open_store(self.config)
        self.found = parse_run_hook_plugins(self.store.get_meta(RUN_HOOKS_META_KEY))

    def run(self, run_id: int, timeout: float | None) -> RunHooks | str:
        """The observers of run ``run_id``; or the error it fails with: its plugins did not load in time (its
        task is not started, as :func:`icc.tick.coordinator.prepare_run` says)."""
        run = self.store.run(run_id)
        record = self.store.job(run.job) if run is not None else None
        if run is None or record is None:
            return "its run or its job is no longer in the state store; run `icc scan`"
        zone = record.definition["schedule"].get("zone", self.config.timezone)
        spec = RunSpec(
            job=record.name, run_id=run_id, timeout=timeout, title_suffix=slot_title(run.slot, zone)
        )
        ctx = run_context(record.name, run_id, run.slot, run.kind, zone, self.config.environment)
        limit = timeout or PLUGIN_LOAD_LIMIT
        # The job's own plugin (its live job for the hooks) and the run hook plugins: a consumer job's too (the
        # full supervisor loads every plugin for its consumer's handlers; the hooks called are the same).
        hooks = None if self.found is None else acting_hook_plugins(self.found, self.config, record)
        only = None if hooks is None else {record.plugin: record.distribution, **hooks}
        loaded = load_within(self.config, limit, only, None if only is None else record.plugin, record.name)
        if loaded is None:
            return not_loaded(limit)
        host, live = loaded
        spec.notices += [f"{f.plugin}: {f.error}" for f in host.failures]
        job = live.get(record.name)
        spec.before, spec.after = bounded_observers(host, job or standin_job(record), ctx, self.config, spec)
        return RunHooks(self.store, spec)

    def note(self, run_id: int, job: str, note: str) -> None:
        """A note on run ``run_id`` (stored with it, and told on stderr), as :func:`conclude` stores them."""
        conclude(self.store, run_id, None, job, [note])

    def close(self) -> None:
        self.store.close()
