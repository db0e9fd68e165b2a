"""The idle tick's fast path (icc.tick.idle, icc.fastconfig) and the full `icc run` agree: the fast path imports
only what it needs, answers only when it is sure, and falls through to the full command on any doubt."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from icc import config as full
from icc import fastconfig
from projectkit import Project, at
from statekit import TWO_JOBS, one_line_error, scanned

# What the fast path must not import: the full command's and the full config loader's modules.
HEAVY = ("click", "icc.cli", "icc.config", "dataclasses", "typing", "pathlib", "inspect", "urllib.parse")


def imported(proc: subprocess.CompletedProcess[str]) -> set[str]:
    """The modules a `python -X importtime` process imported (from its stderr)."""
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def tick(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """`icc run` with -X importtime, so the test sees which path it took."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", *project.argv("run", *args)[1:]],
        cwd=project.root,
        env=project.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def idle(project: Project) -> None:
    scanned(project, TWO_JOBS)
    project.icc("run", "--at", at(0), check=True)


def test_idle_tick_imports_neither_click_nor_the_full_config_loader(project: Project) -> None:
    idle(project)
    proc = tick(project, "--at", at(0))
    assert proc.returncode == 0, proc.stderr
    assert "nothing due" in proc.stdout
    names = imported(proc)
    assert "icc.tick.idle" in names
    assert not names & set(HEAVY), sorted(names & set(HEAVY))


def test_a_due_job_still_runs_after_fast_idle_ticks(project: Project) -> None:
    idle(project)
    assert "nothing due" in tick(project, "--at", at(0, 30)).stdout
    proc = tick(project, "--at", at(1))
    assert proc.returncode == 0, proc.stderr
    names = imported(proc)
    assert "icc.tick.coordinator" in names  # the full tick ran the due jobs
    assert "icc.cli" not in names  # without click (icc.__main__'s due run)
    assert len(project.marker_lines("a")) == 2
    assert len(project.marker_lines("b")) == 2


def test_idle_tick_without_a_config_argument_finds_the_config_like_the_full_loader(project: Project) -> None:
    idle(project)
    sub = project.root / "sub" / "dir"
    sub.mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "icc", "run", "--at", at(0)],
        cwd=sub,
        env=project.environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "nothing due" in proc.stdout
    assert "icc.config" not in imported(proc)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda p: p.config.write_text(p.config.read_text() + "\nbogus = 1\n"), id="unknown-key"),
        pytest.param(
            lambda p: p.config.write_text(p.config.read_text().replace("grace = 1", "grace = -1")),
            id="invalid-value",
        ),
        pytest.param(
            lambda p: p.config.write_text(p.config.read_text().replace('"UTC"', '"Mars/Olympus"')),
            id="unknown-time-zone",
        ),
        pytest.param(lambda p: p.env.update(ICC_KEEP_RUNS="zero"), id="invalid-variable"),
        pytest.param(lambda p: (p.root / ".env").write_bytes(b"X=\xff\n"), id="dotenv-not-utf8"),
    ],
)
def test_a_config_the_full_loader_refuses_is_refused_by_the_idle_tick_too(
    project: Project, change: object
) -> None:
    idle(project)
    assert callable(change)
    change(project)
    proc = tick(project, "--at", at(0))
    assert "icc.config" in imported(proc)  # fell through
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stdout, proc.stderr)


def test_state_dir_set_in_dotenv_is_not_missed_by_the_idle_tick(project: Project) -> None:
    """`.env` may point state_dir elsewhere: the fast path cannot read it, so the full command decides (here:
    the other state directory was never scanned, which the full tick refuses)."""
    idle(project)
    (project.root / ".env").write_text("ICC_STATE_DIR=other\n")
    proc = tick(project, "--at", at(0))
    assert "icc.config" in imported(proc)
    assert "nothing due" not in proc.stdout
    assert not (project.root / "other" / "state.sqlite3").exists() or proc.returncode != 0


def test_state_dir_from_the_environment_is_used_by_the_idle_tick(project: Project) -> None:
    idle(project)
    project.env["ICC_STATE_DIR"] = str(project.root / "other")
    proc = tick(project, "--at", at(0))
    assert "nothing due" not in proc.stdout  # the other state directory has never been scanned
    assert proc.returncode != 0
    one_line_error(project.icc("run", "--at", at(0)))


