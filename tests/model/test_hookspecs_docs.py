"""Docs that cannot drift (as datasette's test_docs): every hook is documented, typed and tested."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from icc import hookspecs

ROOT = Path(__file__).parents[2]
PLUGINS_DOC = ROOT / "docs" / "plugins.md"
CONFIG_DOC = ROOT / "docs" / "configuration.md"

HOOKS = sorted(name for name, value in vars(hookspecs).items() if hasattr(value, "icc_spec"))


def _hooks_section() -> str:
    return PLUGINS_DOC.read_text().partition("\n# Hooks\n")[2]


def test_there_are_hooks() -> None:
    assert {
        "configure",
        "schedule",
        "register_handlers",
        "register_commands",
        "before_run",
        "after_run",
    } <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_has_a_docstring_and_type_hints(hook: str) -> None:
    spec = getattr(hookspecs, hook)
    assert (spec.__doc__ or "").strip(), f"hookspec {hook} has no docstring"
    signature = inspect.signature(spec)
    assert signature.return_annotation == "None"
    for name, parameter in signature.parameters.items():
        assert parameter.annotation is not inspect.Parameter.empty, f"{hook}({name}) has no type hint"
        assert f":param {name}:" in spec.__doc__, f"hookspec {hook} does not document {name}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_has_a_heading_in_plugins_doc(hook: str) -> None:
    assert f"\n## {hook}\n" in _hooks_section(), f"docs/plugins.md has no '## {hook}' under '# Hooks'"


@pytest.mark.parametrize("hook", HOOKS)
def test_documented_signature_names_every_parameter(hook: str) -> None:
    section = _hooks_section().split(f"\n## {hook}\n", 1)[1].split("\n## ", 1)[0]
    for name in inspect.signature(getattr(hookspecs, hook)).parameters:
        assert re.search(rf"`{hook}\([^`]*\b{name}\b", section), f"## {hook} does not show parameter {name}"


def test_every_heading_under_hooks_is_a_hook() -> None:
    headings = re.findall(r"^## (\S+)$", _hooks_section(), flags=re.MULTILINE)
    assert sorted(headings) == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test_fixture_plugin(hook: str) -> None:
    fixtures = Path(__file__).parents[1] / "plugin_fixtures"
    assert any(f"def {hook}(" in path.read_text() for path in fixtures.glob("*.py")), (
        f"no plugin in tests/plugin_fixtures implements {hook}"
    )


def test_every_core_config_key_and_variable_is_documented() -> None:
    from icc.config import CONSUMER_KEYS, CORE_KEYS, ENV_KEYS, MONITOR_KEYS, QUEUE_KEYS, STORE_KEYS

    text = CONFIG_DOC.read_text()
    for key in [*CORE_KEYS, *CONSUMER_KEYS, *QUEUE_KEYS, *MONITOR_KEYS, *STORE_KEYS]:
        assert f"| `{key}` |" in text, f"docs/configuration.md has no row for {key}"
    for variable in ENV_KEYS:
        assert f"`{variable}`" in text, f"docs/configuration.md does not name {variable}"
