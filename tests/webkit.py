"""A real `icc web` process on a real project (tests/web): start it, wait for it, ask it over HTTP."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from projectkit import Project, at

TOKEN = "web-test-token-0123456789abcdef"

# Two jobs that run every minute, one with hostile text in its name and output, and a queue handler that fails
# until the file `handler-ok` exists in the project.
PLUGIN = r"""
import json

with open(os.path.join(os.environ["MARKER_DIR"], "imported-by"), "a") as f:  # which processes import it
    f.write(f"{os.getpid()}\n")

def hello():
    print("\x1b[32mgreen\x1b[0m <script>alert(1)</script> \"><img src=x onerror=alert(2)> done")

def boom():
    raise RuntimeError("<img src=x onerror=alert(3)>")

def handle(payload):
    marker = os.path.join(os.environ["MARKER_DIR"], "handler-ok")
    if not os.path.exists(marker):
        raise RuntimeError("handler not ready <script>alert(4)</script>")
    with open(os.path.join(os.environ["MARKER_DIR"], "handled"), "a") as f:
        f.write(json.dumps(payload) + "\n")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(hello, name="hello").every_minute().between("00:00", "23:59").environments("production")
    scheduler.add(boom, name="boom").every_minute()
    scheduler.add(hello, name="<script>alert('x')</script>").daily()

@icc.hookimpl
def register_handlers(register):
    register("report.render", handle)
"""

QUEUE_CONFIG = """
[icc.queues.async]
retries = 0
"""


def make_project(project: Project, extra: str = "") -> Project:
    """``project`` with :data:`PLUGIN`, scanned, after one real tick (at ``at(0)``)."""
    project.write_config(QUEUE_CONFIG + extra)
    project.write_plugin(PLUGIN)
    project.icc("scan", check=True)
    tick = project.icc("run", "--at", at(0))
    assert tick.returncode == 1 and "boom" in tick.stdout, tick.stderr  # boom failed, as it always does
    return project


def fail_a_message(project: Project, payload: dict[str, Any]) -> None:
    """Dispatch ``payload`` and consume it while the handler fails: it ends among the failed messages."""
    from icc.config import load_config
    from icc.queue.dispatch import dispatch

    dispatch("report.render", payload, queue="async", config=load_config(project.config))
    project.icc("consume", "async", "--stop-when-empty", "--time-limit", "20", check=True)


@dataclass
class Dashboard:
    """A running `icc web`: its base URL, the token it was given, its process."""

    proc: subprocess.Popen[str]
    url: str
    token: str | None
    stderr: Path
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, *, bearer: bool = False, login: bool = False) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if bearer and self.token else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30, follow_redirects=False)
        self.clients.append(client)
        if login:
            answer = client.post("/login", data={"token": self.token or ""})
            assert answer.status_code == 303, answer.text
        return client

    def csrf(self, client: httpx.Client, path: str = "/") -> str:
        page = client.get(path)
        assert page.status_code == 200, page.text
        marker = 'name="csrf" value="'
        start = page.text.index(marker) + len(marker)
        return page.text[start : page.text.index('"', start)]

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(project: Project, *args: str, token: str | None = None, host: str = "127.0.0.1") -> Dashboard:
    """`icc web --host HOST --port 0 ARGS` for ``project``; returns once it answers ``/healthz``."""
    env = project.environ()
    env.pop("ICC_WEB_TOKEN", None)
    if token is not None:
        env["ICC_WEB_TOKEN"] = token
    stderr = project.root / f"web-{time.monotonic_ns()}.err"
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            project.argv("web", "--host", host, "--port", "0", *args),
            cwd=project.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: lines.put(proc.stdout.readline() if proc.stdout else ""), daemon=True
    ).start()
    try:
        first = lines.get(timeout=30)
    except queue.Empty:
        proc.kill()
        raise AssertionError(f"icc web printed nothing in 30 s: {stderr.read_text()}") from None
    if "serving http://" not in first:
        proc.wait(timeout=10)
        raise AssertionError(f"icc web did not start (exit {proc.returncode}): {first}{stderr.read_text()}")
    port = int(first.split("serving http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    board = Dashboard(proc, f"http://127.0.0.1:{port}", token, stderr)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(board.url + "/healthz", timeout=5).status_code == 200:
                return board
        except httpx.TransportError:
            time.sleep(0.05)
    board.stop()
    raise AssertionError("icc web did not answer /healthz within 30 s")


def status_job(project: Project, name: str) -> dict[str, Any]:
    jobs = {j["name"]: j for j in json.loads(project.icc("status", "--json", check=True).stdout)["jobs"]}
    return jobs[name]


def actions(project: Project) -> list[tuple[str, str, str]]:
    """The recorded dashboard actions, oldest first: (action, target, remote)."""
    from icc.config import load_config
    from icc.store import open_store

    store = open_store(load_config(project.config))
    try:
        return [(a.action, a.target, a.remote) for a in reversed(store.actions(limit=1000))]
    finally:
        store.close()


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def environ_without_token() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "ICC_WEB_TOKEN"}
