"""Knowing what happened: after_run with a RunResult for every outcome, per-job callbacks, output, history."""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime
from typing import Any

from projectkit import Project, at, slot

OBSERVER = """
import json
from datetime import datetime


def _iso(value):
    return value.isoformat() if isinstance(value, datetime) else value


@icc.hookimpl
def after_run(job, run, result):
    record = {
        "job": job.name,
        "run_id": run.run_id,
        "slot": _iso(run.slot),
        "kind": run.kind,
        "pid": os.getpid(),
        "is_result": type(result).__name__ == "RunResult",
        **{k: _iso(getattr(result, k)) for k in
           ("outcome", "exit_code", "error", "output", "duration", "started_at", "ended_at")},
    }
    with open(os.path.join(os.environ["MARKER_DIR"], "after.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\\n")
"""

TASKS = """
def ok():
    print("hello out")
    print("hello err", file=sys.stderr)

def bad():
    print("bad out")
    sys.exit(3)

def slow():
    time.sleep(30)

def long():
    open(os.path.join(os.environ["MARKER_DIR"], "long-started"), "a").close()
    time.sleep(60)

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(ok, name="ok").every_minute().timezone("Asia/Kolkata")
    scheduler.add(bad, name="bad").every_minute()
    scheduler.add(slow, name="slow").every_minute().timeout(0.5)
    scheduler.add(ok, name="cond").every_minute().when(lambda: False)
    scheduler.add(long, name="long").every_minute().in_background()
"""


def observed(project: Project, tasks: str, extra: str = "") -> None:
    project.write_config(extra, plugins=("tasks_plugin", "observer"))
    project.write_plugin(tasks)
    project.write_plugin(OBSERVER, name="observer")
    project.icc("scan", check=True)


def reports(project: Project) -> list[dict[str, Any]]:
    return [json.loads(line) for line in project.marker_lines("after.jsonl")]


def report(project: Project, job: str, outcome: str) -> dict[str, Any]:
    found = [r for r in reports(project) if r["job"] == job and r["outcome"] == outcome]
    assert found, f"no after_run for {job} {outcome}: {reports(project)}"
    return found[0]


def test_after_run_gets_a_run_result_for_every_outcome(project: Project) -> None:
    observed(project, TASKS)
    project.icc("run", "--at", at(0))
    project.wait_for(lambda: (project.root / "long-started").exists(), what="the background job")
    project.icc("run", "--at", at(1))  # long overlaps: skipped in its background supervisor
    project.wait_for(
        lambda: any(r["job"] == "long" and r["outcome"] == "skipped" for r in reports(project)),
        what="after_run of the overlapping run",
    )
    first_long = project.runs("long")[0]
    os.kill(first_long["pid"], signal.SIGKILL)  # its supervisor dies: the next tick records it abandoned
    project.wait_for(lambda: not os.path.exists(f"/proc/{first_long['pid']}/stat"), what="supervisor gone")
    project.icc("run", "--at", at(3))  # slot 2 was missed by every job

    ok = report(project, "ok", "succeeded")
    assert ok["is_result"] and ok["exit_code"] == 0 and ok["error"] is None
    assert "hello out" in ok["output"] and "hello err" in ok["output"]
    assert ok["duration"] >= 0 and ok["kind"] == "scheduled"
    started, ended = datetime.fromisoformat(ok["started_at"]), datetime.fromisoformat(ok["ended_at"])
    assert started.tzinfo is not None and started <= ended
    # The slot is aware, in the job's own zone.
    assert ok["slot"] == _in_zone(slot(0), "Asia/Kolkata")
    assert ok["slot"].endswith("+05:30")

    bad = report(project, "bad", "failed")
    assert bad["exit_code"] == 3 and bad["error"] == "exit code 3" and "bad out" in bad["output"]
    timed_out = report(project, "slow", "timed_out")
    assert "timed out after 0.5s" in timed_out["error"]
    cond = report(project, "cond", "skipped")
    assert "condition" in cond["error"] and cond["duration"] is None and cond["started_at"] is None
    overlap = report(project, "long", "skipped")
    assert "still running" in overlap["error"]
    abandoned = report(project, "long", "abandoned")
    assert abandoned["run_id"] == first_long["id"] and "died" in abandoned["error"]
    missed = report(project, "ok", "missed")
    assert missed["kind"] == "missed" and missed["slot"] == _in_zone(slot(2), "Asia/Kolkata")
    assert missed["run_id"] == next(r["id"] for r in project.runs("ok") if r["slot"] == slot(2))
    # Every recorded row was reported once.
    finished = [r for r in project.runs() if r["outcome"] not in ("pending", "running")]
    assert sorted(r["run_id"] for r in reports(project)) == sorted(r["id"] for r in finished)


