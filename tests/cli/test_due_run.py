"""A due `icc run` goes without click (icc.__main__.due_run): for each of its options its output and exit
code are those of the click command (`icc.cli.run`), which still handles whatever the fast parser does not
know; and it imports neither click nor rich when its output is not a terminal (real processes)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from icc.slots import fmt_time
from projectkit import Project, at, slot

PLUGIN = """
def ok():
    print("fine", flush=True)

def bad():
    if os.environ.get("FAIL"):
        raise RuntimeError("it failed")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(ok, name="ok").every_minute()
    scheduler.add(bad, name="a-job-with-a-longer-name").every_minute()
"""

CLICK = "import sys; from icc.cli import cli; cli.main(args=sys.argv[1:], prog_name='icc')"


def click_icc(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command line through the click command, as before the due tick went without it."""
    argv = [sys.executable, "-c", CLICK, "--config", str(project.config), *args]
    return subprocess.run(
        argv, cwd=project.root, env=project.environ(), capture_output=True, text=True, timeout=120
    )


def shifted(text: str, minutes: int) -> str:
    """``text`` as if its tick had been ``minutes`` earlier: each minute shown moves back (slot, next run),
    and every duration reads 0.0s (the same width)."""
    zone = "UTC"
    times = {fmt_time(slot(m), zone): fmt_time(slot(m - minutes), zone) for m in range(0, 12)}
    text = re.sub("|".join(map(re.escape, times)), lambda m: times[m.group(0)], text)
    return re.sub(r"\b\d\.\ds\b", "0.0s", text)


def pair(project: Project, minute: int, *args: str) -> tuple[Any, Any]:
    """The click command at ``minute`` and the due tick at ``minute + 1``, with the same options."""
    slow = click_icc(project, "run", *args, "--at", at(minute))
    fast = project.icc("run", *args, "--at", at(minute + 1))
    return slow, fast


@pytest.fixture
def scanned(project: Project) -> Project:
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    project.icc("run", "--quiet", "--at", at(0), check=True)  # the first tick: every job evaluated
    return project


@pytest.mark.both_stores
def test_the_due_run_prints_the_same_table_and_exit_code_as_the_click_command(scanned: Project) -> None:
    slow, fast = pair(scanned, 1)
    assert slow.returncode == fast.returncode == 0, (slow.stderr, fast.stderr)
    assert "icc run " in slow.stdout and "succeeded" in slow.stdout
    assert shifted(fast.stdout, 1) == shifted(slow.stdout, 0)
    assert fast.stderr == slow.stderr == ""
    scanned.env["FAIL"] = "1"
    slow, fast = pair(scanned, 3)
    assert slow.returncode == fast.returncode == 1
    assert "failed" in slow.stdout and "RuntimeError: it failed" in slow.stdout
    assert shifted(fast.stdout, 1) == shifted(slow.stdout, 0)


def test_quiet_prints_nothing_unless_a_job_failed_then_the_table_as_the_click_command(
    scanned: Project,
) -> None:
    slow, fast = pair(scanned, 1, "--quiet")
    assert (slow.returncode, slow.stdout, fast.returncode, fast.stdout) == (0, "", 0, "")
    scanned.env["FAIL"] = "1"
    slow, fast = pair(scanned, 3, "-q")
    assert slow.returncode == fast.returncode == 1
    assert "a-job-with-a-longer-name" in slow.stdout
    assert shifted(fast.stdout, 1) == shifted(slow.stdout, 0)


def test_json_is_the_same_document_as_the_click_command(scanned: Project) -> None:
    scanned.env["FAIL"] = "1"
    slow, fast = pair(scanned, 1, "--json")
    assert slow.returncode == fast.returncode == 1

    def normal(doc: dict[str, Any], minute: int) -> dict[str, Any]:
        assert doc["slot"] == at(minute), doc["slot"]
        for run in doc["runs"]:
            assert isinstance(run["duration"], float)
            assert run["next_run"] == at(minute + 1)
            run.update(duration=None, slot=None, next_run=None)
        return {**doc, "slot": None}

    assert normal(json.loads(fast.stdout), 2) == normal(json.loads(slow.stdout), 1)
    assert json.loads(fast.stdout)["failed"] is True


def test_a_bad_at_or_config_gets_the_click_commands_error_and_exit_code(scanned: Project) -> None:
    for args in (
        ("run", "--at", "yesterday"),
        ("run", "--at"),
        ("run", "--bogus"),
        ("run", "--quiet", "--log-level", "loud"),
    ):
        slow = click_icc(scanned, *args)
        fast = scanned.icc(*args)
        assert slow.returncode == fast.returncode == 2, (args, slow.stderr)
        assert fast.stderr == slow.stderr and fast.stdout == slow.stdout
    missing = scanned.root / "missing.toml"
    argv = [sys.executable, "-m", "icc", "--config", str(missing), "run", "--at", at(1)]
    fast = subprocess.run(argv, cwd=scanned.root, env=scanned.environ(), capture_output=True, text=True)
    slow = subprocess.run(
        [sys.executable, "-c", CLICK, "--config", str(missing), "run", "--at", at(1)],
        cwd=scanned.root,
        env=scanned.environ(),
        capture_output=True,
        text=True,
    )
    assert fast.returncode == slow.returncode != 0
    assert fast.stderr == slow.stderr and "missing.toml" in fast.stderr


def test_log_options_and_their_environment_variables_reach_the_due_run(scanned: Project) -> None:
    scanned.env["ICC_LOG_FORMAT"] = "json"
    fast = scanned.icc("--log-level", "DEBUG", "run", "--quiet", "--at", at(1))
    assert fast.returncode == 0, fast.stderr
    lines = [json.loads(line) for line in fast.stderr.splitlines()]
    assert lines and lines[0]["level"] == "debug" and lines[0]["message"].startswith("config ")


def test_a_due_run_imports_neither_click_nor_rich_into_a_pipe(scanned: Project) -> None:
    argv = [sys.executable, "-X", "importtime", "-m", "icc", "--config", str(scanned.config)]
    for args in (("run", "--quiet"), ("run",), ("run", "--json")):
        proc = subprocess.run(
            [*argv, *args, "--at", at(len(args) + 1)],
            cwd=scanned.root,
            env=scanned.environ(),
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
        assert "icc.tick.coordinator" in imported  # it was a due tick, not an idle one
        assert not {m for m in imported if m.split(".")[0] in ("click", "rich")}, args
