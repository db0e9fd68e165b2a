"""The ``icc`` command group. Rendering goes through :mod:`icc.cli.render`."""

from __future__ import annotations

import gc
import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from zoneinfo import ZoneInfo

import click

from icc import framework
from icc import logs as diagnostics
from icc import report as facts
from icc._version import __version__
from icc.cli import completion
from icc.cli import render as ui
from icc.cli.argv import icc_argv
from icc.errors import IccError, JobNotFoundError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from icc.config import Config
    from icc.jobs import Job


class Env:
    """The click context object: the ``--config`` option and the configuration, loaded on first use."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from icc.config import load_config  # lazy: a command that needs the configuration loads it

            self._config = load_config(self.config_path, export=True)  # .env reaches the tasks
            diagnostics.set_zone(self._config.timezone)
            diagnostics.logger.debug(
                "config %s, state dir %s, timezone %s, environment %s",
                self._config.path or "(none found: defaults)",
                self._config.state_dir,
                self._config.timezone,
                self._config.environment,
            )
        return self._config


class IccGroup(click.Group):
    """Prints an :class:`~icc.errors.IccError` as one clear line (no traceback) and exits non-zero."""

    _plugin_commands_loaded = False

    def invoke(self, ctx: click.Context) -> Any:
        # Before anything can log: resolving a plugin's command (below) may warn already.
        diagnostics.configure(
            ctx.params.get("log_level"),
            ctx.params.get("log_format") or "text",
            verbose=bool(ctx.params.get("verbose")),
        )
        try:
            return super().invoke(ctx)
        except IccError as exc:
            diagnostics.ensure().error("%s", exc)
            ctx.exit(exc.exit_code)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and self._load_plugin_commands(ctx):
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands(ctx)
        return super().list_commands(ctx)

    def _load_plugin_commands(self, ctx: click.Context) -> bool:
        """Plugins' ``register_commands``: only when a name is not a core command, or for the command list."""
        if self._plugin_commands_loaded:
            return False
        self._plugin_commands_loaded = True
        from icc.config import load_config  # lazy: only an unknown command name or the command list
        from icc.plugins import load_plugins  # lazy: as above: the plugin host

        try:
            host = load_plugins(load_config(ctx.find_root().params.get("config_path"), export=True))
        except IccError:
            return False  # the command itself will report a broken config
        host.register_commands(self)
        for failure in host.failures:
            if failure.hook == "register_commands":
                diagnostics.ensure().warning("plugin %s failed: %s", failure.plugin, failure.error)
        return True


