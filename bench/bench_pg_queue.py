"""Queue throughput on PostgreSQL: icc's PostgresTransport against procrastinate, in the same run.

The benchmark starts its own throw-away PostgreSQL server (tests/pgkit.py, loaded by path: initdb, fsync
off, a free loopback port) and gives each side a fresh database on it per round. Per round, icc and
procrastinate interleaved:

- dispatch: N messages from this process, one call each (``icc.dispatch`` / ``task.defer``), each its own
  autocommit transaction; timed;
- consume: 4 worker processes (forked, each opening its own connections, then waiting at a start line)
  drain the N messages with the same no-op handler (a plain ``def``) and exit when the queue is empty;
  timed from the start signal until the last worker exits.

Three rounds; the ratios are the medians of the per-round ratios (icc / procrastinate, above 1: icc is
faster). The goal printed: icc consumes at least 2x as fast as procrastinate.

At-least-once on both sides: a job is marked taken before its handler runs and removed after it succeeded;
a worker killed mid-job leaves it to be run again (icc: when its lease expires; procrastinate: when the
stalled job is retried). Both end with an empty table (procrastinate with ``delete_jobs="successful"``).

What differs, so that the ratios read right:

- Batching. icc's consumer leases up to 200 messages in one transaction (``FOR UPDATE SKIP LOCKED``,
  adaptive: about 0.25 s of work per batch) and acknowledges the finished ones in the next lease's
  transaction. procrastinate fetches one job per call (``procrastinate_fetch_job``) and finishes each with
  its own call (``procrastinate_finish_job``): two round trips and two transactions per job. Most of
  icc's consume advantage comes from this, not from faster SQL.
- The handler's thread. procrastinate runs a synchronous task in a worker thread of its asyncio loop
  (``asyncio.to_thread``); icc calls it in the consumer's main thread. An ``async def`` task would save
  procrastinate that hop; the same plain function on both sides is what an application would write.
- Bookkeeping. procrastinate keeps per-job status, events (a trigger writes ``procrastinate_events``),
  worker heartbeats and LISTEN/NOTIFY (on by default, kept); icc keeps a lease owner and expiry, an
  attempt count and an error history per message, and a heartbeat thread extends its lease.
- Dispatch. procrastinate's ``defer`` calls a SQL function that inserts the job (and fires its NOTIFY
  trigger); icc's ``dispatch`` validates and encodes the payload, then one ``INSERT … RETURNING``.

Run: ``nox -s bench -- bench/bench_pg_queue.py`` (10,000 messages); another N: ``.nox/bench/bin/python
bench/bench_pg_queue.py N`` once the nox session has been created. Needs the PostgreSQL server binaries
(Debian: ``apt-get install postgresql``).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import icc.store.postgres.connection
import procrastinate
from icc.config import Config, StoreConfig
from icc.queue import Consumer, Limits, dispatch
from icc.queue.dispatch import open_transport

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4
ROUNDS = 3
sys.path.insert(0, str(ROOT / "tests"))
import pgkit  # noqa: E402  (the tests' throw-away PostgreSQL server)

CTX = multiprocessing.get_context("fork")
logging.getLogger("procrastinate").setLevel(logging.ERROR)  # its warning about an App in __main__


def noop(i: int) -> None:
    return None


# --- icc -----------------------------------------------------------------------------------------


def icc_config(url: str, directory: Path) -> Config:
    return Config(
        path=None, root=directory, state_dir=Path("state"), store=StoreConfig(url=url, host_id="bench")
    )


def icc_worker(url: str, directory: str, ready: Event, go: Event, results: Any) -> None:
    config = icc_config(url, Path(directory))
    transport = open_transport(config)  # this process's own connection (forked: a new transport)
    handlers = {"noop": lambda payload: noop(payload["i"])}
    consumer = Consumer(
        transport, handlers, ["async"], policy=config.queue, limits=Limits(stop_when_empty=True)
    )
    ready.set()
    go.wait()
    results.put(consumer.run(install_signal_handlers=False).handled)


def bench_icc(server: Any, directory: Path, n: int) -> tuple[float, float]:
    database = server.new_database()
    url = server.url(database)
    config = icc_config(url, directory)
    conn = icc.store.postgres.connection.connect(config)
    icc.store.postgres.connection.migrate(conn, config.store.schema)
    conn.close()
    open_transport(config)  # connected before the clock starts, as procrastinate's app is opened

    started = time.perf_counter()
    for i in range(n):
        dispatch("noop", {"i": i}, queue="async", config=config)
    dispatched = time.perf_counter() - started

    consumed = run_workers(icc_worker, (url, str(directory)), n)
    assert open_transport(config).pending() == 0
    open_transport(config).close()
    server.drop_database(database)
    return n / dispatched, n / consumed


# --- procrastinate -------------------------------------------------------------------------------


def procrastinate_app(url: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    app.task(name="noop", queue="bench")(noop)
    return app


def procrastinate_worker(url: str, ready: Event, go: Event, results: Any) -> None:
    app = procrastinate_app(url)
    handled = 0

    def counting(i: int) -> None:
        nonlocal handled
        handled += 1
        noop(i)

    app.tasks["noop"].func = counting

    async def main() -> None:
        async with app.open_async():
            ready.set()
            go.wait()
            await app.run_worker_async(
                queues=["bench"],
                wait=False,
                concurrency=1,
                delete_jobs="successful",
                install_signal_handlers=False,
            )

    asyncio.run(main())
    results.put(handled)


def bench_procrastinate(server: Any, n: int) -> tuple[float, float]:
    database = server.new_database()
    url = server.url(database)
    app = procrastinate_app(url)
    with app.open():
        app.schema_manager.apply_schema()
        task = app.tasks["noop"]
        started = time.perf_counter()
        for i in range(n):
            task.defer(i=i)
        dispatched = time.perf_counter() - started
    consumed = run_workers(procrastinate_worker, (url,), n)
    left = server.admin(
        "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'", dbname=database
    )
    assert left == "0", left
    server.drop_database(database)
    return n / dispatched, n / consumed


# --- the race ------------------------------------------------------------------------------------


def run_workers(target: Any, args: tuple[Any, ...], n: int) -> float:
    """Start WORKERS processes of ``target``, wait until each is connected, then time them draining the
    queue; the seconds from the start signal until the last one exited."""
    go = CTX.Event()
    results = CTX.Queue()
    readies = [CTX.Event() for _ in range(WORKERS)]
    procs = [CTX.Process(target=target, args=(*args, ready, go, results)) for ready in readies]
    for proc in procs:
        proc.start()
    for ready in readies:
        if not ready.wait(60):
            raise RuntimeError("a worker did not get ready")
    started = time.perf_counter()
    go.set()
    handled = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(60)
    elapsed = time.perf_counter() - started
    assert all(proc.exitcode == 0 for proc in procs), [proc.exitcode for proc in procs]
    assert sum(handled) >= n, (handled, n)  # at least once: every message handled
    return elapsed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    server = pgkit.start_server()
    results: dict[str, list[tuple[float, float]]] = {"procrastinate": [], "icc": []}
    try:
        with tempfile.TemporaryDirectory(prefix="icc-bench-") as tmp:
            for round_ in range(ROUNDS):
                directory = Path(tmp) / str(round_)
                directory.mkdir()
                results["procrastinate"].append(bench_procrastinate(server, n))
                results["icc"].append(bench_icc(server, directory, n))
    finally:
        pgkit.stop_server(server)

    def median(name: str, column: int) -> float:
        return statistics.median(r[column] for r in results[name])

    def ratio(column: int) -> float:
        """Median of the per-round ratios icc / procrastinate (paired: the same round, the same server)."""
        pairs = zip(results["icc"], results["procrastinate"], strict=True)
        return statistics.median(mine[column] / theirs[column] for mine, theirs in pairs)

    print(
        f"{n:,} messages, no-op handler, {WORKERS} consumer processes, one throw-away PostgreSQL server "
        f"(fsync off); medians of {ROUNDS} interleaved rounds"
    )
    print(f"{'':36}{'dispatch/s':>12}{'consume/s':>12}")
    print(
        f"{'procrastinate ' + procrastinate.__version__:36}{median('procrastinate', 0):12,.0f}{median('procrastinate', 1):12,.0f}"
    )
    print(f"{'icc PostgresTransport':36}{median('icc', 0):12,.0f}{median('icc', 1):12,.0f}")
    print(f"{'ratio icc / procrastinate':36}{ratio(0):12.2f}{ratio(1):12.2f}")
    consume = ratio(1)
    goal = "met" if consume >= 2 else "NOT met"
    print(
        f"goal, icc consumes at least 2x as fast as procrastinate ({WORKERS} workers each; batched vs one by "
        f"one): {goal} ({consume:.2f}x)"
    )


if __name__ == "__main__":
    main()