def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _in_zone(epoch: int, zone: str) -> str:
    return datetime.fromtimestamp(epoch, tz=_zone(zone)).isoformat()


def test_after_run_gets_stopped_when_icc_run_is_stopped(project: Project) -> None:
    observed(
        project,
        """
        def slow():
            open(os.path.join(os.environ["MARKER_DIR"], "started"), "w").close()
            time.sleep(60)

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(slow, name="slow").every_minute()
        """,
    )
    tick = project.popen("run", "--at", at(0))
    project.wait_for(lambda: (project.root / "started").exists(), what="the job to start")
    tick.send_signal(signal.SIGTERM)
    tick.communicate(timeout=30)
    assert tick.returncode == 1
    stopped = report(project, "slow", "stopped")
    assert stopped["error"] == "stopped: icc run received SIGTERM"
    assert project.runs("slow")[0]["outcome"] == "stopped"


CALLBACKS = """
def _log(what):
    def callback(arg):
        line = {"what": what, "type": type(arg).__name__,
                "outcome": getattr(arg, "outcome", None), "job": getattr(arg, "job", None)}
        with open(os.path.join(os.environ["MARKER_DIR"], "callbacks.jsonl"), "a") as f:
            f.write(__import__("json").dumps(line) + "\\n")
    return callback

def broken(result):
    raise RuntimeError("callback exploded")

def ok():
    pass

def bad():
    sys.exit(2)

@icc.hookimpl
def schedule(scheduler):
    for name, task in (("ok", ok), ("bad", bad)):
        (scheduler.add(task, name=name).every_minute()
            .before(_log(name + " before")).after(_log(name + " after"))
            .on_success(_log(name + " success")).on_failure(_log(name + " failure"))
            .after(broken))

@icc.hookimpl
def after_run(job, run, result):
    if job.name == "ok":
        raise ValueError("hook exploded")
"""


def test_callbacks_run_per_outcome_and_one_that_raises_is_stored_on_the_run(project: Project) -> None:
    project.write_plugin(CALLBACKS)
    project.icc("scan", check=True)
    proc = project.icc("run", "--at", at(0))
    lines = [json.loads(line) for line in project.marker_lines("callbacks.jsonl")]
    assert [(c["what"], c["type"], c["outcome"]) for c in lines] == [
        ("ok before", "RunContext", None),
        ("ok after", "RunResult", "succeeded"),
        ("ok success", "RunResult", "succeeded"),
        ("bad before", "RunContext", None),
        ("bad after", "RunResult", "failed"),
        ("bad failure", "RunResult", "failed"),
    ]
    ok = project.runs("ok")[0]
    assert ok["outcome"] == "succeeded"  # never changed by an observer
    assert "after callback broken failed: RuntimeError: callback exploded" in ok["error"]
    assert "after_run hook of plugin 'tasks_plugin' failed" in ok["error"] and "hook exploded" in ok["error"]
    bad = project.runs("bad")[0]
    assert bad["outcome"] == "failed" and bad["error"].startswith("exit code 2; after callback broken")
    assert "callback exploded" in proc.stderr and "hook exploded" in proc.stderr


def test_old_after_run_with_outcome_keeps_working(project: Project) -> None:
    project.write_plugin(
        """
        def ok():
            pass

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(ok, name="ok").every_minute()

        @icc.hookimpl
        def after_run(job, run, outcome):
            with open(os.path.join(os.environ["MARKER_DIR"], "old"), "a") as f:
                f.write(f"{job.name} {outcome}\\n")
        """
    )
    project.icc("scan", check=True)
    project.icc("exec", "ok", check=True)
    assert project.marker_lines("old") == ["ok succeeded"]


# --- output ---------------------------------------------------------------------------------------------