@click.group(cls=IccGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="ICC_CONFIG",
    help="Config file (icc.toml or pyproject.toml); default: found by walking up from the working directory.",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug lines too (the same as --log-level debug).")
@click.option(
    "--log-level",
    type=click.Choice(diagnostics.LEVELS, case_sensitive=False),
    envvar="ICC_LOG_LEVEL",
    help="Least important diagnostic line shown on stderr; default: info (debug with -v).",
)
@click.option(
    "--log-format",
    type=click.Choice(diagnostics.FORMATS),
    default="text",
    show_default=True,
    envvar="ICC_LOG_FORMAT",
    help="Diagnostics on stderr as plain lines, or one JSON object per line.",
)
@click.version_option(__version__, prog_name="icc")
@click.pass_context
def cli(
    ctx: click.Context, config_path: Path | None, verbose: bool, log_level: str | None, log_format: str
) -> None:
    """icc: plugin-based task runner. One crontab line, `* * * * * icc run`, drives every job."""
    ctx.obj = Env(config_path)


AT_FIRST, AT_LAST = 86400, 253402300740  # 1970-01-02 00:00 and 9999-12-31 23:59 UTC


def _parse_at(value: str | None, zone: str, option: str = "--at") -> datetime | None:
    """``--at``: ISO 8601; without an offset it is read in the configured zone."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time, e.g. 2026-03-29T02:30", param_hint=option
        ) from exc
    moment = moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))
    if not AT_FIRST <= moment.timestamp() <= AT_LAST:
        raise click.BadParameter(
            f"{value!r} is outside the times icc can schedule (1970-01-02 to 9999-12-31 23:59 UTC)",
            param_hint=option,
        )
    return moment


SQLITE_MAX_INT = 2**63 - 1


def _count(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A count given on the command line: 1 to 2^63 - 1 (what the store can hold), else one line and exit 2."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= SQLITE_MAX_INT:
        raise IccError(f"{param.opts[0]} {value}: must be a whole number from 1 to {SQLITE_MAX_INT}")
    return number


def _optional_count(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    return None if value is None else _count(ctx, param, value)


def _exit(code: int) -> NoReturn:
    raise SystemExit(code)


def _without_collections() -> None:
    """No cyclic garbage collection for the rest of this command (it is re-enabled when the command ends): a
    command that builds a record per job (scan, status) makes tens of thousands of small acyclic objects, which
    reference counting frees, and at 10,000 jobs the collector's passes over them cost a third of the command
    (issue 17)."""
    if gc.isenabled():
        gc.disable()
        click.get_current_context().call_on_close(gc.enable)


def _print_json(document: Any) -> None:
    """A command's ``--json`` output: one JSON document on stdout."""
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def _notify_url_problem(config: Config, jobs: Mapping[str, Job]) -> str | None:
    """The first ``[icc.notify] urls`` or job ``notify_on_failure`` URL apprise does not accept (checked at
    scan), or None."""
    from icc.notify.notifications import check_urls  # lazy: icc scan only (the notifications plugin)

    problem = check_urls(config.notify.urls)
    if problem is not None:
        return f"[icc.notify] urls: {problem}"
    for name, urls in sorted(
        (n, urls) for n, j in jobs.items() if (urls := j.schedule.notifications.notify_on_failure)
    ):
        problem = check_urls(urls)
        if problem is not None:
            return f"job {name!r}: {problem}"
    return None


@cli.command()
@click.option("--dry-run", is_flag=True, help="Show the difference, write nothing.")
@click.option(
    "--prune", is_flag=True, help="Delete removed jobs and their history instead of marking them removed."
)
@click.option("--strict", is_flag=True, help="A plugin that fails to load is an error, not a warning.")
@click.option("--json", "as_json", is_flag=True, help="The difference as one JSON document (docs/cli.md).")
@click.pass_obj
def scan(env: Env, dry_run: bool, prune: bool, strict: bool, as_json: bool) -> None:
    """Load plugins, validate every schedule and sync the jobs into the state store.

    Registers or removes the consumer cron jobs per consumers.mode. Nothing is written when anything is
    invalid; jobs of a plugin that failed to load are kept as they were.
    """
    # lazy: icc scan only (the plugin host, the store, the tick's records)
    from icc.plugins import drift_stamp, installed_fingerprint, load_plugins, run_hook_plugins
    from icc.store import open_store  # lazy: icc scan only
    from icc.store.protocol import UnchangedGone  # lazy: icc scan only
    from icc.tick import light as lightminute  # lazy: icc scan only
    from icc.tick.coordinator import SCAN_DIGESTS_META_KEY, job_records, plugin_digests  # lazy: icc scan only
    from icc.tickwatch import DRIFT_META_KEY, RUN_HOOKS_META_KEY  # lazy: icc scan only

    config = env.config
    if not dry_run:
        framework.write_snapshot(config)  # a Django/Flask project's idle check reads it (icc.tick.snapshot)
    _without_collections()
    host = load_plugins(config, strict=strict)
    jobs = host.collect_jobs()
    host.collect_handlers()  # a handler name two plugins register is reported too
    for failure in host.failures:
        diagnostics.logger.warning("plugin %s failed: %s", failure.plugin, failure.error)
    invalid = [f for f in host.failures if f.hook == "schedule"]
    notify_problem = _notify_url_problem(config, jobs)
    if notify_problem is not None:
        diagnostics.logger.error("%s; nothing was written", notify_problem)
        _exit(2)
    if invalid:
        diagnostics.logger.error(
            "invalid schedules or a job name two plugins use; nothing was written. "
            "Fix the plugins above and scan again."
        )
        _exit(2)
    # A plugin that failed to load, or was left out (ICC_DISABLE_PLUGIN_AUTOLOAD, ICC_PLUGINS), keeps its
    # jobs: a broken deploy or a plugin left out for a while must not erase their history. --prune asks.
    unloaded = dict(host.not_loaded)
    for failure in host.failures:
        unloaded.setdefault(failure.plugin, "failed to load")
    store = open_store(config)
    # A plugin whose digest is the one the last scan stored has its jobs stored as they are: no record built. The
    # stored digests hold only while that scan was the last (an older icc scanning since leaves them behind) and
    # its rows are as it left them (how many, and their definitions' total length: one grouped query).
    digests = plugin_digests(jobs)
    try:
        stored = json.loads(store.get_meta(SCAN_DIGESTS_META_KEY) or "{}")
        last = stored["plugins"] if stored["scanned_at"] == store.get_meta("scanned_at") else {}
    except (ValueError, TypeError, KeyError):
        last = {}
    totals = store.definition_totals() if last else {}
    same = {
        p for p, d in digests.items() if isinstance(last.get(p), list) and last[p] == [d, *totals.get(p, ())]
    }
    records = job_records(jobs, skip=same)
    kept = [] if prune else [r for r in store.jobs(plugins=unloaded) if r.name not in jobs]
    for plugin in sorted({r.plugin for r in kept}):
        count = sum(r.plugin == plugin for r in kept)
        diagnostics.logger.warning(
            "kept %s of plugin %s: %s; `icc scan --prune` removes them",
            ui.plural(count, "job"),
            plugin,
            unloaded[plugin],
        )
    # What this scan leaves stored of each plugin: an unchanged one's rows as counted, the others' records.
    for plugin in {r.plugin for r in records}:
        totals[plugin] = (0, 0)
    for r in records:
        count, length = totals[r.plugin]
        totals[r.plugin] = (count + 1, length + len(json.dumps(r.definition, sort_keys=True)))
    scanned_at = str(time.time())
    meta = {
        "plugins_fingerprint": installed_fingerprint(config),
        "scanned_at": scanned_at,
        lightminute.META_KEY: lightminute.scan_record(config, host, jobs),
        DRIFT_META_KEY: drift_stamp(config, host),
        RUN_HOOKS_META_KEY: run_hook_plugins(host),
        SCAN_DIGESTS_META_KEY: json.dumps(
            {
                "scanned_at": scanned_at,
                "plugins": {p: [d, *totals.get(p, (0, 0))] for p, d in digests.items()},
            },
            sort_keys=True,
        ),
    }
    try:
        report = store.sync_jobs(
            [*records, *kept],
            prune=prune,
            dry_run=dry_run,
            now=time.time(),
            meta=meta,
            unchanged={n: j.provenance.plugin for n, j in jobs.items() if j.provenance.plugin in same},
        )
    except UnchangedGone:  # a row changed behind the last scan's back: every record, compared row by row
        records = job_records(jobs)
        report = store.sync_jobs([*records, *kept], prune=prune, dry_run=dry_run, now=time.time(), meta=meta)
    if not dry_run:
        from icc.notify import freshness  # lazy: icc scan only

        if config.store.url is None:  # the plain jobs the light minute may run (icc.tick.plain), SQLite only
            from icc.store import sqlite_file  # lazy: icc scan only
            from icc.tick import plain  # lazy: icc scan only

            plain_rows = plain.scan_rows(host, jobs, records)
            plain.store_rows(str(sqlite_file(config.state_dir)), plain_rows, [r.name for r in records])

        # The jobs stored now: the loaded plugins' (records only for those with a freshness check) and those
        # kept of plugins not loaded; every other row was marked removed or pruned. No row read again.
        checked = job_records({n: j for n, j in jobs.items() if j.schedule.stale_after is not None})
        freshness.record_scan(store, records, time.time(), current=[*checked, *kept])
    rows: list[list[str]] = []
    kept_by_name = {r.name: r for r in kept}
    order = {name: index for index, name in enumerate([*jobs, *kept_by_name])}
    report.unchanged.sort(key=lambda name: order.get(name, len(order)))
    for change in ("added", "changed", "restored", "removed", "pruned", "unchanged"):
        for name in getattr(report, change):
            job, rec = jobs.get(name), kept_by_name.get(name)
            rows.append(
                [
                    name,
                    "kept" if rec else change,
                    job.schedule.expression
                    if job
                    else rec.definition["schedule"]["expression"]
                    if rec
                    else "-",
                    job.provenance.plugin if job else rec.plugin if rec else "-",
                ]
            )
    consumers = [n for n in [*jobs, *kept_by_name] if n.startswith("consume:")]
    if as_json:
        _print_json(
            {
                "schema": 1,
                "generated_at": facts.iso(time.time(), config.timezone),
                "timezone": config.timezone,
                "dry_run": dry_run,
                "jobs": [dict(zip(("name", "change", "cron", "plugin"), row, strict=True)) for row in rows],
                "consumers": {"mode": config.consumers.mode, "jobs": consumers},
            }
        )
    else:
        title = "icc scan (dry run: nothing written)" if dry_run else "icc scan"
        ui.table(
            title,
            [ui.Col("job", keep=True), ui.Col("change", keep=True), "cron", "plugin"],
            rows,
            style_col=1,
        )
    if config.consumers.mode == "cron":
        if not as_json:
            ui.say(
                f"consumers: cron mode, {ui.plural(len(consumers), 'consumer job')} registered: "
                f"{', '.join(consumers) or 'none'}"
            )
        from icc.queue.builtin import minute_warning  # lazy: icc scan only

        warning = minute_warning(config)
        if warning is not None:
            diagnostics.logger.warning("%s", warning)
    elif not as_json:
        ui.say("consumers: service mode, no consumer cron jobs (run them with `icc systemd`)")


@cli.command()
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless a job failed.")
@click.option("--at", "at", metavar="TIME", help="Tick as if it were TIME (ISO 8601).")
@click.option("--json", "as_json", is_flag=True, help="The tick as one JSON document (docs/cli.md).")
@click.pass_obj
def run(env: Env, quiet: bool, at: str | None, as_json: bool) -> None:
    """One tick: run every job due now. Meant for crontab: `* * * * * icc run --quiet`."""
    from icc.supervise.supervisor import install_stop_handlers  # lazy: icc run only
    from icc.tick.coordinator import Tick  # lazy: icc run only: the tick
    from icc.tick.summary import run_summary  # lazy: icc run only

    config = env.config
    framework.write_snapshot(config)  # as a scan does: the crontab line's idle check has it again (if stale)
    install_stop_handlers()
    report = Tick(config, at=_parse_at(at, config.timezone)).run()
    zone = config.timezone
    if as_json:
        for failure in report.plugin_failures:
            diagnostics.logger.warning("plugin %s", failure)
        _print_json(facts.tick_data(report, zone))  # shared with icc.__main__'s due run
        if report.failed:
            _exit(1)
        return
    said = run_summary(report, zone, quiet=quiet)  # worded as icc.__main__'s due run words it
    for warning in said.warnings:
        diagnostics.logger.warning("%s", warning)
    for line in said.lines:
        ui.say(line)
    if said.table is not None:
        ui.tick_table(said.table, report.rows, zone)
    if said.exit_code:
        _exit(said.exit_code)


@cli.command()
@click.option("--quiet", "-q", is_flag=True, help="Print a tick's table only when a job failed.")
@click.option("--tick-every", "period", type=click.FloatRange(min=1), default=60.0, hidden=True)
@click.pass_obj
def work(env: Env, quiet: bool, period: float) -> None:
    """Foreground scheduler: a tick at every minute boundary, until SIGTERM or SIGINT.

    For containers, development and systemd (`icc systemd`): use it instead of the crontab line. Each tick is
    the one `icc run` runs; its table goes to stdout. On SIGTERM/SIGINT it starts nothing new, lets a running
    job finish within `grace` seconds (then stops it as `icc run` does) and exits 0.
    """
    from icc.cli.work import work as work_loop  # lazy: icc work only

    _exit(work_loop(env.config, quiet=quiet, period=period))


def _local(epoch: float | None, zone: str, width: int = 16) -> str:
    """``2026-03-29 10:00`` (``width`` 19: with seconds), in ``zone``; ``-`` for None."""
    shown = facts.iso(epoch, zone)
    return "-" if shown is None else shown[:width].replace("T", " ")


OUTPUT_TAIL_LINES = 20  # lines of the last run's output `icc status JOB` shows


def _last_run_cell(last: facts.RunReport | None, zone: str, *, terminal: bool = False) -> str:
    """``succeeded started 2026-03-29 10:00:02 (1.2s)``: when it really started, labelled, and its slot too when
    that is another minute (a run of an ``--at`` tick, a catch-up: ``..., slot 2026-03-31 03:00``); a run that
    never started (its command could not) shows its slot. In a terminal a line each, ``succeeded 1.2s`` first, so
    the column stays narrow."""
    if last is None:
        return "-"
    slot = f"slot {_local(last.slot, zone)}" if last.slot is not None else ""
    if last.started_at is None:
        return last.outcome + ("\n" if terminal else " ") + slot if slot else last.outcome
    started = _local(last.started_at, zone, 19)
    if slot and _local(last.slot, zone) == started[:16]:
        slot = ""  # started in its own minute: the start says it
    took = ui.fmt_duration(last.duration)
    if terminal:
        return f"{last.outcome} {took}\nstarted {started[:16]}" + (f"\n{slot}" if slot else "")
    return f"{last.outcome} started {started} ({took})" + (f", {slot}" if slot else "")


@cli.command()
@click.argument("job", required=False, shell_complete=completion.known_jobs)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (schema in docs/cli.md).")
@click.option("--at", "at", metavar="TIME", help="Show next runs as seen at TIME (ISO 8601).")
@click.option(
    "--limit", default="20", show_default=True, metavar="INTEGER", callback=_count, help="Runs shown for JOB."
)
@click.option(
    "--next",
    "next_count",
    metavar="N",
    callback=_optional_count,
    help="With JOB: its next N runs (sub-minute offsets included).",
)
@click.option("--timeline", is_flag=True, help="The last 24 hours of runs per job, one character a cell.")
@click.option(
    "--raw",
    is_flag=True,
    help="With JOB: its output and errors as stored, control characters too (on a terminal).",
)
@click.pass_obj
def status(
    env: Env,
    job: str | None,
    as_json: bool,
    at: str | None,
    limit: int,
    next_count: int | None,
    timeline: bool,
    raw: bool,
) -> None:
    """Every job: source, schedule, next run, last run, running now, missed slots; or JOB's last runs."""
    config = env.config
    zone = config.timezone
    if next_count is not None and job is None:
        raise IccError("--next needs a job: icc status JOB --next N")
    moment = _parse_at(at, zone)
    if timeline:
        if as_json or next_count is not None:
            raise IccError("--timeline draws a picture: give it without --json and --next")
        _timeline(config, job, moment)
        return
    _without_collections()
    report = facts.status(config, moment)
    if job is not None:
        detail = facts.job_detail(config, report, job, limit, next_count, moment or datetime.now(UTC))
        if detail is None:
            raise JobNotFoundError(f"no job named {job!r}; `icc status` lists them")
        if as_json:
            click.echo(json.dumps(detail.to_json(zone), indent=2))
            return
        _job_detail(detail, zone, raw)
        return
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    _status_table(report, zone)


def _job_detail(detail: facts.JobDetailReport, zone: str, raw: bool = False) -> None:
    """``icc status JOB``: a few lines about the job, a table of its last runs, the last run's output tail
    (control characters escaped on a terminal unless ``raw``)."""
    entry = detail.job
    if detail.paused is not None:
        ui.say(_pause_line(detail.paused, zone))
    cron = (
        "" if entry.words_only else f" [{entry.cron}]"
    )  # every()/once(): the cron is only their minute grid
    ui.say(f"{entry.name}: {entry.schedule_text}{cron}, plugin {entry.plugin}, {entry.state}")
    if entry.args is not None:
        shown = [json.dumps(a) for a in entry.args["args"]]
        shown += [f"{k}={json.dumps(v)}" for k, v in entry.args["kwargs"].items()]
        ui.say(f"args: ({', '.join(shown)})")
    ui.say(f"last success: {_last_run_cell(entry.last_success, zone)}")
    ui.say(f"last failure: {_last_run_cell(entry.last_failure, zone)}")
    if entry.freshness is not None:
        ui.say(f"freshness: {entry.freshness.line(zone)}")
    if detail.next_runs is not None:
        offset = detail.start_offset
        late = f" (each starts {offset}s later: jitter)" if offset else ""
        ui.say(
            f"next {ui.plural(len(detail.next_runs), 'run')}{late}:"
            if detail.next_runs
            else "next runs: none left"
        )
        for upcoming_at in detail.next_runs:
            shown_at = upcoming_at.astimezone(ZoneInfo(zone))
            click.echo("  " + shown_at.strftime("%Y-%m-%d %H:%M" + (":%S" if shown_at.second else "")))
    rows = [
        [
            str(r.id),
            r.kind,
            r.outcome,
            ui.fmt_slot(r.slot, zone),
            ui.fmt_time(r.started_at, zone),
            ui.fmt_duration(r.duration),
            str(r.exit_code if r.exit_code is not None else "-"),
            ui.for_terminal(r.error or "", raw),
        ]
        for r in detail.runs
    ]
    ui.table(
        None,
        [
            ui.Col("run", keep=True),
            ui.Col("kind", keep=True, wide=100),
            ui.Col("outcome", keep=True),
            ui.Col("slot", keep=True),
            ui.Col("started", keep=True),
            ui.Col("took", keep=True),
            ui.Col("exit", keep=True, wide=100),
            "error",
        ],
        rows,
        style_col=2,
    )
    failed = detail.ping_failure
    if failed is not None:
        later = "; later pings worked" if failed.ok_since else ""
        at = "?" if failed.at is None else _local(failed.at, zone, 19)
        ui.say(f"ping failed {at} ({failed.event}): {failed.error}{later}")
    # Not a missed, skipped or pending row: those have no output.
    last = next((r for r in detail.runs if r.outcome not in ("missed", "skipped", "pending")), None)
    if last is not None and last.output:
        lines = ui.for_terminal(last.output, raw).rstrip("\n").splitlines()
        ui.say(
            f"output of run {last.id} (last {min(len(lines), OUTPUT_TAIL_LINES)} lines; `icc logs {entry.name}`):"
        )
        click.echo("\n".join(lines[-OUTPUT_TAIL_LINES:]), color=True)  # color: never stripped


def _status_table(report: facts.StatusReport, zone: str) -> None:
    """``icc status``: a row per job, the hosts of a shared store, then the warnings."""
    if report.paused is not None:
        ui.say(_pause_line(report.paused, zone))
    terminal = ui.is_terminal()
    rows = []
    # What many jobs share (10,000 jobs: issue 17) is formatted once: a next run, a plugin, a state.
    times: dict[float | None, str] = {}
    plugins: dict[tuple[str, str | None, str | None], str] = {}
    states: dict[tuple[str, bool | None], str] = {}
    for j in report.jobs:
        key = (j.plugin, j.distribution, j.version)
        plugin = plugins.get(key)
        if plugin is None:
            plugin = plugins[key] = j.plugin + (f" ({j.distribution} {j.version})" if j.distribution else "")
        stale = j.stale  # expect_success_within() overdue
        shown = (j.state, stale)
        state = states.get(shown)
        if state is None:
            state = states[shown] = j.state + (", stale" if stale else "")
        next_run = times.get(j.next_run)
        if next_run is None:
            next_run = times[j.next_run] = _local(j.next_run, zone)
        running = (
            ", ".join(
                f"pid {r.pid} since {'?' if r.since is None else _local(r.since, zone)[11:16]}"
                for r in j.running
            )
            if j.running
            else "-"
        )
        missed = str(j.missed) if j.missed else "-"
        last_run, last_success, last_failure = j.last_run, j.last_success, j.last_failure
        cells = [
            j.name,
            plugin,
            j.schedule_text if j.words_only else (f"{j.schedule_text}\n{j.cron}" if terminal else j.cron),
            *(() if terminal else (state,)),
            next_run,
            "-" if last_run is None else _last_run_cell(last_run, zone, terminal=terminal),
            "-" if last_success is None else _last_run_cell(last_success, zone, terminal=terminal),
            "-" if last_failure is None else _last_run_cell(last_failure, zone, terminal=terminal),
        ]
        if terminal:  # state, running and missed in one column: a terminal may be 80 columns wide
            notes = [state] if j.state != "enabled" or j.stale else []
            notes += [f"running {running}"] if j.running else []
            notes += [f"missed {missed}"] if j.missed else []
            rows.append([*cells, "\n".join(notes) or "-"])
        else:
            rows.append([*cells, running, missed])
    ui.table(
        f"icc status ({zone}, environment {report.environment})",
        [
            ui.Col("job", keep=True),
            ui.Col("plugin", wide=140),
            "schedule",
            *(() if terminal else ("state",)),
            ui.Col("next run", keep=True),
            ui.Col("last run", keep=True),
            ui.Col("last success", keep=True, wide=120),  # narrower: in `icc status JOB` and --json
            ui.Col("last failure", keep=True, wide=120),
            *(("notes",) if terminal else ("running", "missed")),
        ],
        rows,
    )
    if not report.jobs:
        ui.say("no jobs yet: run `icc scan`")
    if report.hosts:
        _hosts_table(report.hosts, zone)
    for err in report.plugin_errors:
        diagnostics.logger.warning(
            "plugin error: %s (%s): %s",
            err.plugin,
            err.distribution or "local",
            err.error,
            extra={"bare": True},
        )
    lock = report.tick_lock
    if lock is not None and lock.stuck:
        who = "an unknown process" if lock.pid is None else f"pid {lock.pid} on {lock.host}"
        diagnostics.logger.warning(
            "the tick lock has been held for %s by %s (since %s): is a tick stuck?",
            ui.fmt_duration(lock.held_seconds),
            who,
            _local(lock.since, zone, 19),
        )
    if report.drift is not None and not report.plugins_changed:
        diagnostics.logger.warning("plugins changed since the last scan (%s); run `icc scan`", report.drift)
    if report.plugins_changed:
        diagnostics.logger.warning("installed plugins changed since the last scan; run `icc scan`")
    if report.never_scanned:
        diagnostics.logger.warning("never scanned; run `icc scan`")


def _hosts_table(hosts: tuple[facts.HostReport, ...], zone: str) -> None:
    """``icc status`` on a shared store: the hosts that tick on it and their clocks (icc.hosts)."""
    from icc.hosts import REFUSE_SECONDS, WARN_SECONDS  # lazy: icc status only

    rows = []
    for h in hosts:
        note = "-"
        if h.refused:
            note = f"clock skewed past {REFUSE_SECONDS:.0f} s: its ticks refuse to run; sync it with NTP"
        elif h.skewed:
            note = f"clock skewed past {WARN_SECONDS:.0f} s: sync it with NTP"
        rows.append(
            [
                h.host_id + (" (this host)" if h.this_host else ""),
                h.hostname,
                _local(h.last_seen, zone, 19),
                f"{round(h.clock_offset, 3):+.1f} s",
                note,
            ]
        )
    ui.table(
        "hosts",
        [
            ui.Col("host", keep=True),
            "hostname",
            ui.Col("last seen", keep=True),
            ui.Col("clock offset", keep=True),
            "clock",
        ],
        rows,
    )


TIMELINE_CHARS = {"succeeded": ".", "failed": "F", "skipped": "s", "missed": "m", "running": "r", None: " "}
TIMELINE_STYLE = {"succeeded": "bold green", "failed": "bold white on red", "missed": "bold black on yellow"}
TIMELINE_STYLE |= {"skipped": "dim", "running": "bold cyan"}


def _timeline(config: Config, job: str | None, moment: datetime | None) -> None:
    """``icc status --timeline``: a row of cells per job, the last 24 hours, one hour a cell (in a terminal the
    finest of 15, 30 or 60 minutes that fits its width)."""
    from icc.store import open_store  # lazy: only the commands that read the store

    if job is not None and open_store(config).job(job) is None:
        raise JobNotFoundError(f"no job named {job!r}; `icc status` lists them")
    zone = ZoneInfo(config.timezone)
    terminal = ui.is_terminal()
    names = [job] if job is not None else [rec.name for rec in open_store(config).jobs()]
    name_width = max([len(n) for n in names] + [3])
    minutes = 60
    if terminal:
        room = ui.console().width - name_width - 3
        minutes = next((m for m in (15, 30) if facts.TIMELINE_HOURS * 60 // m <= room), 60)
    data = facts.timeline(config, moment, minutes)
    rows = [j for j in data["jobs"] if job is None or j["name"] == job]
    start, cell = data["start_epoch"], minutes * 60
    count = facts.TIMELINE_HOURS * 60 // minutes
    axis = [" "] * count
    for i in range(count):
        local = datetime.fromtimestamp(start + i * cell, tz=UTC).astimezone(zone)
        if local.minute == 0 and local.hour % 6 == 0 and i + 2 <= count and axis[i - 1 : i] != ["0"]:
            axis[i : i + 2] = list(f"{local.hour:02d}")
    end = data["end"][:16].replace("T", " ")
    lines = [
        f"icc status --timeline: 24 hours to {end} ({config.timezone}), {minutes} minutes a cell",
        f"{'job':<{name_width}}  |{''.join(axis)}|",
    ]
    legend = "legend: . succeeded  F failed  s skipped  m missed  r running  (blank) no run"
    if not terminal:
        for row in rows:
            lines.append(f"{row['name']:<{name_width}}  |{''.join(TIMELINE_CHARS[c] for c in row['cells'])}|")
        click.echo("\n".join([*lines, legend]))
    else:
        _timeline_rows(lines, rows, name_width, legend)
    if not rows:
        ui.say("no jobs yet: run `icc scan`")


def _timeline_rows(lines: list[str], rows: list[dict[str, Any]], name_width: int, legend: str) -> None:
    """The timeline in a terminal: the same characters, coloured."""
    from rich.text import Text  # lazy: rich: the timeline only

    out = ui.console()
    for line in lines:
        out.print(line, markup=False, highlight=False)
    for row in rows:
        text = Text(f"{row['name']:<{name_width}}  |", no_wrap=True)
        for c in row["cells"]:
            text.append(TIMELINE_CHARS[c], style=TIMELINE_STYLE.get(c or "", ""))
        text.append("|")
        out.print(text)
    out.print(legend, markup=False, highlight=False)


def _pause_line(paused: facts.PauseReport, zone: str) -> str:
    """``PAUSED since 2026-03-29 10:00, until 12:00 (queues too): deploy``."""
    until = f", until {_local(paused.until, zone)}" if paused.until is not None else ", until `icc resume`"
    queues = " (queues too)" if paused.queues else ""
    reason = f": {paused.reason}" if paused.reason else ""
    return f"PAUSED since {_local(paused.since, zone)}{until}{queues}{reason}"


@cli.command()
@click.option("--until", "until", metavar="TIME", help="End the pause by itself at TIME (ISO 8601).")
@click.option("--reason", metavar="TEXT", help="Why, shown by `icc status`.")
@click.option(
    "--queues", is_flag=True, help="Pause the queue consumers too (`icc consume` waits, consume:* jobs skip)."
)
@click.pass_obj
def pause(env: Env, until: str | None, reason: str | None, queues: bool) -> None:
    """Run nothing until `icc resume` (or --until): due slots are recorded skipped (paused).

    Jobs marked even_when_paused() still run; queue consumers keep consuming unless --queues.
    """
    from icc import pause as pauses  # lazy: icc pause only
    from icc.store import open_store  # lazy: icc pause only

    config = env.config
    zone = config.timezone
    now = time.time()
    end = _parse_at(until, zone, "--until")
    if end is not None and end.timestamp() <= now:
        raise IccError(
            f"--until {until}: {ui.fmt_time(end.timestamp(), zone)} ({zone}) is in the past; give a later time, "
            "or leave --until out to pause until `icc resume`"
        )
    store = open_store(config)
    before = pauses.current(store, now)
    record = pauses.Pause(
        since=before.since if before is not None else now,
        until=None if end is None else end.timestamp(),
        reason=reason,
        queues=queues,
    )
    pauses.set_pause(store, record)
    shown = facts.PauseReport.of(record)
    assert shown is not None
    line = _pause_line(shown, zone)
    ui.say(("pause updated: " if before is not None else "") + line)


@cli.command()
@click.pass_obj
def resume(env: Env) -> None:
    """End `icc pause`: the next tick runs what is due again (the skipped slots stay skipped)."""
    from icc import pause as pauses  # lazy: icc resume only
    from icc.store import open_store  # lazy: icc resume only

    config = env.config
    old = pauses.clear(open_store(config))
    if old is None or not old.in_force(time.time()):
        ui.say("icc was not paused")
        return
    ui.say(f"resumed (paused since {ui.fmt_time(old.since, config.timezone)})")


@cli.command()
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write them to this file atomically, for node_exporter's textfile collector (e.g. icc.prom).",
)
@click.pass_obj
def metrics(env: Env, textfile: Path | None) -> None:
    """Jobs, queues and the pause in the Prometheus text format."""
    from icc.cli.metrics import render, write_textfile  # lazy: icc metrics only

    text = render(facts.metrics(env.config, time.time()))
    if textfile is None:
        click.echo(text, nl=False)
    else:
        write_textfile(textfile, text)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document: ok, problems and what was checked.")
@click.pass_obj
def check(env: Env, as_json: bool) -> None:
    """Exit 0 when all is well, 2 with one line per problem: for health checks (Docker, Nagios, Kubernetes).

    Checks that the store answers, that a tick ran on this host in the last 2 minutes, that no tick lock is
    stuck, and that no job with expect_success_within is stale. Loads no plugin, writes nothing.
    """
    config = env.config
    report = facts.check(config, time.time())
    problems = report.problems(config.timezone)
    if as_json:
        _print_json(report.to_json(config.timezone))
    else:
        for line in problems or [_check_ok_line(report)]:
            click.echo(line)
    if problems:
        _exit(2)


def _check_ok_line(report: facts.CheckReport) -> str:
    age = report.tick_age
    fresh = f", {ui.plural(report.jobs_checked, 'freshness check')} passed" if report.jobs_checked else ""
    lock = "tick lock free" if report.tick_lock is None else "a tick is running"
    return f"ok: store answers, last tick {0 if age is None else int(age)}s ago, {lock}{fresh}"


@cli.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (not loopback: needs a token).",
)
@click.option(
    "--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one)."
)
@click.option(
    "--read-only", is_flag=True, help="No actions: the buttons are gone and every action answers 403."
)
@click.pass_obj
def web(env: Env, host: str, port: int, read_only: bool) -> None:
    """The dashboard (docs/web.md): jobs, timeline, runs, queues, hosts, and /api/* JSON.

    Binds 127.0.0.1 by default; another address needs [icc.web] token (or ICC_WEB_TOKEN) to log in with."""
    from icc.web import missing_extra  # lazy: icc web only (the dashboard's package)

    problem = missing_extra()
    if problem is not None:
        raise IccError(problem)
    config = env.config
    from icc.web.app import serve  # lazy: icc web only: Starlette, uvicorn, Jinja2

    serve(config, host=host, port=port, read_only=read_only)


@cli.command(name="exec")
@click.argument("job", shell_complete=completion.jobs)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="The run as one JSON document, its output included; the live output goes to stderr.",
)
@click.pass_obj
def exec_(env: Env, job: str, as_json: bool) -> None:
    """Run JOB now, in the foreground, recorded as a manual run."""
    from icc.tick.coordinator import manual_run  # lazy: icc exec only: the tick's module

    config = env.config
    out = sys.stderr.buffer if as_json else sys.stdout.buffer  # stdout holds only the JSON document

    def echo(chunk: bytes) -> None:  # the job's output, live, as it writes it
        out.write(chunk)
        out.flush()

    row, run_id = manual_run(config, job, echo=echo)
    if as_json:
        from icc.store import open_store  # lazy: only the commands that read the store

        store = open_store(config)
        run = store.run(run_id)
        assert run is not None
        _print_json({"job": row.job, **facts.run_data(run, config.timezone, {}, full=True)})
        if row.outcome != "succeeded":
            _exit(1)
        return
    took = f" in {ui.fmt_duration(row.duration)}" if row.duration is not None else ""
    detail = f": {row.detail}" if row.detail else ""
    ui.say(f"icc exec: {row.job} run {run_id} {row.outcome}{took}{detail}")
    if row.outcome != "succeeded":
        _exit(1)


