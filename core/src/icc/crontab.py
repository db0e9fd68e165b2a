"""icc's built-in crontab plugin: a plain crontab file's lines as icc jobs (supercronic's use case).

``[icc.crontab] files = ["deploy/crontab"]`` (relative to the project root) makes each command line of each file a
job named ``crontab:<file>:<line>``, run as cron runs it: ``["/bin/sh", "-c", command]`` (the shell from a
``SHELL=`` line when one is given), in the background (the lines due in a minute start together, as cron starts
them) and never overlapping itself (icc's default). What a user crontab holds is understood the way Debian's cron reads it:

- ``NAME=value`` lines (spaces around ``=`` allowed, the value optionally in matching quotes) set the
  environment of the lines after them; ``CRON_TZ=Zone`` also sets the zone their schedules are read in.
- Five fields or an ``@yearly``/``@annually``/``@monthly``/``@weekly``/``@daily``/``@midnight``/``@hourly``
  shortcut; ``@reboot`` is refused (icc runs on a schedule: start such a command with the service manager).
- ``%``: the first unescaped ``%`` ends the command, the text after it is the command's standard input with every
  further unescaped ``%`` as a newline; ``\\%`` is a literal ``%``.
- Daylight saving time as Debian cron handles it: the schedule is icc's own engine (:mod:`icc.cron`).

Every error names the file and the line (``deploy/crontab:7: ...``). The jobs are commands: a tick runs them from
their stored argv, without loading this plugin. An edited file takes effect at the next ``icc scan``, like any
plugin change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icc.cron import get_zone
from icc.errors import ConfigError, IccError, ScheduleError
from icc.hookspecs import hookimpl
from icc.schedule import Schedule

if TYPE_CHECKING:
    from icc.config import Config
    from icc.jobs import Scheduler

__all__ = ["CrontabLine", "configure", "parse_crontab", "schedule"]

TABLE = "crontab"
DEFAULT_SHELL = "/bin/sh"
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")
_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")

_config: Config | None = None


@dataclass(frozen=True)
class CrontabLine:
    """One command line of a crontab file, ready to become a job."""

    name: str  # crontab:<file>:<line>
    line: int
    expression: str  # five fields or a shortcut, as written
    command: str  # what the shell runs, % handled
    stdin: str | None  # the text after the first unescaped %, or None
    environment: tuple[tuple[str, str], ...]  # the NAME=value lines above it, in order (later ones win)
    shell: str
    zone: str | None  # CRON_TZ above it, or None (the configured zone)

    @property
    def argv(self) -> list[str]:
        """How the job runs: ``[shell, "-c", command]``, behind ``env NAME=value ...`` when the file set
        variables; with standard input, the shell pipes it to the command (the command's exit status counts)."""
        if self.stdin is None:
            run = [self.shell, "-c", self.command]
        else:
            script = 'printf "%s" "$1" | "$0" -c "$2"'
            run = [self.shell, "-c", script, self.shell, self.stdin, self.command]
        if not self.environment:
            return run
        return ["/usr/bin/env", *(f"{name}={value}" for name, value in self.environment), *run]


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _split_percent(text: str) -> tuple[str, str | None]:
    """The command and its standard input, as cron cuts them: ``\\%`` is ``%``; the first unescaped ``%`` ends
    the command; in the input each unescaped ``%`` is a newline."""
    command: list[str] = []
    stdin: list[str] | None = None
    out = command
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] == "%":
            out.append("%")
            index += 2
            continue
        if char == "%":
            if stdin is None:
                stdin = []
                out = stdin
            else:
                out.append("\n")
        else:
            out.append(char)
        index += 1
    return "".join(command), None if stdin is None else "".join(stdin)


