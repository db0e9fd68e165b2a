"""``icc systemd``: unit files that run this install's queue consumers and its scheduler under systemd.

One ``icc-consume-<queue>.service`` per configured queue (``icc consume <queue> --time-limit=3600``, restarted
5 s after it exits), plus ``icc-scheduler.service`` running ``icc work`` for those who prefer it to the crontab
line. User services by default; ``--system`` for ``/etc/systemd/system``. Paths are absolute and quoted for
systemd, so the units keep working from any directory; regenerate them after moving the project or its
virtualenv.

Why the scheduler is a long-running ``icc work`` and not a ``Type=oneshot`` tick started by a timer: when a
oneshot tick exits, systemd stops the unit and kills what is left in its control group, the background runs and
cron-mode consumers the tick started among them; and a timer elapse while the tick still runs is dropped. The
scheduler unit has ``KillMode=process``: a stop or restart signals ``icc work`` only, and the detached
supervisors of background runs (which keep their own time limits, job locks and records) live on.
"""

from __future__ import annotations

import getpass
import math
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from icc.cli.argv import icc_argv
from icc.errors import ConfigError, IccError
from icc.logs import ensure

if TYPE_CHECKING:
    from icc.config import Config

__all__ = [
    "CONSUMER_TIME_LIMIT",
    "Unit",
    "exec_arg",
    "render_units",
    "render_web_unit",
    "stop_timeouts",
    "systemd",
    "unit_value",
]

CONSUMER_TIME_LIMIT = 3600  # a consumer restarts hourly: memory and code updates are picked up
# Seconds before systemd starts a unit again: a queue is unattended that long each hour (a consumer's planned
# exit), and a unit that fails at once retries every 5 s, which stays clear of systemd's default start limit
# (5 starts within 10 s: the unit would be left failed).
RESTART_SEC = 5
SCHEDULER_UNIT = "icc-scheduler.service"
WEB_UNIT = "icc-web.service"
WEB_PORT = 8765  # icc web's default port
# Seconds on top of the grace periods: the interpreter's start-up, a run's bookkeeping, the kill of its leftovers.
STOP_MARGIN = 10
_UNIT_NAME_PART = re.compile(r"[A-Za-z0-9_.:-]+")
# In an ExecStart word these need quoting (systemd splits on whitespace and unquotes "..." and '...').
_NEEDS_QUOTES = re.compile(r"""[\s"'\\;]""")
# systemd refuses these in the executable path, however they are escaped (string_is_safe()).
_UNSAFE_COMMAND = re.compile(r"""["'\\]""")


@dataclass(frozen=True)
class Unit:
    """One unit file: its name (``icc-scheduler.service``) and its text."""

    name: str
    text: str


def unit_value(text: str) -> str:
    """``text`` as a unit file value: ``%`` would start a specifier, so it is doubled."""
    if any(ord(c) < 32 for c in text):
        raise IccError(f"{text!r} holds a line break or control character and cannot go into a unit file")
    return text.replace("%", "%%")


