"""Benchmark: a Django or Flask project's nothing-due minute against a plain icc project's idle tick.

1. Three projects in a temporary directory, each with the same plugin (200 yearly jobs, none due; consumers in
service mode, so that nothing at all is due), each scanned and ticked once (the first tick evaluates every job):

- plain: ``icc.toml``; the minute is the line ``icc crontab`` prints (``.../icc --config .../icc.toml run --quiet``);
- django: a ``django-admin startproject``-shaped site (settings, ``manage.py``, an app whose ``icc_tasks.py`` is
  the plugin, ``django.contrib.auth``/``contenttypes``/``sessions`` installed, SQLite); the minute is the line
  ``manage.py icc crontab`` prints: the idle check of :mod:`icc.tick.snapshot`, which reads the snapshot and
  the store without importing Django;
- flask: ``webapp.py`` with ``Icc(app)``; the line ``flask --app webapp icc crontab`` prints.

Each line runs as cron runs it (``/bin/sh -c LINE`` from ``/``). For reference, the full framework command the
line falls back to (``manage.py icc run --quiet``, ``flask --app webapp icc run --quiet``: the framework set up,
what every minute cost before) is measured in the same rounds. The commands run in rounds, in a rotating order
within each round; each ratio is the median of the per-round ratios (paired: same round, same machine state).

Goals: the Django nothing-due minute at most 1.5x the plain idle tick; the Flask one likewise.

2. The default minute. With ``consumers.mode = "cron"`` (icc's default) the ``consume:mail`` and
   ``consume:async`` jobs are due every minute; when nothing else is, a plain project's ``icc run --quiet`` runs
   the light minute (:mod:`icc.tick.light`: two detached supervisors, each forking a consumer that waits on its
   empty queue up to ``consumers.time_limit``), and so does a framework project's line, from its snapshot. The
   same three projects in cron mode (``time_limit = 1``, to keep rounds short), each line run at consecutive
   minutes (``--at``). CPU is the whole minute's, line + supervisors + consumers: this process makes itself the
   child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``) and reaps them. Goal: each framework's minute at most
   1.5x the plain one's CPU.

Run: `nox -s bench -- bench/bench_framework.py` (needs Django and Flask: the `test` group has them).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROUNDS = 25
CRON_ROUNDS = 10
CRON_TIME_LIMIT = (
    1.0  # consumers.time_limit in section 2 (icc's default: 20): the consumers' wait is the same
)
GOAL = 1.5
PR_SET_CHILD_SUBREAPER = 36

PLUGIN = """
    import icc


    def task():
        pass


    @icc.hookimpl
    def schedule(scheduler):
        for i in range(200):
            scheduler.add(task, name=f"job-{i}").yearly().at(i % 24, i % 60)
"""

SETTINGS = """
    from pathlib import Path

    BASE_DIR = Path(__file__).resolve().parent.parent
    SECRET_KEY = "bench-only"
    DEBUG = False
    ALLOWED_HOSTS = []
    INSTALLED_APPS = [
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "shop",
        "icc.contrib.django",
    ]
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
    USE_TZ = True
    TIME_ZONE = "UTC"
    ICC = {"state_dir": "state", "consumers": CONSUMERS}
"""

MANAGE = """
    #!/usr/bin/env python
    import os
    import sys

    if __name__ == "__main__":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
        from django.core.management import execute_from_command_line

        execute_from_command_line(sys.argv)
"""

FLASK_APP = """
    from flask import Flask

    from icc.contrib.flask import Icc

    app = Flask(__name__)
    app.config["ICC"] = {"state_dir": "state", "plugins": ["bench_plugin"], "consumers": CONSUMERS}
    Icc(app)
