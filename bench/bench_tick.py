"""Benchmarks of `icc run`.

1. The idle tick: `icc run --quiet` with 200 registered jobs, none due, against `python -c "import filelock,
   sqlite3"` (the floor: an interpreter that could take a file lock and open a database), interleaved in the
   same run; prints both medians and the ratio (goal: at most 1.3x).
2. Background start-up: one tick with 20 due `in_background()` jobs; the time from launching `icc run` until
   every one of the 20 tasks has started (each writes its start time), and until `icc run` returned
   (goal: all started within 0.5 s).

Run: `nox -s bench -- bench/bench_tick.py` or `python bench/bench_tick.py` in a venv with icc installed.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROUNDS = 25
ICC = shutil.which("icc", path=str(Path(sys.executable).parent)) or "icc"


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def project(root: Path, plugin: str) -> dict[str, str]:
    root.mkdir(parents=True)
    (root / "icc.toml").write_text(
        '[icc]\nstate_dir = "state"\nplugins = ["bench_plugin"]\n[icc.consumers]\nmode = "service"\n'
    )
    (root / "bench_plugin.py").write_text(textwrap.dedent(plugin))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")}
    env["ICC_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["BENCH_DIR"] = str(root)
    subprocess.run([ICC, "scan"], cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    return env


def idle(tmp: Path) -> None:
    root = tmp / "idle"
    env = project(
        root,
        """
        import icc

        def task():
            pass

        @icc.hookimpl
        def schedule(scheduler):
            for i in range(200):
                # Mixed schedules, none due in the next minutes: 1 January at various times.
                scheduler.add(task, name=f"job-{i}").yearly().at(i % 24, i % 60)
        """,
    )
    subprocess.run([ICC, "run", "--quiet"], cwd=root, env=env, check=True)  # first tick evaluates all 200
    floor_argv = [sys.executable, "-c", "import filelock, sqlite3"]
    tick_argv = [ICC, "run", "--quiet"]
    floors, ticks = [], []
    for _ in range(3):  # warm the page cache
        timed(floor_argv, root, env)
        timed(tick_argv, root, env)
    for _ in range(ROUNDS):
        floors.append(timed(floor_argv, root, env))
        ticks.append(timed(tick_argv, root, env))
    floor, tick = statistics.median(floors), statistics.median(ticks)
    print(f"idle tick, 200 jobs, none due (median of {ROUNDS}, interleaved)")
    print(f"  python -c 'import filelock, sqlite3'  {floor * 1000:8.1f} ms")
    print(f"  icc run --quiet                       {tick * 1000:8.1f} ms")
    print(f"  ratio                                 {tick / floor:8.2f}x  (goal <= 1.3x)")


def background(tmp: Path) -> None:
    root = tmp / "background"
    env = project(
        root,
        """
        import os, time
        import icc

        def make(i):
            def task():
                with open(os.path.join(os.environ["BENCH_DIR"], f"started-{i}"), "w") as f:
                    f.write(repr(time.time()))
            return task

        @icc.hookimpl
        def schedule(scheduler):
            for i in range(20):
                scheduler.add(make(i), name=f"bg-{i}").every_minute().in_background()
        """,
    )
    launched = time.time()
    subprocess.run([ICC, "run", "--quiet"], cwd=root, env=env, check=True)
    returned = time.time()
    deadline = time.time() + 60
    markers = [root / f"started-{i}" for i in range(20)]
    while not all(m.exists() and m.read_text() for m in markers) and time.time() < deadline:
        time.sleep(0.01)
    starts = [float(m.read_text()) for m in markers]
    print("20 due background jobs, one tick")
    print(f"  icc run returned after                {(returned - launched) * 1000:8.1f} ms")
    print(f"  first task started after              {(min(starts) - launched) * 1000:8.1f} ms")
    print(
        f"  all 20 tasks started after            {(max(starts) - launched) * 1000:8.1f} ms  (goal < 500 ms)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        idle(Path(tmp))
        background(Path(tmp))


if __name__ == "__main__":
    main()
