"""Operating icc: `icc pause`/`resume`, `icc metrics`, `icc queue stats`, stopping consumers (real processes)."""

from __future__ import annotations

import json
import os
import stat
import time
from typing import Any

from icc.config import load_config
from icc.queue.dispatch import dispatch
from projectkit import Project, at, slot
from prometheus_client.parser import text_string_to_metric_families

PLUGIN = """
def mark(name):
    def task():
        with open(os.path.join(os.environ["MARKER_DIR"], name), "a") as f:
            f.write("ran\\n")
    task.__name__ = task.__qualname__ = name
    return task

def boom():
    raise RuntimeError("boom")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("a"), name="a").every_minute()
    scheduler.add(mark("keep"), name="keep").every_minute().even_when_paused()
    scheduler.add(boom, name="boom").every_minute()
    scheduler.add(mark("odd"), name='we"ird\\\\job').every_minute()

def sleepy(payload):
    with open(os.path.join(os.environ["MARKER_DIR"], "started"), "a") as f:
        f.write("started\\n")
    time.sleep(payload["sleep"])
    if payload.get("until"):  # runs until the test creates this file (at most 60 s)
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(os.environ["MARKER_DIR"], payload["until"])):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    with open(os.path.join(os.environ["MARKER_DIR"], "finished"), "a") as f:
        f.write("finished\\n")

@icc.hookimpl
def register_handlers(register):
    register("sleepy", sleepy)
"""


def scanned(project: Project) -> None:
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)


def outcomes(project: Project, job: str) -> dict[int, tuple[str, str | None]]:
    return {r["slot"]: (r["outcome"], r["error"]) for r in project.runs(job)}


def send(project: Project, name: str, payload: dict[str, Any], *, delay: float = 0.0) -> int:
    return dispatch(name, payload, queue="async", delay=delay, config=load_config(project.config))


# -- pause and resume ------------------------------------------------------------------------------------------


def test_a_paused_tick_runs_only_even_when_paused_jobs_and_records_the_others_skipped_paused(
    project: Project,
) -> None:
    scanned(project)
    project.icc("run", "--at", at(0))
    done = project.icc("pause", "--reason", "deploy 42", check=True)
    assert "PAUSED" in done.stdout and "deploy 42" in done.stdout
    project.icc("run", "--at", at(1))
    assert len(project.marker_lines("keep")) == 2
    assert len(project.marker_lines("a")) == 1
    assert outcomes(project, "a")[slot(1)] == ("skipped", "paused")
    assert outcomes(project, "boom")[slot(1)] == ("skipped", "paused")
    data = project.status()
    assert data["paused"]["reason"] == "deploy 42"
    assert data["paused"]["until"] is None and data["paused"]["since"] is not None
    assert data["paused"]["queues"] is False
    text = project.icc("status", check=True).stdout
    assert "PAUSED since" in text and "deploy 42" in text
    assert "PAUSED since" in project.icc("status", "a", check=True).stdout
    assert "resumed" in project.icc("resume", check=True).stdout
    assert project.status()["paused"] is None
    project.icc("run", "--at", at(2))
    assert len(project.marker_lines("a")) == 2
    assert "not paused" in project.icc("resume", check=True).stdout


def test_pause_until_in_the_past_is_one_line_error_and_pauses_nothing(project: Project) -> None:
    scanned(project)
    proc = project.icc("pause", "--until", "2020-01-01T00:00")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "in the past" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert project.status()["paused"] is None
    bad = project.icc("pause", "--until", "tomorrow")
    assert bad.returncode == 2 and "--until" in bad.stderr


def test_a_pause_with_until_ends_by_itself_at_the_first_tick_past_it(project: Project) -> None:
    scanned(project)
    project.icc("run", "--at", at(0))
    project.icc("pause", "--until", at(3), check=True)
    assert project.status()["paused"]["until"] is not None
    project.icc("run", "--at", at(1))
    assert outcomes(project, "a")[slot(1)] == ("skipped", "paused")
    project.icc("run", "--at", at(3))  # the pause ends at this minute
    assert outcomes(project, "a")[slot(3)][0] == "succeeded"
    # An --at tick does not lift it for real: on the real clock (two days before at(3)) it is still in force.
    assert project.status()["paused"] is not None
    later = json.loads(project.icc("status", "--json", "--at", at(3), check=True).stdout)
    assert later["paused"] is None


