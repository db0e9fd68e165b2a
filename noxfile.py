"""Developer sessions: `nox` runs the tests; `nox -s lint typecheck docs bench demo demo_django demo_flask
screenshots` the rest."""

from __future__ import annotations

from pathlib import Path

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
# core first, then every first-party plugin distribution, all editable.
PACKAGES = ["-e", "core"] + [
    arg
    for plugin in sorted((ROOT / "plugins").glob("*/pyproject.toml"))
    for arg in ("-e", str(plugin.parent))
]


def install(session: nox.Session, *groups: str) -> None:
    deps = [dep for group in groups for dep in nox.project.dependency_groups(PYPROJECT, group)]
    session.install(*PACKAGES, *deps)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (real processes, real SQLite, a real SMTP server), on every core (pytest-xdist: most tests
    wait on real processes, so two workers on two cores take about 60% of the time of one). Arguments replace
    the default: `nox -s tests -- tests/test_x.py` runs one file in one process."""
    install(session, "test")
    session.run("pytest", *(session.posargs or ["-n", "auto"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the import contracts (lint-imports: docs/architecture.md)."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # grimp reads the source; icc need not be installed in this session, only found.
    session.run("lint-imports", env={"PYTHONPATH": str(ROOT / "core" / "src")})


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on core/src."""
    install(session, "typecheck")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with mkdocs (strict: broken links fail)."""
    install(session, "docs")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"))


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark in bench/, each printing its ratio against a baseline measured in the same run."""
    install(session, "bench")
    scripts = session.posargs or sorted(str(p) for p in (ROOT / "bench").glob("bench_*.py"))
    for script in scripts:
        session.run("python", script)


@nox.session
def demo(session: nox.Session) -> None:
    """icc's main job on the example project: scan, one tick, status."""
    install(session)
    project = ROOT / "examples" / "shop"
    with session.chdir(project):
        session.run("icc", "scan")
        session.run("icc", "run")
        session.run("icc", "status")


@nox.session
def demo_django(session: nox.Session) -> None:
    """icc inside a Django project (examples/django-shop): migrate, scan, one tick, status."""
    install(session)
    session.install("-e", "core[django]")
    with session.chdir(ROOT / "examples" / "django-shop"):
        session.run("python", "manage.py", "migrate", "-v0")
        session.run("python", "manage.py", "icc", "scan")
        session.run("python", "manage.py", "icc", "run")
        session.run("python", "manage.py", "icc", "status")


@nox.session
def demo_flask(session: nox.Session) -> None:
    """icc inside a Flask app (examples/flask-shop): scan, one tick, status."""
    install(session)
    session.install("-e", "core[flask]")
    with session.chdir(ROOT / "examples" / "flask-shop"):
        session.run("flask", "--app", "app", "icc", "scan")
        session.run("flask", "--app", "app", "icc", "run")
        session.run("flask", "--app", "app", "icc", "status")


@nox.session
def screenshots(session: nox.Session) -> None:
    """A PNG of each dashboard page (icc web) under docs/img/, for docs/web.md: Playwright drives Debian's
    chromium (/usr/bin/chromium) through a real project's real runs."""
    install(session, "test")
    session.run(
        "python", "tests/web/screenshots.py", *session.posargs, env={"PYTHONPATH": str(ROOT / "tests")}
    )
