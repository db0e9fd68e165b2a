"""Queue throughput: icc's SQLite transport against huey's SqliteHuey, in the same run.

Both dispatch N messages one call (one transaction) each, then consume them with a no-op handler in
this process. Equal durability: WAL with ``synchronous=NORMAL`` on both (icc's default is FULL; set
here through ``ICC_QUEUE_SYNCHRONOUS``, and on huey's connection, whose default is FULL too).

Delivery differs: huey deletes a task when it dequeues it (at most once: a worker killed mid-task loses
it); icc leases, counts the attempt before the handler runs and deletes after it succeeds (at least
once). icc at its default FULL durability is printed too, for reference.

    .venv/bin/python bench/bench_queue.py [N]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from huey import SqliteHuey
from huey.consumer import Worker
from icc.config import Config
from icc.queue import Consumer, Limits, dispatch
from icc.queue.dispatch import SYNCHRONOUS_VARIABLE, open_transport


def bench_huey(directory: Path, n: int) -> tuple[float, float]:
    huey = SqliteHuey("bench", filename=str(directory / "huey.db"))
    conn = huey.storage.conn
    conn.execute("PRAGMA synchronous = NORMAL")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1

    @huey.task()
    def noop(i: int) -> None:
        return None

    started = time.perf_counter()
    for i in range(n):
        noop(i)
    dispatched = time.perf_counter() - started

    # What huey's consumer does per worker loop: dequeue (delete) then execute.
    worker = Worker(huey, default_delay=0.1, max_delay=1.0, backoff=1.15, stop_flag=threading.Event())
    started = time.perf_counter()
    while huey.pending_count():
        for _ in range(1000):
            worker.loop()
    consumed = time.perf_counter() - started
    assert huey.pending_count() == 0
    return n / dispatched, n / consumed


def bench_icc(directory: Path, n: int, synchronous: str) -> tuple[float, float]:
    os.environ[SYNCHRONOUS_VARIABLE] = synchronous
    config = Config(path=None, root=directory, state_dir=Path(f"icc-{synchronous.lower()}"))
    # A fresh state directory per call, so the cached transport is opened with this durability.
    transport = open_transport(config)
    assert transport.synchronous == synchronous

    started = time.perf_counter()
    for i in range(n):
        dispatch("noop", {"i": i}, queue="async", config=config)
    dispatched = time.perf_counter() - started

    handled = 0

    def noop(payload: dict[str, object]) -> None:
        nonlocal handled
        handled += 1

    consumer = Consumer(
        transport, {"noop": noop}, ["async"], policy=config.queue, limits=Limits(stop_when_empty=True)
    )
    started = time.perf_counter()
    stats = consumer.run(install_signal_handlers=False)
    consumed = time.perf_counter() - started
    assert handled == stats.handled == n and transport.pending() == 0, (handled, stats)
    return n / dispatched, n / consumed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = 3  # the median of three rounds, interleaved, damps a noisy machine
    results: dict[str, list[tuple[float, float]]] = {"huey": [], "icc": [], "icc-full": []}
    with tempfile.TemporaryDirectory(prefix="icc-bench-") as tmp:
        for round_ in range(rounds):
            directory = Path(tmp) / str(round_)
            directory.mkdir()
            results["huey"].append(bench_huey(directory, n))
            results["icc"].append(bench_icc(directory, n, "NORMAL"))
            results["icc-full"].append(bench_icc(directory, n, "FULL"))

    def median(name: str, column: int) -> float:
        return statistics.median(r[column] for r in results[name])

    huey_dispatch, huey_consume = median("huey", 0), median("huey", 1)
    icc_dispatch, icc_consume = median("icc", 0), median("icc", 1)
    print(f"{n} messages, no-op handler, WAL + synchronous=NORMAL on both; median of {rounds} rounds")
    print(f"{'':28}{'dispatch/s':>12}{'consume/s':>12}")
    print(f"{'huey SqliteHuey':28}{huey_dispatch:12,.0f}{huey_consume:12,.0f}")
    print(f"{'icc SqliteTransport':28}{icc_dispatch:12,.0f}{icc_consume:12,.0f}")
    print(f"{'ratio icc/huey':28}{icc_dispatch / huey_dispatch:12.2f}{icc_consume / huey_consume:12.2f}")
    print(f"{'icc at FULL (its default)':28}{median('icc-full', 0):12,.0f}{median('icc-full', 1):12,.0f}")
    goal = "met" if icc_consume >= 2 * huey_consume else "NOT met"
    print(f"goal, consume >= 2x huey: {goal} ({icc_consume / huey_consume:.2f}x)")


if __name__ == "__main__":
    main()
