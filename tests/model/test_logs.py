"""icc.logs imports logging only for a line it prints, and leaves an application's logging alone (subprocesses:
each needs a fresh interpreter to see what it imported)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=True
    )


def test_a_line_below_the_level_does_not_import_logging_and_one_above_prints_as_configured() -> None:
    proc = python(
        """
        import sys
        from icc import logs
        logs.configure("info", "text")
        logs.logger.debug("not shown")
        logs.get("icc.plugins").debug("not shown either")
        print("logging" in sys.modules)
        logs.logger.warning("shown %s", 1)
        logs.get("icc.plugins").error("child")
        print("logging" in sys.modules)
        """
    )
    assert proc.stdout.split() == ["False", "True"]
    assert proc.stderr == "warning: shown 1\nerror: child\n"


def test_an_application_that_never_configured_icc_sees_its_lines_through_its_own_logging() -> None:
    proc = python(
        """
        import logging
        logging.basicConfig(format="%(name)s|%(levelname)s|%(message)s", level=logging.INFO)
        from icc import logs
        logs.get("icc.notify.pings").info("through the root")
        logs.logger.debug("below the root's level")
        """
    )
    assert proc.stderr == "icc.notify.pings|INFO|through the root\n"


def test_configure_after_logging_was_imported_sets_the_handler_up_at_once() -> None:
    proc = python(
        """
        import logging
        from icc import logs
        logs.configure("debug", "text")
        logging.getLogger("icc.elsewhere").debug("a child logged through logging itself")
        """
    )
    assert proc.stderr == "a child logged through logging itself\n"
