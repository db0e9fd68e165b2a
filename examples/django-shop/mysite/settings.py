"""A small shop on icc: SQLite by default; with SHOP_POSTGRES_URL set, the site and icc's store share that
PostgreSQL database (icc in its own schema)."""

import os
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "example-only-not-secret")
DEBUG = True
ALLOWED_HOSTS: list[str] = []
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django_tasks",
    "shop",
    "icc.contrib.django",
]
USE_TZ = True
TIME_ZONE = "Europe/Berlin"  # icc schedules in it too
TASKS = {"default": {"BACKEND": "icc.contrib.django.tasks.IccTaskBackend"}}

if os.environ.get("SHOP_POSTGRES_URL"):
    url = urlsplit(os.environ["SHOP_POSTGRES_URL"])
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": url.path.lstrip("/"),
            "USER": url.username or "",
            "PASSWORD": url.password or "",
            "HOST": url.hostname or "",
            "PORT": url.port or "",
            "CONN_MAX_AGE": 600,
        }
    }
    ICC = {"store": {"database": "default"}}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
    ICC: dict[str, object] = {}