@cli.command()
@click.argument("job", shell_complete=completion.known_jobs)
@click.option(
    "--run",
    "run_id",
    metavar="ID",
    callback=_optional_count,
    help="This run of JOB (an id from `icc status JOB`); default: its last run.",
)
@click.option("--json", "as_json", is_flag=True, help="The run as JSON, its output included.")
@click.option(
    "--raw", is_flag=True, help="On a terminal too, the output as stored: control characters unescaped."
)
@click.pass_obj
def logs(env: Env, job: str, run_id: int | None, as_json: bool, raw: bool) -> None:
    """Print the stored output of JOB's last run (or of run ID).

    On a terminal, control characters (but newline and tab) are shown escaped (\\x1b) unless --raw."""
    from icc.store import open_store  # lazy: only the commands that read the store

    config = env.config
    store = open_store(config)
    if store.job(job) is None:
        known = ", ".join(r.name for r in store.jobs()) or "none (run `icc scan`)"
        raise JobNotFoundError(f"no job named {job!r}; known jobs: {known}")
    if run_id is None:
        run = next(
            (r for r in store.runs(job, limit=1000) if r.outcome not in ("missed", "skipped", "pending")),
            None,
        )
        if run is None:
            raise JobNotFoundError(
                f"job {job!r} has no run with output yet; `icc status {job}` lists its runs"
            )
    else:
        run = store.run(run_id)
        if run is None or run.job != job:
            raise JobNotFoundError(f"job {job!r} has no run {run_id}; `icc status {job}` lists its runs")
    if as_json:
        dead = facts.dead_runs(config, store, store.unfinished())
        click.echo(
            json.dumps({"job": job, **facts.run_data(run, config.timezone, dead, full=True)}, indent=2)
        )
        return
    if run.output:
        # color=True: click would strip what looks like a colour code into a pipe; the output goes out as stored.
        click.echo(ui.for_terminal(run.output, raw), nl=not run.output.endswith("\n"), color=True)