def exec_arg(arg: str, *, command: bool = False) -> str:
    """One ``ExecStart=`` word, escaped for systemd: specifiers, quotes, backslashes and, in arguments but
    not in the ``command`` path itself (systemd substitutes variables only there), ``$``."""
    value = unit_value(arg)
    if not command:
        value = value.replace("$", "$$")
    if value and not _NEEDS_QUOTES.search(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exec_line(argv: Sequence[str]) -> str:
    return " ".join(exec_arg(a, command=i == 0) for i, a in enumerate(argv))


def stop_timeouts(grace: float) -> dict[str, int]:
    """Seconds systemd waits, given the ``grace`` setting, before it kills (SIGKILL) what did not stop.

    ``consumer``: a consumer stops on SIGTERM within ``grace`` by itself (it interrupts, then abandons, a handler
    still running); ``TimeoutStopSec`` backs that up for a handler stuck in C code holding the GIL, and
    ``consumer_runtime`` (``RuntimeMaxSec``) does the same for its hourly exit. ``scheduler``: ``icc work`` leaves
    a running foreground job ``grace`` seconds to finish, then stops it (SIGTERM, SIGKILL ``grace`` later).
    """
    grace_s = math.ceil(max(grace, 0.0))
    return {
        "consumer": grace_s + STOP_MARGIN,
        "consumer_runtime": CONSUMER_TIME_LIMIT + grace_s + STOP_MARGIN,
        "scheduler": 2 * grace_s + STOP_MARGIN,
    }


def render_units(
    argv: Sequence[str],
    *,
    root: Path,
    queues: Sequence[str],
    config_path: Path | None = None,
    system: bool = False,
    user: str | None = None,
    grace: float = 10.0,
) -> list[Unit]:
    """The unit files for an install whose ``icc`` is called as ``argv`` (absolute, with ``--config``).

    ``root`` becomes the working directory and holds the ``.env`` files; ``system`` makes system services run
    as ``user``; ``grace`` (the setting) sets the stop timeouts.
    """
    if not argv or not os.path.isabs(argv[0]):
        raise IccError(f"the icc command {list(argv)!r} must start with an absolute path for systemd")
    if _UNSAFE_COMMAND.search(argv[0]):
        raise IccError(
            f"systemd cannot run {argv[0]!r}: an executable path with quotes or backslashes is refused; "
            "install icc in a virtualenv whose path has none"
        )
    for queue in queues:
        if not _UNIT_NAME_PART.fullmatch(queue):
            raise ConfigError(
                f"queue {queue!r} cannot be part of a systemd unit name; name queues with letters, digits, "
                "'-', '_' or '.' in consumers.queues"
            )
    source = str(config_path) if config_path is not None else str(root)
    project = unit_value(str(root))
    service_lines = [f"WorkingDirectory={unit_value(str(root))}"]
    if system:
        service_lines.append(f"User={unit_value(user or getpass.getuser())}")
    # Output reaches the journal as it is written, not when a buffer fills.
    service_lines.append("Environment=PYTHONUNBUFFERED=1")
    # The project's .env files, for what reads the environment before icc does (the interpreter, imports);
    # "-": a missing file is fine. icc reads them itself as well, with the same precedence (.env.local wins).
    service_lines += [f"EnvironmentFile=-{_env_file(root / name)}" for name in (".env", ".env.local")]
    timeouts = stop_timeouts(grace)
    network = ["After=network-online.target", "Wants=network-online.target"] if system else []
    wanted_by = "multi-user.target" if system else "default.target"

    def header(name: str) -> list[str]:
        return [
            f"# {name}: generated by `icc systemd{' --system' if system else ''}` for {source}",
            "# Regenerate it after moving the project or its virtualenv.",
        ]

    units = []
    for queue in queues:
        name = f"icc-consume-{queue}.service"
        command = [*argv, "consume", queue, f"--time-limit={CONSUMER_TIME_LIMIT}"]
        lines = [
            *header(name),
            "[Unit]",
            f"Description=icc consumer of the {queue} queue ({project})",
            *network,
            "",
            "[Service]",
            "Type=simple",
            *service_lines,
            f"ExecStart={_exec_line(command)}",
            # A consumer exits after its time limit or memory limit; systemd starts a fresh one.
            "Restart=always",
            f"RestartSec={RESTART_SEC}",
            # Backups for a consumer that cannot stop itself (a handler stuck in C code holding the GIL).
            f"TimeoutStopSec={timeouts['consumer']}",
            f"RuntimeMaxSec={timeouts['consumer_runtime']}",
            "",
            "[Install]",
            f"WantedBy={wanted_by}",
        ]
        units.append(Unit(name, "\n".join(lines) + "\n"))

    units.append(
        Unit(
            SCHEDULER_UNIT,
            "\n".join(
                [
                    *header(SCHEDULER_UNIT),
                    "# `icc work`: a tick at every minute boundary. Use either this or the crontab line, not both.",
                    "[Unit]",
                    f"Description=icc scheduler ({project})",
                    *network,
                    "",
                    "[Service]",
                    "Type=simple",
                    *service_lines,
                    f"ExecStart={_exec_line([*argv, 'work'])}",
                    "Restart=always",
                    f"RestartSec={RESTART_SEC}",
                    # Stop and restart signal icc work only: background runs (detached supervisors, each with
                    # its own time limit) and the consumers a cron-mode tick started live on.
                    "KillMode=process",
                    # icc work leaves a running job its grace, then stops it (SIGTERM, SIGKILL after grace).
                    f"TimeoutStopSec={timeouts['scheduler']}",
                    "",
                    "[Install]",
                    f"WantedBy={wanted_by}",
                ]
            )
            + "\n",
        )
    )
    return units


def render_web_unit(
    argv: Sequence[str],
    *,
    root: Path,
    config_path: Path | None = None,
    system: bool = False,
    user: str | None = None,
    host: str = "127.0.0.1",
    port: int = WEB_PORT,
    read_only: bool = False,
) -> Unit:
    """``icc-web.service``: the dashboard (``icc web``), restarted when it fails. The token of a non-loopback
    ``host`` comes from the project's ``.env`` files (``ICC_WEB_TOKEN``) or its configuration."""
    if not argv or not os.path.isabs(argv[0]) or _UNSAFE_COMMAND.search(argv[0]):
        raise IccError(f"the icc command {list(argv)!r} must start with an absolute path systemd accepts")
    source = str(config_path) if config_path is not None else str(root)
    lines = [
        f"# {WEB_UNIT}: generated by `icc systemd --web{' --system' if system else ''}` for {source}",
        "# Regenerate it after moving the project or its virtualenv. A --host other than a loopback address needs",
        "# [icc.web] token or ICC_WEB_TOKEN (in .env or .env.local beside the configuration): see docs/web.md.",
        "[Unit]",
        f"Description=icc dashboard ({unit_value(str(root))})",
        *(["After=network-online.target", "Wants=network-online.target"] if system else []),
        "",
        "[Service]",
        "Type=simple",
        f"WorkingDirectory={unit_value(str(root))}",
        *([f"User={unit_value(user or getpass.getuser())}"] if system else []),
        "Environment=PYTHONUNBUFFERED=1",
        *(f"EnvironmentFile=-{_env_file(root / name)}" for name in (".env", ".env.local")),
        "ExecStart="
        + _exec_line(
            [*argv, "web", "--host", host, "--port", str(port), *(["--read-only"] if read_only else [])]
        ),
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        # A stop or restart signals the dashboard only: a run its "Run now" started (icc exec) finishes.
        "KillMode=process",
        "TimeoutStopSec=15",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if system else 'default.target'}",
    ]
    return Unit(WEB_UNIT, "\n".join(lines) + "\n")


