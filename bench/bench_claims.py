"""Claims: 4 simulated hosts x 1,000 jobs due in one slot, on PostgreSQL against the embedded SQLite store.

Each round, 4 worker processes (forked; each opens its own store after the fork, then waits at a start line)
claim the same 1,000 (job, slot) pairs through ``icc.store.open_store(config)``, in two ways, both measured on
both stores (the same work on each side):

- as a tick claims them (``batch``): one ``claim_many(...)`` call with the 1,000 claims, in plan (name) order;
- one by one (``single``): ``claim(...)`` per pair, as the sub-minute loop and ``icc exec`` claim; each claim's
  latency is timed by its worker (p50/p99 per claim).

Timed from the start signal until the last worker is done. Each worker opens its store (connects) after the start
signal, inside the timed region, on both stores: a tick connects every minute, so the connection is part of the
cost of its claims (an earlier version connected before the clock started, which flattered PostgreSQL). Afterwards the bench asserts that exactly 1,000
claims were won in total, one per (job, slot), and that the runs table holds 1,000 rows.

- PostgreSQL: one throw-away server (tests/pgkit.py: initdb, fsync off, a free loopback port), a fresh,
  migrated database per round; each worker is a host of its own (``[icc.store] host_id = "host-N"``, its own
  state directory). ``claim`` is one ``INSERT … ON CONFLICT DO NOTHING RETURNING id`` in autocommit: one round
  trip; ``claim_many`` is one ``INSERT … SELECT … FROM unnest(…) ON CONFLICT DO NOTHING RETURNING …``: one
  round trip for the 1,000. A losing claim waits for the winner's commit when they race on the same row (the
  unique index), then returns nothing.
- SQLite (the baseline): the same 4 processes claiming in one shared state directory, as one host with 4
  overlapping ticks would (SQLite is a single-host store: several servers cannot share it at all). ``claim`` is
  ``INSERT OR IGNORE`` in a write transaction; ``claim_many`` the 1,000 ``INSERT OR IGNORE`` in one write
  transaction: the database file's lock serialises the writers (WAL, a busy timeout), with no network in between.

Why a ratio to SQLite and not an absolute time: the absolute time depends on this machine and its load (two
cores shared with other work), while SQLite on the same machine in the same round is exactly the work icc does
for the same claims. The rounds alternate PostgreSQL and SQLite; the ratio is the median of the per-round ratios
(paired). PostgreSQL runs with fsync off here (as the test server does), so the ratio leaves out its durable
commit; a production server with fsync pays a WAL flush per statement (group-committed across hosts).

Goals printed (met / NOT met):
- exactly one winner per (job, slot) on both stores, both ways (1,000 won of 4,000 tries);
- as a tick claims (claim_many): PostgreSQL claims all 1,000 in at most 3x the time SQLite takes (paired median);
- one by one (claim): the same ratio is reported, with the p99 latency of one claim on PostgreSQL (no goal: it
  is the number to budget a sub-minute loop with).

Run: ``nox -s bench -- bench/bench_claims.py``. Needs the PostgreSQL server binaries (Debian:
``apt-get install postgresql``).
"""

from __future__ import annotations

import functools
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import icc.store.postgres.connection
from icc.config import Config, StoreConfig
from icc.store import open_store
from icc.store.protocol import Claim

ROOT = Path(__file__).resolve().parent.parent
HOSTS = 4
JOBS = 1000
ROUNDS = 5
MODES = ("batch", "single")  # claim_many as a tick claims; claim one by one
SLOT = 1_893_456_000  # 2030-01-01 00:00 UTC: any slot does; the same for every host
GOAL = 3.0
sys.path.insert(0, str(ROOT / "tests"))
import pgkit  # noqa: E402  (the tests' throw-away PostgreSQL server)

CTX = multiprocessing.get_context("fork")


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def config_for(directory: Path, url: str | None, host: int) -> Config:
    store = StoreConfig(url=url, host_id=f"host-{host}") if url else StoreConfig()
    return Config(path=None, root=directory, state_dir=Path("state"), store=store)


def worker(
    directory: str, url: str | None, host: int, mode: str, ready: Event, go: Event, results: Any
) -> None:
    config = config_for(Path(directory), url, host)
    jobs = [f"job-{i:04d}" for i in range(JOBS)]
    latencies: list[float] = []
    won: list[str] = []
    ready.set()
    go.wait()
    # Connecting is inside the timed region, on both stores: a tick opens its store every minute, and a
    # PostgreSQL connection (TCP, authentication, the session's settings) is part of what a claim costs it.
    store = open_store(config)  # this process's own connection
    if mode == "batch":
        started = time.perf_counter()
        ids = store.claim_many(
            [Claim(job, SLOT, "scheduled") for job in jobs], pid=1000 + host, host=f"host-{host}"
        )
        latencies.append(time.perf_counter() - started)
        won = [job for job, run_id in zip(jobs, ids, strict=True) if run_id is not None]
    else:
        for job in jobs:
            started = time.perf_counter()
            run_id = store.claim(job, SLOT, "scheduled", pid=1000 + host, host=f"host-{host}")
            latencies.append(time.perf_counter() - started)
            if run_id is not None:
                won.append(job)
    store.close()
    results.put((won, latencies))


