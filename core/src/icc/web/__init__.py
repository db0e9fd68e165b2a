"""``icc web``: the dashboard (the optional extra ``icc-runner[web]``: Starlette, uvicorn, Jinja2).

Server-rendered pages and ``/api/*`` JSON built from :mod:`icc.report`'s records, the same ones ``icc status
--json`` prints; a small script of its own polls ``/healthz`` and swaps in the fresh page when the store changed.
The web process never imports a plugin and never runs user code: "run now" starts ``icc exec JOB`` as a process
of its own. Security is in :mod:`icc.web.auth`; the pages and actions in :mod:`icc.web.routes`, the pictures
(SVG, ANSI output) in :mod:`icc.web.views`, the server in :mod:`icc.web.app`.
"""

from __future__ import annotations

import importlib

EXTRA_MISSING = "icc web needs the dashboard's packages: pip install 'icc-runner[web]'"


def missing_extra() -> str | None:
    """The one-line error when Starlette, uvicorn or Jinja2 is not installed, else None."""
    for module in ("starlette", "uvicorn", "jinja2"):
        try:
            importlib.import_module(module)
        except ImportError:
            return f"{EXTRA_MISSING} ({module} is not installed)"
    return None