def test_dotenv_without_icc_variables_keeps_the_fast_path(project: Project) -> None:
    idle(project)
    (project.root / ".env").write_text("DATABASE_URL=postgres://x\n")
    proc = tick(project, "--at", at(0))
    assert "nothing due" in proc.stdout
    assert "icc.config" not in imported(proc)


def test_consumers_notify_false_keeps_the_fast_path_and_true_without_a_store_is_the_full_loaders_error(
    project: Project,
) -> None:
    idle(project)
    text = project.config.read_text()
    assert "[icc.consumers]\n" in text
    project.config.write_text(text.replace("[icc.consumers]\n", "[icc.consumers]\nnotify = false\n"))
    proc = tick(project, "--at", at(0))
    assert "nothing due" in proc.stdout
    assert "icc.config" not in imported(proc)
    project.config.write_text(text.replace("[icc.consumers]\n", "[icc.consumers]\nnotify = true\n"))
    one_line_error(project.icc("run", "--at", at(0)), "needs a PostgreSQL store")


# -- the reader against the full loader, in process ------------------------------------------------------------
def test_fast_reader_knows_exactly_the_full_loaders_keys() -> None:
    assert set(fastconfig.CORE_CHECKS) == set(full.CORE_KEYS)
    assert set(fastconfig.CONSUMER_CHECKS) == set(full.CONSUMER_KEYS)
    assert set(fastconfig.QUEUE_CHECKS) == set(full.QUEUE_KEYS)
    assert set(fastconfig.MONITOR_CHECKS) == set(full.MONITOR_KEYS)
    assert set(fastconfig._CORE_TABLES) == set(full.CORE_TABLES)  # any other table is a plugin's
    assert set(fastconfig.ENV_CHECKS) <= set(full.ENV_KEYS)


CONFIGS = [
    '[icc]\nstate_dir = "s"\n',
    '[icc]\nstate_dir = "~/s"\ntimezone = "Europe/Berlin"\nplugins = ["a", "b",]\n[icc.mail]\ndsn = "x"\n',
    "[icc]\nkeep_runs = 0\n",
    "[icc]\nkeep_runs = true\n",
    "[icc]\ngrace = 1.5\nmissed_window = 0\n",
    "[icc]\ngrace = nan\n",
    '[icc]\ntimezone = "Nowhere/Land"\n',
    '[icc]\nenvironment = " "\n',
    '[icc]\nplugins = ["a", ""]\n',
    '[icc.consumers]\nmode = "cron"\nqueues = ["mail"]\ntime_limit = 0\n',
    '[icc.consumers]\nmode = "daemon"\n',
    "[icc.consumers]\nbogus = 1\n",
    "[icc.consumers]\nnotify = false\n",
    "[icc.consumers]\nnotify = true\n",  # needs [icc.store] url: the full loader's error
    "[icc.queues.mail]\nretries = 2\ndelay = 0\nmultiplier = 0.5\n",
    "[icc.queues.mail]\nlease = 1\nmax_delay = 3\n",
    "[icc.queues]\nmail = 1\n",
    "[icc]\nconsumers = 3\n",
    "[icc]\nkeep_skipped = 0\noutput_limit = 0\n",
    "[icc]\noutput_limit = 99999999999\n",
    '[icc]\noutput_limit = "64KiB"\n',
    '[icc.monitor]\nping_url = "https://hc.example/ping/{job}"\ntimeout = 2\n',
    '[icc.monitor]\nping_url = "not a url"\n',
    "[icc.monitor]\ntimeout = 0\n",
    "[icc]\nmonitor = 1\n",
    "[icc]\nstray = 1\n",
    "top = 1\n[icc]\n",
    "[icc]\n[icc]\n",
    "[icc\n",
    "icc = 3\n",
    "",
    "[icc]\nstate_dir = 'literal'\n",
    '[icc]\nstate_dir = "a\\tb"\n',
]


@pytest.mark.parametrize("text", CONFIGS)
@pytest.mark.parametrize("name", ["icc.toml", "pyproject.toml"])
def test_fast_reader_answers_only_what_the_full_loader_says(
    text: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if name == "pyproject.toml":
        text = text.replace("[icc", "[tool.icc").replace("icc = 3", "[tool]\nicc = 3")
    (tmp_path / name).write_text(text)
    for variable in [v for v in os.environ if v.startswith("ICC_")]:
        monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)
    answer = fastconfig.read_config(None)
    try:
        loaded = full.load_config()
    except full.ConfigError:
        assert answer is None
        return
    if answer is not None:
        assert answer == (str(loaded.state_dir), loaded.timezone)


