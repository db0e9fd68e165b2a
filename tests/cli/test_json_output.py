"""`--json` on scan, run, exec and `icc failed list/show`: one JSON document on stdout, ISO 8601 times in the
configured zone (real processes)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from icc.config import load_config
from icc.queue.dispatch import dispatch
from projectkit import Project, at

PLUGIN = """
def say():
    print("hello from say", flush=True)
    print("to stderr", file=sys.stderr, flush=True)

def boom():
    print("about to fail", flush=True)
    raise RuntimeError("boom")

def bg():
    with open(os.path.join(os.environ["MARKER_DIR"], "bg"), "a") as f:
        f.write("ran\\n")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(say, name="fg").every_minute()
    scheduler.add(bg, name="bg").every_minute().in_background()
    scheduler.add(boom, name="boom").daily().at(3)

def poison(payload):
    raise ValueError("poison " + str(payload["i"]))

@icc.hookimpl
def register_handlers(register):
    register("poison", poison)
"""


def iso_in_zone(value: str, offset: str) -> datetime:
    """An ISO 8601 time carrying the configured zone's offset."""
    moment = datetime.fromisoformat(value)
    assert value.endswith(offset), value
    return moment


def scanned(project: Project) -> None:
    project.config.write_text(
        project.config.read_text().replace('timezone = "UTC"', 'timezone = "Asia/Kolkata"')
    )
    project.write_plugin(PLUGIN)


def test_scan_json_is_one_document_with_the_difference(project: Project) -> None:
    scanned(project)
    proc = project.icc("scan", "--json", check=True)
    data = json.loads(proc.stdout)
    assert data["schema"] == 1 and data["dry_run"] is False and data["timezone"] == "Asia/Kolkata"
    iso_in_zone(data["generated_at"], "+05:30")
    assert {j["name"]: j["change"] for j in data["jobs"]} == {"fg": "added", "bg": "added", "boom": "added"}
    assert {j["name"]: j["cron"] for j in data["jobs"]}["boom"] == "0 3 * * *"
    assert data["consumers"] == {"mode": "service", "jobs": []}
    again = json.loads(project.icc("scan", "--json", "--dry-run", check=True).stdout)
    assert again["dry_run"] is True and {j["change"] for j in again["jobs"]} == {"unchanged"}


def test_scan_json_error_stays_one_line_on_stderr_with_nothing_on_stdout(project: Project) -> None:
    scanned(project)
    project.write_plugin(
        "@icc.hookimpl\ndef schedule(scheduler):\n    scheduler.add(['true'], name='x').every_minutes(0)\n",
        name="bad",
    )
    project.write_config(plugins=("tasks_plugin", "bad"))
    proc = project.icc("scan", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines()[-1].startswith("error: invalid schedules")


def test_run_json_reports_a_real_tick_with_a_foreground_and_a_background_job(project: Project) -> None:
    scanned(project)
    project.icc("scan", check=True)
    proc = project.icc("run", "--json", "--at", at(0))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # one document: the job's own output is not mixed in
    iso_in_zone(data["slot"], "+05:30")
    assert data["locked_out"] is False and data["held_by"] is None and data["failed"] is False
    runs = {r["job"]: r for r in data["runs"]}
    assert runs["fg"]["outcome"] == "succeeded" and runs["fg"]["background"] is False
    assert runs["bg"]["background"] is True and runs["bg"]["outcome"] in ("started", "succeeded")
    assert isinstance(runs["fg"]["duration"], float)
    for r in runs.values():
        assert iso_in_zone(r["slot"], "+05:30") == datetime.fromisoformat(at(0))
        assert iso_in_zone(r["next_run"], "+05:30") > datetime.fromisoformat(at(0))
    project.wait_for(lambda: project.marker_lines("bg") == ["ran"], what="the background job")


def test_run_json_with_nothing_due_prints_a_document_not_the_idle_line(project: Project) -> None:
    scanned(project)
    project.write_plugin(
        "@icc.hookimpl\ndef schedule(scheduler):\n    scheduler.add(['true'], name='t').daily().at(3)\n"
    )
    project.icc("scan", check=True)
    project.icc("run", "--at", at(0), check=True)
    assert "nothing due" in project.icc("run", "--at", at(1), check=True).stdout  # the idle fast path
    proc = project.icc("run", "--json", "--at", at(2), check=True)
    data = json.loads(proc.stdout)
    assert data["runs"] == [] and data["failed"] is False
    iso_in_zone(data["slot"], "+05:30")


def test_run_json_with_a_failed_job_exits_1(project: Project) -> None:
    scanned(project)
    project.write_plugin(PLUGIN.replace("daily().at(3)", "every_minute()"))
    project.icc("scan", check=True)
    proc = project.icc("run", "--json", "--at", at(0))
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    boom = next(r for r in data["runs"] if r["job"] == "boom")
    assert data["failed"] is True and boom["outcome"] == "failed" and boom["detail"]


def test_exec_json_sends_the_live_output_to_stderr_and_stores_it_in_the_document(project: Project) -> None:
    scanned(project)
    project.icc("scan", check=True)
    proc = project.icc("exec", "fg", "--json", check=True)
    data = json.loads(proc.stdout)
    assert "hello from say" in proc.stderr and "to stderr" in proc.stderr
    assert (data["job"], data["kind"], data["outcome"], data["exit_code"]) == ("fg", "manual", "succeeded", 0)
    assert "hello from say" in data["output"] and "to stderr" in data["output"]
    assert data["id"] == project.runs("fg")[-1]["id"]
    iso_in_zone(data["started_at"], "+05:30")
    iso_in_zone(data["ended_at"], "+05:30")
    failed = project.icc("exec", "boom", "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["outcome"] == "failed" and "about to fail" in failed.stderr
    missing = project.icc("exec", "nope", "--json")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("error: no job named 'nope'") and len(missing.stderr.splitlines()) == 1


def _failed_messages(project: Project) -> list[dict[str, Any]]:
    project.config.write_text(project.config.read_text() + "\n[icc.queues.async]\nretries = 1\ndelay = 0\n")
    config = load_config(project.config)
    for i in (1, 2):
        dispatch("poison", {"i": i}, queue="async", config=config)
    project.icc("consume", "async", "--stop-when-empty", "--time-limit", "20", check=True)
    listed = project.icc("failed", "list", "--json", check=True)
    data: list[dict[str, Any]] = json.loads(listed.stdout)  # one document: a list
    return data


def test_failed_list_and_show_json_carry_iso_times(project: Project) -> None:
    scanned(project)
    messages = _failed_messages(project)
    assert [json.loads(m["payload"]) for m in messages] == [{"i": 1}, {"i": 2}]
    for m in messages:
        iso_in_zone(m["created_at"], "+05:30")
        iso_in_zone(m["failed_at"], "+05:30")
        assert m["attempts"] == 2 and all(iso_in_zone(e["at"], "+05:30") for e in m["errors"])
    shown = json.loads(project.icc("failed", "show", str(messages[0]["id"]), "--json", check=True).stdout)
    assert shown == messages[0]
    assert json.loads(project.icc("failed", "list", "--json", "--queue", "mail", check=True).stdout) == []
