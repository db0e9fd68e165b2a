"""``icc.hookimpl`` is icc's own marker (``icc.markers``): pluggy registers what it marks exactly as it would
register pluggy's own marks, and importing a plugin module does not import pluggy."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import icc
import pluggy
import pytest
from icc.hookspecs import hookimpl as hookspecs_hookimpl
from icc.markers import HookimplMarker

OPTIONS = [
    {},
    {"tryfirst": True},
    {"trylast": True},
    {"optionalhook": True},
    {"specname": "schedule"},
    {"hookwrapper": True},
    {"wrapper": True},
]


def test_icc_hookimpl_is_the_hookspecs_marker() -> None:
    assert icc.hookimpl is hookspecs_hookimpl
    assert isinstance(icc.hookimpl, HookimplMarker)


@pytest.mark.parametrize("options", OPTIONS)
def test_a_mark_is_the_same_dict_pluggys_marker_sets(options: dict[str, object]) -> None:
    def ours() -> None: ...

    def theirs() -> None: ...

    if options:
        icc.hookimpl(**options)(ours)
        pluggy.HookimplMarker("icc")(**options)(theirs)
    else:
        icc.hookimpl(ours)
        pluggy.HookimplMarker("icc")(theirs)
    assert ours.icc_impl == theirs.icc_impl  # type: ignore[attr-defined]


def test_pluggy_registers_icc_marks_with_their_options() -> None:
    spec = pluggy.HookspecMarker("icc")

    class Specs:
        @spec
        def hello(self, who: str) -> str: ...  # type: ignore[empty-body]

    calls: list[str] = []

    class First:
        @icc.hookimpl(tryfirst=True)
        def hello(self, who: str) -> str:
            calls.append("first")
            return f"first {who}"

    class Last:
        @icc.hookimpl(trylast=True)
        def hello(self, who: str) -> str:
            calls.append("last")
            return f"last {who}"

    class Wrapper:
        @icc.hookimpl(wrapper=True)
        def hello(self, who: str):  # type: ignore[no-untyped-def]
            result = yield
            return [r.upper() for r in result]

    class Unmarked:
        def hello(self, who: str) -> str:
            return "never"

    pm = pluggy.PluginManager("icc")
    pm.add_hookspecs(Specs)
    for plugin in (Last(), First(), Wrapper(), Unmarked()):
        pm.register(plugin)
    assert pm.hook.hello(who="you") == ["FIRST YOU", "LAST YOU"]
    assert calls == ["first", "last"]
    assert len(pm.hook.hello.get_hookimpls()) == 3  # the unmarked method is not a hook implementation


def test_importing_a_plugin_module_does_not_import_pluggy(tmp_path: Path) -> None:
    (tmp_path / "someplugin.py").write_text(
        textwrap.dedent(
            """
            import icc

            def task():
                pass

            @icc.hookimpl
            def schedule(scheduler):
                scheduler.add(task).daily()

            @icc.hookimpl(tryfirst=True)
            def after_run(job, result):
                pass
            """
        )
    )
    code = "import sys, someplugin; print(sorted(m for m in sys.modules if m.split('.')[0] in ('pluggy', 'typing')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