def race(directories: list[Path], url: str | None, mode: str) -> tuple[float, list[str], list[float]]:
    """Seconds from the start signal until every worker tried every claim; the jobs won (all workers); every
    claim's latency."""
    go = CTX.Event()
    results = CTX.Queue()
    readies = [CTX.Event() for _ in range(HOSTS)]
    procs = [
        CTX.Process(
            target=worker,
            args=(str(directories[host]), url, host, mode, readies[host], go, results),
        )
        for host in range(HOSTS)
    ]
    for proc in procs:
        proc.start()
    for ready in readies:
        if not ready.wait(60):
            raise RuntimeError("a worker did not get ready")
    started = time.perf_counter()
    go.set()
    gathered = [results.get(timeout=600) for _ in procs]
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join(60)
    assert all(proc.exitcode == 0 for proc in procs), [proc.exitcode for proc in procs]
    won = [job for jobs, _ in gathered for job in jobs]
    latencies = [latency for _, lats in gathered for latency in lats]
    return elapsed, won, latencies


def one_winner_each(won: list[str], rows: int) -> bool:
    return len(won) == JOBS and len(set(won)) == JOBS and rows == JOBS


def bench_postgres(server: Any, tmp: Path, mode: str) -> tuple[float, list[str], list[float], int]:
    database = server.new_database()
    url = server.url(database)
    setup = config_for(tmp, url, 0)
    conn = icc.store.postgres.connection.connect(setup)
    icc.store.postgres.connection.migrate(conn, setup.store.schema)
    conn.close()
    directories = [tmp / f"pg-host-{host}" for host in range(HOSTS)]  # each host its own state directory
    for directory in directories:
        directory.mkdir()
    elapsed, won, latencies = race(directories, url, mode)
    rows = int(server.admin("SELECT count(*) FROM icc.runs", dbname=database))
    server.drop_database(database)
    return elapsed, won, latencies, rows


def bench_sqlite(tmp: Path, mode: str) -> tuple[float, list[str], list[float], int]:
    directory = tmp / "sqlite"
    directory.mkdir()
    store = open_store(config_for(directory, None, 0))  # creates the database before the workers start
    store.close()
    elapsed, won, latencies = race([directory] * HOSTS, None, mode)  # one state directory shared by all 4
    import sqlite3

    db = sqlite3.connect(directory / "state" / "state.sqlite3")
    rows = int(db.execute("SELECT count(*) FROM runs").fetchone()[0])
    db.close()
    return elapsed, won, latencies, rows


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


Result = tuple[float, list[str], list[float], int]


def main() -> None:
    server = pgkit.start_server()
    results: dict[tuple[str, str], list[Result]] = {
        (store, mode): [] for store in ("sqlite", "postgres") for mode in MODES
    }
    try:
        with tempfile.TemporaryDirectory(prefix="icc-bench-claims-") as tmp:
            for round_ in range(ROUNDS):
                for mode in MODES:
                    base = Path(tmp) / f"{round_}-{mode}"
                    base.mkdir()
                    pair: list[tuple[str, Callable[[], Result]]] = [
                        ("sqlite", functools.partial(bench_sqlite, base, mode)),
                        ("postgres", functools.partial(bench_postgres, server, base, mode)),
                    ]
                    if round_ % 2:
                        pair.reverse()  # alternate which store goes first
                    for name, bench in pair:
                        results[(name, mode)].append(bench())
    finally:
        pgkit.stop_server(server)

    print(
        f"{HOSTS} simulated hosts x {JOBS:,} jobs due in one slot, every host claiming every (job, slot) through "
        f"open_store(config);\none throw-away PostgreSQL server (fsync off, loopback TCP); medians of "
        f"{ROUNDS} interleaved rounds"
    )
    exact: dict[tuple[str, str], bool] = {}
    ratios: dict[str, float] = {}
    for mode, title, per in (
        ("batch", "as a tick claims: one claim_many() of 1,000 per host", "per call"),
        ("single", "one by one: claim() per pair", "per claim"),
    ):
        print(f"\n{title}")
        print(f"{'':36}{'all claimed':>12}{'p50 ' + per:>14}{'p99 ' + per:>14}{'won':>8}")
        for name, label in (
            ("sqlite", "SQLite, one shared state dir"),
            ("postgres", "PostgreSQL, 4 host_ids"),
        ):
            rows = results[(name, mode)]
            elapsed = statistics.median(r[0] for r in rows)
            latencies = [lat for r in rows for lat in r[2]]
            won = [len(r[1]) for r in rows]
            exact[(name, mode)] = all(one_winner_each(r[1], r[3]) for r in rows)
            print(
                f"{label:36}{elapsed * 1e3:10.1f}ms{statistics.median(latencies) * 1e3:12.2f}ms"
                f"{p99(latencies) * 1e3:12.2f}ms{min(won):>8,}"
            )
            print(
                f"  claims won per round: {', '.join(f'{n:,}' for n in won)} (of {HOSTS * JOBS:,} tries each)"
            )
        pairs = zip(results[("postgres", mode)], results[("sqlite", mode)], strict=True)
        ratios[mode] = statistics.median(pg[0] / lite[0] for pg, lite in pairs)
        print(f"{'ratio PostgreSQL / SQLite, time':36}{ratios[mode]:10.2f}x")
    print()
    for mode, how in (("batch", "claim_many"), ("single", "claim")):
        for name, label in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
            print(
                f"goal: exactly one winner per (job, slot) on {label}, {how} ({JOBS:,} won): "
                f"{verdict(exact[(name, mode)])}"
            )
    print(
        f"goal: as a tick claims (claim_many), PostgreSQL claims all {JOBS:,} in at most {GOAL:g}x SQLite's "
        f"time: {verdict(ratios['batch'] <= GOAL)}"
    )
    pg_p99 = p99([lat for r in results[("postgres", "single")] for lat in r[2]])
    print(
        f"reported: one by one (claim), PostgreSQL / SQLite {ratios['single']:.2f}x; p99 per claim on PostgreSQL "
        f"{pg_p99 * 1e3:.2f} ms (no goal)"
    )
    assert all(exact.values()), "a (job, slot) was claimed twice or not at all"


if __name__ == "__main__":
    main()