def _env_file(path: Path) -> str:
    """An ``EnvironmentFile=`` path: one value, taken whole (no quoting), so only specifiers are escaped."""
    return unit_value(str(path))


def write_units(units: Sequence[Unit], directory: Path) -> list[Path]:
    """Write ``units`` into ``directory`` (created if missing), each file 0644, replaced atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for unit in units:
        path = directory / unit.name
        tmp = directory / f".{unit.name}.tmp"
        tmp.write_text(unit.text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        written.append(path)
    return written


def next_steps(units: Sequence[Unit], *, system: bool, user: str) -> list[str]:
    """The commands that load and start what :func:`write_units` wrote."""
    systemctl = "systemctl" if system else "systemctl --user"
    if system and os.geteuid() != 0:
        systemctl = "sudo " + systemctl
    consumers = " ".join(u.name for u in units if u.name.startswith("icc-consume-"))
    start = f" && {systemctl} enable --now {consumers}" if consumers else ""
    lines = [f"{systemctl} daemon-reload{start}"]
    lines.append(
        f"# optional, instead of the crontab line (remove that first): {systemctl} enable --now {SCHEDULER_UNIT}"
    )
    if not system:
        lines.append(
            f"# keep user services running while you are logged out: loginctl enable-linger {shlex.quote(user)}"
        )
    return lines


@click.command(name="systemd")
@click.option(
    "--write",
    "directory",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the unit files into DIR (e.g. ~/.config/systemd/user) instead of printing them.",
)
@click.option(
    "--system",
    is_flag=True,
    help="System services (for /etc/systemd/system) that run as you; default: user services.",
)
@click.option(
    "--web",
    is_flag=True,
    help="The dashboard's unit (icc-web.service, `icc web`) instead of the consumers' and the scheduler's.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="With --web: icc web --host.")
@click.option(
    "--port", default=WEB_PORT, show_default=True, type=click.IntRange(1, 65535), help="With --web."
)
@click.option("--read-only", is_flag=True, help="With --web: icc web --read-only.")
@click.pass_obj
def systemd(
    env: Any, directory: Path | None, system: bool, web: bool, host: str, port: int, read_only: bool
) -> None:  # env: icc.cli.Env, as in cli.queue
    """Unit files that run the queue consumers (and optionally the scheduler, `icc work`) under systemd.

    Prints them, or writes them with --write DIR and prints the systemctl commands to run next.
    Use with consumers.mode = "service" (then `icc scan` removes the consumer cron jobs).
    """

    config: Config = env.config
    user = getpass.getuser()
    if web:
        unit = render_web_unit(
            icc_argv(config),
            root=config.root,
            config_path=config.path.resolve() if config.path is not None else None,
            system=system,
            user=user,
            host=host,
            port=port,
            read_only=read_only,
        )
        if directory is None:
            click.echo(unit.text, nl=False)
            return
        for path in write_units([unit], directory.expanduser().absolute()):
            click.echo(f"wrote {path}")
        systemctl = "systemctl" if system else "systemctl --user"
        click.echo(f"next:\n  {systemctl} daemon-reload && {systemctl} enable --now {WEB_UNIT}")
        return
    units = render_units(
        icc_argv(config),
        root=config.root,
        queues=config.consumers.queues,
        config_path=config.path.resolve() if config.path is not None else None,
        system=system,
        user=user,
        grace=config.grace,
    )
    if config.consumers.mode != "service":
        where = f" in {source}" if (source := config.source("consumers.mode")) else ""

        ensure().warning(
            "%s",
            f'note: consumers.mode is "{config.consumers.mode}"{where}, so `icc run` starts consumers too; '
            'set mode = "service" and run `icc scan` before enabling the consumer services',
            extra={"bare": True},
        )
    if directory is None:
        click.echo("\n".join(unit.text for unit in units), nl=False)
        return
    for path in write_units(units, directory.expanduser().absolute()):
        click.echo(f"wrote {path}")
    click.echo("next:")
    for line in next_steps(units, system=system, user=user):
        click.echo(f"  {line}")
