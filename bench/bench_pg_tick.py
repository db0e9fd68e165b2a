"""The idle tick on PostgreSQL against the idle tick on SQLite, in the same run, goals printed met / NOT met.

Two projects, each with the same 200 registered jobs (yearly, none due in the benchmark's minutes) and
``consumers.mode = "service"`` (so that nothing at all is due): one on the embedded SQLite store, one on a
PostgreSQL store (a throw-away server from tests/pgkit.py: initdb, fsync off, a free loopback port; the database
migrated with ``icc db migrate``, the jobs registered with ``icc scan``, one full tick run). Each round runs, in
a rotating order:

- ``icc run --quiet`` on SQLite: the idle fast path (icc.tick.idle: one read-only SQLite query);
- ``icc run --quiet`` on PostgreSQL: the PostgreSQL idle path (icc.store.postgres.idle: libpq through ctypes, one
  connection and one query over loopback TCP, no psycopg);
- the same PostgreSQL tick through the full command (``ICC_STORE_URL`` set to the same URL is a doubt for the
  fast config reader, so the full ``icc run`` answers: click, psycopg, the store): what an idle tick on
  PostgreSQL cost before the lighter path, for scale (no goal);
- ``python -c "import psycopg"``: the driver's import alone, which the full PostgreSQL tick pays every minute.

Wall time and CPU (user + system of the child); the ratios are medians of the per-round ratios (paired). What
differs between the two idle ticks: PostgreSQL opens a TCP connection (authentication: trust on this loopback
server; a password or TLS costs more) and the server runs the query in a backend process it forks for the
connection, whose CPU is not counted here (it is the server's); SQLite opens a file.

Goal: the PostgreSQL idle tick at most 3x the SQLite idle tick (wall, paired median). Also printed: the import
cost of psycopg from ``python -X importtime -c "import psycopg"`` (the cumulative microseconds of the top-level
``psycopg`` line, median of the rounds).

Run: ``nox -s bench -- bench/bench_pg_tick.py``. Needs the PostgreSQL server binaries (Debian:
``apt-get install postgresql``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 25
GOAL = 3.0
ICC = shutil.which("icc", path=str(Path(sys.executable).parent)) or "icc"
sys.path.insert(0, str(Path(__file__).parent))
from bench_tick import measured, verdict  # noqa: E402  (the same timing as the SQLite benchmarks)

_spec = importlib.util.spec_from_file_location("pgkit", ROOT / "tests" / "pgkit.py")
assert _spec is not None and _spec.loader is not None
pgkit = importlib.util.module_from_spec(_spec)
sys.modules["pgkit"] = pgkit  # dataclasses look their module up there
_spec.loader.exec_module(pgkit)

YEARLY_PLUGIN = """
    import icc

    def task():
        pass

    @icc.hookimpl
    def schedule(scheduler):
        for i in range(200):
            # Mixed schedules, none due in the next minutes: 1 January at various times.
            scheduler.add(task, name=f"job-{i}").yearly().at(i % 24, i % 60)
    """


def project(root: Path, store: str = "") -> dict[str, str]:
    root.mkdir(parents=True)
    (root / "icc.toml").write_text(
        f'[icc]\nstate_dir = "state"\nplugins = ["bench_plugin"]\n[icc.consumers]\nmode = "service"\n{store}'
    )
    (root / "bench_plugin.py").write_text(textwrap.dedent(YEARLY_PLUGIN))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed icc has its bytecode (see bench_tick.py)
    env["ICC_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    if store:
        subprocess.run([ICC, "db", "migrate"], cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([ICC, "scan"], cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([ICC, "run", "--quiet"], cwd=root, env=env, check=True)  # the first tick evaluates all 200
    return env


def psycopg_import_us(cwd: Path, env: dict[str, str]) -> int:
    """Cumulative microseconds of ``import psycopg`` by ``python -X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import psycopg"],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    for line in proc.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "psycopg":
            return int(parts[1])
    raise RuntimeError("no psycopg line in -X importtime's output")


def main() -> None:
    server = pgkit.start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="icc-bench-pg-tick-") as tmp:
            url = server.url(server.new_database())
            lite_root, pg_root = Path(tmp) / "sqlite", Path(tmp) / "postgres"
            lite_env = project(lite_root)
            pg_env = project(pg_root, f'[icc.store]\nurl = "{url}"\nhost_id = "bench"\n')
            full_env = {**pg_env, "ICC_STORE_URL": url}
            tick = [ICC, "run", "--quiet"]
            commands: dict[str, Callable[[], tuple[float, float]]] = {
                "sqlite": lambda: measured(tick, lite_root, lite_env),
                "postgres": lambda: measured(tick, pg_root, pg_env),
                "full": lambda: measured(tick, pg_root, full_env),
                "psycopg": lambda: measured([sys.executable, "-c", "import psycopg"], pg_root, pg_env),
            }
            names = list(commands)
            for _ in range(3):  # warm the page cache and the bytecode
                for name in names:
                    commands[name]()
            rows: list[dict[str, tuple[float, float]]] = []
            imports: list[int] = []
            for rnd in range(ROUNDS):
                order = names[rnd % len(names) :] + names[: rnd % len(names)]
                rows.append({name: commands[name]() for name in order})
                imports.append(psycopg_import_us(pg_root, pg_env))
    finally:
        pgkit.stop_server(server)

    def wall(name: str) -> float:
        return statistics.median(row[name][0] for row in rows)

    def cpu(name: str) -> float:
        return statistics.median(row[name][1] for row in rows)

    def paired(name: str, base: str, column: int = 0) -> float:
        return statistics.median(row[name][column] / row[base][column] for row in rows)

    labels = {
        "sqlite": "idle tick, SQLite (icc.tick.idle)",
        "postgres": "idle tick, PostgreSQL (icc.store.postgres.idle)",
        "full": "idle tick, PostgreSQL, full command",
        "psycopg": 'python -c "import psycopg"',
    }
    print(
        f"idle tick: `icc run --quiet`, 200 jobs, none due, consumers.mode = service; one throw-away PostgreSQL "
        f"server\n(loopback TCP, trust authentication); medians of {ROUNDS} interleaved rounds"
    )
    print(f"   {'':42}{'wall':>10}{'CPU':>10}")
    for name in names:
        print(f"   {labels[name]:42}{wall(name) * 1e3:8.1f}ms{cpu(name) * 1e3:8.1f}ms")
    ratio = paired("postgres", "sqlite")
    print(f"   {'PostgreSQL / SQLite idle tick, wall':42}{ratio:9.2f}x")
    print(f"   {'PostgreSQL / SQLite idle tick, CPU':42}{paired('postgres', 'sqlite', 1):9.2f}x  (no goal)")
    print(f"   {'full command / SQLite idle tick, wall':42}{paired('full', 'sqlite'):9.2f}x  (no goal)")
    print(f"   {'full command / PostgreSQL idle tick, wall':42}{paired('full', 'postgres'):9.2f}x  (no goal)")
    print(
        f"   python -X importtime -c 'import psycopg': {statistics.median(imports) / 1e3:.1f} ms cumulative "
        "(median; paid by the full command, not by the idle path)"
    )
    print(f"   goal: PostgreSQL idle tick at most {GOAL:g}x the SQLite idle tick: {verdict(ratio <= GOAL)}")


if __name__ == "__main__":
    main()
