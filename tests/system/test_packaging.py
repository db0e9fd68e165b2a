"""The distribution names of DESIGN's round 2 contract: core is `icc-runner` (import name and command `icc`)."""

from __future__ import annotations

from importlib import metadata

import icc
from icc._version import DISTRIBUTION


def test_core_is_installed_as_icc_runner_with_the_icc_command_and_version() -> None:
    dist = metadata.distribution("icc-runner")
    assert DISTRIBUTION == "icc-runner"
    assert dist.version == icc.__version__
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"icc": "icc.__main__:main"}


def test_icc_mail_depends_on_icc_runner() -> None:
    requires = metadata.requires("icc-mail") or []
    assert any(req.split(";")[0].strip().startswith("icc-runner") for req in requires), requires
