"""Failure alerts from icc's light minute: with ``mail.alert_to`` set, `icc run --quiet` still runs a minute of
plain foreground jobs (or of consumer jobs) light, and its supervisors call icc-mail's ``after_run`` as the full
tick's do: the same alerts (failure, no repeat, recovery), queued on the real ``mail`` queue, sent by a real
`icc consume mail` to a real SMTP server (aiosmtpd). Two projects run the same minutes, one by the full tick
(`icc run` without --quiet), one light, and the mails are compared."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import StartServer

BASE = (datetime.now(UTC) + timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)

# Each task notes which of coordinator/pluggy/click its process had imported (a forked task inherits its
# supervisor's modules): the full tick's supervisor has the coordinator, the light one never (nor click).
PLUGIN = """
import os
import sys

import icc

with open(os.path.join(os.environ["MARKER_DIR"], "loaded"), "a") as f:
    f.write(f"{os.getpid()}\\n")


def note(name):
    seen = int("icc.tick.coordinator" in sys.modules), int("click" in sys.modules)
    with open(os.path.join(os.environ["MARKER_DIR"], "ran"), "a") as f:
        f.write(f"{name} {seen[0]}{seen[1]}\\n")


def ok():
    note("ok")
    print("fine")


def flaky():
    note("flaky")
    print("flaky says hi")
    if os.path.exists(os.path.join(os.environ["MARKER_DIR"], "fail")):
        sys.stdout.flush()
        os._exit(3)


@icc.hookimpl
def schedule(scheduler):
    if os.environ.get("NO_JOBS"):
        return
    scheduler.add(ok, name="ok").every_minute()
    scheduler.add(flaky, name="flaky").every_minute()
