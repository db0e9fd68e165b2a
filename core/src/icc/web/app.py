"""The dashboard's ASGI application (Starlette) and its server (uvicorn).

:func:`create_app` wires the routes of :mod:`icc.web.routes`, the static folder of this package (nothing else is
served as a file) and the security headers on every answer; :func:`serve` refuses a non-loopback bind without
a token, binds the socket itself (``--port 0`` picks a free port, printed) and runs uvicorn.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import jinja2
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from icc.config import Config
from icc.errors import ConfigError
from icc.web import routes as r
from icc.web.auth import Guard, is_loopback

HERE = Path(__file__).resolve().parent
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the CSP, X-Frame-Options, Referrer-Policy and friends to every answer, ``Cache-Control: no-store``
    to all but the static files, and ``Server-Timing: app;dur=MS`` (the time until the answer's headers, which
    bench/bench_web.py reads)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - started) * 1000
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control" or static
                ]
                headers += SECURITY_HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                headers.append((b"server-timing", f"app;dur={took:.1f}".encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,  # every template: job names, output, payloads and errors are escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def web_token(config: Config) -> str | None:
    """``[icc.web] token`` or ``ICC_WEB_TOKEN`` (the configuration loader reads both)."""
    return config.web.token


def create_app(config: Config, *, read_only: bool = False, token: str | None = None) -> Starlette:
    site = r.Site(config=config, guard=Guard(token=token, read_only=read_only), templates=templates())

    def page(handler: r.Handler) -> Any:
        return r.page(site, handler)

    def act(name: str, handler: Any, **fixed: Any) -> Any:
        def bound(site: r.Site, form: Any, **params: Any) -> Any:
            return handler(site, form, **params, **fixed)

        return r.action(site, name, bound)

    both = ["GET", "POST"]  # a GET on an action is answered (403) by the action itself
    app = Starlette(
        routes=[
            Route("/", page(r.jobs_page)),
            Route("/timeline", page(r.timeline_page)),
            Route("/jobs/{name:path}/run", act("run", r.run_now), methods=both),
            Route("/jobs/{name:path}/disable", act("disable", r.set_enabled, enabled=False), methods=both),
            Route("/jobs/{name:path}/enable", act("enable", r.set_enabled, enabled=True), methods=both),
            Route("/jobs/{name:path}", page(r.job_page)),
            Route("/runs/{run_id:int}", page(r.run_page)),
            Route("/queues", page(r.queues_page)),
            Route("/queues/{queue}/failed", page(r.failed_page)),
            Route(
                "/queues/{queue}/failed/{message_id}/retry",
                act("retry", r.failed_action, remove=False),
                methods=both,
            ),
            Route(
                "/queues/{queue}/failed/{message_id}/remove",
                act("remove", r.failed_action, remove=True),
                methods=both,
            ),
            Route("/pause", act("pause", r.pause), methods=both),
            Route("/resume", act("resume", r.resume), methods=both),
            Route("/hosts", page(r.hosts_page)),
            Route("/api/jobs", page(r.api_jobs)),
            Route("/api/jobs/{name:path}", page(r.api_job)),
            Route("/api/runs/{run_id:int}", page(r.api_run)),
            Route("/api/queues", page(r.api_queues)),
            Route("/healthz", r.healthz),
            Route("/login", r.login, methods=both),
            Route("/logout", r.logout, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
        ],
    )
    app.state.site = site
    app.add_middleware(SecurityHeaders)
    return app


def serve(config: Config, *, host: str, port: int, read_only: bool) -> None:
    """Run the dashboard until interrupted. A non-loopback ``host`` without a token is a ConfigError."""

    token = web_token(config)
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"icc web refuses to bind {host} without a token: set [icc.web] token (or ICC_WEB_TOKEN) to a secret of "
            "at least 16 characters, or bind 127.0.0.1"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and without it a kept-alive
    # connection waits ~40 ms for each answer's body (Nagle and delayed ACKs).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"icc web cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port"
        ) from None
    sock.listen(256)
    sock.set_inheritable(False)
    bound = sock.getsockname()[1]
    app = create_app(config, read_only=read_only, token=token)
    shown = f"[{host}]" if ":" in host else host
    mode = " (read-only)" if read_only else ""
    print(f"icc web: serving http://{shown}:{bound}/{mode}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=os.environ.get("ICC_WEB_LOG_LEVEL", "warning"),
            access_log=False,
            proxy_headers=True,
            forwarded_allow_ips="127.0.0.1",
            server_header=False,
            timeout_graceful_shutdown=3,
        )
    )
    server.run(sockets=[sock])
    sys.stdout.flush()
