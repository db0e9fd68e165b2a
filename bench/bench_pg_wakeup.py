"""Wake-up latency of an idle consumer on PostgreSQL: ``[icc.consumers] notify = true`` against polling.

The benchmark starts its own throw-away PostgreSQL server (tests/pgkit.py, loaded by path: initdb, fsync off, a
free loopback port) and two databases on it, each with one idle consumer process (forked, ``Consumer`` with
the default ``--sleep`` of 1 s, a handler that reports ``time.monotonic()`` back): one with ``notify = true``
(it waits on its LISTEN connection between polls), one without (it polls every second, as before). Per sample,
interleaved and paired: a random pause of 0 to 1.5 s (so that a dispatch lands anywhere in the polling
consumer's sleep), one ``icc.dispatch`` to the notify side, wait until handled, then the same to the polling
side. The latency is from just before the ``dispatch`` call until the handler starts (``CLOCK_MONOTONIC`` is
one clock for every process of the machine).

What differs between the two sides is only the setting: the notify side's dispatch also calls ``pg_notify`` in
its insert's statement, and its consumer waits on a second connection. Polling's expected latency is about half
the sleep plus a lease round trip; notify's is one notification and one lease round trip. The goal printed: the
median notify latency is at most 1/10 of the median polling latency.

Run: ``nox -s bench -- bench/bench_pg_wakeup.py`` (40 samples a side); another count: ``.nox/bench/bin/python
bench/bench_pg_wakeup.py N``. Needs the PostgreSQL server binaries (Debian: ``apt-get install postgresql``).
"""

from __future__ import annotations

import multiprocessing
import random
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import icc.store.postgres.connection
from icc.config import Config, ConsumersConfig, StoreConfig
from icc.queue import Consumer, Limits, dispatch
from icc.queue.dispatch import open_transport

ROOT = Path(__file__).resolve().parent.parent
SLEEP = 1.0  # icc consume's default --sleep
sys.path.insert(0, str(ROOT / "tests"))
import pgkit  # noqa: E402  (the tests' throw-away PostgreSQL server)

CTX = multiprocessing.get_context("fork")


def config_for(url: str, directory: Path, notify: bool) -> Config:
    return Config(
        path=None,
        root=directory,
        state_dir=Path("state"),
        store=StoreConfig(url=url, host_id="bench"),
        consumers=ConsumersConfig(notify=notify),
    )


def consumer(url: str, directory: str, notify: bool, ready: Event, stop: Event, handled: Any) -> None:
    config = config_for(url, Path(directory), notify)
    transport = open_transport(config)  # this process's own connection (forked: a new transport)
    running = Consumer(
        transport,
        {"mark": lambda payload: handled.put((payload["i"], time.monotonic()))},
        ["async"],
        policy=config.queue,
        limits=Limits(sleep=SLEEP),
    )
    ready.set()

    def watch() -> None:
        stop.wait()
        running.stop("benchmark over")

    threading.Thread(target=watch, daemon=True).start()
    running.run(install_signal_handlers=False)


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    server = pgkit.start_server()
    latencies: dict[bool, list[float]] = {True: [], False: []}
    procs = []
    stop = CTX.Event()
    try:
        with tempfile.TemporaryDirectory(prefix="icc-bench-") as tmp:
            configs: dict[bool, Config] = {}
            queues: dict[bool, Any] = {}
            for notify in (True, False):
                url = server.url(server.new_database())
                config = configs[notify] = config_for(url, Path(tmp), notify)
                conn = icc.store.postgres.connection.connect(config)
                icc.store.postgres.connection.migrate(conn, config.store.schema)
                conn.close()
                ready = CTX.Event()
                queues[notify] = CTX.Queue()
                proc = CTX.Process(target=consumer, args=(url, tmp, notify, ready, stop, queues[notify]))
                proc.start()
                procs.append(proc)
                if not ready.wait(60):
                    raise RuntimeError("a consumer did not get ready")
            time.sleep(2 * SLEEP)  # both idle; the notify side listens
            for i in range(samples):
                for notify in (True, False):
                    time.sleep(random.uniform(0, 1.5 * SLEEP))
                    sent = time.monotonic()
                    dispatch("mark", {"i": i}, queue="async", config=configs[notify])
                    got, at = queues[notify].get(timeout=30)
                    assert got == i, (got, i)
                    latencies[notify].append(at - sent)
    finally:
        stop.set()
        for proc in procs:
            proc.join(30)
        pgkit.stop_server(server)

    def ms(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    print(
        f"{samples} dispatches a side to an idle consumer (--sleep {SLEEP:g}), interleaved and paired, one "
        "throw-away PostgreSQL server (fsync off); dispatch-to-handler latency in ms"
    )
    print(f"{'':28}{'median':>10}{'p90':>10}{'max':>10}")
    for notify, label in ((False, "polling (notify = false)"), (True, "notify = true")):
        values = latencies[notify]
        print(f"{label:28}{ms(values, 0.5):10.1f}{ms(values, 0.9):10.1f}{1000 * max(values):10.1f}")
    ratio = statistics.median(latencies[True]) / statistics.median(latencies[False])
    print(f"{'ratio notify / polling':28}{ratio:10.3f}")
    goal = "met" if ratio <= 0.1 else "NOT met"
    print(f"goal, median notify latency at most 1/10 of polling's: {goal} ({ratio:.3f})")


if __name__ == "__main__":
    main()
