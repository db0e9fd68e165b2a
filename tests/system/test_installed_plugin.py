"""A real third-party plugin distribution, built and pip-installed into a fresh venv, found via its entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

PYPROJECT = """
[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[project]
name = "acme-icc-tasks"
version = "1.4.2"
requires-python = ">=3.11"

[project.entry-points."icc.tasks"]
acme-icc-tasks = "acme_tasks.plugin"

[tool.hatch.build.targets.wheel]
packages = ["src/acme_tasks"]
"""

PLUGIN = """
import icc

def nightly_report() -> None:
    print("report")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(nightly_report, name="acme-nightly-report").daily().at(2, 30)
"""


@pytest.mark.slow
def test_pip_installed_plugin_is_found_through_its_entry_point_with_its_version(tmp_path: Path) -> None:
    dist = tmp_path / "acme"
    (dist / "src" / "acme_tasks").mkdir(parents=True)
    (dist / "pyproject.toml").write_text(PYPROJECT)
    (dist / "src" / "acme_tasks" / "__init__.py").write_text("")
    (dist / "src" / "acme_tasks" / "plugin.py").write_text(textwrap.dedent(PLUGIN))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The fresh venv sees icc (and its dependencies) from the venv running the tests, through a site dir.
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    outer = sysconfig.get_paths()["purelib"]
    Path(purelib, "outer-venv.pth").write_text(f"import site; site.addsitedir({outer!r})\n")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(dist)],
        capture_output=True,
        text=True,
    )
    if install.returncode != 0 and "Could not find a version" in install.stderr:
        pytest.skip(f"no package index reachable to fetch the build backend: {install.stderr[-300:]}")
    assert install.returncode == 0, install.stderr

    project = tmp_path / "project"
    project.mkdir()
    (project / "icc.toml").write_text('[icc]\nstate_dir = "state"\n[icc.consumers]\nmode = "service"\n')
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    scan = subprocess.run(
        [str(python), "-m", "icc", "scan"], cwd=project, env=env, capture_output=True, text=True
    )
    assert scan.returncode == 0, scan.stderr
    status = subprocess.run(
        [str(python), "-m", "icc", "status", "--json"], cwd=project, env=env, capture_output=True, text=True
    )
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    job = next(j for j in data["jobs"] if j["name"] == "acme-nightly-report")
    assert (job["plugin"], job["distribution"], job["version"]) == (
        "acme-icc-tasks",
        "acme-icc-tasks",
        "1.4.2",
    )
    assert job["schedule"]["cron"] == "30 2 * * *"
    assert any(p["distribution"] == "acme-icc-tasks" and p["version"] == "1.4.2" for p in data["plugins"])
