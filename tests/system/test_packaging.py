"""The distribution names of DESIGN's round 2 contract: core is `icc-runner` (import name and command `icc`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import icc
from icc._version import DISTRIBUTION


def test_core_is_installed_as_icc_runner_with_the_icc_command_and_version() -> None:
    dist = metadata.distribution("icc-runner")
    assert DISTRIBUTION == "icc-runner"
    assert dist.version == icc.__version__
    # The command is a plain script (core/scripts/icc), not a console-script entry point.
    assert not [ep for ep in dist.entry_points if ep.group == "console_scripts"]
    scripts = [file for file in dist.files or () if file.name == "icc" and file.parent.name == "bin"]
    assert len(scripts) == 1, dist.files
    text = scripts[0].read_text()
    assert text.startswith("#!") and "from icc.__main__ import main" in text


def test_the_icc_command_starts_without_importing_re(tmp_path: Path) -> None:
    # pip's console-script wrapper imports re (a sixth of an idle tick); the command must not.
    command = shutil.which("icc", path=str(Path(sys.executable).parent))
    assert command is not None
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    env.pop("ICC_CONFIG", None)
    done = subprocess.run(
        [command, "--version"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "icc.__main__" in imported
    # --version goes through click, which imports re itself: what the script alone imports comes first.
    before_icc = []
    for line in done.stderr.splitlines():
        name = line.rsplit("|", 1)[-1].strip()
        if name == "icc.__main__" or name.startswith("icc"):
            break
        before_icc.append(name)
    assert "re" not in before_icc, before_icc


def test_icc_mail_depends_on_icc_runner() -> None:
    requires = metadata.requires("icc-mail") or []
    assert any(req.split(";")[0].strip().startswith("icc-runner") for req in requires), requires
