"""Configuration: discovery, precedence (file < .env < .env.local < ICC_*), validation and its messages."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from icc import ConfigError
from icc.config import (
    MAIL_QUEUE_DEFAULTS,
    Config,
    ConsumersConfig,
    QueueConfig,
    find_config_file,
    load_config,
)
from icc.queue.dispatch import dispatch
from projectkit import Project, at

NO_ENV: dict[str, str] = {}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- discovery --------------------------------------------------------------------------------------


def test_walks_up_to_pyproject_with_tool_icc(tmp_path: Path) -> None:
    config_file = write(tmp_path / "pyproject.toml", '[tool.icc]\nenvironment = "staging"\n')
    nested = tmp_path / "src" / "app"
    nested.mkdir(parents=True)

    config = load_config(cwd=nested, environ=NO_ENV)

    assert config.path == config_file
    assert config.root == tmp_path
    assert config.environment == "staging"


def test_pyproject_without_tool_icc_is_passed_over(tmp_path: Path) -> None:
    config_file = write(tmp_path / "icc.toml", '[icc]\nenvironment = "outer"\n')
    write(tmp_path / "sub" / "pyproject.toml", '[project]\nname = "x"\n[tool.ruff]\nline-length = 100\n')

    assert find_config_file(tmp_path / "sub") == config_file


def test_icc_toml_wins_over_pyproject_in_the_same_directory(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.icc]\nenvironment = "pyproject"\n')
    write(tmp_path / "icc.toml", '[icc]\nenvironment = "icc-toml"\n')

    assert load_config(cwd=tmp_path, environ=NO_ENV).environment == "icc-toml"


def test_no_config_file_gives_defaults_rooted_at_the_working_directory(tmp_path: Path) -> None:
    config = load_config(cwd=tmp_path, environ=NO_ENV)

    assert config.path is None
    assert config.root == tmp_path
    assert config.state_dir == tmp_path / ".icc"
    assert (config.environment, config.timezone, config.plugins) == ("production", "UTC", ())
    assert config.consumers == ConsumersConfig("cron", ("mail", "async"), 20.0)
    assert dict(config.queues) == {"mail": MAIL_QUEUE_DEFAULTS, "async": QueueConfig()}
    assert (config.keep_runs, config.missed_window, config.grace) == (100, 60, 10.0)
    assert config.callback_timeout == 30.0
    assert dict(config.tables) == {}


def test_explicit_path_wins_over_icc_config_which_wins_over_discovery(tmp_path: Path) -> None:
    write(tmp_path / "icc.toml", '[icc]\nenvironment = "found"\n')
    from_env = write(tmp_path / "elsewhere" / "icc.toml", '[icc]\nenvironment = "from-env"\n')
    explicit = write(tmp_path / "explicit" / "pyproject.toml", '[tool.icc]\nenvironment = "explicit"\n')
    environ = {"ICC_CONFIG": str(from_env)}

    assert load_config(cwd=tmp_path, environ=NO_ENV).environment == "found"
    assert load_config(cwd=tmp_path, environ=environ).environment == "from-env"
    assert load_config(explicit, cwd=tmp_path, environ=environ).environment == "explicit"


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_config(tmp_path / "nope.toml", environ=NO_ENV)


# --- values -----------------------------------------------------------------------------------------


def test_full_pyproject_table_is_read(tmp_path: Path) -> None:
    write(
        tmp_path / "pyproject.toml",
        """
        [tool.icc]
        environment = "staging"
        timezone = "Europe/Berlin"
        state_dir = "var/icc"
        plugins = ["myapp.tasks", "myapp.more"]
        keep_runs = 5
        missed_window = 0
        grace = 2.5

        [tool.icc.consumers]
        mode = "service"
        queues = ["mail"]
        time_limit = 30

        [tool.icc.queues.reports]
        retries = 10
        lease = 300

        [tool.icc.queues.mail]
        delay = 5

        [tool.icc.mail]
        dsn = "smtp://localhost:25"
        """.replace("\n        ", "\n"),
    )

    config = load_config(cwd=tmp_path, environ=NO_ENV)

    assert config.timezone == "Europe/Berlin"
    assert config.state_dir == tmp_path / "var" / "icc"
    assert config.plugins == ("myapp.tasks", "myapp.more")
    assert (config.keep_runs, config.missed_window, config.grace) == (5, 0, 2.5)
    assert config.consumers == ConsumersConfig("service", ("mail",), 30.0)
    assert config.queue("reports") == QueueConfig(retries=10, lease=300.0)
    assert config.queue("mail") == replace(MAIL_QUEUE_DEFAULTS, delay=5.0)  # the mail queue's other defaults
    assert config.queue("async") == QueueConfig()
    assert config.queue("not-configured") == QueueConfig()
    assert config.tables == {"mail": {"dsn": "smtp://localhost:25"}}


def test_relative_state_dir_resolves_against_the_config_file_not_the_working_directory(
    tmp_path: Path,
) -> None:
    write(tmp_path / "project" / "icc.toml", '[icc]\nstate_dir = "state"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    config = load_config(tmp_path / "project" / "icc.toml", cwd=elsewhere, environ=NO_ENV)

    assert config.state_dir == tmp_path / "project" / "state"
    absolute = load_config(
        tmp_path / "project" / "icc.toml", environ={"ICC_STATE_DIR": str(elsewhere / "abs")}
    )
    assert absolute.state_dir == elsewhere / "abs"


def test_config_built_directly_resolves_state_dir_and_default_queues(tmp_path: Path) -> None:
    config = Config(path=None, root=tmp_path, queues={"reports": QueueConfig(retries=1)})

    assert config.state_dir == tmp_path / ".icc"
    assert set(config.queues) == {"mail", "async", "reports"}


# --- errors -----------------------------------------------------------------------------------------


def test_unknown_key_is_an_error_naming_the_key_the_file_and_the_closest_key(tmp_path: Path) -> None:
    config_file = write(tmp_path / "pyproject.toml", '[tool.icc]\ntimezon = "UTC"\n')

    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path, environ=NO_ENV)

    message = str(info.value)
    assert message.startswith(
        f"{config_file}: unknown key 'timezon' in [tool.icc]; did you mean 'timezone'? known keys:"
    )


@pytest.mark.parametrize(
    ("text", "where", "close"),
    [
        ('[icc.consumers]\nmod = "cron"\n', "[icc.consumers]", "mode"),
        ("[icc.queues.reports]\nretry = 3\n", "[icc.queues.reports]", "retries"),
    ],
)
def test_unknown_key_in_core_tables_is_an_error_with_the_closest_key(
    tmp_path: Path, text: str, where: str, close: str
) -> None:
    write(tmp_path / "icc.toml", text)

    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path, environ=NO_ENV)
    assert (
        f"icc.toml: unknown key '{text.split()[1]}' in {where}; did you mean '{close}'? known keys:"
        in str(info.value)
    )


def test_setting_outside_the_icc_table_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "icc.toml", 'timezone = "UTC"\n')

    with pytest.raises(ConfigError, match=r"key 'timezone' is outside the \[icc\] table"):
        load_config(cwd=tmp_path, environ=NO_ENV)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("keep_runs = true", "'keep_runs' in [icc] must be an integer from 1 to 1000000, not True"),
        ('keep_runs = "10"', "'keep_runs' in [icc] must be an integer from 1 to 1000000, not '10'"),
        ("keep_runs = 0", "'keep_runs' in [icc] must be an integer from 1 to 1000000, not 0"),
        ("grace = -1", "'grace' in [icc] must be a number from 0 to 3600, not -1"),
        (
            "callback_timeout = 0",
            "'callback_timeout' in [icc] must be a number above 0 to 3600, not 0",
        ),
        (
            "callback_timeout = 7200",
            "'callback_timeout' in [icc] must be a number above 0 to 3600, not 7200",
        ),
        ('plugins = "myapp.tasks"', "'plugins' in [icc] must be a list of names"),
        ("environment = 3", "'environment' in [icc] must be a non-empty string, not 3"),
        ('consumers = "cron"', "'consumers' in [icc] must be a table"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key_and_the_file(tmp_path: Path, line: str, message: str) -> None:
    config_file = write(tmp_path / "icc.toml", f"[icc]\n{line}\n")

    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path, environ=NO_ENV)
    assert str(info.value).startswith(f"{config_file}: {message}")


def test_consumer_mode_must_be_cron_or_service(tmp_path: Path) -> None:
    write(tmp_path / "icc.toml", '[icc.consumers]\nmode = "daemon"\n')

    with pytest.raises(ConfigError, match=r"'mode' in \[icc.consumers\] must be \"cron\" or \"service\""):
        load_config(cwd=tmp_path, environ=NO_ENV)


def test_toml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    config_file = write(tmp_path / "icc.toml", '[icc]\nenvironment = "ok"\ntimezone = \n')

    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path, environ=NO_ENV)
    assert str(info.value).startswith(f"{config_file}: invalid TOML")
    assert "line 3" in str(info.value)


def test_unknown_timezone_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "icc.toml", '[icc]\ntimezone = "Europe/Atlantis"\n')

    with pytest.raises(ConfigError, match=r"'timezone' in \[icc\] must be an IANA time zone"):
        load_config(cwd=tmp_path, environ=NO_ENV)


# --- .env, .env.local and ICC_* ---------------------------------------------------------------------


def test_dotenv_then_dotenv_local_then_environment_override_the_file(tmp_path: Path) -> None:
    write(tmp_path / "icc.toml", '[icc]\nenvironment = "file"\ntimezone = "UTC"\ngrace = 1\nkeep_runs = 7\n')
    write(tmp_path / ".env", "ICC_ENVIRONMENT=dotenv\nICC_TIMEZONE=Europe/Paris\nICC_GRACE=2\n")
    write(tmp_path / ".env.local", "ICC_TIMEZONE=Asia/Tokyo\nICC_GRACE=3\n")

    config = load_config(cwd=tmp_path, environ={"ICC_GRACE": "4"})

    assert config.keep_runs == 7  # from the file
    assert config.environment == "dotenv"  # .env over the file
    assert config.timezone == "Asia/Tokyo"  # .env.local over .env
    assert config.grace == 4.0  # the environment over everything
    assert "ICC_ENVIRONMENT" not in os.environ  # read, never loaded into the process environment


def test_dotenv_beside_the_config_file_is_read_not_the_one_in_the_working_directory(tmp_path: Path) -> None:
    write(tmp_path / "project" / "icc.toml", "[icc]\n")
    write(tmp_path / "project" / ".env", "ICC_ENVIRONMENT=beside\n")
    write(tmp_path / "cwd" / ".env", "ICC_ENVIRONMENT=cwd\n")

    config = load_config(tmp_path / "project" / "icc.toml", cwd=tmp_path / "cwd", environ=NO_ENV)

    assert config.environment == "beside"


def test_consumer_variables_override_the_consumers_table(tmp_path: Path) -> None:
    write(tmp_path / "icc.toml", '[icc.consumers]\nmode = "cron"\ntime_limit = 20\n')
    environ = {
        "ICC_CONSUMERS_MODE": "service",
        "ICC_CONSUMERS_TIME_LIMIT": "45.5",
        "ICC_CONSUMERS_QUEUES": "mail, reports",
    }

    consumers = load_config(cwd=tmp_path, environ=environ).consumers

    assert consumers == ConsumersConfig("service", ("mail", "reports"), 45.5)


def test_plugin_table_variables_use_a_double_underscore(tmp_path: Path) -> None:
    write(tmp_path / "icc.toml", '[icc.mail]\nsender = "a@example.org"\n')
    write(tmp_path / ".env", "ICC_MAIL__DSN=smtp://user:secret@localhost:587\n")

    tables = load_config(cwd=tmp_path, environ={"ICC_SLACK__TOKEN": "xoxb"}).tables

    assert tables == {
        "mail": {"sender": "a@example.org", "dsn": "smtp://user:secret@localhost:587"},
        "slack": {"token": "xoxb"},
    }


def test_reserved_and_unrelated_icc_variables_are_not_configuration(tmp_path: Path) -> None:
    environ = {"ICC_PLUGINS": "a,b", "ICC_DISABLE_PLUGIN_AUTOLOAD": "1", "ICC_SOMETHING_ELSE": "x"}

    config = load_config(cwd=tmp_path, environ=environ)

    assert config.plugins == ()
    assert dict(config.tables) == {}


def test_invalid_variable_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"environment variable ICC_KEEP_RUNS must be an integer from 1 to 1000000"
    ):
        load_config(cwd=tmp_path, environ={"ICC_KEEP_RUNS": "many"})


def test_invalid_dotenv_value_is_an_error_naming_the_file_and_variable(tmp_path: Path) -> None:
    write(tmp_path / ".env.local", "ICC_TIMEZONE=Mars/Olympus\n")

    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path, environ=NO_ENV)
    assert str(info.value).startswith(f"{tmp_path / '.env.local'}: ICC_TIMEZONE must be an IANA time zone")


@given(st.integers(min_value=1, max_value=1_000_000))
def test_integer_variables_convert_exactly(value: int) -> None:
    config = load_config(cwd=Path("/nonexistent-icc-dir"), environ={"ICC_KEEP_RUNS": f" {value} "})
    assert config.keep_runs == value


@given(st.floats(min_value=0, max_value=3600, allow_nan=False, allow_infinity=False))
def test_float_variables_convert_exactly(value: float) -> None:
    config = load_config(cwd=Path("/nonexistent-icc-dir"), environ={"ICC_GRACE": repr(value)})
    assert config.grace == value


@given(st.text().filter(lambda s: not _is_int(s)))
def test_non_integer_variables_are_rejected_naming_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="ICC_MISSED_WINDOW"):
        load_config(cwd=Path("/nonexistent-icc-dir"), environ={"ICC_MISSED_WINDOW": text})


@given(st.text().filter(lambda s: not _is_positive_float(s)))
def test_non_number_variables_are_rejected_naming_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="ICC_CONSUMERS_TIME_LIMIT"):
        load_config(cwd=Path("/nonexistent-icc-dir"), environ={"ICC_CONSUMERS_TIME_LIMIT": text})


def _is_int(text: str) -> bool:
    try:
        return 0 <= int(text.strip()) <= 525_600
    except ValueError:
        return False


def _is_positive_float(text: str) -> bool:
    try:
        number = float(text.strip())
    except ValueError:
        return False
    return math.isfinite(number) and 0 < number <= 86_400


# --- where a value comes from (for the plugins' error messages) ------------------------------------------


def test_source_names_the_variable_or_dotenv_file_that_set_a_key_else_the_config_file(tmp_path: Path) -> None:
    config_file = write(tmp_path / "icc.toml", '[icc.mail]\nsender = "a@example.org"\n')
    write(tmp_path / ".env", "ICC_MAIL__TIMEOUT=5\nICC_CONSUMERS_QUEUES=mail\n")
    write(tmp_path / ".env.local", "ICC_MAIL__DSN=smtp://localhost\n")

    config = load_config(cwd=tmp_path, environ={"ICC_MAIL__SENDER": "b@example.org", "ICC_GRACE": "2"})

    assert config.source("mail.sender") == "environment variable ICC_MAIL__SENDER"
    assert config.source("mail.timeout") == f"{tmp_path / '.env'}: ICC_MAIL__TIMEOUT"
    assert config.source("mail.dsn") == f"{tmp_path / '.env.local'}: ICC_MAIL__DSN"
    assert config.source("consumers.queues") == f"{tmp_path / '.env'}: ICC_CONSUMERS_QUEUES"
    assert config.source("grace") == "environment variable ICC_GRACE"
    assert config.source("keep_runs") == str(config_file)
    assert load_config(cwd=Path("/nonexistent-icc-dir"), environ=NO_ENV).source("mail.dsn") is None


# --- files icc cannot read: one line, exit 2, naming the file -------------------------------------------


@pytest.mark.parametrize("name", ["icc.toml", "pyproject.toml", ".env", ".env.local"])
def test_file_that_is_not_utf8_is_a_config_error_naming_it(project: Project, name: str) -> None:
    if name == "pyproject.toml":
        project.config.unlink()
    path = project.root / name
    header = b"[tool.icc]\n" if name == "pyproject.toml" else (b"[icc]\n" if name == "icc.toml" else b"")
    line = b'environment = "caf\xe9"\n' if name.endswith(".toml") else b"NAME=caf\xe9\n"
    path.write_bytes(header + b"# comment\n" + line)

    proc = subprocess.run(
        [sys.executable, "-m", "icc", "status"],
        cwd=project.root,
        env=project.environ(),
        capture_output=True,
        text=True,
    )

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert (
        proc.stderr
        == f"error: {path}: line {3 if header else 2} is not valid UTF-8; save the file as UTF-8\n"
    )


def test_config_path_too_long_for_the_system_is_one_line_naming_it(project: Project) -> None:
    long_name = "x" * 5000

    proc = subprocess.run(
        [sys.executable, "-m", "icc", "--config", long_name, "status"],
        cwd=project.root,
        env=project.environ(),
        capture_output=True,
        text=True,
    )

    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"error: {project.root}/x")  # then elided: how many x stay depends on the root
    assert "(5000 characters" not in line  # the length counts the whole path
    assert "characters): cannot use this config file: File name too long" in line


# --- tasks, commands and handlers see .env and .env.local -----------------------------------------------

DOTENV_PLUGIN = """
import json

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = ("DATABASE_URL", "LOCAL_ONLY", "REAL", "ICC_ENVIRONMENT")
SHOW = "import json, os, sys; print(json.dumps({n: os.environ.get(n) for n in sys.argv[1:]}))"

