"""The consume:<queue> cron jobs run the consumer in a process forked from the tick (no second interpreter),
keep their time limit and job timeout, and with consumers.skip_empty are not started for an empty queue."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from icc.config import ConfigError, load_config
from icc.queue.dispatch import dispatch
from projectkit import Project, at

HANDLERS = """
def record(payload):
    with open(os.path.join(os.environ["MARKER_DIR"], "handled"), "a") as f:
        cmdline = open("/proc/self/cmdline", "rb").read().replace(b"\\0", b" ").decode()
        f.write(f"{payload['i']} {os.getpid()} {cmdline}\\n")


def hang_catching_everything(payload):
    while True:
        try:
            time.sleep(1)
        except BaseException:
            pass


@icc.hookimpl
def register_handlers(register):
    register("record", record, queue="mail")
    register("hang", hang_catching_everything)
"""


def cron_project(project: Project, extra: str = "") -> None:
    project.write_config(f'[icc.consumers]\nmode = "cron"\ntime_limit = 1\n{extra}')
    project.write_plugin(HANDLERS)
    project.icc("scan", check=True)


def send(project: Project, name: str, queue: str, i: int = 0) -> None:
    dispatch(name, {"i": i}, queue=queue, config=load_config(project.config))


def finished(project: Project, *jobs: str) -> list[dict[str, Any]]:
    """The runs of ``jobs`` once every one of them has ended."""

    def done() -> bool:
        runs = [r for r in project.runs() if r["job"] in jobs]
        return bool(runs) and all(r["outcome"] not in ("pending", "running") for r in runs)

    project.wait_for(done, timeout=60, what=f"the runs of {', '.join(jobs)} to end")
    return [r for r in project.runs() if r["job"] in jobs]


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc/PID/cmdline")
def test_cron_consumer_runs_in_a_fork_of_the_tick_not_a_new_interpreter(project: Project) -> None:
    cron_project(project)
    send(project, "record", "mail", 7)
    tick = project.icc("run", "--at", at(0), check=True)
    assert "consume:mail" in tick.stdout
    [run] = finished(project, "consume:mail")
    assert run["outcome"] == "succeeded", run
    assert "consumed 1 message (1 handled" in run["output"]
    [line] = project.marker_lines("handled")
    number, pid, cmdline = line.split(" ", 2)
    assert number == "7"
    # Forked from the tick's supervisor (titled by icc), not a new `icc consume` interpreter.
    assert cmdline.startswith("icc: job consume:mail (slot 10:00)") and " consume " not in cmdline
    assert int(pid) != run["pid"]  # its own process, under the run's supervisor


def test_cron_consumer_ignoring_its_interruption_still_ends_within_its_minute(project: Project) -> None:
    cron_project(project, 'queues = ["async"]\n')
    send(project, "hang", "async")
    project.icc("run", "--at", at(0), check=True)
    [run] = finished(project, "consume:async")
    # time_limit 1 s + grace 1 s: the consumer abandons the handler and ends its process (exit 1).
    assert run["outcome"] == "failed" and run["exit_code"] == 1, run
    assert run["ended_at"] - run["started_at"] < 60
    db = sqlite3.connect(project.state_dir / "queue.sqlite3")
    try:
        errors = db.execute("SELECT errors FROM messages UNION ALL SELECT errors FROM failed").fetchall()
    finally:
        db.close()
    assert "still running at the consumer" in str(errors) and "the consumer exited without it" in str(errors)


def test_skip_empty_starts_no_consumer_for_an_empty_queue(project: Project) -> None:
    cron_project(project, "skip_empty = true\n")
    project.icc("run", "--at", at(0), check=True)
    # The condition is evaluated by each run's supervisor (the tick runs no user code): the runs were claimed.
    runs = {r["job"]: r for r in finished(project, "consume:mail", "consume:async")}
    assert runs["consume:mail"]["outcome"] == "skipped" and runs["consume:mail"]["task_pid"] is None
    assert runs["consume:async"]["outcome"] == "skipped"
    assert not (project.state_dir / "queue.sqlite3").exists()  # the count creates nothing

    send(project, "record", "mail", 1)
    project.icc("run", "--at", at(1), check=True)
    [mail] = [
        r for r in finished(project, "consume:mail") if r["slot"] is not None and r["outcome"] != "skipped"
    ]
    assert mail["outcome"] == "succeeded" and "consumed 1 message" in mail["output"]
    later = [r for r in project.runs() if r["job"] == "consume:async"]
    assert [r["outcome"] for r in later] == ["skipped", "skipped"]


def test_skip_empty_still_starts_the_consumer_of_a_queue_with_only_a_delayed_message(
    project: Project,
) -> None:
    cron_project(project, 'skip_empty = true\nqueues = ["mail"]\n')
    dispatch("record", {"i": 2}, queue="mail", delay=3600, config=load_config(project.config))
    project.icc("run", "--at", at(0), check=True)
    [run] = finished(project, "consume:mail")
    assert run["outcome"] == "succeeded", run  # started: the message is there, just not due yet


def test_consumers_skip_empty_is_a_boolean(tmp_path: Path) -> None:
    config = tmp_path / "icc.toml"
    config.write_text("[icc.consumers]\nskip_empty = true\n")
    assert load_config(config, environ={}).consumers.skip_empty is True
    assert load_config(config, environ={"ICC_CONSUMERS_SKIP_EMPTY": "0"}).consumers.skip_empty is False
    config.write_text('[icc.consumers]\nskip_empty = "yes"\n')
    with pytest.raises(ConfigError, match=r"'skip_empty' in \[icc.consumers\] must be true or false"):
        load_config(config, environ={})


def test_skip_empty_starts_the_consumer_when_the_queue_cannot_be_counted(project: Project) -> None:
    cron_project(project, 'skip_empty = true\nqueues = ["mail"]\n')
    project.state_dir.mkdir(exist_ok=True)
    (project.state_dir / "queue.sqlite3").write_bytes(b"not a database, but not empty either" * 100)
    project.icc("run", "--at", at(0), check=True)
    [run] = finished(project, "consume:mail")
    assert run["outcome"] == "failed" and run["exit_code"] == 2, run  # started, and it said what is wrong
    assert run["output"].startswith("error: ") and "queue.sqlite3" in run["output"], run["output"]
    assert "Traceback" not in run["output"]
