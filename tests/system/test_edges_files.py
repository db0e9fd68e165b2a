"""Hostile files and values (issue 18): output files that are FIFOs or another user's links, a planted metrics
temp file, NUL bytes and lone surrogates in jobs, numbers without bounds, and escape sequences on a terminal."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from projectkit import Project, at
from statekit import IS_ROOT, NOBODY

needs_root = pytest.mark.skipif(not IS_ROOT, reason="planting a file owned by another user needs root")

OUTPUT_JOBS = """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(["sh", "-c", "echo written"], name="logged").every_minute().timeout(5).send_output_to({path!r})
    scheduler.add(["sh", "-c", "echo later > later.txt"], name="later").every_minute()
"""


def output_project(project: Project, path: str) -> None:
    project.write_plugin(OUTPUT_JOBS.format(path=path))
    project.icc("scan", check=True)


def last_run(project: Project, job: str) -> dict[str, object]:
    return project.runs(job)[-1]


# -- item 1: an output file that is a FIFO ------------------------------------------------------------------------
def test_output_file_that_is_a_fifo_fails_that_run_alone_and_the_tick_ends(project: Project) -> None:
    output_project(project, "out.log")
    os.mkfifo(project.root / "out.log")
    proc = project.icc("run", "--at", at(0), timeout=60)  # before: blocked in open() for ever
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    run = last_run(project, "logged")
    assert run["outcome"] == "failed"
    assert "is a FIFO, not a regular file" in str(run["error"]), run["error"]
    assert last_run(project, "later")["outcome"] == "succeeded"
    assert (project.root / "later.txt").read_text() == "later\n"
    assert stat.S_ISFIFO(os.lstat(project.root / "out.log").st_mode)


def test_icc_exec_refuses_an_output_file_that_is_a_fifo(project: Project) -> None:
    output_project(project, "out.log")
    os.mkfifo(project.root / "out.log")
    proc = project.icc("exec", "logged", timeout=60)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "is a FIFO" in proc.stdout + proc.stderr
    assert last_run(project, "logged")["outcome"] == "failed"


def test_output_file_opened_by_the_supervisor_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    """The open itself, for a FIFO that appears after the check: it fails at once instead of waiting for a reader."""
    from icc.errors import StateError
    from icc.statedir import open_output_file

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="No such device or address"):  # ENXIO: no reader; never a wait
        open_output_file(fifo, append=False)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(StateError, match="is a FIFO, not a regular file"):
            open_output_file(fifo, append=True)
    finally:
        os.close(reader)


# -- item 2: another user's link or directory, the state directory -------------------------------------------------
@needs_root
def test_output_file_symlink_planted_by_another_user_is_refused_and_its_target_kept(
    project: Project, tmp_path: Path
) -> None:
    victim = tmp_path / "important.txt"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    output_project(project, "job.log")
    (project.root / "job.log").symlink_to(victim)
    os.lchown(project.root / "job.log", NOBODY, NOBODY)
    project.icc("run", "--at", at(0), timeout=60)
    assert victim.read_text() == "precious\n"
    run = last_run(project, "logged")
    assert run["outcome"] == "failed"
    assert "symbolic link owned by uid 65534" in str(run["error"]), run["error"]
    assert last_run(project, "later")["outcome"] == "succeeded"


ATTACKER = 12345  # a third user: icc runs as NOBODY, the victim


@pytest.fixture
def nobody_project() -> Iterator[Project]:
    """A project owned by NOBODY, outside root's private pytest directory, for icc run as NOBODY."""
    base = Path(tempfile.mkdtemp(prefix="icc-nobody-"))
    base.chmod(0o755)
    project = Project(base / "proj")
    project.root.mkdir()
    project.write_config()
    try:
        yield project
    finally:
        shutil.rmtree(base, ignore_errors=True)


