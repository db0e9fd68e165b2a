"""Real Django and Flask projects in a temporary directory, driven through real `manage.py icc` and
`flask icc` processes (icc.contrib)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MANAGE_PY = """\
#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""

SETTINGS = """\
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    *{apps!r},
    "icc.contrib.django",
]
DATABASES = {{"default": {database!r}}}
USE_TZ = {use_tz!r}
TIME_ZONE = {time_zone!r}
ICC = {icc!r}
{extra}
"""


def pg_database(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for a libpq URL of tests/pgkit.py."""
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username,
        "HOST": parts.hostname,
        "PORT": parts.port,
    }


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICC_", "DJANGO_", "FLASK_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass
class DjangoSite:
    """A Django project: `mysite` settings, an app `shop` (with `shop/icc_tasks.py`), run with this Python."""

    root: Path
    database: dict[str, Any] = field(default_factory=dict)
    icc: dict[str, Any] = field(default_factory=lambda: {"state_dir": "state"})
    apps: list[str] = field(default_factory=lambda: ["shop"])
    time_zone: str | None = "UTC"
    use_tz: bool = True
    extra: str = ""

    def __post_init__(self) -> None:
        if not self.database:
            self.database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(self.root / "db.sqlite3")}
        (self.root / "mysite").mkdir(parents=True, exist_ok=True)
        (self.root / "mysite" / "__init__.py").write_text("")
        (self.root / "manage.py").write_text(MANAGE_PY)
        self.write_settings()
        for app in self.apps:
            if importlib.util.find_spec(app) is not None:  # an installed app (django_tasks)
                continue
            (self.root / app).mkdir(exist_ok=True)
            (self.root / app / "__init__.py").write_text("")

    def write_settings(self) -> None:
        (self.root / "mysite" / "settings.py").write_text(
            SETTINGS.format(
                apps=self.apps,
                database=self.database,
                use_tz=self.use_tz,
                time_zone=self.time_zone,
                icc=self.icc,
                extra=self.extra,
            )
        )

    def write(self, relative: str, code: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(code))
        return path

    def tasks(self, code: str, app: str = "shop") -> None:
        self.write(f"{app}/icc_tasks.py", code)

    def manage(
        self, *args: str, check: bool = True, timeout: float = 120, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, str(self.root / "manage.py"), *args],
            cwd=cwd or self.root,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"manage.py {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(self.root / "manage.py"), *args],
            cwd=self.root,
            env=_clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def shell(self, code: str) -> str:
        """Run ``code`` with Django set up (``manage.py shell -c``); its stdout."""
        return self.manage("shell", "--no-imports", "-c", textwrap.dedent(code)).stdout


@dataclass
class FlaskApp:
    """A Flask application module `webapp.py` (with `Icc(app)`) and its plugin module `webapp_tasks.py`."""

    root: Path

    def write(self, relative: str, code: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(code))
        return path

    def flask(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "webapp", *args],
            cwd=self.root,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"flask {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc
