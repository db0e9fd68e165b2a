"""Console entry point.

``icc run`` with nothing due must cost little more than starting Python with sqlite3, so
the tick's idle path is tried before click, rich and the plugins are imported. A due ``icc run`` goes
without click too (:func:`due_run`): its options are parsed here with the stdlib, and its output is
written by hand into a pipe or file (cron's mail); rich (and with it click) is imported only when that
output goes to a terminal. Anything this parser does not know (``--help``, a mistyped option, a value
click would refuse) goes to the click command, which says what is wrong. A Django or Flask project's crontab
line (``--framework-snapshot``) goes to :mod:`icc.tick.snapshot` first, which never returns.
"""

from __future__ import annotations

import gc
import os
import sys

TYPE_CHECKING = False  # not typing's: the idle tick does not import typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from icc.config import Config
    from icc.tick.coordinator import TickRow

LEVELS = ("debug", "info", "warning", "error")  # icc.logs.LEVELS, FORMATS: not imported before they are used
FORMATS = ("text", "json")
AT_FIRST, AT_LAST = 86400, 253402300740  # icc.cli's: 1970-01-02 00:00 and 9999-12-31 23:59 UTC


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    options = args[: args.index("--")] if "--" in args else args
    if any(arg.partition("=")[0] == "--framework-snapshot" for arg in options):
        from icc.tick.snapshot import main as framework_minute  # lazy: a framework project's crontab line

        framework_minute(args)
    if "run" in args[:3]:
        from icc.tick.idle import try_idle_tick  # lazy: every other command goes to click below

        code = try_idle_tick(args)
        if code is None:
            code = due_run(args)
        if code is not None:
            leave(code)
    from icc.cli import cli  # lazy: the idle and due ticks above never import click

    cli.main(args=args, prog_name="icc")


def leave(code: int) -> None:
    """End ``icc run`` with ``code`` as Python's own exit would, without tearing the interpreter down: its
    output flushed and the ``atexit`` handlers run, then ``os._exit``. Finalizing every module and object is
    about 3 ms of the 20 ms ``python -c "import sqlite3"`` (a tenth of an idle tick), more after a full tick;
    nothing of icc's waits for it (every file, connection and child process is closed or waited for
    explicitly). Raises SystemExit (the usual exit) when a thread other than this one is alive (Python's exit
    waits for it), and when a flush fails, so that Python says so as it always did (exit 120)."""
    threading = sys.modules.get("threading")
    if threading is not None and any(
        not t.daemon and t is not threading.current_thread() for t in threading.enumerate()
    ):
        raise SystemExit(code)
    import atexit  # lazy: built in; only the exit

    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        raise SystemExit(code) from None
    os._exit(code)


def parse_run(args: list[str], environ: dict[str, str] | os._Environ[str]) -> dict[str, object] | None:
    """``icc [--config F] [-v] [--log-level L] [--log-format F] run [-q] [--at T] [--json]`` as click
    reads it (the environment variables too); None for anything else, which click then handles."""
    opts: dict[str, object] = {
        "config": None,
        "verbose": False,
        "log_level": None,
        "log_format": None,
        "quiet": False,
        "at": None,
        "json": False,
    }
    group = {"--config": "config", "--log-level": "log_level", "--log-format": "log_format"}
    seen_run = False
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if not seen_run:
            if arg == "run":
                seen_run = True
                continue
            if arg in ("-v", "--verbose"):
                opts["verbose"] = True
                continue
            key = group.get(name)
        elif arg in ("-q", "--quiet"):
            opts["quiet"] = True
            continue
        elif arg == "--json":
            opts["json"] = True
            continue
        else:
            key = "at" if name == "--at" else None
        if key is None:
            return None
        if not eq:
            given = next(it, None)
            if given is None or given.startswith("-"):
                return None  # click says the value is missing
            value = given
        opts[key] = value
    if not seen_run:
        return None
    for key, var in (
        ("config", "ICC_CONFIG"),
        ("log_level", "ICC_LOG_LEVEL"),
        ("log_format", "ICC_LOG_FORMAT"),
    ):
        if opts[key] is None and environ.get(var):  # click ignores an empty variable
            opts[key] = environ[var]
    level = opts["log_level"]
    if level is not None:
        if str(level).lower() not in LEVELS:
            return None
        opts["log_level"] = str(level).lower()
    if opts["log_format"] is None:
        opts["log_format"] = "text"
    if opts["log_format"] not in FORMATS:
        return None
    config = opts["config"]
    if config is not None and (config == "" or os.path.isdir(str(config))):
        return None  # click: "is a directory"
    return opts


