"""Benchmark: a Django or Flask project's nothing-due minute against a plain icc project's idle tick.

Three projects in a temporary directory, each with the same plugin (200 yearly jobs, none due; consumers in
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

Run: `nox -s bench -- bench/bench_framework.py` (needs Django and Flask: the `test` group has them).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

ROUNDS = 25
GOAL = 1.5

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
    ICC = {"state_dir": "state", "consumers": {"mode": "service"}}
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
    app.config["ICC"] = {"state_dir": "state", "plugins": ["bench_plugin"], "consumers": {"mode": "service"}}
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


def plain(tmp: Path, env: dict[str, str]) -> str:
    root = tmp / "plain"
    write(
        root / "icc.toml",
        '[icc]\nstate_dir = "state"\nplugins = ["bench_plugin"]\n[icc.consumers]\nmode = "service"\n',
    )
    write(root / "bench_plugin.py", PLUGIN)
    icc = [sys.executable, "-m", "icc"]
    run([*icc, "scan"], root, env)
    run([*icc, "run", "--quiet"], root, env)
    return crontab_command(run([*icc, "crontab"], root, env))


def django(tmp: Path, env: dict[str, str]) -> tuple[str, list[str], Path]:
    root = tmp / "django"
    write(root / "manage.py", MANAGE)
    write(root / "mysite" / "__init__.py", "")
    write(root / "mysite" / "settings.py", SETTINGS)
    write(root / "shop" / "__init__.py", "")
    write(root / "shop" / "icc_tasks.py", PLUGIN)
    manage = [sys.executable, str(root / "manage.py")]
    run([*manage, "migrate", "-v0"], root, env)
    run([*manage, "icc", "scan"], root, env)
    run([*manage, "icc", "run", "--quiet"], root, env)
    line = crontab_command(run([*manage, "icc", "crontab"], root, env))
    return line, [*manage, "icc", "run", "--quiet"], root


def flask(tmp: Path, env: dict[str, str]) -> tuple[str, list[str], Path]:
    root = tmp / "flask"
    write(root / "webapp.py", FLASK_APP)
    write(root / "bench_plugin.py", PLUGIN)
    command = [sys.executable, "-m", "flask", "--app", "webapp", "icc"]
    run([*command, "scan"], root, env)
    run([*command, "run", "--quiet"], root, env)
    line = crontab_command(run([*command, "crontab"], root, env))
    return line, [*command, "run", "--quiet"], root


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


def main() -> None:
    env = environment()
    with tempfile.TemporaryDirectory(prefix="icc-bench-framework-") as tmp_name:
        tmp = Path(tmp_name)
        plain_line = plain(tmp, env)
        django_line, django_full, django_root = django(tmp, env)
        flask_line, flask_full, flask_root = flask(tmp, env)
        cron_env = {"PATH": "/usr/bin:/bin", "HOME": "/"}  # the line carries what it needs
        commands: dict[str, Callable[[], tuple[float, float]]] = {
            "plain": lambda: measured(["/bin/sh", "-c", plain_line], "/", cron_env),
            "django": lambda: measured(["/bin/sh", "-c", django_line], "/", cron_env),
            "flask": lambda: measured(["/bin/sh", "-c", flask_line], "/", cron_env),
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

    def wall(name: str) -> float:
        return statistics.median(row[name][0] for row in rows)

    def cpu(name: str) -> float:
        return statistics.median(row[name][1] for row in rows)

    def paired(name: str) -> float:
        return statistics.median(row[name][0] / row["plain"][0] for row in rows)

    print(
        "A framework project's nothing-due minute: 200 jobs, none due, consumers.mode = service; each project's "
        f"crontab line\nrun by /bin/sh (medians of {ROUNDS} interleaved rounds; ratios paired per round)"
    )
    print(f"   {'':46}{'wall':>10}{'CPU':>10}{'x plain':>10}")
    labels = {
        "plain": "plain icc (icc.toml): icc run --quiet",
        "django": "Django: the crontab line (idle check)",
        "flask": "Flask: the crontab line (idle check)",
        "django full": "Django: manage.py icc run --quiet",
        "flask full": "Flask: flask --app webapp icc run --quiet",
    }
    for name in names:
        print(f"   {labels[name]:46}{wall(name) * 1e3:8.1f}ms{cpu(name) * 1e3:8.1f}ms{paired(name):9.2f}x")
    for name, title in (("django", "Django"), ("flask", "Flask")):
        ratio = paired(name)
        print(
            f"   goal: the {title} nothing-due minute at most {GOAL}x the plain idle tick: {verdict(ratio <= GOAL)}"
        )


if __name__ == "__main__":
    main()