def icc_as_nobody(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    for path in [project.root, *project.root.rglob("*")]:
        if path.lstat().st_uid == 0:
            os.lchown(path, NOBODY, NOBODY)
    env = {**project.environ(), "HOME": str(project.root), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", *project.argv(*args)],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_root
def test_output_file_link_planted_by_another_user_is_refused_when_icc_runs_unprivileged(
    nobody_project: Project,
) -> None:
    """As issue 18 tried it: icc as an unprivileged user, a second user as the attacker."""
    project = nobody_project
    project.write_plugin(OUTPUT_JOBS.format(path="shared/job.log"))
    victim = project.root / "important.txt"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    assert icc_as_nobody(project, "scan").returncode == 0
    shared = project.root / "shared"
    shared.mkdir(mode=0o755)
    (shared / "job.log").symlink_to(victim)
    os.lchown(shared / "job.log", ATTACKER, ATTACKER)
    os.chown(shared, ATTACKER, ATTACKER)
    proc = icc_as_nobody(project, "run", "--at", at(0))
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert victim.read_text() == "precious\n"
    run = last_run(project, "logged")
    assert run["outcome"] == "failed"
    assert f"owned by uid {ATTACKER}" in str(run["error"]), run["error"]
    assert last_run(project, "later")["outcome"] == "succeeded"


def test_output_file_symlink_of_your_own_is_followed(project: Project, tmp_path: Path) -> None:
    target = tmp_path / "mine.log"
    output_project(project, "job.log")
    (project.root / "job.log").symlink_to(target)
    project.icc("run", "--at", at(0), check=True)
    assert target.read_text() == "written\n"


@needs_root
def test_output_file_in_a_directory_another_user_owns_is_refused(project: Project) -> None:
    shared = project.root / "shared"
    shared.mkdir(mode=0o755)
    os.chown(shared, NOBODY, NOBODY)
    output_project(project, "shared/job.log")
    project.icc("run", "--at", at(0), timeout=60)
    run = last_run(project, "logged")
    assert run["outcome"] == "failed"
    assert "is owned by uid 65534" in str(run["error"]), run["error"]
    assert not (shared / "job.log").exists()


def test_output_file_in_a_directory_others_may_write_is_refused_unless_sticky(project: Project) -> None:
    shared = project.root / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    output_project(project, "shared/job.log")
    project.icc("run", "--at", at(0), timeout=60)
    run = last_run(project, "logged")
    assert run["outcome"] == "failed"
    assert "writable by other users (mode 777)" in str(run["error"]), run["error"]
    assert "chmod go-w" in str(run["error"])
    shared.chmod(0o1777)  # /tmp's mode: others cannot replace a file of yours
    project.icc("run", "--at", at(1), check=True)
    assert (shared / "job.log").read_text() == "written\n"


def test_output_file_inside_the_state_directory_is_refused_at_scan(project: Project) -> None:
    project.icc("scan", check=True)  # the store exists
    project.write_plugin(OUTPUT_JOBS.format(path="state/state.sqlite3"))
    before = project.db.read_bytes()
    proc = project.icc("scan")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "job 'logged': send_output_to('state/state.sqlite3') is inside the state directory" in proc.stderr
    assert project.db.read_bytes() == before


def test_output_file_inside_the_state_directory_is_refused_at_run_time(tmp_path: Path) -> None:
    """What scan cannot see: a state directory reached through a link, or moved by ICC_STATE_DIR since."""
    from icc.statedir import output_file_problem

    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "alias").symlink_to(state)
    problem = output_file_problem(tmp_path / "alias" / "state.sqlite3", state)
    assert problem is not None and "is inside the state directory" in problem
    assert output_file_problem(tmp_path / "out.log", state) is None


def test_output_file_that_is_a_directory_fails_the_run(project: Project) -> None:
    output_project(project, "out.log")
    (project.root / "out.log").mkdir()
    project.icc("run", "--at", at(0), timeout=60)
    run = last_run(project, "logged")
    assert run["outcome"] == "failed" and "is a directory, not a regular file" in str(run["error"])


# -- item 3: icc metrics --textfile ---------------------------------------------------------------------------------
def test_metrics_textfile_never_follows_a_link_planted_at_a_predictable_temp_name(tmp_path: Path) -> None:
    from icc.cli.metrics import write_textfile

    directory = tmp_path / "textfile"
    directory.mkdir()
    victim = tmp_path / "secret.txt"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    for name in (f".icc.prom.{os.getpid()}.tmp", f".icc.prom.{os.getpid()}"):  # the old name, and a guess
        (directory / name).symlink_to(victim)
    target = directory / "icc.prom"
    write_textfile(target, "icc_paused 0\n")
    assert victim.read_text() == "secret\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert target.read_text() == "icc_paused 0\n"
    assert not target.is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o644
    leftovers = sorted(p.name for p in directory.iterdir() if not p.is_symlink())
    assert leftovers == ["icc.prom"]


# -- items 5 and 11: what add() refuses ----------------------------------------------------------------------------
def _scan_refuses(project: Project, plugin: str, *needles: str) -> None:
    project.write_plugin(plugin)
    proc = project.icc("scan")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    line = next((x for x in proc.stderr.splitlines() if "failed:" in x), "")
    for needle in needles:
        assert needle in line, (needle, proc.stderr)
    assert not project.db.exists() or project.runs() == []


def test_command_argument_with_a_nul_byte_is_refused_at_add(project: Project) -> None:
    _scan_refuses(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["echo", "a\\x00b"], name="nul").every_minute()
        """,
        "job 'nul': command argument 1 'a\\x00b' contains a NUL byte",
    )


def test_job_name_with_a_lone_surrogate_is_refused_at_add(project: Project) -> None:
    _scan_refuses(
        project,
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["true"], name="sur\\udc80x").every_minute()
        """,
        "job name 'sur\\udc80x' is not valid",
        "lone surrogate",
    )