def parse_crontab(text: str, label: str) -> list[CrontabLine]:
    """The command lines of a crontab file's *text*; *label* is the file as configured (``deploy/crontab``), in
    job names and errors. Raises :class:`ScheduleError` ``"<label>:<line>: what is wrong: how to fix it"``."""
    environment: dict[str, str] = {}
    shell = DEFAULT_SHELL
    zone: str | None = None
    found: list[CrontabLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"{label}:{number}"
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\0" in line:
            raise ScheduleError(f"{where}: the line contains a NUL byte: remove it")
        assignment = _ASSIGNMENT.fullmatch(line)
        if assignment is not None:
            name, value = assignment.group(1), _unquote(assignment.group(2))
            if name == "SHELL":
                if not value:
                    raise ScheduleError(f"{where}: SHELL is empty: give a shell's path, e.g. SHELL=/bin/bash")
                shell = value
            if name == "CRON_TZ":
                try:
                    get_zone(value)
                except ScheduleError as exc:
                    raise ScheduleError(f"{where}: CRON_TZ: {exc}") from None
                zone = value
            environment.pop(name, None)
            environment[name] = value
            continue
        if line.startswith("@"):
            macro, _, rest = line.partition(" ")
            rest = rest.strip()
            if macro.lower() == "@reboot":
                raise ScheduleError(
                    f"{where}: @reboot is not supported: icc runs commands on a schedule; start this one with "
                    "the service manager (a systemd unit) instead"
                )
            if macro.lower() not in _MACROS:
                raise ScheduleError(
                    f"{where}: {macro!r} is not a cron shortcut: use one of {', '.join(_MACROS)} or five fields"
                )
            expression = macro
        else:
            parts = line.split(None, 5)
            if len(parts) < 6:
                raise ScheduleError(
                    f"{where}: expected five time fields and a command, e.g. '*/5 * * * * backup.sh'; got {line!r}"
                )
            expression, rest = " ".join(parts[:5]), parts[5]
        if not rest:
            raise ScheduleError(f"{where}: the line has a schedule but no command")
        try:
            Schedule().cron(expression)
        except ScheduleError as exc:
            raise ScheduleError(f"{where}: {exc}") from None
        command, stdin = _split_percent(rest)
        if not command.strip():
            raise ScheduleError(f"{where}: the command before the first % is empty")
        found.append(
            CrontabLine(
                name=f"crontab:{label}:{number}",
                line=number,
                expression=expression,
                command=command,
                stdin=stdin,
                environment=tuple(environment.items()),
                shell=shell,
                zone=zone,
            )
        )
    return found


def configured_files(table: Mapping[str, Any]) -> list[str]:
    """``[icc.crontab] files``, checked: a list of relative paths as strings."""
    unknown = sorted(set(table) - {"files"})
    if unknown:
        raise ConfigError(f"[icc.crontab]: unknown key {unknown[0]!r}: the table takes only files = [...]")
    files = table.get("files", [])
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not all(isinstance(f, str) and f.strip() for f in files):
        raise ConfigError(
            f"[icc.crontab] files = {files!r} is not valid: give a list of paths relative to the project root, "
            'e.g. files = ["deploy/crontab"]'
        )
    return list(files)


@hookimpl
def configure(config: Config) -> None:
    global _config
    configured_files(config.tables.get(TABLE, {}))
    _config = config


@hookimpl
def schedule(scheduler: Scheduler) -> None:
    config = _config
    if config is None:
        return
    for label in configured_files(config.tables.get(TABLE, {})):
        path = Path(config.root) / label
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"[icc.crontab] files: {label} does not exist in the project root {config.root}: create it or "
                "remove it from the list"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"[icc.crontab] files: {label} cannot be read: {exc}") from None
        for entry in parse_crontab(text, label):
            try:
                # In the background, as cron starts every line of a minute at once; never overlapping itself.
                job = scheduler.add(entry.argv, name=entry.name, description=entry.command).cron(
                    entry.expression
                )
                job.in_background()
                if entry.zone is not None:
                    job.timezone(entry.zone)
            except IccError as exc:
                raise ScheduleError(f"{label}:{entry.line}: {exc}") from None
