"""`icc crontab`: the printed line, read the way cron reads it, runs this project's tick and nothing else."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from projectkit import Project


def cron_reads(line: str) -> tuple[str, str]:
    """Split one crontab line as Vixie/Debian cron does: (the command for /bin/sh -c, its stdin).

    Five time fields, then the command. In the command an unescaped ``%`` ends the command (the rest, with
    each further ``%`` a newline, is its stdin) and ``\\%`` is a literal ``%`` (cron's do_command.c).
    """
    assert "\n" not in line.rstrip("\n"), f"more than one crontab line: {line!r}"
    command = line.rstrip("\n").split(None, 5)[5]
    out: list[str] = []
    escaped = False
    for i, ch in enumerate(command):
        if escaped:
            if ch == "%":
                out[-1] = "%"
            else:
                out.append(ch)
            escaped = False
            continue
        if ch == "\\":
            escaped = True
            out.append(ch)
            continue
        if ch == "%":
            return "".join(out), command[i + 1 :].replace("%", "\n")
        out.append(ch)
    return "".join(out), ""


@pytest.mark.parametrize("folder", ["50% off", "a%b", "100%"])
def test_crontab_escapes_percent_so_cron_runs_the_whole_command(tmp_path: Path, folder: str) -> None:
    project = Project(tmp_path / folder)
    project.root.mkdir()
    project.write_config()
    project.write_plugin("")
    project.icc("scan", check=True)  # a tick on a never-scanned store refuses to run (exit 2)
    line = project.icc("crontab", check=True).stdout
    command, stdin = cron_reads(line)
    assert stdin == ""
    argv = shlex.split(command)
    assert argv[-4:] == ["--config", str(project.config.resolve()), "run", "--quiet"]
    # And as cron would run it: /bin/sh -c, from another directory.
    ran = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd="/",
        env=project.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    assert project.db.exists()


def test_crontab_refuses_a_line_break_in_a_path(tmp_path: Path) -> None:
    project = Project(tmp_path / "two\nlines")
    project.root.mkdir()
    project.write_config()
    proc = project.icc("crontab")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr  # the path is shown with its \n escaped
    assert "line break" in proc.stderr and "Traceback" not in proc.stderr


def test_crontab_outside_a_project_says_to_pass_config(tmp_path: Path) -> None:
    empty = tmp_path / "nowhere"
    empty.mkdir()
    env = {k: v for k, v in Project(empty).environ().items() if k != "ICC_CONFIG"}
    proc = subprocess.run(
        [sys.executable, "-m", "icc", "crontab"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "no config file found" in proc.stderr and "--config" in proc.stderr