@pytest.mark.parametrize("name", ["bell\\x07", "esc\\x1b[2J", "line\\nbreak", "del\\x7f", "c1\\x9b"])
def test_job_name_with_a_control_character_is_refused_at_add(project: Project, name: str) -> None:
    _scan_refuses(
        project,
        f"""
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["true"], name="{name}").every_minute()
        """,
        "is not valid: control character",
    )


# -- item 12: numbers without bounds ------------------------------------------------------------------------------
# (table, key, lowest, highest, integer): every numeric setting of icc.config.
NUMERIC_SETTINGS = [
    (None, "keep_runs", 1, 1_000_000, True),
    (None, "keep_skipped", 0, 1_000_000, True),
    (None, "missed_window", 0, 525_600, True),
    (None, "grace", 0, 3600, False),
    ("consumers", "time_limit", 0, 86_400, False),
    ("queues.mail", "retries", 0, 1000, True),
    ("queues.mail", "delay", 0, 604_800, False),
    ("queues.mail", "multiplier", 1, 100, False),
    ("queues.mail", "max_delay", 0, 604_800, False),
    ("queues.mail", "lease", 0, 86_400, False),
    ("monitor", "timeout", 0, 600, False),
    ("store", "lease", 5, 86_400, False),
]


def _toml(table: str | None, key: str, value: object) -> str:
    header = "[icc]\n" if table is None else f"[icc.{table}]\n"
    extra = 'url = "postgresql://u@h/d"\n' if table == "store" else ""
    return f"{header}{extra}{key} = {value}\n"


@pytest.mark.parametrize(("table", "key", "low", "high", "integer"), NUMERIC_SETTINGS)
def test_every_numeric_setting_has_a_range_checked_at_load(
    tmp_path: Path, table: str | None, key: str, low: int, high: int, integer: bool
) -> None:
    from icc.config import ConfigError, load_config

    config_file = tmp_path / "icc.toml"
    config_file.write_text(_toml(table, key, high))
    load_config(config_file, environ={})  # the highest value is allowed
    for beyond in (high + 1, 10**30, 99999999999999999999999):
        config_file.write_text(_toml(table, key, beyond))
        with pytest.raises(ConfigError) as info:
            load_config(config_file, environ={})
        message = str(info.value)
        assert f"{key!r} in [icc{'.' + table if table else ''}] must be" in message, message
        assert f" {low} to {high}" in message, message  # "from 0 to" or "above 0 to"
        assert "\n" not in message


@pytest.mark.parametrize(("table", "key", "low", "high", "integer"), NUMERIC_SETTINGS)
def test_idle_tick_config_reader_has_the_same_ranges(
    table: str | None, key: str, low: int, high: int, integer: bool
) -> None:
    from icc import fastconfig

    checks = {
        None: fastconfig.CORE_CHECKS,
        "consumers": fastconfig.CONSUMER_CHECKS,
        "queues.mail": fastconfig.QUEUE_CHECKS,
        "monitor": fastconfig.MONITOR_CHECKS,
        "store": fastconfig.STORE_CHECKS,
    }[table]
    assert checks[key](high) and not checks[key](high + 1) and not checks[key](10**400)


