"""icc.contrib.django in real Django projects: `manage.py icc ...` processes, real ticks and consumers, on
SQLite and on PostgreSQL (the Django database and icc's store in its own schema of it)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from frameworkkit import DjangoSite, pg_database
from pgkit import PgServer
from projectkit import at

pytest.importorskip("django")

ORM_TASKS = """
    import icc
    from django.contrib.auth.models import User


    def add_user():
        n = User.objects.count()
        User.objects.create(username=f"user{n}")
        print("users now", n + 1)


    @icc.hookimpl
    def schedule(scheduler):
        scheduler.add(add_user, name="add-user").every_minutes(1)
"""


@pytest.fixture(params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> DjangoSite:
    """A migrated Django site; on PostgreSQL icc's store is the Django database (ICC store.database)."""
    if request.param == "sqlite":
        made = DjangoSite(tmp_path)
    else:
        url = request.getfixturevalue("pg_url")
        made = DjangoSite(tmp_path, database=pg_database(url), icc={"store": {"database": "default"}})
    made.manage("migrate", "-v0")
    if request.param == "postgres":
        made.manage("icc", "db", "migrate")
    return made


def users(site: DjangoSite) -> int:
    return int(site.shell("from django.contrib.auth.models import User; print(User.objects.count())"))


def test_manage_py_icc_run_runs_an_icc_tasks_job_that_writes_through_the_orm(site: DjangoSite) -> None:
    site.tasks(ORM_TASKS)
    site.manage("icc", "scan")
    site.manage("icc", "run", "--at", at(0))
    site.manage("icc", "run", "--at", at(1))
    assert users(site) == 2
    status = json.loads(site.manage("icc", "status", "--json").stdout)
    job = next(j for j in status["jobs"] if j["name"] == "add-user")
    assert job["plugin"] == "shop.icc_tasks"


def test_store_database_default_puts_icc_in_its_own_schema_of_the_django_database(
    tmp_path: Path, pg_url: str, pg_server: PgServer
) -> None:
    site = DjangoSite(tmp_path, database=pg_database(pg_url), icc={"store": {"database": "default"}})
    site.manage("migrate", "-v0")
    site.manage("icc", "db", "migrate")
    site.tasks(ORM_TASKS)
    site.manage("icc", "scan")
    dbname = urlsplit(pg_url).path.lstrip("/")
    tables = pg_server.admin("SELECT tablename FROM pg_tables WHERE schemaname = 'icc' ORDER BY 1", dbname)
    assert "jobs" in tables.split()
    assert not (tmp_path / "state").exists() and not (tmp_path / ".icc" / "state.sqlite3").exists()


def test_store_database_that_is_not_postgresql_is_one_clear_error(tmp_path: Path) -> None:
    site = DjangoSite(tmp_path, icc={"store": {"database": "default"}})
    proc = site.manage("icc", "status", check=False)
    assert proc.returncode != 0
    assert "store database 'default' uses django.db.backends.sqlite3" in proc.stderr
    assert "Traceback" not in proc.stderr


