"""A Django or Flask project's nothing-due minute (icc.tick.snapshot): the line `manage.py icc crontab` prints,
run by /bin/sh under `env -i` as cron would, answers from the snapshot without importing the framework, and runs
the full `manage.py icc run` (Django set up) when something is due or the snapshot cannot be used. Whether
Django was imported is read from the real process's `-X importtime` report (PYTHONPROFILEIMPORTTIME)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from frameworkkit import DjangoSite, FlaskApp, pg_database
from projectkit import at

pytest.importorskip("django")

DAILY = """
    import icc


    def report():
        print("report")


    @icc.hookimpl
    def schedule(scheduler):
        scheduler.add(report, name="report").daily().at(3)
"""

EVERY_MINUTE = """
    import icc
    from django.contrib.auth.models import User


    def add_user():
        User.objects.create(username=f"user{User.objects.count()}")


    @icc.hookimpl
    def schedule(scheduler):
        scheduler.add(add_user, name="add-user").every_minutes(1)
"""

SERVICE = {"consumers": {"mode": "service"}}  # no consume:* jobs: a minute can be idle


@pytest.fixture(params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> DjangoSite:
    """A migrated Django site; on PostgreSQL icc's store is the Django database (ICC store.database)."""
    if request.param == "sqlite":
        made = DjangoSite(tmp_path, icc={"state_dir": "state", **SERVICE})
    else:
        url = request.getfixturevalue("pg_url")
        made = DjangoSite(
            tmp_path, database=pg_database(url), icc={"store": {"database": "default"}, **SERVICE}
        )
    made.manage("migrate", "-v0")
    if request.param == "postgres":
        made.manage("icc", "db", "migrate")
    return made


def crontab_command(site: DjangoSite) -> str:
    line = site.manage("icc", "crontab").stdout.strip()
    assert line.startswith("* * * * * ")
    return line.removeprefix("* * * * * ")