def test_keep_runs_variable_beyond_its_range_is_one_line_not_a_crash_at_prune(project: Project) -> None:
    project.write_plugin(
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["true"], name="ok").every_minute()
        """
    )
    project.icc("scan", check=True)
    project.env["ICC_KEEP_RUNS"] = "99999999999999999999999"
    proc = project.icc("run", "--at", at(0))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "OverflowError" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "ICC_KEEP_RUNS must be an integer from 1 to 1000000" in lines[0]


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda s: s.timeout(10**400), "timeout <an integer of 1329 bits> is not valid"),
        (lambda s: s.timeout(30 * 86_400 + 1), "at most 2592000 (30 days)"),
        (lambda s: s.missed_window(525_601), "0-525600"),
        (lambda s: s.missed_window(10**5000), "missed_window(<an integer of 16610 bits>)"),
        (lambda s: s.set_minute(10**5000), "minute <an integer of 16610 bits>"),
        (lambda s: s.set_year(10**5000), "year <an integer of 16610 bits>"),
        (lambda s: s.every_minutes(10**5000), "every_minutes(<an integer"),
        (lambda s: s.jitter(10**5000), "jitter(<an integer"),
        (lambda s: s.every_seconds(10**5000), "every_seconds(<an integer"),
    ],
)
def test_every_numeric_schedule_argument_out_of_range_is_a_schedule_error(build: object, needle: str) -> None:
    from icc.errors import ScheduleError
    from icc.schedule import Schedule

    assert callable(build)
    with pytest.raises(ScheduleError) as info:
        build(Schedule())
    assert needle in str(info.value), str(info.value)
    assert Schedule().timeout(30 * 86_400).timeout_seconds == 30 * 86_400


# -- item 10: escape sequences from job output on a terminal --------------------------------------------------------
HOSTILE = "before\x1b[2J\x1b]0;pwned\x07\rafter\tTAB\x9b"
ESCAPED = "before\\x1b[2J\\x1b]0;pwned\\x07\\x0dafter\tTAB\\x9b"


def on_a_terminal(project: Project, *args: str) -> str:
    """``icc ARGS`` with stdout on a pseudo-terminal (stderr a pipe): what the terminal received, as text."""
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            project.argv(*args),
            cwd=project.root,
            env={**project.environ(), "COLUMNS": "200", "TERM": "xterm"},
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
        )
        os.close(slave)
        slave = -1
        received = bytearray()
        while True:  # until the child has exited and closed its side: EIO
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    return received.decode("utf-8", "replace").replace("\r\n", "\n")


@pytest.fixture
def hostile_output(project: Project) -> Project:
    project.write_plugin(
        f"""
        def hostile():
            sys.stdout.write({HOSTILE!r} + "\\n")
            raise RuntimeError({HOSTILE!r})

        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(hostile, name="hostile").every_minute()
        """
    )
    project.icc("scan", check=True)
    project.icc("exec", "hostile")
    return project


@pytest.mark.parametrize("command", ["logs", "status"])
def test_job_output_is_shown_escaped_on_a_terminal(hostile_output: Project, command: str) -> None:
    seen = on_a_terminal(hostile_output, command, "hostile")
    assert "\x1b[2J" not in seen and "\x07" not in seen and "\x9b" not in seen
    assert ESCAPED in seen, seen


@pytest.mark.parametrize("command", ["logs", "status"])
def test_raw_keeps_the_output_bytes_on_a_terminal(hostile_output: Project, command: str) -> None:
    seen = on_a_terminal(hostile_output, command, "hostile", "--raw")
    assert "before\x1b[2J\x1b]0;pwned\x07" in seen


def test_job_output_into_a_pipe_is_unchanged(hostile_output: Project) -> None:
    proc = subprocess.run(
        hostile_output.argv("logs", "hostile"),
        cwd=hostile_output.root,
        env=hostile_output.environ(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert (HOSTILE + "\n").encode() in proc.stdout
