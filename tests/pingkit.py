"""A real HTTP server on 127.0.0.1 that records heartbeat pings (the ``ping_server`` fixture)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Hit:
    method: str
    path: str
    body: bytes
    authorization: str | None = None


@dataclass
class PingServer:
    """Records every request; ``status`` is the answer; ``hang`` makes it wait until released."""

    hits: list[Hit] = field(default_factory=list)
    status: int = 200
    hang: threading.Event | None = None
    url: str = ""
    location: str | None = None  # sent as the Location header (with status 302, a redirect)


@pytest.fixture
def ping_server() -> Iterator[PingServer]:
    state = PingServer()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.hits.append(Hit(self.command, self.path, body, self.headers.get("Authorization")))
            if state.hang is not None:
                state.hang.wait(60)  # the server hangs for up to 60 s
            self.send_response(state.status)
            if state.location is not None:
                self.send_header("Location", state.location)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = do_POST = do_HEAD = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        if state.hang is not None:
            state.hang.set()
        server.shutdown()
        server.server_close()
