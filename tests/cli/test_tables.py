"""Tables in an 80-column terminal (a real pseudo-terminal), in pipes (cron mail), and `icc status --timeline`."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import unicodedata
from datetime import UTC, datetime, timedelta

from projectkit import BASE, Project, at

LONG = "nightly-warehouse-export-to-s3"  # 30 characters
PLUGIN = f"""
def ok():
    pass

def bad():
    raise RuntimeError("the upstream warehouse refused the connection because " * 3)

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(ok, name="{LONG}").every_minute()
    scheduler.add(bad, name="{LONG[:-1]}x").every_minute()
    scheduler.add(ok, name="short").every_minute()
"""
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def in_terminal(project: Project, *args: str, columns: int = 80) -> str:
    """Run icc with its stdout on a pseudo-terminal of `columns` columns; the text it shows, ANSI removed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = project.environ() | {"COLUMNS": str(columns), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        project.argv(*args),
        cwd=project.root,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(leader)
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def assert_fits(text: str, columns: int, names: list[str]) -> None:
    lines = text.splitlines()
    for line in lines:
        shown = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)
        assert shown <= columns, f"{shown} columns: {line!r}\n{text}"
    for name in names:
        assert any(name in line for line in lines), f"{name} broken or missing:\n{text}"
    # Every time is whole on its line: no line ends in a piece of one (the rest folded to the next line).
    for line in lines:
        assert not re.search(r"\d{4}-\d\d-?\d?\d?$|\d{4}-\d\d-\d\d \d?\d?:?\d?$", line.rstrip()), text


def test_tables_fit_an_80_column_terminal_with_long_names_and_times_unbroken(project: Project) -> None:
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    names = [LONG, LONG[:-1] + "x", "short"]
    shown = in_terminal(project, "run", "--at", at(1))
    assert_fits(shown, 80, names)
    assert len(TIME.findall(shown)) >= 3, shown  # every slot, whole
    shown = in_terminal(project, "status")
    assert_fits(shown, 80, names)
    assert len(TIME.findall(shown)) >= 6, shown  # a next run and a last run per job
    assert "last success" not in shown  # below 120 columns: in `icc status JOB` and --json
    shown = in_terminal(project, "status", LONG[:-1] + "x").split("output of run")[
        0
    ]  # the job's own output: as is
    assert_fits(shown, 80, [LONG[:-1] + "x"])
    assert len(TIME.findall(shown)) >= 2, shown
    wide = in_terminal(project, "status", columns=160)
    assert_fits(wide, 160, names)
    assert "last success" in wide and "last failure" in wide


def test_piped_tables_are_full_lines_never_wrapped(project: Project) -> None:
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    proc = project.icc("run", "--at", at(1), timeout=120)
    rows = [line for line in proc.stdout.splitlines() if line.startswith("nightly")]
    assert len(rows) == 2 and all(TIME.search(r) for r in rows), proc.stdout
    status = project.icc("status", check=True).stdout
    row = next(line for line in status.splitlines() if line.startswith(LONG + " "))
    assert len(row) > 120  # one line per job, every column: a mail reader wraps it, not icc
    # next run; last run and last success each: when it started and (an --at tick's run) its slot
    assert len(TIME.findall(row)) == 5


TIMELINE_PLUGIN = """
def ok():
    pass

def bad():
    raise RuntimeError("boom")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(ok, name="ok").every_hour()
    scheduler.add(bad, name="bad").every_hour()
    scheduler.add(ok, name="skipper").every_hour().skip(lambda: True)
    scheduler.add(ok, name="idle").daily()
"""


def timeline_cells(text: str) -> dict[str, str]:
    """``{job: the characters between its |…|}`` of `icc status --timeline`."""
    return {
        line.split()[0]: line[line.index("|") + 1 : line.rindex("|")]
        for line in text.splitlines()
        if line.count("|") == 2 and not line.startswith("job ")
    }


def test_timeline_shows_each_hour_s_outcome_at_its_position(project: Project) -> None:
    project.write_plugin(TIMELINE_PLUGIN)
    project.icc("scan", check=True)
    for minutes in (0, 60, 180):  # 10:00, 11:00, 13:00: the 12:00 slot is missed
        project.icc("run", "--at", at(minutes))
    proc = project.icc("status", "--timeline", "--at", at(185), check=True)
    cells = timeline_cells(proc.stdout)
    # 24 cells of an hour ending with the one holding 13:05: 14:00 yesterday ... 13:00 today.
    assert {len(c) for c in cells.values()} == {24}, proc.stdout
    assert cells["ok"] == " " * 20 + "..m.", proc.stdout
    assert cells["bad"] == " " * 20 + "FFmF", proc.stdout
    assert cells["skipper"] == " " * 20 + "ssms", proc.stdout
    assert cells["idle"] == " " * 24, proc.stdout
    assert "legend: . succeeded  F failed  s skipped  m missed" in proc.stdout
    axis = next(line for line in proc.stdout.splitlines() if line.startswith("job "))
    assert axis[axis.index("|") + 1 :][10:12] == "00", axis  # midnight is the 11th cell (14:00 + 10 h)
    only = timeline_cells(project.icc("status", "bad", "--timeline", "--at", at(185), check=True).stdout)
    assert only == {"bad": cells["bad"]}