def cron(command: str, *options: str, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    """``command`` (a crontab line's) as cron runs it: /bin/sh from /, no environment at all but the import
    report; ``options`` go to `icc run` (``--at``), ``quiet=False`` drops its --quiet."""
    marker = " run --quiet --framework-snapshot "
    assert marker in command, command
    given = " ".join(["run", *(["--quiet"] if quiet else []), *options])
    proc = subprocess.run(
        ["/bin/sh", "-c", command.replace(marker, f" {given} --framework-snapshot ")],
        cwd="/",
        env={"PYTHONPROFILEIMPORTTIME": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def imported(proc: subprocess.CompletedProcess[str]) -> set[str]:
    """The modules the process imported, from its `-X importtime` report on stderr."""
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    assert "icc.tick.snapshot" in names, proc.stderr[-2000:]  # the marker works
    return names


def framework_imported(proc: subprocess.CompletedProcess[str], top: str) -> bool:
    return any(name == top or name.startswith(top + ".") for name in imported(proc))


def messages(proc: subprocess.CompletedProcess[str]) -> str:
    """What the process said, without the import report."""
    err = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    return proc.stdout + err


def users(site: DjangoSite) -> int:
    return int(site.shell("from django.contrib.auth.models import User; print(User.objects.count())"))


def test_the_nothing_due_minute_answers_without_importing_django(site: DjangoSite) -> None:
    site.tasks(DAILY)
    site.manage("icc", "scan")
    site.manage("icc", "run", "--at", at(0))  # the first tick after a scan evaluates every job
    command = crontab_command(site)
    proc = cron(command, "--at", at(1), quiet=False)
    assert "icc run: nothing due at" in proc.stdout
    assert not framework_imported(proc, "django")
    quiet = cron(command, "--at", at(2))
    assert messages(quiet) == ""
    assert not framework_imported(quiet, "django")


def test_a_due_minute_runs_the_job_with_django_set_up(site: DjangoSite) -> None:
    site.tasks(EVERY_MINUTE)
    site.manage("icc", "scan")
    site.manage("icc", "run", "--at", at(0))
    assert users(site) == 1
    proc = cron(crontab_command(site), "--at", at(1))
    assert framework_imported(proc, "django")
    assert users(site) == 2  # the job wrote through the ORM: Django was set up
    status = json.loads(site.manage("icc", "status", "--json").stdout)
    job = next(j for j in status["jobs"] if j["name"] == "add-user")
    assert job["last_run"]["outcome"] == "succeeded", job


def test_a_changed_settings_file_falls_back_to_the_full_tick_once_and_says_so(site: DjangoSite) -> None:
    site.tasks(DAILY)
    site.manage("icc", "scan")
    site.manage("icc", "run", "--at", at(0))
    command = crontab_command(site)
    settings = site.root / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\nEXTRA = 1\n")
    proc = cron(command, "--at", at(1), quiet=False)
    assert f"{settings} changed since the framework snapshot" in proc.stdout
    assert "running the full tick" in proc.stdout
    assert framework_imported(proc, "django")
    assert "icc run: nothing due at" in proc.stdout  # the full tick's answer
    again = cron(command, "--at", at(2), quiet=False)  # the full tick wrote the snapshot again
    assert not framework_imported(again, "django"), messages(again)
    assert "icc run: nothing due at" in again.stdout


@pytest.mark.parametrize("damage", ["missing", "corrupt", "readable by others"])
def test_a_missing_or_corrupt_snapshot_falls_back_to_the_full_tick_and_says_so(
    site: DjangoSite, damage: str
) -> None:
    site.tasks(DAILY)
    site.manage("icc", "scan")
    site.manage("icc", "run", "--at", at(0))
    command = crontab_command(site)
    snapshot = Path(command.split(" --framework-snapshot ")[1].split(" -- ")[0])
    assert snapshot.is_file() and snapshot.stat().st_mode & 0o777 == 0o600
    if damage == "missing":
        snapshot.unlink()
    elif damage == "corrupt":
        snapshot.write_text('{"format": "icc framework snapshot 1", "state_dir": ')
    else:
        snapshot.chmod(0o644)
    proc = cron(command, "--at", at(1), quiet=damage == "missing")
    said = messages(proc)
    if damage == "missing":
        assert said == ""  # --quiet: a missing snapshot is expected (a new state directory)
        proc = cron(command, "--at", at(1), quiet=False)  # written again by the full tick: idle
        assert not framework_imported(proc, "django")
        snapshot.unlink()
        proc = cron(command, "--at", at(1), quiet=False)
        assert f"there is no framework snapshot {snapshot} yet; running the full tick" in proc.stdout
    elif damage == "corrupt":
        assert f"the framework snapshot {snapshot} is corrupt" in proc.stderr  # even with --quiet
    else:
        assert "only you can read (mode 644)" in proc.stderr
    assert framework_imported(proc, "django")
    assert snapshot.stat().st_mode & 0o777 == 0o600  # written again, private
    healed = cron(command, "--at", at(2))
    assert messages(healed) == "" and not framework_imported(healed, "django")


def test_a_snapshot_for_other_settings_or_icc_variables_is_not_used(tmp_path: Path) -> None:
    site = DjangoSite(tmp_path, icc={"state_dir": "state", **SERVICE})
    site.manage("migrate", "-v0")
    site.tasks(DAILY)
    site.manage("icc", "scan")
    site.manage("icc", "run", "--at", at(0))
    command = crontab_command(site)
    (tmp_path / "mysite" / "other.py").write_text("from mysite.settings import *\n")
    other = command.replace("DJANGO_SETTINGS_MODULE=mysite.settings", "DJANGO_SETTINGS_MODULE=mysite.other")
    proc = cron(other, "--at", at(1), quiet=False)
    assert "was written for other settings" in proc.stdout and framework_imported(proc, "django")
    cron(command, "--at", at(2))  # the full tick there wrote it for mysite.other: back to mysite.settings
    assert not framework_imported(cron(command, "--at", at(3)), "django")
    # which plugins load is not what the snapshot holds: still the idle check
    plugins_off = "ICC_DISABLE_PLUGIN_AUTOLOAD=1 ICC_PLUGINS=shop.icc_tasks " + command
    assert not framework_imported(cron(plugins_off, "--at", at(4)), "django")
    with_variable = "ICC_TIMEZONE=Asia/Tokyo " + command
    proc = cron(with_variable, "--at", at(5), quiet=False)
    assert "ICC_* variables differ" in proc.stdout and framework_imported(proc, "django")
    assert "Asia/Tokyo" in proc.stdout  # the full tick's answer, in that time zone


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ICC_", "DJANGO_", "FLASK_"))}


def test_a_bad_framework_snapshot_command_line_is_one_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "icc", "run", "--framework-snapshot", str(tmp_path / "s.json")],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("icc: usage: icc run [--quiet] [--at TIME] --framework-snapshot PATH -- ")
    assert proc.stderr.count("\n") == 1


FLASK_APP = """
    from flask import Flask

    from icc.contrib.flask import Icc

    app = Flask(__name__)
    app.config["ICC"] = {"state_dir": "state", "plugins": ["webapp_tasks"], "consumers": {"mode": "service"}}
    Icc(app)
"""

FLASK_TASKS = """
    from pathlib import Path

    import icc
    from flask import current_app


    def stamp():
        with open(Path(__file__).parent / "ran.txt", "a") as f:
            f.write(current_app.name + "\\n")


    @icc.hookimpl
    def schedule(scheduler):
        scheduler.add(stamp, name="stamp").every_minutes(2)
"""


def test_a_flask_apps_nothing_due_minute_does_not_import_flask_and_a_due_one_runs_in_the_app(
    tmp_path: Path,
) -> None:
    pytest.importorskip("flask")
    app = FlaskApp(tmp_path)
    app.write("webapp.py", FLASK_APP)
    app.write("webapp_tasks.py", FLASK_TASKS)
    app.flask("icc", "scan")
    app.flask("icc", "run", "--at", at(0))
    assert (tmp_path / "ran.txt").read_text() == "webapp\n"
    command = app.flask("icc", "crontab").stdout.strip().removeprefix("* * * * * ")
    assert command.endswith(" -m flask --app webapp icc")
    idle = cron(command, "--at", at(1), quiet=False)
    assert "icc run: nothing due at" in idle.stdout
    assert not framework_imported(idle, "flask")
    due = cron(command, "--at", at(2))
    assert framework_imported(due, "flask")
    assert (tmp_path / "ran.txt").read_text() == "webapp\nwebapp\n"


HANDLER = """
    import icc
    from django.contrib.auth.models import User


    def add_user(payload):
        User.objects.create(username=payload["name"])


    @icc.hookimpl
    def register_handlers(register):
        register("add-user", add_user, queue="async")
"""


def finished_consumer_runs(root: Path, minimum: int) -> list[tuple[str, str, str]]:
    """(job, outcome, output) of the consumer runs once ``minimum`` of them have finished (read from the state
    database: `manage.py icc status` would set Django up at every look)."""
    import sqlite3
    import time

    deadline = time.monotonic() + 60
    while True:
        with sqlite3.connect(root / "state" / "state.sqlite3") as db:
            rows = db.execute(
                "SELECT job, outcome, COALESCE(output, '') FROM runs WHERE job LIKE 'consume:%' "
                "AND outcome NOT IN ('pending', 'running') ORDER BY id"
            ).fetchall()
        if len(rows) >= minimum:
            return [(str(a), str(b), str(c)) for a, b, c in rows]
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)


def test_a_minute_with_only_the_consumers_due_is_the_light_minute_and_a_message_is_handled_with_django(
    tmp_path: Path,
) -> None:
    """consumers.mode = "cron" (the default): the consume:* jobs are due every minute. The light minute
    (icc.tick.light) starts them from the snapshot without Django; a consumer that finds a message becomes
    `manage.py icc consume async`, Django set up."""
    site = DjangoSite(tmp_path, icc={"state_dir": "state", "consumers": {"time_limit": 2}})
    site.manage("migrate", "-v0")
    site.tasks(HANDLER)
    site.manage("icc", "scan")
    site.manage("icc", "run", "--at", at(0))
    command = crontab_command(site)
    assert len(finished_consumer_runs(site.root, 2)) == 2
    light = cron(command, "--at", at(1))
    assert "icc.tick.light" in imported(light) and not framework_imported(light, "django")
    runs = finished_consumer_runs(site.root, 4)[2:]
    assert sorted(job for job, _, _ in runs) == ["consume:async", "consume:mail"]
    assert all(outcome == "succeeded" for _, outcome, _ in runs), runs
    site.shell("import icc; icc.dispatch('add-user', {'name': 'ann'})")
    handed = cron(command, "--at", at(2))
    assert not framework_imported(handed, "django")  # the tick; the consumer execs manage.py on its own
    runs = finished_consumer_runs(site.root, 6)[4:]
    async_run = next(run for run in runs if run[0] == "consume:async")
    assert async_run[1] == "succeeded" and "consumed 1 message (1 handled" in async_run[2], runs
    assert (
        site.shell("from django.contrib.auth.models import User; print(User.objects.get().username)").strip()
        == "ann"
    )


def test_a_flask_apps_consumer_minute_hands_a_message_over_to_flask_icc_consume(tmp_path: Path) -> None:
    pytest.importorskip("flask")
    app = FlaskApp(tmp_path)
    app.write(
        "webapp.py",
        FLASK_APP.replace('{"mode": "service"}', '{"time_limit": 2}'),
    )
    app.write(
        "webapp_tasks.py",
        """
        from pathlib import Path

        import icc
        from flask import current_app


        def greet(payload):
            with open(Path(__file__).parent / "greeted.txt", "a") as f:
                f.write(f"{payload['who']} in {current_app.name}\\n")


        @icc.hookimpl
        def register_handlers(register):
            register("greet", greet, queue="async")
        """,
    )
    app.flask("icc", "scan")
    app.flask("icc", "run", "--at", at(0))
    command = app.flask("icc", "crontab").stdout.strip().removeprefix("* * * * * ")
    finished_consumer_runs(tmp_path, 2)
    app.write(
        "send.py",
        "import icc\nfrom webapp import app\nwith app.app_context():\n    icc.dispatch('greet', {'who': 'ann'})\n",
    )
    subprocess.run([sys.executable, "send.py"], cwd=tmp_path, check=True, env=clean_env())
    light = cron(command, "--at", at(1))
    assert "icc.tick.light" in imported(light) and not framework_imported(light, "flask")
    runs = finished_consumer_runs(tmp_path, 4)[2:]
    async_run = next(run for run in runs if run[0] == "consume:async")
    assert async_run[1] == "succeeded" and "consumed 1 message (1 handled" in async_run[2], runs
    assert (tmp_path / "greeted.txt").read_text() == "ann in webapp\n"


def test_a_snapshot_that_cannot_be_written_is_a_warning_and_the_line_runs_the_full_tick(
    tmp_path: Path,
) -> None:
    site = DjangoSite(tmp_path, icc={"state_dir": "state", **SERVICE})
    site.manage("migrate", "-v0")
    site.tasks(DAILY)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "framework.snapshot.json").mkdir()  # in the way
    scan = site.manage("icc", "scan")
    assert "cannot write the framework snapshot" in scan.stderr and "report" in scan.stdout
    site.manage("icc", "run", "--at", at(0))
    proc = cron(crontab_command(site), "--at", at(1))
    assert "is not a file of yours that only you can read" in proc.stderr
    assert framework_imported(proc, "django")  # the full tick, which said nothing else (--quiet)
    assert "Traceback" not in proc.stderr