"""


def at(minutes: int) -> str:
    return (BASE + timedelta(minutes=minutes)).isoformat()


class Proj:
    def __init__(
        self, root: Path, port: int, consumers: str, no_jobs: bool = False, plugin: str = PLUGIN
    ) -> None:
        self.root = root
        self.name = root.name
        self.no_jobs = no_jobs
        root.mkdir()
        (root / "tasks_plugin.py").write_text(plugin)
        (root / "icc.toml").write_text(
            textwrap.dedent(
                f"""
                [icc]
                timezone = "UTC"
                state_dir = "state"
                plugins = ["tasks_plugin"]
                grace = 1

                [icc.consumers]
                {consumers}

                [icc.mail]
                dsn = "smtp://127.0.0.1:{port}?timeout=5"
                sender = "icc <icc@example.org>"
                alert_to = ["{self.name}@example.org"]
                """
            )
        )

    def icc(self, *args: str) -> subprocess.CompletedProcess[str]:
        # No ICC_PLUGINS, autoload on: icc-mail is loaded through its entry point, as installed.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")}
        env["MARKER_DIR"] = str(self.root)
        if self.no_jobs:
            env["NO_JOBS"] = "1"
        return subprocess.run(
            [sys.executable, "-m", "icc", "--config", str(self.root / "icc.toml"), *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def lines(self, name: str) -> list[str]:
        path = self.root / name
        return path.read_text().splitlines() if path.exists() else []

    def runs(self, since: int) -> list[dict[str, Any]]:
        db = sqlite3.connect(self.root / "state" / "state.sqlite3")
        db.row_factory = sqlite3.Row
        try:
            slot = int((BASE + timedelta(minutes=since)).timestamp())
            rows = db.execute("SELECT * FROM runs WHERE slot >= ? ORDER BY id", (slot,))
            return [dict(r) for r in rows]
        finally:
            db.close()


def comparable(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "job", "slot", "outcome", "exit_code", "error", "output")
    return {key: run[key] for key in keys}


def _wall(moment: str) -> str:
    """A time the mail says: a slot as it is, a wall-clock moment (the real clock's days) as WHEN."""
    return moment if moment[:10] >= BASE.strftime("%Y-%m-%d") else "WHEN"


def mails(received: list[Any], project: str) -> list[tuple[str, str]]:
    """(subject, plain text) of each mail to the project's address, the project's folder said alike."""
    found = []
    for mail in received:
        if mail.rcpt_tos != [f"{project}@example.org"]:
            continue
        message = mail.message
        body = message.get_body(("plain",))
        assert body is not None
        text = str(body.get_content()).replace(f"/{project}/", "/PROJECT/")
        # when it ran, in wall-clock time (the two projects run one after the other; the slots are days ahead)
        lines = text.splitlines()
        text = "\n".join(line for line in lines if not line.startswith(("started:", "ended:", "took:")))
        text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", lambda m: _wall(m.group()), text)
        found.append((str(message["Subject"]), text))
    return found


def test_alert_mails_of_light_minutes_are_the_full_ticks_for_failure_success_and_recovery(
    tmp_path: Path, start_smtp: StartServer
) -> None:
    smtp = start_smtp()
    full, light = (Proj(tmp_path / name, smtp.port, 'mode = "service"') for name in ("full", "light"))
    for project in (full, light):
        scan = project.icc("scan")
        assert scan.returncode == 0, scan.stderr
        (project.root / "fail").write_text("")
        project.icc("run", "--at", at(0))  # the full tick in both: it makes the plain jobs' next slots
    a, b = full.icc("run", "--at", at(1)), light.icc("run", "--quiet", "--at", at(1))  # flaky fails again
    assert a.returncode == b.returncode == 1, b.stderr
    for project in (full, light):
        (project.root / "fail").unlink()
    a, b = full.icc("run", "--at", at(2)), light.icc("run", "--quiet", "--at", at(2))  # flaky recovers
    assert (a.returncode, b.returncode, b.stdout, b.stderr) == (0, 0, "", "")
    # The light minutes were light: no coordinator, no click in their tasks' supervisor.
    assert full.lines("ran")[2:] == ["ok 10", "flaky 10"] * 2
    assert light.lines("ran")[2:] == ["ok 00", "flaky 00"] * 2
    assert [comparable(r) for r in light.runs(1)] == [comparable(r) for r in full.runs(1)]

    for project in (full, light):
        consume = project.icc("consume", "mail", "--stop-when-empty")
        assert consume.returncode == 0, consume.stderr
    full_mails, light_mails = mails(smtp.received, "full"), mails(smtp.received, "light")
    assert light_mails == full_mails
    subjects = [subject for subject, _ in light_mails]
    assert len(subjects) == 2 and "flaky failed" in subjects[0] and "flaky" in subjects[1]
    assert "flaky says hi" in light_mails[0][1] and "exit code 3" in light_mails[0][1]


def ended(project: Proj, minute: int) -> list[dict[str, Any]]:
    """The runs of ``minute`` on, once all have ended and their supervisors exited (the hooks run after the
    outcome is recorded)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = project.runs(minute)
        ended = bool(runs) and all(r["outcome"] not in ("pending", "running") for r in runs)
        if ended and not any(os.path.exists(f"/proc/{r['pid']}") for r in runs):
            return runs
        time.sleep(0.05)
    raise AssertionError(f"the consumer runs of {project.name} did not end")


def test_a_consumer_minute_with_alert_to_set_is_light_and_mails_as_the_full_tick(
    tmp_path: Path, start_smtp: StartServer
) -> None:
    smtp = start_smtp()
    consumers = 'mode = "cron"\nqueues = ["mail"]\ntime_limit = 1'
    made = []
    for name in ("full", "light"):
        project = Proj(tmp_path / name, smtp.port, consumers, no_jobs=True)
        assert project.icc("scan").returncode == 0
        assert project.icc("run", "--at", at(0)).returncode == 0
        ended(project, 0)
        made.append(project)
    full, light = made

    loaded = [len(p.lines("loaded")) for p in made]
    assert full.icc("run", "--at", at(1)).returncode == 0
    tick = light.icc("run", "--quiet", "--at", at(1))
    assert (tick.returncode, tick.stdout, tick.stderr) == (0, "", "")
    full_runs, light_runs = ended(full, 1), ended(light, 1)
    assert [comparable(r) for r in light_runs] == [comparable(r) for r in full_runs]
    assert [r["outcome"] for r in light_runs] == ["succeeded"]
    # Light: the tasks plugin (no run hooks) was not loaded for the minute; the full tick loaded it.
    assert len(full.lines("loaded")) > loaded[0]
    assert len(light.lines("loaded")) == loaded[1]
    assert mails(smtp.received, "light") == mails(smtp.received, "full") == []


BACKGROUND = PLUGIN.replace(
    'scheduler.add(flaky, name="flaky").every_minute()',
    'scheduler.add(flaky, name="flaky").every_minute().in_background()',
)


def test_alert_mails_of_light_background_runs_are_the_full_ticks_for_failure_and_recovery(
    tmp_path: Path, start_smtp: StartServer
) -> None:
    """Background runs in light minutes with ``mail.alert_to`` set: the light background supervisor calls
    icc-mail's ``after_run`` (a declared episode: loaded after a run, only when it calls for it) as the full
    tick's background supervisor does: the same alert for the failure, none for the repeat, the same for the
    recovery."""
    smtp = start_smtp()
    made = []
    for name in ("full", "light"):
        project = Proj(tmp_path / name, smtp.port, 'mode = "service"', plugin=BACKGROUND)
        assert project.icc("scan").returncode == 0
        project.icc("run", "--at", at(0))  # the full tick in both: it makes the plain jobs' next slots
        ended(project, 0)
        made.append(project)
    full, light = made
    db = sqlite3.connect(light.root / "state" / "state.sqlite3")
    assert db.execute("SELECT background FROM light_jobs WHERE name = 'flaky'").fetchone() == (1,)
    db.close()
    for minute in (1, 2, 3):  # flaky fails (an alert), fails again (none), recovers (the recovery's)
        for project in made:
            if minute == 1:
                (project.root / "fail").write_text("")
            elif minute == 3:
                (project.root / "fail").unlink()
        full.icc("run", "--at", at(minute))
        tick = light.icc("run", "--quiet", "--at", at(minute))
        assert (tick.returncode, tick.stdout, tick.stderr) == (0, "", "")
        ended(full, minute)
        ended(light, minute)
    # The light minutes were light: no coordinator, no click where their tasks were forked.
    assert sorted(full.lines("ran")[2:]) == sorted(["ok 10", "flaky 10"] * 3)
    assert sorted(light.lines("ran")[2:]) == sorted(["ok 00", "flaky 00"] * 3)
    assert [comparable(r) for r in light.runs(1)] == [comparable(r) for r in full.runs(1)]

    for project in made:
        consume = project.icc("consume", "mail", "--stop-when-empty")
        assert consume.returncode == 0, consume.stderr
    full_mails, light_mails = mails(smtp.received, "full"), mails(smtp.received, "light")
    assert light_mails == full_mails
    subjects = [subject for subject, _ in light_mails]
    assert len(subjects) == 2 and "flaky failed" in subjects[0] and "flaky" in subjects[1]
    assert "flaky says hi" in light_mails[0][1] and "exit code 3" in light_mails[0][1]