def test_timeline_in_an_80_column_terminal_fits_with_long_names(project: Project) -> None:
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    project.icc("run", "--at", at(1))
    shown = in_terminal(project, "status", "--timeline", "--at", at(2))
    assert_fits(shown, 80, [LONG, LONG[:-1] + "x", "short"])
    cells = timeline_cells(shown)
    assert {len(c) for c in cells.values()} == {24}, shown  # 30-minute cells would need 48 + 32 columns
    assert cells[LONG].strip() == "." and cells[LONG[:-1] + "x"].strip() == "F", shown
    wide = timeline_cells(in_terminal(project, "status", "--timeline", "--at", at(2), columns=140))
    assert {len(c) for c in wide.values()} == {96}  # 15 minutes a cell when it fits


# -- shell completion -----------------------------------------------------------------------------------------


def complete(project: Project, *words: str, cwd: object = None) -> list[str]:
    """What bash would offer for the last of `words`, by click's completion protocol in a real `icc` process."""
    env = project.environ() | {
        "_ICC_COMPLETE": "bash_complete",
        "COMP_WORDS": " ".join(["icc", *words]),
        "COMP_CWORD": str(len(words)),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "icc"],
        cwd=cwd or project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc
    return [line.split(",", 1)[1] for line in proc.stdout.splitlines() if line]


def test_completion_offers_job_names_and_queue_names(project: Project) -> None:
    project.write_config(
        '[icc.consumers]\nmode = "service"\nqueues = ["mail", "async"]\n[icc.queues.reports]\n'
    )
    project.write_plugin(TIMELINE_PLUGIN)
    assert complete(project, "exec", "") == []  # not scanned yet: no store, nothing to offer, no error
    assert not project.state_dir.exists()  # and nothing made
    project.icc("scan", check=True)
    everything = ["bad", "idle", "ok", "skipper"]
    for command in ("exec", "status", "logs", "enable", "disable"):
        assert complete(project, command, "") == everything, command
    assert complete(project, "exec", "s") == ["skipper"]
    assert complete(project, "consume", "") == ["mail", "async", "reports"]
    assert complete(project, "consume", "mail", "") == ["async", "reports"]
    assert complete(project, "consume", "a") == ["async"]


def test_completion_without_a_store_or_with_a_broken_configuration_does_not_fail(project: Project) -> None:
    elsewhere = project.root.parent / "elsewhere"
    elsewhere.mkdir()
    assert complete(project, "exec", "", cwd=elsewhere) == []
    assert complete(project, "consume", "", cwd=elsewhere) == ["mail", "async"]  # the default queues
    assert "status" in complete(project, "st", cwd=elsewhere)
    assert not (elsewhere / ".icc").exists()  # the default state directory was not made
    project.config.write_text("[icc\nbroken = ")  # a broken configuration: nothing offered, no traceback
    assert complete(project, "exec", "") == complete(project, "consume", "") == []


def test_timeline_refuses_json(project: Project) -> None:
    project.write_plugin(TIMELINE_PLUGIN)
    project.icc("scan", check=True)
    proc = project.icc("status", "--timeline", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "error: --timeline draws a picture: give it without --json and --next"


def test_counts_are_pluralised_only_when_not_one() -> None:
    from icc.cli import render as ui

    assert ui.plural(1, "failed message") == "1 failed message"
    assert ui.plural(0, "failed message") == "0 failed messages"
    assert ui.plural(3, "consumer job") == "3 consumer jobs"
    assert ui.plural(2, "entry", "entries") == "2 entries"


def test_status_after_an_at_tick_labels_start_times_and_slots(project: Project) -> None:
    project.write_plugin(
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["true"], name="ok").every_minute()
        """
    )
    project.icc("scan", check=True)
    project.icc("run", "--at", at(1), check=True)
    started = project.runs("ok")[0]["started_at"]
    status = project.icc("status", check=True).stdout
    row = next(line for line in status.splitlines() if line.startswith("ok "))
    when = datetime.fromtimestamp(started, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    slot = (BASE + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M")
    assert f"succeeded started {when} (" in row and f"slot {slot}" in row, row
    job = project.icc("status", "ok", check=True).stdout
    assert f"last success: succeeded started {when} (" in job and f", slot {slot}" in job, job
    shown = in_terminal(project, "status")
    assert f"started {when[:16]}" in shown and f"slot {slot}" in shown, shown
