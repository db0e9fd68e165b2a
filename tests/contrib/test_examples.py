"""examples/django-shop and examples/flask-shop run as their READMEs say, with real processes: `manage.py icc`
and `flask icc` scans, ticks and consumers, on SQLite and (the Django site) on PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from projectkit import BASE

pytest.importorskip("django")
pytest.importorskip("flask")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(
        EXAMPLES / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", ".icc")
    )
    return target


def runner(root: Path, prefix: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    def run(*args: str) -> str:
        proc = subprocess.run(
            [*prefix, *args], cwd=root, env=env, capture_output=True, text=True, timeout=180
        )
        assert proc.returncode == 0, (
            f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
        return proc.stdout

    return run


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ICC_", "DJANGO_", "FLASK_", "SHOP_"))}


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_django_shop_example_runs_jobs_messages_and_tasks(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    root = copy("django-shop", tmp_path)
    env = base_env()
    if store == "postgres":
        env["SHOP_POSTGRES_URL"] = request.getfixturevalue("pg_url")
    manage = runner(root, [sys.executable, "manage.py"], env)
    manage("migrate", "-v0")
    if store == "postgres":
        manage("icc", "db", "migrate")
    assert "daily-report" in manage("icc", "scan")
    assert "manage.py clearsessions" in manage("icc", "status")
    assert "placed" in manage("place_order", "ann")
    manage("icc", "consume", "async", "--stop-when-empty")
    orders = manage(
        "shell",
        "--no-imports",
        "-c",
        "from shop.models import Order; print(list(Order.objects.values_list('confirmed', 'receipt_sent')))",
    )
    assert orders.strip() == "[(True, True)]"
    six = datetime.combine(BASE.date(), time(6), ZoneInfo("Europe/Berlin"))  # daily-report, in TIME_ZONE
    tick = manage("icc", "run", "--at", six.isoformat())
    assert "daily-report" in tick and "succeeded" in tick
    assert "1 orders so far" in manage("icc", "logs", "daily-report")
    manage("icc", "exec", "manage.py clearsessions")


def test_flask_shop_example_runs_a_job_and_a_handler_in_the_app_context(tmp_path: Path) -> None:
    root = copy("flask-shop", tmp_path)
    flask = runner(root, [sys.executable, "-m", "flask", "--app", "app"], base_env())
    flask("icc", "scan")
    assert "nightly-report" in flask("icc", "status")
    (root / "signup.py").write_text(
        "from app import app\n"
        "client = app.test_client()\n"
        "assert client.post('/signup', data={'email': 'ann@example.com'}).status_code == 200\n"
    )
    subprocess.run([sys.executable, "signup.py"], cwd=root, env=base_env(), check=True)
    flask("icc", "consume", "async", "--stop-when-empty")
    flask("icc", "exec", "nightly-report")
    assert "1 signups so far" in flask("icc", "logs", "nightly-report")
    import sqlite3

    with sqlite3.connect(root / "app.sqlite3") as conn:
        assert conn.execute("SELECT email, welcomed FROM signups").fetchall() == [("ann@example.com", 1)]