def seen():
    return {name: os.environ.get(name) for name in NAMES}

def callable_task():
    with open(os.path.join(HERE, "callable.json"), "w") as f:
        json.dump(seen(), f)

def handle(payload):
    with open(os.path.join(HERE, "handler.json"), "w") as f:
        json.dump(seen(), f)

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(callable_task, name="callable").every_minute()
    scheduler.add([sys.executable, "-c", SHOW, *NAMES], name="command").every_minute()

@icc.hookimpl
def register_handlers(register):
    register("env.check", handle)
"""


def test_tasks_commands_and_handlers_see_dotenv_variables_under_a_bare_environment(project: Project) -> None:
    project.write_plugin(DOTENV_PLUGIN)
    write(
        project.root / ".env",
        "DATABASE_URL=postgres://db/app\nLOCAL_ONLY=env\nREAL=dotenv\nICC_ENVIRONMENT=staging\n",
    )
    write(project.root / ".env.local", "LOCAL_ONLY=local\n")
    bare = {"PATH": "/usr/bin:/bin", "ICC_DISABLE_PLUGIN_AUTOLOAD": "1", "REAL": "environment"}

    def icc(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(project.argv(*args), cwd="/", env=bare, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc

    icc("scan")
    icc("run", "--at", at(1))
    dispatch("env.check", {}, config=load_config(project.config, environ={}))
    icc("consume", "async", "--stop-when-empty")

    expected = {
        "DATABASE_URL": "postgres://db/app",
        "LOCAL_ONLY": "local",
        "REAL": "environment",
        "ICC_ENVIRONMENT": None,
    }
    assert json.loads((project.root / "callable.json").read_text()) == expected
    [command] = project.runs("command")
    assert command["outcome"] == "succeeded"
    assert json.loads(command["output"]) == expected
    assert json.loads((project.root / "handler.json").read_text()) == expected


def test_unknown_queue_error_names_the_variable_that_set_the_queues(tmp_path: Path) -> None:
    from icc import QueueError
    from icc.queue.dispatch import validate_queue

    config_file = write(tmp_path / "icc.toml", "[icc]\n")
    config = load_config(cwd=tmp_path, environ={"ICC_CONSUMERS_QUEUES": "mail"})

    with pytest.raises(QueueError) as info:
        validate_queue(config, "reports")
    assert "Add it to environment variable ICC_CONSUMERS_QUEUES or give it a [queues.reports] table" in str(
        info.value
    )
    assert str(info.value).endswith(f"table in {config_file}")


def test_dotenv_variable_with_a_nul_byte_is_a_config_error_naming_the_file(project: Project) -> None:
    (project.root / ".env").write_bytes(b"GOOD=1\nBAD=a\x00b\n")

    proc = subprocess.run(
        [sys.executable, "-m", "icc", "status"],
        cwd=project.root,
        env=project.environ(),
        capture_output=True,
        text=True,
    )

    assert proc.returncode == 2
    assert (
        proc.stderr
        == f"error: {project.root / '.env'}: variable 'BAD' has a NUL byte in its name or value; remove it\n"
    )


def test_export_adds_dotenv_variables_to_the_process_environment_without_overriding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / ".env", "ICCTEST_NEW=dotenv\nICCTEST_SET=dotenv\nICC_ENVIRONMENT=staging\n")
    monkeypatch.delenv("ICCTEST_NEW", raising=False)
    monkeypatch.setenv("ICCTEST_SET", "real")
    monkeypatch.delenv("ICC_ENVIRONMENT", raising=False)

    load_config(cwd=tmp_path)  # what icc.dispatch() in an application does: its environment is left alone
    assert "ICCTEST_NEW" not in os.environ

    config = load_config(cwd=tmp_path, export=True)  # what icc's commands do
    assert os.environ["ICCTEST_NEW"] == "dotenv"
    assert os.environ["ICCTEST_SET"] == "real"
    assert "ICC_ENVIRONMENT" not in os.environ  # configuration, not exported
    assert config.environment == "staging"


# --- [icc.store] ------------------------------------------------------------------------------------


def test_store_table_is_read(tmp_path: Path) -> None:
    write(
        tmp_path / "icc.toml",
        '[icc.store]\nurl = "postgresql://icc@db.internal/app"\nschema = "tenant_a"\nhost_id = "web-1"\n'
        "lease = 90\n",
    )
    store = load_config(cwd=tmp_path, environ=NO_ENV).store
    assert (store.url, store.schema, store.host_id, store.lease) == (
        "postgresql://icc@db.internal/app",
        "tenant_a",
        "web-1",
        90.0,
    )
    assert store.shared


def test_without_a_store_table_state_stays_in_sqlite(tmp_path: Path) -> None:
    write(tmp_path / "icc.toml", "[icc]\n")
    store = load_config(cwd=tmp_path, environ=NO_ENV).store
    assert (store.url, store.schema, store.host_id, store.lease, store.shared) == (
        None,
        "icc",
        None,
        60.0,
        False,
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'url = "mysql://db/app"',
            "'url' in [icc.store] must be a PostgreSQL URL starting with postgresql://",
        ),
        ('url = ""', "'url' in [icc.store] must be a PostgreSQL URL (postgresql://user@host/dbname)"),
        ("url = 5", "'url' in [icc.store] must be a PostgreSQL URL"),
        ('schema = "Icc-Prod"', "'schema' in [icc.store] must be a lower-case SQL name"),
        ('schema = "1abc"', "'schema' in [icc.store] must be a lower-case SQL name"),
        ('host_id = "web 1"', "'host_id' in [icc.store] must be a host name of letters, digits"),
        ('host_id = ""', "'host_id' in [icc.store] must be a host name of letters, digits"),
        ("lease = 1", "'lease' in [icc.store] must be a number from 5 to 86400, not 1"),
        ('lease = "60"', "'lease' in [icc.store] must be a number from 5 to 86400"),
        ("lease = nan", "'lease' in [icc.store] must be a number from 5 to 86400, not nan"),
        ("pool = 4", "'pool'"),
    ],
)
def test_invalid_store_settings_are_one_line_errors_naming_the_key(
    tmp_path: Path, line: str, message: str
) -> None:
    config_file = write(tmp_path / "icc.toml", f"[icc.store]\n{line}\n")

    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path, environ=NO_ENV)
    text = str(info.value)
    assert text.startswith(f"{config_file}: ") and message in text
    assert "\n" not in text


def test_a_password_in_a_bad_store_url_is_never_printed(tmp_path: Path) -> None:
    write(tmp_path / "icc.toml", '[icc.store]\nurl = "mysql://icc:hunter2-secret@db/app"\n')
    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path, environ=NO_ENV)
    assert "hunter2-secret" not in str(info.value) and "***" in str(info.value)

    write(tmp_path / "icc.toml", "[icc]\n")
    with pytest.raises(ConfigError) as info:
        load_config(cwd=tmp_path, environ={"ICC_STORE_URL": "http://icc:hunter2-secret@db/app"})
    assert "ICC_STORE_URL" in str(info.value) and "hunter2-secret" not in str(info.value)


def test_a_password_in_a_bad_store_url_is_not_printed_by_icc(project: Project) -> None:
    project.write_config(extra='\n[icc.store]\nurl = "postgres:/icc:hunter2-secret@db/app"\n')
    proc = project.icc("status")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "'url' in [icc.store]" in line
    assert "hunter2-secret" not in proc.stderr + proc.stdout


def test_store_variables_override_the_store_table(tmp_path: Path) -> None:
    write(tmp_path / "icc.toml", '[icc.store]\nurl = "postgresql://file@db/app"\nlease = 60\n')
    write(tmp_path / ".env", "ICC_STORE_SCHEMA=from_dotenv\nICC_STORE_URL=postgresql://dotenv@db/app\n")
    config = load_config(
        cwd=tmp_path,
        environ={
            "ICC_STORE_URL": "postgresql://env@db/app",
            "ICC_STORE_LEASE": "120",
            "ICC_STORE_HOST_ID": "h-2",
        },
    )
    assert config.store.url == "postgresql://env@db/app"
    assert config.store.schema == "from_dotenv"
    assert config.store.lease == 120.0
    assert config.store.host_id == "h-2"
    assert "ICC_STORE_URL" in config.sources["store.url"]


def test_store_url_from_the_environment_alone_selects_postgresql(tmp_path: Path) -> None:
    write(tmp_path / "icc.toml", "[icc]\n")
    config = load_config(cwd=tmp_path, environ={"ICC_STORE_URL": "postgresql://env@db/app"})
    assert config.store.url == "postgresql://env@db/app" and config.store.shared


def test_invalid_store_variable_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    write(tmp_path / "icc.toml", "[icc]\n")
    with pytest.raises(ConfigError, match=r"ICC_STORE_LEASE.* must be a number from 5 to 86400, not '2'"):
        load_config(cwd=tmp_path, environ={"ICC_STORE_LEASE": "2"})


# --- icc.store.host_id -----------------------------------------------------------------------------

HOST_ID_SCRIPT = (
    "import sys; from pathlib import Path; from icc.config import load_config; from icc.store import host_id; "
    "print(host_id(load_config(Path(sys.argv[1]), environ={})))"
)


def test_host_id_is_made_once_private_and_stable_across_calls_and_processes(tmp_path: Path) -> None:
    from icc.store import HOST_ID_FILE, host_id

    config_file = write(tmp_path / "icc.toml", '[icc]\nstate_dir = "state"\n')
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HOST_ID_SCRIPT, str(config_file)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    made = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(made) == 1  # eight processes racing to make it agree on one
    [first] = made
    path = tmp_path / "state" / HOST_ID_FILE
    assert path.read_text().strip() == first
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    config = load_config(config_file, environ=NO_ENV)
    assert host_id(config) == host_id(config) == first
    assert len(first) == 36 and first.count("-") == 4  # a UUID, not the hostname


def test_configured_host_id_wins_over_the_kept_one(tmp_path: Path) -> None:
    from icc.store import HOST_ID_FILE, host_id

    write(tmp_path / "icc.toml", '[icc]\nstate_dir = "state"\n')
    kept = host_id(load_config(cwd=tmp_path, environ=NO_ENV))
    write(tmp_path / "icc.toml", '[icc]\nstate_dir = "state"\n[icc.store]\nhost_id = "web-1"\n')
    assert host_id(load_config(cwd=tmp_path, environ=NO_ENV)) == "web-1"
    assert host_id(load_config(cwd=tmp_path, environ={"ICC_STORE_HOST_ID": "web-2"})) == "web-2"
    assert (tmp_path / "state" / HOST_ID_FILE).read_text().strip() == kept  # left as it was


def test_an_empty_host_id_file_left_by_a_crash_is_replaced_once_and_then_kept(tmp_path: Path) -> None:
    from icc.store import HOST_ID_FILE, host_id

    write(tmp_path / "icc.toml", '[icc]\nstate_dir = "state"\n')
    config = load_config(cwd=tmp_path, environ=NO_ENV)
    host_id(config)
    path = tmp_path / "state" / HOST_ID_FILE
    path.write_text("")  # a process died between creating the file and writing it
    first = host_id(config)
    assert first and host_id(config) == first == path.read_text().strip()
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(f".{HOST_ID_FILE}")]


# --- [icc.web] ------------------------------------------------------------------------------------------


def test_web_token_from_the_file_and_from_icc_web_token(tmp_path: Path) -> None:
    write(tmp_path / "icc.toml", '[icc.web]\ntoken = "from-the-file-0123456789"\n')
    assert load_config(cwd=tmp_path, environ=NO_ENV).web.token == "from-the-file-0123456789"
    environ = {"ICC_WEB_TOKEN": "from-the-environment-0123"}
    assert load_config(cwd=tmp_path, environ=environ).web.token == "from-the-environment-0123"
    write(tmp_path / "icc.toml", "[icc]\n")
    assert load_config(cwd=tmp_path, environ=NO_ENV).web.token is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[icc.web]\ntoken = "short-secret"\n', "at least 16 characters"),
        ("[icc.web]\ntoken = 12345678901234567890\n", "at least 16 characters"),
        ('[icc.web]\ntokn = "a-long-enough-token-here"\n', "tokn"),
    ],
)
def test_a_bad_web_table_is_a_one_line_error_that_never_shows_the_token(
    tmp_path: Path, table: str, message: str
) -> None:
    write(tmp_path / "icc.toml", table)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(cwd=tmp_path, environ=NO_ENV)
    assert "short-secret" not in str(caught.value) and "\n" not in str(caught.value)


def test_the_idle_ticks_reader_takes_a_web_table_and_doubts_a_bad_token(tmp_path: Path) -> None:
    from icc import fastconfig

    config = write(
        tmp_path / "icc.toml", '[icc]\nstate_dir = "s"\n[icc.web]\ntoken = "a-long-enough-token-here"\n'
    )
    assert fastconfig.read_config(str(config)) == (str(tmp_path / "s"), "UTC")
    write(config, '[icc]\nstate_dir = "s"\n[icc.web]\ntoken = "short"\n')
    assert fastconfig.read_config(str(config)) is None  # the full loader says what is wrong
