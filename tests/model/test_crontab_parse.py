"""icc.crontab.parse_crontab: a user crontab read as Debian's cron reads it, every error naming file and line."""

from __future__ import annotations

import pytest
from icc import ScheduleError
from icc.crontab import parse_crontab


def test_lines_become_named_commands_run_by_the_shell() -> None:
    text = "# nightly\n\n30 2 * * * backup.sh --full\n@hourly  echo hi\n"
    lines = parse_crontab(text, "deploy/crontab")
    assert [(e.name, e.expression, e.argv) for e in lines] == [
        ("crontab:deploy/crontab:3", "30 2 * * *", ["/bin/sh", "-c", "backup.sh --full"]),
        ("crontab:deploy/crontab:4", "@hourly", ["/bin/sh", "-c", "echo hi"]),
    ]


def test_environment_assignments_apply_to_later_lines_only() -> None:
    text = "* * * * * first\nMAILTO = ''\nGREETING=\"hello world\"\n* * * * * second\nGREETING=bye\n* * * * * third\n"
    first, second, third = parse_crontab(text, "c")
    assert first.argv == ["/bin/sh", "-c", "first"]
    assert second.argv == ["/usr/bin/env", "MAILTO=", "GREETING=hello world", "/bin/sh", "-c", "second"]
    assert third.argv[:3] == ["/usr/bin/env", "MAILTO=", "GREETING=bye"]


def test_shell_and_cron_tz_lines() -> None:
    (entry,) = parse_crontab("SHELL=/bin/bash\nCRON_TZ=Europe/Berlin\n0 3 * * * run\n", "c")
    assert entry.shell == "/bin/bash" and entry.zone == "Europe/Berlin"
    assert entry.argv[-3:] == ["/bin/bash", "-c", "run"]


def test_percent_ends_the_command_and_the_rest_is_stdin_with_newlines() -> None:
    (entry,) = parse_crontab(r"0 0 * * * date +\%F; cat%line one%line two" + "\n", "c")
    assert entry.command == "date +%F; cat"
    assert entry.stdin == "line one\nline two"
    assert entry.argv[:2] == ["/bin/sh", "-c"] and entry.argv[-2:] == ["line one\nline two", "date +%F; cat"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("\n@reboot start.sh\n", "c:2: @reboot is not supported"),
        ("@often x\n", "c:1: '@often' is not a cron shortcut"),
        ("* * * * \n", "c:1: expected five time fields and a command"),
        ("61 * * * * x\n", "c:1: minute"),
        ("* * * * * %only stdin\n", "c:1: the command before the first % is empty"),
        ("CRON_TZ=Mars/Base\n* * * * * x\n", "c:1: CRON_TZ: time zone 'Mars/Base' is unknown"),
        ("@daily\n", "c:1: the line has a schedule but no command"),
    ],
)
def test_errors_name_the_file_and_line_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_crontab(text, "c")
    assert str(info.value).startswith(message.split(" ")[0]) and message in str(info.value)
    assert "\n" not in str(info.value)


def _plugin_jobs(tmp_path, text: str, timezone: str = "UTC"):  # type: ignore[no-untyped-def]
    from types import MappingProxyType

    import icc.crontab
    from icc.config import Config
    from icc.jobs import Scheduler

    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "crontab").write_text(text)
    config = Config(
        path=None,
        root=tmp_path,
        timezone=timezone,
        tables=MappingProxyType({"crontab": MappingProxyType({"files": ["deploy/crontab"]})}),
    )
    icc.crontab.configure(config)
    scheduler = Scheduler(timezone=timezone)
    icc.crontab.schedule(scheduler)
    return scheduler.jobs


def test_the_plugin_reads_the_configured_file_with_debian_dst_rules(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime
    from zoneinfo import ZoneInfo

    jobs = _plugin_jobs(
        tmp_path, "30 2 * * * nightly\nCRON_TZ=America/New_York\n*/30 * * * * poll\n", "Europe/Berlin"
    )
    nightly, poll = jobs["crontab:deploy/crontab:1"], jobs["crontab:deploy/crontab:3"]
    assert nightly.argv == ["/bin/sh", "-c", "nightly"] and nightly.description == "nightly"
    berlin = ZoneInfo("Europe/Berlin")
    # A fixed job swallowed by the spring-forward gap runs once at the first minute after it; once on fall back.
    assert nightly.schedule.next_runs(datetime(2025, 3, 29, 12, 0, tzinfo=berlin), 2) == [
        datetime(2025, 3, 30, 3, 0, tzinfo=berlin),
        datetime(2025, 3, 31, 2, 30, tzinfo=berlin),
    ]
    assert len(nightly.schedule.next_runs(datetime(2025, 10, 25, 12, 0, tzinfo=berlin), 2)) == 2
    assert nightly.schedule.next_runs(datetime(2025, 10, 25, 12, 0, tzinfo=berlin), 2)[1].day == 27
    assert poll.schedule.zone == "America/New_York"


def test_the_plugin_refuses_unknown_keys_and_missing_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from types import MappingProxyType

    import icc.crontab
    from icc import ConfigError
    from icc.config import Config

    bad = Config(
        path=None, root=tmp_path, tables=MappingProxyType({"crontab": MappingProxyType({"file": "x"})})
    )
    with pytest.raises(ConfigError, match=r"\[icc.crontab\]: unknown key 'file'"):
        icc.crontab.configure(bad)
    from icc.jobs import Scheduler

    config = Config(
        path=None,
        root=tmp_path,
        tables=MappingProxyType({"crontab": MappingProxyType({"files": ["deploy/other"]})}),
    )
    icc.crontab.configure(config)
    with pytest.raises(ConfigError, match="deploy/other does not exist"):
        icc.crontab.schedule(Scheduler())
