"""``[icc.crontab] files``: a plain crontab file's lines run as icc jobs through real scans and ticks
(`icc run --at`), their output recorded, on SQLite and a PostgreSQL store."""

from __future__ import annotations

import json

import pytest
from projectkit import Project, at

CRONTAB = """\
# deploy/crontab: moved in unchanged
GREETING = "hello there"

*/5 * * * * echo "$GREETING from $0"; echo to-stderr >&2
0 * * * * tr a-z A-Z%first line%second \\% line
@hourly exit 3
30 * * * * echo "not due at :00"
"""


def crontab_project(project: Project, text: str) -> None:
    project.write_config('\n[icc.crontab]\nfiles = ["deploy/crontab"]\n')
    project.write_plugin("")
    (project.root / "deploy").mkdir(exist_ok=True)
    (project.root / "deploy" / "crontab").write_text(text)


@pytest.mark.both_stores
def test_crontab_lines_run_with_the_shell_and_their_output_is_recorded(project: Project) -> None:
    crontab_project(project, CRONTAB)
    scan = project.icc("scan", check=True)
    assert "crontab:deploy/crontab:4" in scan.stdout
    project.icc("run", "--at", at(0), "--quiet", check=True)  # the lines run in the background, as cron's do
    project.wait_for(
        lambda: len([r for r in project.runs() if r["outcome"] not in ("running", "pending")]) == 3,
        timeout=60,
        what="the three due lines to finish",
    )
    runs = {r["job"]: r for r in project.runs()}
    assert set(runs) == {"crontab:deploy/crontab:4", "crontab:deploy/crontab:5", "crontab:deploy/crontab:6"}
    echo = runs["crontab:deploy/crontab:4"]
    assert echo["outcome"] == "succeeded"
    assert "hello there from /bin/sh" in echo["output"] and "to-stderr" in echo["output"]
    stdin = runs["crontab:deploy/crontab:5"]
    assert stdin["outcome"] == "succeeded" and stdin["output"].strip() == "FIRST LINE\nSECOND % LINE"
    failing = runs["crontab:deploy/crontab:6"]
    assert (failing["outcome"], failing["exit_code"], failing["error"]) == ("failed", 3, "exit code 3")
    jobs = {j["name"]: j for j in json.loads(project.icc("status", "--json", check=True).stdout)["jobs"]}
    assert jobs["crontab:deploy/crontab:7"]["schedule"]["cron"] == "30 * * * *"
    assert jobs["crontab:deploy/crontab:7"]["plugin"] == "icc.crontab"
    assert all(job["schedule"]["background"] for job in jobs.values())


def test_a_bad_crontab_line_fails_the_scan_naming_file_and_line_and_writes_nothing(project: Project) -> None:
    crontab_project(project, "* * * * * fine\n@reboot start-daemon\n")
    proc = project.icc("scan")
    assert proc.returncode != 0
    assert "deploy/crontab:2: @reboot is not supported" in proc.stdout + proc.stderr
    assert not project.has_store() or not project.icc("status", "--json", check=True).stdout.count("crontab:")


def test_a_missing_crontab_file_is_a_one_line_error(project: Project) -> None:
    project.write_config('\n[icc.crontab]\nfiles = ["deploy/crontab"]\n')
    project.write_plugin("")
    proc = project.icc("scan")
    assert proc.returncode != 0
    assert "[icc.crontab] files: deploy/crontab does not exist" in proc.stdout + proc.stderr