def due_run(args: list[str]) -> int | None:
    """``icc run`` when the idle tick did not answer, without click: the exit code, or None when click must
    handle the command line. The same behaviour as :func:`icc.cli.run`, output and exit codes included."""
    opts = parse_run(args, os.environ)
    if opts is None:
        return None
    # No cyclic garbage collection while the due tick imports its modules and loads the configuration: they
    # allocate tens of thousands of long-lived objects and few cycles, and the collector's passes over them cost
    # more than a tenth of the minute (issue 17). :func:`_tick` freezes what was imported and turns it back on.
    gc.disable()
    try:
        return _due_run(opts)
    finally:
        gc.enable()


def _due_run(opts: dict[str, object]) -> int | None:
    at = opts["at"]
    moment: datetime | None = None
    if at is not None:
        from datetime import datetime  # lazy: only --at

        try:
            moment = datetime.fromisoformat(str(at))
        except ValueError:
            return None  # click says what is wrong with it
    from pathlib import Path  # lazy: the idle tick above does without

    from icc import logs as diagnostics  # lazy: the due tick's, after the idle tick declined
    from icc.errors import IccError  # lazy: as above

    diagnostics.configure(opts["log_level"], str(opts["log_format"]), verbose=bool(opts["verbose"]))  # type: ignore[arg-type]
    try:
        from icc.config import load_config  # lazy: as above

        config = load_config(Path(str(opts["config"])) if opts["config"] else None, export=True)
        diagnostics.set_zone(config.timezone)
        diagnostics.logger.debug(
            "config %s, state dir %s, timezone %s, environment %s",
            config.path or "(none found: defaults)",
            config.state_dir,
            config.timezone,
            config.environment,
        )
        if moment is not None:
            from zoneinfo import ZoneInfo  # lazy: only --at

            moment = moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(config.timezone))
            if not AT_FIRST <= moment.timestamp() <= AT_LAST:
                return None  # click says it is outside the times icc can schedule
        return _tick(config, moment, quiet=bool(opts["quiet"]), as_json=bool(opts["json"]))
    except IccError as exc:
        diagnostics.ensure().error("%s", exc)
        return exc.exit_code


def _tick(config: Config, moment: datetime | None, *, quiet: bool, as_json: bool) -> int:
    """One tick and what ``icc run`` prints of it (as :func:`icc.cli.run`)."""
    from icc import logs as diagnostics  # lazy: the due tick's (this module also serves the idle tick)
    from icc.store import host  # lazy: as above
    from icc.supervise.supervisor import install_stop_handlers  # lazy: as above
    from icc.tick.coordinator import Tick  # lazy: as above

    host.command = "run"  # a shared store's connections say `icc run <host>`, as under click
    install_stop_handlers()
    # What the tick imported lives as long as it does: out of the collector's sight (its passes, here and in
    # every forked supervisor, would walk it and touch each object's page), collections back on for the rest.
    gc.freeze()
    gc.enable()
    report = Tick(config, at=moment, hold_open=True).run()
    zone = config.timezone
    if as_json:
        import json  # lazy: only --json

        from icc.report import tick_data  # lazy: as above

        for failure in report.plugin_failures:
            diagnostics.logger.warning("plugin %s", failure)
        sys.stdout.write(json.dumps(tick_data(report, zone), indent=2, ensure_ascii=False) + "\n")
        return 1 if report.failed else 0
    from icc.tick.summary import run_summary  # lazy: as above

    said = run_summary(report, zone, quiet=quiet)
    for warning in said.warnings:
        diagnostics.logger.warning("%s", warning)
    for line in said.lines:
        _say(line)
    if said.table is not None:
        _tick_table(said.table, report.rows, zone)
    return said.exit_code


def _say(message: str) -> None:
    """:func:`icc.cli.render.say` on stdout: rich only on a terminal."""
    if sys.stdout.isatty():
        from icc.cli import render  # lazy: rich (and click) only for a terminal

        render.say(message)
    else:
        sys.stdout.write(message + "\n")


def _tick_table(title: str, rows: Sequence[TickRow], zone: str) -> None:
    """:func:`icc.cli.render.tick_table`: the same plain text into a pipe or file (every column, never
    wrapped); rich's table only on a terminal."""
    if sys.stdout.isatty():
        from icc.cli import render  # lazy: rich (and click) only for a terminal

        render.tick_table(title, rows, zone)
        return
    from icc.tick.summary import TABLE_HEADER, table_cells  # lazy: as above

    lines = [list(TABLE_HEADER), *table_cells(rows, zone)]
    widths = [max(len(str(c)) for c in col) for col in zip(*lines, strict=False)]
    out = [title]
    out += [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in lines
    ]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