def test_an_at_tick_past_a_pause_end_runs_its_slot_but_never_ends_the_pause(project: Project) -> None:
    scanned(project)
    project.icc("pause", "--until", at(3), check=True)
    project.icc("run", "--at", at(60 * 24 * 150))  # five months later: the pause is over there
    assert project.status()["paused"]["until"] is not None  # but not on the real clock: it stays
    before = len(project.marker_lines("a"))
    proc = project.icc("run")  # a real tick: still paused
    assert "skipped" in proc.stdout
    assert len(project.marker_lines("a")) == before
    real = [r for r in project.runs("a") if r["slot"] < slot(0)]
    assert [(r["outcome"], r["error"]) for r in real] == [("skipped", "paused")]


def test_a_paused_store_with_nothing_due_still_goes_to_the_full_tick(project: Project) -> None:
    """The idle fast path hands a paused store over; the full tick there runs nothing it should not."""
    scanned(project)
    project.icc("run", "--at", at(0))
    project.icc("pause", check=True)
    proc = project.icc("run", "--at", at(0, 30))  # the same minute: nothing due
    assert proc.returncode == 0
    assert (
        "nothing due" in proc.stdout and "(UTC)" in proc.stdout
    )  # the full tick's words, not the fast path's
    assert len(project.marker_lines("a")) == 1


def test_pause_queues_holds_consumers_and_a_plain_pause_does_not(project: Project) -> None:
    scanned(project)
    send(project, "sleepy", {"sleep": 0})
    project.icc("pause", "--queues", check=True)
    held = project.icc("consume", "async", "--stop-when-empty", "--time-limit", "20")
    assert held.returncode == 0, held.stderr
    assert "queues paused" in held.stderr  # the summary is a log line
    assert not project.marker_lines("finished")
    project.icc("pause", check=True)  # the queues are no longer paused
    drained = project.icc("consume", "async", "--stop-when-empty", "--time-limit", "20")
    assert drained.returncode == 0, drained.stderr
    assert project.marker_lines("finished") == ["finished"]


def test_an_idle_consumer_notices_a_pause_given_while_it_waits_and_the_end_of_it(project: Project) -> None:
    # An idle consumer reads the pause record again only when the state database's files change (issue 17):
    # `icc pause --queues` and `icc pause` are such changes, seen at its next poll.
    scanned(project)
    consumer = project.popen("consume", "async", "--time-limit", "60", "--sleep", "0.2")
    try:
        time.sleep(1.5)  # idle: polled a few times, the answers kept
        project.icc("pause", "--queues", check=True)
        time.sleep(1.0)
        send(project, "sleepy", {"sleep": 0})
        time.sleep(1.5)
        assert not project.marker_lines("finished")  # held
        project.icc("pause", check=True)  # the queues are no longer paused
        project.wait_for(lambda: project.marker_lines("finished") == ["finished"], what="the message handled")
    finally:
        consumer.terminate()
        consumer.wait(30)


# -- metrics ----------------------------------------------------------------------------------------------------


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(found: dict[str, Any], name: str, **labels: str) -> float:
    family = found[name.removesuffix("_total")]
    for s in family.samples:
        if s.name == name and s.labels == labels:
            return float(s.value)
    raise AssertionError(f"no sample {name}{labels} in {family.samples}")


