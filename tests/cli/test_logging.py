"""Diagnostics through `logging`: `-v`, `--log-level`, `--log-format text|json`, `ICC_LOG_LEVEL` (real processes)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

from icc.config import load_config
from icc.queue.dispatch import dispatch
from projectkit import Project, at

PLUGIN = """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(["true"], name="t").every_minute()

def poison(payload):
    raise ValueError("poison " + str(payload["i"]))

@icc.hookimpl
def register_handlers(register):
    register("poison", poison)
"""


def failing_queue(project: Project) -> None:
    project.write_config("\n[icc.queues.async]\nretries = 1\ndelay = 0\n")
    project.config.write_text(
        project.config.read_text().replace('timezone = "UTC"', 'timezone = "Asia/Kolkata"')
    )
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    config = load_config(project.config)
    for i in (1, 2):
        dispatch("poison", {"i": i}, queue="async", config=config)


def test_log_format_json_makes_every_stderr_line_of_a_consumer_with_a_failing_handler_a_json_object(
    project: Project,
) -> None:
    failing_queue(project)
    proc = project.icc("--log-format", "json", "consume", "async", "--stop-when-empty", "--time-limit", "20")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    entries = [json.loads(line) for line in lines]  # every line: one JSON object
    assert len(entries) >= 3
    for entry in entries:
        assert set(entry) >= {"time", "level", "logger", "message"} and entry["logger"] == "icc"
        assert (
            datetime.fromisoformat(entry["time"]).utcoffset().total_seconds() == 5.5 * 3600
        )  # the configured zone
    messages = [e["message"] for e in entries]
    assert sum("moved to failed" in m for m in messages) == 2
    summary = entries[-1]
    assert summary["level"] == "info" and summary["message"].startswith("consumed 4 messages")
    assert Counter(lines).most_common(1)[0][1] == 1  # no line printed twice


def test_text_format_keeps_the_consumers_lines_as_they_were_and_prints_none_twice(project: Project) -> None:
    failing_queue(project)
    proc = project.icc("consume", "async", "--stop-when-empty", "--time-limit", "20")
    assert proc.returncode == 0 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert sum("moved to failed" in line for line in lines) == 2
    assert not any(
        line.startswith(("warning:", "{")) for line in lines
    )  # the consumer's lines keep no prefix
    assert lines[-1].startswith("consumed 4 messages (0 handled, 2 retried, 2 failed)")
    assert Counter(lines).most_common(1)[0][1] == 1
    quiet = project.icc("--log-level", "warning", "consume", "async", "--stop-when-empty")
    assert quiet.returncode == 0 and quiet.stderr == ""  # the summary is an info line


def test_verbose_shows_a_debug_line_the_default_level_hides(project: Project) -> None:
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    default = project.icc("queue", "stats", check=True)
    assert default.stderr == ""
    verbose = project.icc("-v", "queue", "stats", check=True)
    assert verbose.stdout == default.stdout
    assert verbose.stderr.splitlines() == [
        f"config {project.config}, state dir {project.state_dir}, timezone UTC, environment production"
    ]
    project.env["ICC_LOG_LEVEL"] = "debug"
    assert project.icc("queue", "stats", check=True).stderr == verbose.stderr
    assert project.icc("--log-level", "info", "queue", "stats", check=True).stderr == ""  # explicit wins


def test_errors_stay_one_line_with_exit_2_in_both_formats(project: Project) -> None:
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    text = project.icc("exec", "nope")
    assert text.returncode == 2 and text.stderr == "error: no job named 'nope'; known jobs: t\n"
    as_json = project.icc("--log-format", "json", "exec", "nope")
    assert as_json.returncode == 2 and len(as_json.stderr.splitlines()) == 1
    entry = json.loads(as_json.stderr)
    assert (entry["level"], entry["message"]) == ("error", "no job named 'nope'; known jobs: t")
    project.config.write_text(project.config.read_text() + "\nbogus = 1\n")
    broken = project.icc("--log-format", "json", "status")
    assert broken.returncode == 2 and json.loads(broken.stderr)["level"] == "error"
    assert project.icc("--log-level", "loud", "status").returncode == 2  # click's usage error


def test_status_warnings_are_log_lines_too(project: Project) -> None:
    project.write_plugin(PLUGIN)
    text = project.icc("status", check=True)
    assert text.stderr == "warning: never scanned; run `icc scan`\n"
    as_json = project.icc("--log-format", "json", "status", check=True)
    assert as_json.stdout == text.stdout
    entry = json.loads(as_json.stderr)
    assert (entry["level"], entry["message"]) == ("warning", "never scanned; run `icc scan`")


def test_a_due_run_logs_the_same_lines_in_text_and_json_at_each_level(project: Project) -> None:
    # `icc run` with a job due goes without click (icc.__main__.due_run), and logging is imported only when a
    # line is logged: each level and format still says the same.
    project.write_plugin(
        'if os.path.exists(os.path.join(os.environ["MARKER_DIR"], "broken")):\n'
        '    raise RuntimeError("broken at import")\n' + PLUGIN
    )
    project.icc("scan", check=True)
    (project.root / "broken").write_text("")  # each run's supervisor fails to load it: a warning each tick
    warning = "plugin tasks_plugin: RuntimeError: broken at import"
    debug = f"config {project.config}, state dir {project.state_dir}, timezone UTC, environment production"

    text = project.icc("run", "--quiet", "--at", at(0))
    assert text.returncode == 0, text.stderr  # a command job: it runs without its plugin
    (line,) = text.stderr.splitlines()
    assert line == f"warning: {warning}", text.stderr

    verbose = project.icc("-v", "run", "--quiet", "--at", at(1))
    # The second line is the run's supervisor's, from the logger icc.plugins (a child of icc's).
    loading = "plugin 'tasks_plugin' failed to load: RuntimeError: broken at import"
    assert verbose.stderr.splitlines() == [debug, loading, line], verbose.stderr

    as_json = project.icc("-v", "--log-format", "json", "run", "--quiet", "--at", at(2))
    entries = [json.loads(entry) for entry in as_json.stderr.splitlines()]
    assert [(e["level"], e["logger"], e["message"]) for e in entries] == [
        ("debug", "icc", debug),
        ("debug", "icc.plugins", loading),
        ("warning", "icc", warning),
    ]
    assert all(datetime.fromisoformat(e["time"]).utcoffset() is not None for e in entries)

    quiet = project.icc("--log-level", "error", "run", "--quiet", "--at", at(3))
    assert quiet.returncode == 0 and quiet.stderr == ""
    project.env["ICC_LOG_LEVEL"] = "debug"
    project.env["ICC_LOG_FORMAT"] = "json"
    from_env = project.icc("run", "--quiet", "--at", at(4))
    assert [json.loads(e)["level"] for e in from_env.stderr.splitlines()] == ["debug", "debug", "warning"]


def test_a_plugins_debug_line_keeps_its_logger_name(project: Project) -> None:
    project.write_plugin("raise RuntimeError('broken at import')\n")
    proc = project.icc("-v", "--log-format", "json", "scan")
    entries = [json.loads(line) for line in proc.stderr.splitlines()]
    assert any(e["logger"] == "icc.plugins" and e["level"] == "debug" for e in entries), proc.stderr
    assert any(e["level"] == "warning" and "broken at import" in e["message"] for e in entries), proc.stderr
