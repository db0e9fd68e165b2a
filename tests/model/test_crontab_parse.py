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