def test_metrics_after_real_runs_and_a_queued_message_parse_with_prometheus_client(project: Project) -> None:
    scanned(project)
    started = time.time()
    project.icc("run", "--at", at(0))
    project.icc("run", "--at", at(3))  # a skipped (policy) gap: slots 1 and 2 are missed
    send(project, "sleepy", {"sleep": 0})
    proc = project.icc("metrics", check=True)
    found = families(proc.stdout)
    assert sample(found, "icc_job_runs_total", job="a", outcome="succeeded") == 2
    assert sample(found, "icc_job_runs_total", job="boom", outcome="failed") == 2
    assert sample(found, "icc_job_missed_total", job="a") == 2
    assert started <= sample(found, "icc_job_last_success_timestamp_seconds", job="a") <= time.time()
    assert sample(found, "icc_job_last_run_timestamp_seconds", job="boom") > 0
    assert sample(found, "icc_job_last_duration_seconds", job="a") >= 0
    assert sample(found, "icc_job_running", job="a") == 0
    assert sample(found, "icc_job_runs_total", job='we"ird\\job', outcome="succeeded") == 2
    assert sample(found, "icc_queue_messages", queue="async") == 1
    assert sample(found, "icc_queue_oldest_message_age_seconds", queue="async") >= 0
    assert sample(found, "icc_failed_messages", queue="async") == 0
    assert sample(found, "icc_paused") == 0
    assert sample(found, "icc_last_tick_timestamp_seconds") == slot(3)
    assert found["icc_job_runs"].type == "counter"
    project.icc("pause", check=True)
    assert sample(families(project.icc("metrics", check=True).stdout), "icc_paused") == 1


def test_metrics_textfile_is_replaced_atomically_and_readable_by_node_exporter(project: Project) -> None:
    scanned(project)
    project.icc("run", "--at", at(0))
    target = project.root / "textfile" / "icc.prom"
    target.parent.mkdir()
    target.write_text("old\n")
    old_inode = target.stat().st_ino
    project.icc("metrics", "--textfile", str(target), check=True)
    assert target.stat().st_ino != old_inode  # a new file renamed into place, never rewritten in place
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sample(families(target.read_text()), "icc_job_runs_total", job="a", outcome="succeeded") == 1
    assert [p.name for p in target.parent.iterdir()] == ["icc.prom"]  # no temporary file left