def test_exec_streams_the_output_live_then_prints_the_outcome(project: Project) -> None:
    project.write_plugin(
        """
        def chatty():
            print("first line", flush=True)
            print("to stderr", file=sys.stderr, flush=True)
            go = os.path.join(os.environ["MARKER_DIR"], "go")
            while not os.path.exists(go):
                time.sleep(0.02)
            print("second line")
            sys.exit(4)

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(chatty, name="chatty").every_minute()
        """
    )
    project.icc("scan", check=True)
    proc = project.popen("exec", "chatty")
    assert proc.stdout is not None
    # Seen while the job still runs (it waits for "go"): streamed, not printed at the end.
    assert proc.stdout.readline() == "first line\n"
    assert proc.stdout.readline() == "to stderr\n"
    (project.root / "go").touch()
    rest, _err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert rest.startswith("second line\n")
    (run,) = project.runs("chatty")
    assert rest.rstrip().endswith(
        f"icc exec: chatty run {run['id']} failed in " + rest.split(" in ")[-1].strip()
    )
    assert "failed" in rest and "exit code 4" in rest
    assert run["output"] == "first line\nto stderr\nsecond line\n"


def _printer(project: Project, extra: str = "") -> None:
    project.write_config(extra)
    project.write_plugin(
        """
        def noisy():
            print("HEAD " + "h" * 2000)
            print("m" * 5000)
            print("t" * 2000 + " TAIL")

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(noisy, name="noisy").every_minute()
            scheduler.add(noisy, name="quiet").every_minute()
        """
    )
    project.icc("scan", check=True)


