"""Benchmarks of the dashboard (``icc web``, issue 19), each against a baseline measured in the same run.

A real project of 10,000 jobs (9,999 yearly ones and one daily, ``due``), scanned and ticked by real ``icc``
commands, whose state store then gets 1,000,000 runs in one transaction (``executemany``): 100,000 of them for
``due``, 90 for every other job; one in ten failed, one in ten missed. A real ``icc web`` process serves it.

1. The jobs page (``GET /``) and ``GET /api/jobs``, each paired with ``icc status --json`` on the same store, in
   rounds that alternate the order; a ratio is the median of the per-round ratios (wall, from the client).
   Goal: each at most 2x ``icc status --json``.
2. The job page of ``due`` (100,000 runs): its server time (the ``Server-Timing`` header: from the request's
   arrival to the answer's headers), the median of the rounds. Goal: at most 100 ms. ``/healthz`` is measured
   alongside as the floor.
3. 50 clients polling ``/healthz`` every second, as 50 open pages do, for 15 s after 3 s of warm-up (one
   process, asyncio, each on its own kept-alive connection), while a run is recorded every second (the stamp they poll moves). Goal: no failed
   request, and the 99th percentile latency (at the client) at most 5x the median. The server time of the same
   requests is printed too: on a busy machine the client's latency is mostly waiting for a core.

Run: ``nox -s bench -- bench/bench_web.py`` (a few minutes, most of it building the store).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from bench_tick import ICC, project, verdict

JOBS = 10_000
RUNS = 1_000_000
HEAVY_RUNS = 100_000
ROUNDS = 5
JOB_PAGE_ROUNDS = 15
CLIENTS = 50
POLL_SECONDS = 15.0
WARM_UP = 3.0
PAGE_GOAL = 2.0
JOB_PAGE_GOAL_MS = 100.0
POLL_GOAL = 5.0

PLUGIN = """
    import icc

    def task():
        print("hello")

    @icc.hookimpl
    def schedule(scheduler):
        for i in range({yearly}):
            scheduler.add(task, name=f"job-{{i}}").yearly().at(i % 24, i % 60)
        scheduler.add(task, name="due").daily().at(3, 0)
    """


def fill(db: Path) -> None:
    """1,000,000 runs in one transaction: ``HEAVY_RUNS`` for ``due``, the rest spread over the other jobs."""
    others = [f"job-{i}" for i in range(JOBS - 1)]
    per_job = (RUNS - HEAVY_RUNS) // len(others)
    base = 1_700_000_000

    def rows() -> object:
        for name, count in [("due", HEAVY_RUNS), *((n, per_job) for n in others)]:
            for i in range(count):
                slot = base + i * 60
                if i % 10 == 1:
                    yield (name, slot, "scheduled", "missed", None, None, None, None, "", None)
                elif i % 10 == 0:
                    yield (
                        name,
                        slot,
                        "scheduled",
                        "failed",
                        slot + 1,
                        slot + 3,
                        1,
                        "bench",
                        "boom\n",
                        "exit code 1",
                    )
                else:
                    yield (
                        name,
                        slot,
                        "scheduled",
                        "succeeded",
                        slot + 1,
                        slot + 1.5,
                        0,
                        "bench",
                        "hello\n",
                        None,
                    )

    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO runs (job, slot, kind, outcome, started_at, ended_at, exit_code, host, output, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows(),  # type: ignore[arg-type]
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()


class Dashboard:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [ICC, "web", "--port", "0"], cwd=root, env=env, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = "http://127.0.0.1:" + line.split("127.0.0.1:", 1)[1].split("/", 1)[0]
        self.client = httpx.Client(base_url=self.url, timeout=120)
        self.client.get("/healthz")

    def get(self, path: str) -> httpx.Response:
        answer = self.client.get(path)
        answer.raise_for_status()
        return answer

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def wall(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def pages_section(root: Path, env: dict[str, str], board: Dashboard) -> None:
    def status() -> None:
        subprocess.run([ICC, "status", "--json"], cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)

    commands: dict[str, Callable[[], object]] = {
        "status": status,
        "page": lambda: board.get("/"),
        "api": lambda: board.get("/api/jobs"),
    }
    for fn in commands.values():  # warm-up
        fn()
    rows = []
    names = list(commands)
    for rnd in range(ROUNDS):
        order = names if rnd % 2 == 0 else names[::-1]
        rows.append({name: wall(commands[name]) for name in order})
    print(
        f"1. 10,000 jobs, 1,000,000 runs: the jobs page and /api/jobs against icc status --json ({ROUNDS} paired rounds)"
    )
    for name, label in (
        ("status", "icc status --json"),
        ("page", "GET / (jobs page)"),
        ("api", "GET /api/jobs"),
    ):
        print(f"   {label:40}{statistics.median(r[name] for r in rows) * 1e3:9.0f} ms")
    for name, label in (("page", "jobs page"), ("api", "/api/jobs")):
        ratio = statistics.median(r[name] / r["status"] for r in rows)
        print(f"   {label + ' / icc status --json':40}{ratio:9.2f}x")
        print(f"   goal: {label} at most {PAGE_GOAL:g}x icc status --json: {verdict(ratio <= PAGE_GOAL)}")


def job_page_section(board: Dashboard) -> None:
    def server_ms(path: str) -> float:
        return float(board.get(path).headers["server-timing"].split("dur=", 1)[1])

    server_ms("/jobs/due")
    rows = []
    for rnd in range(JOB_PAGE_ROUNDS):
        pair = ("/jobs/due", "/healthz") if rnd % 2 == 0 else ("/healthz", "/jobs/due")
        rows.append({path: server_ms(path) for path in pair})
    page = statistics.median(r["/jobs/due"] for r in rows)
    print(f"2. the job page of a job with {HEAVY_RUNS:,} runs, server time ({JOB_PAGE_ROUNDS} rounds)")
    print(f"   {'GET /jobs/due':40}{page:9.1f} ms")
    print(f"   {'GET /healthz (the floor)':40}{statistics.median(r['/healthz'] for r in rows):9.1f} ms")
    print(f"   goal: at most {JOB_PAGE_GOAL_MS:g} ms: {verdict(page <= JOB_PAGE_GOAL_MS)}")


def polling_section(root: Path, board: Dashboard) -> None:
    latencies: list[float] = []
    server: list[float] = []  # the Server-Timing of the same requests, ms
    failures: list[str] = []
    warm = time.monotonic() + WARM_UP  # connections opened, worker threads started: not measured

    host, port = board.url.rsplit("/", 1)[1].split(":")

    async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, bytes, bytes]:
        """One kept-alive HTTP/1.1 request, by hand: httpx's own cost per request would be most of what a
        lean client measures, and 50 of them in one process wait for each other."""
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        return int(head.split(b" ", 2)[1]), head, await reader.readexactly(length)

    async def client(stop: float) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        await asyncio.sleep(random.random())  # open pages poll out of phase
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                status, head, body = await get(reader, writer)
                took = time.perf_counter() - started
                if status == 200 and b'"stamp"' in body:
                    if time.monotonic() > warm:
                        latencies.append(took)
                        server.append(float(head.split(b"dur=", 1)[1].split(b"\r\n", 1)[0]))
                else:
                    failures.append(str(status))
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                failures.append(repr(exc))
                reader, writer = await asyncio.open_connection(host, int(port))
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))
        writer.close()

    # A run recorded every second, as ticks and consumers do, so every stamp the clients see moves: written by a
    # process of its own (its commits would otherwise hold up this process's clients and count as latency).
    writer_code = (
        "import sqlite3, sys, time\n"
        "conn = sqlite3.connect(sys.argv[1], timeout=30)\n"
        "stop = time.time() + float(sys.argv[2])\n"
        "n = 0\n"
        "while time.time() < stop:\n"
        "    n += 1\n"
        "    with conn:\n"
        '        conn.execute("INSERT INTO runs (job, slot, kind, outcome, started_at, ended_at, exit_code, host) "\n'
        "                     \"VALUES ('due', ?, 'scheduled', 'succeeded', ?, ?, 0, 'bench')\",\n"
        "                     (2_000_000_000 + n * 60, time.time(), time.time()))\n"
        "    time.sleep(1)\n"
    )

    async def all_clients() -> None:
        stop = time.monotonic() + WARM_UP + POLL_SECONDS
        writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                writer_code,
                str(root / "state" / "state.sqlite3"),
                str(WARM_UP + POLL_SECONDS),
            ]
        )
        await asyncio.gather(*(client(stop) for _ in range(CLIENTS)))
        writer.wait(timeout=60)

    asyncio.run(all_clients())
    latencies.sort()
    server.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    server_p99 = server[min(len(server) - 1, int(len(server) * 0.99))]
    print(
        f"3. {CLIENTS} clients polling /healthz every second for {POLL_SECONDS:g} s, a run recorded every second"
    )
    print(f"   {'requests':40}{len(latencies) + len(failures):9d}")
    print(f"   {'failed':40}{len(failures):9d}")
    print(f"   {'p50':40}{p50 * 1e3:9.1f} ms")
    print(f"   {'p99':40}{p99 * 1e3:9.1f} ms")
    print(f"   {'p99 / p50':40}{p99 / p50:9.2f}x")
    print(f"   {'server time p50, p99 (no goal)':40}{statistics.median(server):9.1f} ms {server_p99:6.1f} ms")
    print(f"   goal: no failed request: {verdict(not failures)}")
    print(f"   goal: p99 at most {POLL_GOAL:g}x p50: {verdict(p99 / p50 <= POLL_GOAL)}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="icc-bench-web-") as tmp:
        root = Path(tmp) / "project"
        started = time.perf_counter()
        env = project(root, PLUGIN.format(yearly=JOBS - 1))
        subprocess.run([ICC, "run", "--quiet"], cwd=root, env=env, check=False, stdout=subprocess.DEVNULL)
        fill(root / "state" / "state.sqlite3")
        print(f"(the store: {JOBS:,} jobs, {RUNS:,} runs, built in {time.perf_counter() - started:.0f} s)")
        board = Dashboard(root, env)
        try:
            pages_section(root, env, board)
            job_page_section(board)
            polling_section(root, board)
        finally:
            board.stop()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