def test_metrics_textfile_in_a_missing_directory_is_one_line_error(project: Project) -> None:
    scanned(project)
    proc = project.icc("metrics", "--textfile", str(project.root / "nowhere" / "icc.prom"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "cannot write" in proc.stderr


# -- queue stats and stopping consumers ----------------------------------------------------------------------


def test_queue_stats_counts_ready_delayed_in_flight_and_failed(project: Project) -> None:
    scanned(project)
    send(project, "sleepy", {"sleep": 0})
    send(project, "sleepy", {"sleep": 0}, delay=3600)
    data = {q["queue"]: q for q in json.loads(project.icc("queue", "stats", "--json", check=True).stdout)}
    assert data["async"]["ready"] == 1 and data["async"]["delayed"] == 1 and data["async"]["in_flight"] == 0
    assert data["async"]["messages"] == 2 and data["async"]["oldest_age"] >= 0
    assert data["mail"]["messages"] == 0 and data["mail"]["oldest_age"] is None
    send(project, "sleepy", {"sleep": 30})
    worker = project.popen("consume", "async", "--time-limit", "60")
    try:
        project.wait_for(lambda: project.marker_lines("started"), what="the handler to start")
        data = {q["queue"]: q for q in json.loads(project.icc("queue", "stats", "--json").stdout)}
        assert data["async"]["in_flight"] == 1
        [(owner, held)] = data["async"]["owners"].items()
        assert f":{worker.pid}:" in owner and held == 1
        assert "async" in project.icc("queue", "stats", check=True).stdout
    finally:
        worker.kill()
        worker.wait(timeout=10)


def test_stop_workers_stops_a_running_consumer_after_its_current_message(project: Project) -> None:
    scanned(project)
    # The first message runs until the stop request is made (a fixed sleep alone would race `icc queue
    # stop-workers` starting up on a loaded machine: the consumer would take the second message first), and
    # for at least 1 s, past the consumer's 0.5 s between looks at the stop requests.
    send(project, "sleepy", {"sleep": 1, "until": "go"})
    send(project, "sleepy", {"sleep": 0})
    worker = project.popen("consume", "async", "--time-limit", "60")
    project.wait_for(lambda: project.marker_lines("started"), what="the first handler to start")
    stopped = project.icc("queue", "stop-workers", check=True)
    assert "stop" in stopped.stdout
    (project.root / "go").touch()
    _out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "stop requested" in err  # the summary is a log line
    assert project.marker_lines("finished") == ["finished"]  # the current message was finished...
    data = {q["queue"]: q for q in json.loads(project.icc("queue", "stats", "--json").stdout)}
    assert data["async"]["ready"] == 1  # ...and the next one left for later
    # A consumer started after the request is not stopped by it.
    later = project.icc("consume", "async", "--stop-when-empty", "--time-limit", "20")
    assert "queues empty" in later.stderr
    assert project.marker_lines("finished") == ["finished", "finished"]
    assert project.icc("consume", "--stop", check=True).returncode == 0
    both = project.icc("consume", "--stop", "async")
    assert both.returncode == 2 and "no QUEUES" in both.stderr
    assert os.path.exists(project.state_dir / "queue.sqlite3")


def test_consume_without_queues_is_still_a_usage_error(project: Project) -> None:
    proc = project.icc("consume")
    assert proc.returncode == 2 and "QUEUES" in proc.stderr


def test_consumer_cron_jobs_run_through_a_pause_unless_the_queues_are_paused_too(project: Project) -> None:
    project.write_config('\n[icc.consumers]\nmode = "cron"\nqueues = ["async"]\ntime_limit = 1\n')
    scanned(project)
    project.icc("pause", "--queues", check=True)
    project.icc("run", "--at", at(0))
    assert outcomes(project, "consume:async")[slot(0)] == ("skipped", "paused")
    project.icc("pause", check=True)  # the queues are no longer paused
    project.icc("run", "--at", at(1))
    project.wait_for(
        lambda: outcomes(project, "consume:async")[slot(1)][0] == "succeeded", what="the consumer job"
    )
    assert outcomes(project, "a")[slot(1)] == ("skipped", "paused")


def test_even_when_paused_is_stored_in_the_definition_only_when_set() -> None:
    from icc.schedule import Schedule

    assert "even_when_paused" not in Schedule().definition()
    marked = Schedule().daily().even_when_paused()
    assert marked.definition()["even_when_paused"] is True
    assert Schedule.from_definition(marked.definition()).runs_when_paused
    assert not Schedule.from_definition(Schedule().definition()).runs_when_paused


def test_metrics_count_a_running_background_job(project: Project) -> None:
    project.write_plugin(
        """
        def wait():
            path = os.path.join(os.environ["MARKER_DIR"], "go")
            open(os.path.join(os.environ["MARKER_DIR"], "waiting"), "w").close()
            while not os.path.exists(path):
                time.sleep(0.05)

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(wait, name="wait").every_minute().in_background()
        """
    )
    project.icc("scan", check=True)
    project.icc("run", "--at", at(0), check=True)
    project.wait_for(lambda: (project.root / "waiting").exists(), what="the background run")
    project.wait_for(
        lambda: sample(families(project.icc("metrics").stdout), "icc_job_running", job="wait") == 1,
        what="icc_job_running 1",
    )
    (project.root / "go").touch()
    project.wait_for(lambda: outcomes(project, "wait")[slot(0)][0] == "succeeded", what="the run to end")
    found = families(project.icc("metrics", check=True).stdout)
    assert sample(found, "icc_job_running", job="wait") == 0
    assert sample(found, "icc_job_runs_total", job="wait", outcome="succeeded") == 1


def test_label_values_are_escaped_as_the_format_requires() -> None:
    from icc.cli.metrics import render
    from icc.report import JobMetrics, Metrics

    name = 'line\nbreak "quoted" back\\slash'
    text = render(Metrics((JobMetrics(name, runs={"succeeded": 3}),), (), paused=False, last_tick=None))
    assert sample(families(text), "icc_job_runs_total", job=name, outcome="succeeded") == 3
    assert (
        "\nicc_last_tick_timestamp_seconds " not in text
    )  # no tick yet: no sample rather than a made-up one