def on_store(store: str, request: pytest.FixtureRequest, tmp_path: Path, **options: object) -> DjangoSite:
    """A migrated Django site with icc's store in SQLite (state/) or in the Django PostgreSQL database."""
    if store == "postgres":
        url = request.getfixturevalue("pg_url")
        options = {**options, "database": pg_database(url), "icc": {"store": {"database": "default"}}}
    site = DjangoSite(tmp_path, **options)  # type: ignore[arg-type]
    site.manage("migrate", "-v0")
    if store == "postgres":
        site.manage("icc", "db", "migrate")
    return site


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_an_icc_tasks_module_that_fails_to_import_is_reported_and_the_other_apps_jobs_still_run(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    site = on_store(store, request, tmp_path, apps=["shop", "broken"])
    site.tasks(ORM_TASKS)
    site.tasks("import no_such_module_here\n", app="broken")
    scan = site.manage("icc", "scan", check=False)
    assert "broken.icc_tasks" in scan.stderr and "no_such_module_here" in scan.stderr
    run = site.manage("icc", "run", "--at", at(0), check=False)
    assert "broken.icc_tasks" in run.stderr
    assert users(site) == 1
    status = site.manage("icc", "status", check=False)
    assert "broken.icc_tasks" in status.stdout + status.stderr


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_timezone_falls_back_to_time_zone_and_a_job_follows_it_across_dst(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """Europe/Berlin springs forward on 2027-03-28 (02:00 -> 03:00): a job at 03:00 runs at 01:00 UTC that day,
    at 02:00 UTC the day before."""
    site = on_store(store, request, tmp_path, time_zone="Europe/Berlin", icc={"state_dir": "state"})
    site.tasks("""
        import icc
        from pathlib import Path


        def stamp(ctx):
            with open(Path(__file__).parent.parent / "ran.txt", "a") as f:
                f.write(ctx.slot.isoformat() + "\\n")


        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(stamp, name="stamp").daily().at(3)
    """)
    site.manage("icc", "scan")
    assert "Europe/Berlin" in site.manage("icc", "status").stdout
    for moment in ("2027-03-27T02:00:00+00:00", "2027-03-28T01:00:00+00:00", "2027-03-28T02:00:00+00:00"):
        site.manage("icc", "run", "--at", moment)
    ran = (tmp_path / "ran.txt").read_text().split()
    assert ran == ["2027-03-27T03:00:00+01:00", "2027-03-28T03:00:00+02:00"]


def test_use_tz_false_schedules_in_time_zone(tmp_path: Path) -> None:
    site = DjangoSite(tmp_path, time_zone="America/New_York", use_tz=False)
    site.manage("migrate", "-v0")
    site.tasks(ORM_TASKS)
    site.manage("icc", "scan")
    assert "America/New_York" in site.manage("icc", "status").stdout
    site.manage("icc", "run", "--at", at(0))
    assert users(site) == 1


def test_scheduled_management_command_runs_with_django_set_up_and_its_output_kept(site: DjangoSite) -> None:
    site.write(
        "shop/management/commands/greet.py",
        """
        from django.contrib.auth.models import User
        from django.core.management.base import BaseCommand


        class Command(BaseCommand):
            def add_arguments(self, parser):
                parser.add_argument("who")
                parser.add_argument("--times", type=int, default=1)

            def handle(self, who, times, **options):
                for _ in range(times):
                    self.stdout.write(f"hello {who} ({User.objects.count()} users)")
        """,
    )
    (site.root / "shop" / "management" / "__init__.py").write_text("")
    (site.root / "shop" / "management" / "commands" / "__init__.py").write_text("")
    site.tasks("""
        import icc


        @icc.hookimpl
        def schedule(scheduler):
            scheduler.command("greet", "world", times=2).daily().at(4)
    """)
    site.manage("icc", "scan")
    assert "manage.py greet world --times=2" in site.manage("icc", "status").stdout
    site.manage("icc", "exec", "manage.py greet world --times=2")
    logs = site.manage("icc", "logs", "manage.py greet world --times=2").stdout
    assert logs.count("hello world (0 users)") == 2


def test_scheduling_an_unknown_management_command_is_reported_by_scan(tmp_path: Path) -> None:
    site = DjangoSite(tmp_path)
    site.tasks("""
        import icc


        @icc.hookimpl
        def schedule(scheduler):
            scheduler.command("no-such-command").daily()
    """)
    proc = site.manage("icc", "scan", check=False)
    assert proc.returncode != 0
    assert "no such management command" in proc.stderr


def test_crontab_line_works_from_crons_bare_environment(tmp_path: Path) -> None:
    site = DjangoSite(tmp_path)
    site.manage("migrate", "-v0")
    site.tasks(ORM_TASKS)
    site.manage("icc", "scan")
    line = site.manage("icc", "crontab").stdout.strip()
    assert line.startswith("* * * * * ")
    command = line.removeprefix("* * * * * ")
    assert "DJANGO_SETTINGS_MODULE=mysite.settings" in command
    # cron: /bin/sh, a minimal environment (here none at all: env -i), the home directory as working directory
    proc = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd="/",
        env={},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert users(site) == 1
    assert shlex.split(command)[0].startswith("/")


def test_dispatch_on_commit_sends_after_commit_and_nothing_on_rollback(site: DjangoSite) -> None:
    site.tasks("""
        import icc
        from pathlib import Path


        def note(payload):
            with open(Path(__file__).parent.parent / "handled.txt", "a") as f:
                f.write(payload["what"] + "\\n")


        @icc.hookimpl
        def register_handlers(register):
            register("note", note, queue="async")
    """)
    site.manage("icc", "scan")
    out = site.shell("""
        from django.db import transaction
        from icc.contrib.django import dispatch_on_commit
        from icc.queue.dispatch import open_transport
        from icc.config import load_config

        def waiting():
            return open_transport(load_config()).stats().get("async").ready if False else None

        with transaction.atomic():
            dispatch_on_commit("note", {"what": "committed"})
        try:
            with transaction.atomic():
                dispatch_on_commit("note", {"what": "rolled back"})
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        dispatch_on_commit("note", {"what": "autocommit"})
        print("ok")
    """)
    assert out.strip() == "ok"
    site.manage("icc", "consume", "async", "--stop-when-empty")
    assert (site.root / "handled.txt").read_text().split("\n")[:-1] == ["committed", "autocommit"]


def test_dispatch_on_commit_refuses_a_bad_message_at_once(tmp_path: Path) -> None:
    site = DjangoSite(tmp_path)
    proc = site.manage(
        "shell",
        "--no-imports",
        "-c",
        "from icc.contrib.django import dispatch_on_commit\n"
        "try:\n    dispatch_on_commit('note', {'x': object()})\nexcept Exception as e:\n    print(type(e).__name__)\n"
        "try:\n    dispatch_on_commit('note', {}, queue='nope')\nexcept Exception as e:\n    print(type(e).__name__)\n",
    )
    assert proc.stdout.split() == ["QueueError", "QueueError"]


def test_store_database_url_carries_the_databases_settings_quoted(tmp_path: Path) -> None:
    other = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "shop db",
        "USER": "shop",
        "PASSWORD": "p@ss:w/rd?#",
        "HOST": "db.internal",
        "PORT": "6432",
        "OPTIONS": {"sslmode": "require"},
    }
    site = DjangoSite(tmp_path, extra=f"DATABASES['other'] = {other!r}")
    out = site.shell("""
        from psycopg.conninfo import conninfo_to_dict
        from icc.contrib.django.integration import database_url
        parts = conninfo_to_dict(database_url("other"))
        print(sorted(parts.items()))
    """)
    assert out.strip() == str(
        sorted(
            {
                "dbname": "shop db",
                "user": "shop",
                "password": "p@ss:w/rd?#",
                "host": "db.internal",
                "port": "6432",
                "sslmode": "require",
            }.items()
        )
    )