def _set_enabled(env: Env, job: str, enabled: bool) -> None:
    from icc.store import open_store  # lazy: icc enable/disable only
    from icc.tick.coordinator import NOT_EVALUATED  # lazy: icc enable/disable only

    store = open_store(env.config)
    record = store.job(job)
    if record is None or record.removed_at is not None:
        known = ", ".join(r.name for r in store.jobs()) or "none (run `icc scan`)"
        raise JobNotFoundError(f"no job named {job!r}; known jobs: {known}")
    store.set_enabled(job, enabled)
    if enabled:
        # Slots that passed while it was disabled are not "missed": the next tick starts from its own slot.
        store.set_next_due({job: NOT_EVALUATED})
    ui.say(f"{job}: {'enabled' if enabled else 'disabled'}")


@cli.command()
@click.argument("job", shell_complete=completion.jobs)
@click.pass_obj
def enable(env: Env, job: str) -> None:
    """Enable JOB (kept across scans)."""
    _set_enabled(env, job, True)


@cli.command()
@click.argument("job", shell_complete=completion.jobs)
@click.pass_obj
def disable(env: Env, job: str) -> None:
    """Disable JOB (kept across scans): it is not run until enabled again."""
    _set_enabled(env, job, False)


def crontab_line(config: Config) -> str:
    """The crontab line for ``config``, escaped for cron: a bare ``%`` would end the command there."""
    from icc.errors import ConfigError  # lazy: only without a config file

    if config.path is None and framework.argv() is None:
        raise ConfigError(
            f"icc crontab: no config file found in {Path.cwd()} or above (icc.toml, or pyproject.toml with "
            "[tool.icc]), so the line would run on an empty state in cron's working directory; run it from "
            "the project's directory or pass --config"
        )
    argv = framework.crontab_argv(config, ["run", "--quiet"])  # a framework's idle check first
    argv = argv if argv is not None else [*icc_argv(config), "run", "--quiet"]
    for arg in argv:
        if "\n" in arg or "\r" in arg:
            raise ConfigError(
                f"icc crontab: {arg!r} contains a line break, which a crontab line cannot hold; "
                "move the project or its environment to a path without one"
            )
    command = shlex.join(argv)
    if "\\%" in command:
        raise ConfigError(
            f"icc crontab: {command!r} has a backslash before a '%', which cron cannot pass on; "
            "move the project or its environment to a path without one"
        )
    # cron turns an unescaped % into a newline (the rest becomes the command's stdin); \% is a literal %.
    return "* * * * * " + command.replace("%", "\\%")


@cli.command()
@click.pass_obj
def crontab(env: Env) -> None:
    """Print the one crontab line to install (`crontab -e`). Run it from the project or pass --config."""
    click.echo(crontab_line(env.config))


# --- commands contributed by other modules (one line each) ---
from icc.cli.queue import consume, failed, queue  # noqa: E402

cli.add_command(consume)
cli.add_command(failed)
cli.add_command(queue)
from icc.cli.systemd import systemd  # noqa: E402

cli.add_command(systemd)
from icc.cli.db import db  # noqa: E402

cli.add_command(db)
