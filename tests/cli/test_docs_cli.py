"""docs/cli.md cannot drift from the commands: every command has a section, every option is mentioned in it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from icc.cli import cli

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
HEADING = re.compile(r"^## (icc(?: [\w:-]+)*)\s*$", re.MULTILINE)


def _commands(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            if not sub.hidden:
                yield from _commands(sub, f"{path} {name}")


def _sections() -> dict[str, str]:
    """``{"icc run": text of its section}``: from its ``## icc run`` heading to the next ``## `` heading."""
    text = CLI_MD.read_text(encoding="utf-8")
    sections: dict[str, str] = {}
    for match in HEADING.finditer(text):
        end = text.find("\n## ", match.end())
        sections[match.group(1)] = text[match.end() : end if end != -1 else len(text)]
    return sections


def _long_flags(command: click.Command) -> list[str]:
    flags = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        names = [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]
        flags.extend(names or param.opts)
    return flags


COMMANDS = list(_commands(cli, "icc"))


def test_the_tree_is_walked() -> None:
    paths = {path for path, _ in COMMANDS}
    assert {"icc", "icc run", "icc status", "icc failed", "icc failed retry"} <= paths


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_command_is_documented(path: str, command: click.Command) -> None:
    sections = _sections()
    assert path in sections, f"docs/cli.md has no '## {path}' heading"
    section = sections[path]
    missing = [
        flag
        for flag in _long_flags(command)
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", section)
    ]
    assert not missing, f"docs/cli.md section '## {path}' does not mention {', '.join(missing)}"