TOML = [
    *CONFIGS,
    "a = 1\nb = -0\nc = true # x\nd = false#y\ne = []\n",
    "[a.b]\nx = 1\n[a]\ny = 2\n",
    "[x]\n[ x ]\n",
    "a = 01\n",
    "a = +1\n",
    'a = "x" y\n',
    'a = ["x", 1]\n',
    "a = [,]\n",
    'a = "\\u00e9"\n',
    'a = """x"""\n',
    "a = 1\na = 2\n",
    'a = "é"\r\nb = 2\r\n',
    "a = 1\r2\n",
    "a = 1\r",
    'a = "x"\r',
    "a = 1 \r\n[b]\r",
    "a = 1\r\r\n",
    "a = 1 # \x01\n",
    '"a" = 1\n',
    "a.b = 1\n",
    "[[a]]\nb = 1\n",
    "a = {b = 1}\n",
    'a = ["x", "y"] # c\n[b] # d\nc = "#"\n',
]


@pytest.mark.parametrize("text", TOML)
def test_simple_toml_reader_agrees_with_tomllib(text: str) -> None:
    ours = fastconfig.simple_toml(text)
    try:
        theirs = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        assert ours is None
        return
    assert ours is None or ours == theirs


def test_notify_urls_from_the_environment_keep_the_fast_path_and_a_bad_one_is_the_full_loaders_error(
    project: Project,
) -> None:
    idle(project)
    project.env["ICC_NOTIFY_URLS"] = "json://127.0.0.1:9/hook, slack://T000/B000/XXXX"
    project.env["ICC_NOTIFY_INTERVAL"] = "600"
    proc = tick(project, "--at", at(0))
    assert proc.returncode == 0, proc.stderr
    assert "nothing due" in proc.stdout
    names = imported(proc)
    assert "icc.config" not in names and "click" not in names  # still the idle tick
    for bad in ("hooks.example.org/icc", "json://x/y,,", ""):
        project.env["ICC_NOTIFY_URLS"] = bad
        proc = tick(project, "--at", at(0))
        assert "icc.config" in imported(proc), bad  # fell through: the full loader says what is wrong
        one_line_error(project.icc("run", "--at", at(0)), "ICC_NOTIFY_URLS")
    project.env["ICC_NOTIFY_URLS"] = "json://127.0.0.1:9/hook"
    project.env["ICC_NOTIFY_INTERVAL"] = "nan"
    assert "icc.config" in imported(tick(project, "--at", at(0)))
    one_line_error(project.icc("run", "--at", at(0)), "ICC_NOTIFY_INTERVAL")


SITECUSTOMIZE = """
import atexit, os

MARKS = os.environ["EXIT_MARKS"]

def mark(what):
    with open(MARKS, "a") as f:
        f.write(what + "\\n")

atexit.register(mark, "atexit")

class Finalized:
    def __del__(self, _open=open, _marks=MARKS):  # bound now: builtins may be gone by then
        with _open(_marks, "a") as f:
            f.write("finalized\\n")

kept = Finalized()  # a module global: deleted when the interpreter tears its modules down
"""


def test_an_idle_tick_ends_without_tearing_the_interpreter_down(project: Project, tmp_path: Path) -> None:
    # Python's finalization (every module and object) is about 3 ms, a tenth of the idle tick: it exits with
    # os._exit once its output is flushed and the atexit handlers ran.
    idle(project)
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marks = tmp_path / "marks"
    env = {**project.environ(), "PYTHONPATH": str(tmp_path), "EXIT_MARKS": str(marks)}
    proc = subprocess.run(
        project.argv("run", "--at", at(0)), cwd=project.root, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("icc run: nothing due at"), proc.stdout  # flushed
    assert marks.read_text().splitlines() == ["atexit"]
    # A due minute (the full tick) ends the same way, with its exit code.
    marks.unlink()
    due = subprocess.run(
        project.argv("run", "--at", at(1)), cwd=project.root, env=env, capture_output=True, text=True
    )
    assert due.returncode == 0, due.stderr
    assert "icc run" in due.stdout
    assert marks.read_text().splitlines() == ["atexit"]
