"""``icc.hookimpl``: the marker a plugin puts on its hook functions, without importing pluggy.

Every plugin module runs ``@icc.hookimpl`` when it is imported, and a run's supervisor imports the job's plugin:
with pluggy's own marker, that import cost pluggy (with ``typing`` and ``inspect``, about 10 ms) before the first
line of the plugin's code. This marker sets exactly what ``pluggy.HookimplMarker("icc")`` sets, the dict
``func.icc_impl`` of the six options, so :class:`pluggy.PluginManager` registers a marked function as if pluggy
had marked it; pluggy is imported only by the plugin host that reads the marks (:mod:`icc.plugins`).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: a plugin's import does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["HookimplMarker", "hookimpl"]


class HookimplMarker:
    """The same call as ``pluggy.HookimplMarker(project_name)`` (pluggy 1.x): ``@marker`` or
    ``@marker(tryfirst=True, ...)`` sets ``func.<project_name>_impl`` to the options' dict."""

    __slots__ = ("project_name",)

    def __init__(self, project_name: str) -> None:
        self.project_name = project_name

    def __call__(
        self,
        function: Callable[..., object] | None = None,
        hookwrapper: bool = False,
        optionalhook: bool = False,
        tryfirst: bool = False,
        trylast: bool = False,
        specname: str | None = None,
        wrapper: bool = False,
    ) -> object:
        options = {
            "wrapper": wrapper,
            "hookwrapper": hookwrapper,
            "optionalhook": optionalhook,
            "tryfirst": tryfirst,
            "trylast": trylast,
            "specname": specname,
        }

        def mark(func: Callable[..., object]) -> Callable[..., object]:
            setattr(func, self.project_name + "_impl", options)
            return func

        return mark if function is None else mark(function)

    def __repr__(self) -> str:
        return f"<icc hookimpl marker for {self.project_name!r}>"


if TYPE_CHECKING:
    import pluggy

    hookimpl: pluggy.HookimplMarker  # the same interface: type checkers see pluggy's
else:
    hookimpl = HookimplMarker("icc")