"""


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICC_", "DJANGO_", "FLASK_"))}
    # An installed icc and Django have their bytecode; the set-up's first commands write it here.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["ICC_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the same plugins everywhere: only the project's own
    return env


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    return subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def crontab_command(line: str) -> str:
    assert line.startswith("* * * * * "), line
    return line.strip().removeprefix("* * * * * ")


SERVICE = {"mode": "service"}
CRON = {"mode": "cron", "time_limit": CRON_TIME_LIMIT}


def first_tick(at: str | None) -> list[str]:
    return ["run", "--quiet", *(["--at", at] if at else [])]


def plain(tmp: Path, env: dict[str, str], consumers: dict[str, object], at: str | None = None) -> str:
    root = tmp / f"plain-{consumers['mode']}"
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in consumers.items())
    write(
        root / "icc.toml", f'[icc]\nstate_dir = "state"\nplugins = ["bench_plugin"]\n[icc.consumers]\n{table}'
    )
    write(root / "bench_plugin.py", PLUGIN)
    icc = [sys.executable, "-m", "icc"]
    run([*icc, "scan"], root, env)
    run([*icc, *first_tick(at)], root, env)
    return crontab_command(run([*icc, "crontab"], root, env))


def django(
    tmp: Path, env: dict[str, str], consumers: dict[str, object], at: str | None = None
) -> tuple[str, list[str], Path]:
    root = tmp / f"django-{consumers['mode']}"
    write(root / "manage.py", MANAGE)
    write(root / "mysite" / "__init__.py", "")
    write(root / "mysite" / "settings.py", SETTINGS.replace("CONSUMERS", repr(consumers)))
    write(root / "shop" / "__init__.py", "")
    write(root / "shop" / "icc_tasks.py", PLUGIN)
    manage = [sys.executable, str(root / "manage.py")]
    run([*manage, "migrate", "-v0"], root, env)
    run([*manage, "icc", "scan"], root, env)
    run([*manage, "icc", *first_tick(at)], root, env)
    line = crontab_command(run([*manage, "icc", "crontab"], root, env))
    return line, [*manage, "icc", "run", "--quiet"], root


def flask(
    tmp: Path, env: dict[str, str], consumers: dict[str, object], at: str | None = None
) -> tuple[str, list[str], Path]:
    root = tmp / f"flask-{consumers['mode']}"
    write(root / "webapp.py", FLASK_APP.replace("CONSUMERS", repr(consumers)))
    write(root / "bench_plugin.py", PLUGIN)
    command = [sys.executable, "-m", "flask", "--app", "webapp", "icc"]
    run([*command, "scan"], root, env)
    run([*command, *first_tick(at)], root, env)
    line = crontab_command(run([*command, "crontab"], root, env))
    return line, [*command, "run", "--quiet"], root


def at_minute(line: str, moment: str) -> str:
    """``line`` ticking as if it were ``moment`` (``--at``)."""
    marker = " run --quiet"
    assert marker in line, line
    return line.replace(marker, f"{marker} --at {moment}", 1)


def become_subreaper() -> bool:
    """Make the detached supervisors of a light minute children of this process, so that their CPU (and their
    consumers') is counted when they are reaped (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def reap_all(timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("descendants still running after the deadline")
            time.sleep(0.02)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(argv: list[str], cwd: Path | str, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one command; it must print nothing (a quiet, idle minute)."""
    cpu = children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or proc.stdout or proc.stderr:
        raise SystemExit(f"{argv} was not a quiet idle minute: {proc.returncode} {proc.stdout} {proc.stderr}")
    return wall, children_cpu() - cpu


def idle(tmp: Path, env: dict[str, str]) -> None:
    """Section 1: the nothing-due minute."""
    plain_line = plain(tmp, env, SERVICE)
    django_line, django_full, django_root = django(tmp, env, SERVICE)
    flask_line, flask_full, flask_root = flask(tmp, env, SERVICE)
    commands: dict[str, Callable[[], tuple[float, float]]] = {
        "plain": lambda: measured(["/bin/sh", "-c", plain_line], "/", CRON_ENV),
        "django": lambda: measured(["/bin/sh", "-c", django_line], "/", CRON_ENV),
        "flask": lambda: measured(["/bin/sh", "-c", flask_line], "/", CRON_ENV),
        "django full": lambda: measured(django_full, django_root, env),
        "flask full": lambda: measured(flask_full, flask_root, env),
    }
    names = list(commands)
    for _ in range(2):  # warm the page cache and the bytecode
        for name in names:
            commands[name]()
    rows: list[dict[str, tuple[float, float]]] = []
    for rnd in range(ROUNDS):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        rows.append({name: commands[name]() for name in order})
    print(
        "1. the nothing-due minute: 200 jobs, none due, consumers.mode = service; each project's crontab line "
        f"run by /bin/sh\n   (medians of {ROUNDS} interleaved rounds; ratios paired per round)"
    )
    report(
        rows,
        {
            "plain": "plain icc (icc.toml): icc run --quiet",
            "django": "Django: the crontab line (idle check)",
            "flask": "Flask: the crontab line (idle check)",
            "django full": "Django: manage.py icc run --quiet",
            "flask full": "Flask: flask --app webapp icc run --quiet",
        },
    )
    for name, title in (("django", "Django"), ("flask", "Flask")):
        ratio = paired(rows, name)
        print(
            f"   goal: the {title} nothing-due minute at most {GOAL}x the plain idle tick: {verdict(ratio <= GOAL)}"
        )


def consumer_minute(tmp: Path, env: dict[str, str]) -> None:
    """Section 2: the default minute, where only the consumer jobs are due (the light minute)."""
    print()
    print(
        "2. the default minute: consumers.mode = cron, only consume:mail and consume:async due, empty queues, "
        f"time_limit = {CRON_TIME_LIMIT:g} s;\n   wall: the crontab line until it returns (the consumers run "
        "detached); CPU: the line, its supervisors and consumers,\n   reaped as this process's "
        f"(child subreaper) (medians of {CRON_ROUNDS} interleaved rounds, ratios paired per round)"
    )
    if not become_subreaper():
        print("   not measured: needs Linux's PR_SET_CHILD_SUBREAPER")
        print(
            f"   goal: the Django and Flask consumer minutes at most {GOAL}x the plain one: NOT met (not measured)"
        )
        return
    base = (datetime.now(UTC) + timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
    lines = {
        "plain": plain(tmp, env, CRON, base.isoformat()),
        "django": django(tmp, env, CRON, base.isoformat())[0],
        "flask": flask(tmp, env, CRON, base.isoformat())[0],
    }
    reap_all()  # the first ticks' consumers
    names = list(lines)
    rows: list[dict[str, tuple[float, float]]] = []
    for rnd in range(CRON_ROUNDS + 1):  # round 0 warms up
        moment = (base + timedelta(minutes=rnd + 1)).isoformat()
        row = {}
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            cpu = children_cpu()
            wall, _ = measured(["/bin/sh", "-c", at_minute(lines[name], moment)], "/", CRON_ENV)
            reap_all()
            row[name] = (wall, children_cpu() - cpu)
        if rnd:
            rows.append(row)
    report(
        rows,
        {
            "plain": "plain icc (icc.toml): the light minute",
            "django": "Django: the crontab line (light minute)",
            "flask": "Flask: the crontab line (light minute)",
        },
    )
    for name, title in (("django", "Django"), ("flask", "Flask")):
        ratio = statistics.median(row[name][1] / row["plain"][1] for row in rows)
        print(
            f"   goal: the {title} consumer minute's CPU at most {GOAL}x the plain one's ({ratio:.2f}x): "
            f"{verdict(ratio <= GOAL)}"
        )


def paired(rows: list[dict[str, tuple[float, float]]], name: str) -> float:
    return statistics.median(row[name][0] / row["plain"][0] for row in rows)


def report(rows: list[dict[str, tuple[float, float]]], labels: dict[str, str]) -> None:
    print(f"   {'':46}{'wall':>10}{'CPU':>10}{'x plain':>10}")
    for name, label in labels.items():
        wall = statistics.median(row[name][0] for row in rows)
        cpu = statistics.median(row[name][1] for row in rows)
        print(f"   {label:46}{wall * 1e3:8.1f}ms{cpu * 1e3:8.1f}ms{paired(rows, name):9.2f}x")


CRON_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/"}  # cron's: the line carries what it needs


def main() -> None:
    env = environment()
    with tempfile.TemporaryDirectory(prefix="icc-bench-framework-") as tmp_name:
        idle(Path(tmp_name), env)
        consumer_minute(Path(tmp_name), env)


if __name__ == "__main__":
    main()
