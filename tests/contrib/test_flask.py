"""icc.contrib.flask in a real Flask application: `flask icc ...` processes; jobs, `when()` predicates,
callbacks and queue handlers all run inside the app's application context."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from frameworkkit import FlaskApp
from projectkit import at

pytest.importorskip("flask")

APP = """
    from flask import Flask

    from icc.contrib.flask import Icc

    app = Flask(__name__)
    app.config["GREETING"] = "hello from the app"
    app.config["ICC"] = {"state_dir": "state", "plugins": ["webapp_tasks"], "timezone": "Europe/Paris"}
    Icc(app)


    @app.teardown_appcontext
    def closed(exc):  # where an extension (Flask-SQLAlchemy) hands its session back
        import os

        with open("notes.txt", "a") as f:
            f.write(f"teardown {os.getpid()}\\n")
"""

TASKS = """
    import os
    from pathlib import Path

    import icc
    from flask import current_app

    HERE = Path(__file__).parent


    def note(what):
        with open(HERE / "notes.txt", "a") as f:
            f.write(f"{what} {os.getpid()}: {current_app.config['GREETING']}\\n")


    def job():
        note("job")


    def due():
        note("when")
        return True


    def handler(payload):
        note("handler " + payload["n"])


    @icc.hookimpl
    def schedule(scheduler):
        scheduler.add(job, name="job").every_minutes(1).when(due).after(lambda result: note("after"))


    @icc.hookimpl
    def register_handlers(register):
        register("greet", handler, queue="async")
"""


@pytest.fixture(params=["sqlite", "postgres"])
def webapp(tmp_path: Path, request: pytest.FixtureRequest) -> FlaskApp:
    """The app; on PostgreSQL icc's store (state and queues) is a fresh database of the test server."""
    made = FlaskApp(tmp_path)
    app = APP
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        app = APP.replace(
            '"timezone": "Europe/Paris"}', f'"timezone": "Europe/Paris", "store": {{"url": {url!r}}}}}'
        )
        assert app != APP
    made.write("webapp.py", app)
    made.write("webapp_tasks.py", TASKS)
    if request.param == "postgres":
        made.flask("icc", "db", "migrate")
    made.flask("icc", "scan")
    return made


def notes(app: FlaskApp) -> list[str]:
    return (app.root / "notes.txt").read_text().splitlines()


def each_in_its_own_context(lines: list[str], *whats: str) -> None:
    """Each piece of user code named ran with the app's config, in an app context torn down after it (a fresh
    one: the CLI's own context is never torn down in a forked process, which ends with os._exit)."""
    for what in whats:
        line = next((line for line in lines if line.startswith(what + " ")), None)
        assert line is not None, (what, lines)
        pid = line.split()[1].rstrip(":")
        assert line.endswith(": hello from the app"), line
        after = lines[lines.index(line) + 1 :]
        assert f"teardown {pid}" in after, (what, lines)


def test_jobs_predicates_and_callbacks_run_inside_the_app_context(webapp: FlaskApp) -> None:
    webapp.flask("icc", "run", "--at", at(0))
    each_in_its_own_context(notes(webapp), "when", "job", "after")


def test_queue_handlers_run_inside_the_app_context(webapp: FlaskApp) -> None:
    webapp.write(
        "send.py",
        """
        import icc
        from webapp import app

        with app.app_context():
            icc.dispatch("greet", {"n": "1"})
            icc.dispatch("greet", {"n": "2"})
        """,
    )
    subprocess.run([sys.executable, "send.py"], cwd=webapp.root, check=True)
    webapp.flask("icc", "consume", "async", "--stop-when-empty")
    lines = notes(webapp)
    lines = lines[
        next(i for i, line in enumerate(lines) if line.startswith("handler")) :
    ]  # send.py's own first
    pid = lines[0].split()[2].rstrip(":")
    assert lines[:4] == [
        f"handler 1 {pid}: hello from the app",
        f"teardown {pid}",
        f"handler 2 {pid}: hello from the app",
        f"teardown {pid}",
    ]


def test_config_comes_from_app_config_icc(webapp: FlaskApp) -> None:
    status = webapp.flask("icc", "status").stdout
    assert "Europe/Paris" in status and "job" in status
    assert (webapp.root / "state").is_dir()


def test_crontab_line_calls_flask_icc_from_crons_bare_environment(webapp: FlaskApp) -> None:
    line = webapp.flask("icc", "crontab").stdout.strip()
    command = line.removeprefix("* * * * * ")
    # the idle check first, then (a job is due) the full tick: `python -m flask --app webapp icc run --quiet`
    assert " run --quiet --framework-snapshot " in command
    assert command.endswith(" -m flask --app webapp icc")
    proc = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd="/",
        env={},  # env -i: cron's environment is barer still than a login's
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    each_in_its_own_context(notes(webapp), "job")


def test_init_app_in_an_application_factory(tmp_path: Path) -> None:
    app = FlaskApp(tmp_path)
    app.write(
        "webapp.py",
        """
        from flask import Flask

        from icc.contrib.flask import Icc

        icc_ext = Icc()


        def create_app():
            app = Flask(__name__)
            app.config["GREETING"] = "hello from the factory"
            app.config["ICC"] = {"state_dir": "state", "plugins": ["webapp_tasks"]}
            icc_ext.init_app(app)
            return app
        """,
    )
    app.write(
        "webapp_tasks.py",
        """
        import icc
        from flask import current_app


        def job():
            print(current_app.config["GREETING"])


        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(job, name="job").daily()
        """,
    )
    app.flask("icc", "scan")
    app.flask("icc", "exec", "job")
    assert "hello from the factory" in app.flask("icc", "logs", "job").stdout
