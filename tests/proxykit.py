"""A TCP proxy between one simulated host and the PostgreSQL server, that can cut the host off.

``TcpProxy(target_port)`` listens on a free loopback port and forwards every connection to the target. Then:

* ``blackhole()``: bytes in both directions are swallowed from now on (existing and new connections stay
  open but nothing arrives). Unlike a real partition, the proxy's kernel still acknowledges what the host
  sends, so no TCP timeout ever fires: a host only notices through deadlines of its own (the lease);
* ``reset()``: every open connection is closed with RST at once, and new ones are refused with RST;
* ``heal()``: forwarding resumes for new connections (connections cut before stay cut).

Threads, in the test's process; the hosts are real ``icc`` processes whose ``[icc.store] url`` names the
proxy's port.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._mode = "pass"  # pass | blackhole | reset
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closed = False
        self.connections = 0  # accepted so far
        threading.Thread(target=self._accept, daemon=True).start()

    # -- control ------------------------------------------------------------------------------------------
    def blackhole(self) -> None:
        with self._lock:
            self._mode = "blackhole"

    def reset(self) -> None:
        with self._lock:
            self._mode = "reset"
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _rst(sock)

    def heal(self) -> None:
        with self._lock:
            self._mode = "pass"

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self.reset()

    def url(self, dbname: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    # -- forwarding -----------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self._mode
            if mode == "reset":
                _rst(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _rst(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                readable, _w, _x = select.select([a, b], [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    with self._lock:
                        mode = self._mode
                    if mode == "blackhole":
                        continue  # swallowed: the other side never hears of it
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()


def _rst(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0) rather than FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