def test_logs_prints_a_runs_stored_output(project: Project) -> None:
    _printer(project)
    project.icc("exec", "noisy")
    project.icc("run", "--at", at(0), check=True)
    first, second = project.runs("noisy")
    assert project.icc("logs", "noisy", check=True).stdout == second["output"]
    assert project.icc("logs", "noisy", "--run", str(first["id"]), check=True).stdout == first["output"]
    data = json.loads(project.icc("logs", "noisy", "--json", check=True).stdout)
    assert (data["job"], data["id"], data["outcome"]) == ("noisy", second["id"], "succeeded")
    assert data["output"] == second["output"] and data["started_at"].endswith("+00:00")
    for args, says in [
        (("logs", "nope"), "no job named 'nope'"),
        (("logs", "noisy", "--run", "999"), "job 'noisy' has no run 999"),
        (("logs", "noisy", "--run", str(project.runs("quiet")[0]["id"])), "has no run"),
        (("logs", "noisy", "--run", "0"), "--run 0: must be a whole number"),
        (("logs", "noisy", "--run", "99999999999999999999"), "must be a whole number"),
    ]:
        proc = project.icc(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and says in proc.stderr, (args, proc.stderr)


def test_output_limit_keeps_the_head_and_the_tail(project: Project) -> None:
    _printer(project, 'output_limit = "1KiB"\n')
    project.icc("exec", "noisy")
    output = project.runs("noisy")[0]["output"]
    assert output.startswith("HEAD hhh") and output.endswith("ttt TAIL\n")
    total = 2006 + 5001 + 2006
    assert f"\n[... {total - 1024} bytes of output left out ...]\n" in output
    assert len(output) == 1024 + len(f"\n[... {total - 1024} bytes of output left out ...]\n")
    # The default keeps 64 KiB: all of it.
    _printer(project)
    project.icc("exec", "quiet")
    assert len(project.runs("quiet")[0]["output"]) == total


def test_an_invalid_output_limit_is_one_line(project: Project) -> None:
    _printer(project)
    project.write_config('output_limit = "lots"\n')
    proc = project.icc("exec", "noisy")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "'output_limit'" in proc.stderr and "64KiB" in proc.stderr


def test_status_job_shows_the_last_runs_output_tail(project: Project) -> None:
    project.write_plugin(
        """
        def counting():
            for i in range(50):
                print(f"line {i}")

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(counting, name="counting").every_minute()
        """
    )
    project.icc("scan", check=True)
    project.icc("exec", "counting", check=True)
    out = project.icc("status", "counting", check=True).stdout
    assert "line 49" in out and "line 30" in out and "line 29" not in out
    assert "icc logs counting" in out


def test_send_and_append_output_to_a_file(project: Project) -> None:
    project.write_plugin(
        """
        def hello():
            print("hello", os.environ.get("N", "?"))

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(hello, name="sent").every_minute().send_output_to("logs/sent.log")
            scheduler.add(["sh", "-c", "echo cmd; echo err >&2"], name="appended").every_minute() \\
                .append_output_to("appended.log")
        """
    )
    (project.root / "logs").mkdir()
    project.icc("scan", check=True)
    project.icc("run", "--at", at(0), check=True)
    project.icc("run", "--at", at(1), check=True)
    sent, appended = project.root / "logs" / "sent.log", project.root / "appended.log"
    assert sent.read_text() == "hello ?\n"  # replaced at each run
    assert appended.read_text() == "cmd\nerr\ncmd\nerr\n"
    assert sent.stat().st_mode & 0o777 == 0o600 and appended.stat().st_mode & 0o777 == 0o600
    # A file that cannot be opened does not stop the run; the reason is stored with it.
    sent.unlink()
    (project.root / "logs").rename(project.root / "gone")  # its directory is missing
    project.icc("exec", "sent", check=True)
    run = project.runs("sent")[-1]
    assert run["outcome"] == "succeeded" and "could not open its output file" in run["error"]
    # Something that is not a regular file (a directory, a FIFO) is refused: the run fails, not started.
    (project.root / "logs").mkdir()
    sent.mkdir()
    assert project.icc("exec", "sent").returncode == 1
    run = project.runs("sent")[-1]
    assert run["outcome"] == "failed" and "is a directory, not a regular file" in run["error"]


# --- history --------------------------------------------------------------------------------------------


def test_history_keeps_real_runs_apart_and_always_the_last_success_and_failure(project: Project) -> None:
    project.write_config("keep_runs = 2\nkeep_skipped = 3\n")
    project.write_plugin(
        """
        def flaky():
            if os.path.exists(os.path.join(os.environ["MARKER_DIR"], "fail")):
                sys.exit(1)

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(flaky, name="flaky").every_minute()
        """
    )
    project.icc("scan", check=True)
    fail = project.root / "fail"
    fail.touch()
    project.icc("run", "--at", at(0))  # the failure
    fail.unlink()
    for minute in (1, 2, 3):
        project.icc("run", "--at", at(minute), check=True)
    project.icc("run", "--at", at(20), check=True)  # slots 4 to 19 missed
    rows = project.runs("flaky")
    real = [(r["slot"], r["outcome"]) for r in rows if r["outcome"] != "missed"]
    assert real == [(slot(0), "failed"), (slot(3), "succeeded"), (slot(20), "succeeded")]
    assert [r["slot"] for r in rows if r["outcome"] == "missed"] == [slot(17), slot(18), slot(19)]
    job = next(j for j in project.status()["jobs"] if j["name"] == "flaky")
    assert job["last_success"]["slot"] == _in_zone(slot(20), "UTC")
    assert job["last_failure"]["slot"] == _in_zone(slot(0), "UTC")
    assert job["last_failure"]["outcome"] == "failed" and job["last_failure"]["error"] == "exit code 1"
    text = project.icc("status", "flaky", check=True).stdout
    assert "last failure: failed" in text and "last success: succeeded" in text
    table = project.icc("status", check=True).stdout
    assert "last success" in table and "last failure" in table


def test_status_names_a_zone_only_where_it_differs_and_marks_disabled_jobs(project: Project) -> None:
    project.env["ICC_TIMEZONE"] = "Europe/Berlin"
    project.write_plugin(
        """
        def task():
            pass

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(task, name="local").daily().at(3)
            scheduler.add(task, name="tokyo").daily().at(3).timezone("Asia/Tokyo")
            scheduler.add(task, name="same").daily().at(3).timezone("Europe/Berlin")
        """
    )
    project.icc("scan", check=True)
    project.icc("disable", "same", check=True)
    jobs = {j["name"]: j for j in project.status()["jobs"]}
    assert jobs["local"]["schedule"]["description"] == "daily at 03:00"
    assert jobs["same"]["schedule"]["description"] == "daily at 03:00"
    assert jobs["tokyo"]["schedule"]["description"] == "daily at 03:00 (Asia/Tokyo)"
    assert jobs["local"]["schedule"]["timezone"] == "Europe/Berlin"
    assert "disabled" in project.icc("status", "same", check=True).stdout.splitlines()[0]
    assert jobs["same"]["enabled"] is False


def test_after_run_gets_a_stand_in_job_when_its_plugin_no_longer_loads(project: Project) -> None:
    observed(
        project,
        """
        def gone():
            pass

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["sh", "-c", "echo still here"], name="cmd").every_minute()
            scheduler.add(gone, name="gone").every_minute()
        """,
    )
    project.write_plugin("raise ImportError('broken deploy')\n")
    project.icc("run", "--at", at(0))
    cmd = report(project, "cmd", "succeeded")  # run from its stored argv, reported with a stand-in job
    assert cmd["output"] == "still here\n"
    gone = report(project, "gone", "failed")
    assert "could not be loaded from its plugin" in gone["error"]
