"""`manage.py check` in a real Django project: icc's configuration, its timezone against TIME_ZONE, a store
several hosts can share, and icc's pending PostgreSQL migrations."""

from __future__ import annotations

from pathlib import Path

import pytest
from frameworkkit import DjangoSite, pg_database

pytest.importorskip("django")


def test_a_bad_icc_setting_is_a_check_error(tmp_path: Path) -> None:
    site = DjangoSite(tmp_path, icc={"timezon": "UTC"})
    proc = site.manage("check", check=False)
    assert proc.returncode != 0
    assert "icc.E001" in proc.stderr and "did you mean 'timezone'?" in proc.stderr


def test_an_icc_timezone_other_than_time_zone_is_a_warning(tmp_path: Path) -> None:
    site = DjangoSite(tmp_path, time_zone="Europe/Berlin", icc={"timezone": "UTC"})
    out = site.manage("check").stderr
    assert "icc.W002" in out and "Europe/Berlin" in out
    site = DjangoSite(tmp_path / "same", time_zone="Europe/Berlin", icc={})
    assert "icc.W002" not in site.manage("check").stderr + site.manage("check").stdout


def test_a_sqlite_store_beside_a_remote_postgresql_database_is_a_warning(tmp_path: Path) -> None:
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "shop",
        "HOST": "db.internal",
        "PORT": 5432,
    }
    site = DjangoSite(tmp_path, database=database)
    out = site.manage("check").stderr
    assert "icc.W003" in out and "'store': {'database': 'default'}" in out


def test_pending_icc_migrations_are_a_warning_until_migrated(tmp_path: Path, pg_url: str) -> None:
    site = DjangoSite(tmp_path, database=pg_database(pg_url), icc={"store": {"database": "default"}})
    out = site.manage("check").stderr
    assert "icc.W005" in out and "manage.py icc db migrate" in out
    site.manage("icc", "db", "migrate")
    proc = site.manage("check")
    assert "icc.W005" not in proc.stderr + proc.stdout
