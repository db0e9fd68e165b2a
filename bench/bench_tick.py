"""Benchmarks of `icc run`.

1. The idle tick: `icc run --quiet` with 200 registered jobs, none due, against `python -c "import filelock,
   sqlite3"` (the floor: an interpreter that could take a file lock and open a database), interleaved in the
   same run; prints both medians and the ratio (goal: at most 1.3x).
2. Background start-up: a tick with 20 due `in_background()` jobs; the time from launching `icc run` until
   every one of the 20 tasks has started (each writes its start time), and until `icc run` returned; median of
   5 ticks (goal: all started within 0.5 s), also as a ratio to the floor of 1.
3. Catching up: with 200 every-minute jobs, the tick after an hour without ticks (11,800 slots recorded
   missed) against a tick one minute after the last, as a ratio.

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
BACKGROUND_ROUNDS = 5
CATCH_UP_ROUNDS = 3
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


def idle(tmp: Path) -> float:
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
    return floor


def background(tmp: Path, floor: float) -> None:
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
    markers = [root / f"started-{i}" for i in range(20)]
    returns, firsts, lasts = [], [], []
    for minute in range(BACKGROUND_ROUNDS):
        for m in markers:
            m.unlink(missing_ok=True)
        at = f"2030-01-01T10:{minute:02d}:00+00:00"  # a new slot each round: every job is due again
        launched = time.time()
        subprocess.run([ICC, "run", "--quiet", "--at", at], cwd=root, env=env, check=True)
        returns.append(time.time() - launched)
        deadline = time.time() + 60
        while not all(m.exists() and m.read_text() for m in markers) and time.time() < deadline:
            time.sleep(0.01)
        starts = [float(m.read_text()) for m in markers]
        firsts.append(min(starts) - launched)
        lasts.append(max(starts) - launched)
    last = statistics.median(lasts)
    print(f"20 due background jobs, one tick (median of {BACKGROUND_ROUNDS})")
    print(f"  icc run returned after                {statistics.median(returns) * 1000:8.1f} ms")
    print(f"  first task started after              {statistics.median(firsts) * 1000:8.1f} ms")
    print(f"  all 20 tasks started after            {last * 1000:8.1f} ms  (goal < 500 ms)")
    print(f"  ratio to the interpreter floor        {last / floor:8.2f}x")


def catch_up(tmp: Path) -> None:
    """A tick after an hour without ticks (200 every-minute jobs: 11,800 missed slots to record) against the
    same tick one minute after the previous one, interleaved in fresh copies of the project."""
    plugin = """
        import icc

        def task():
            pass

        @icc.hookimpl
        def schedule(scheduler):
            for i in range(200):
                scheduler.add(task, name=f"j{i}").every_minute()
        """
    normal, caught_up = [], []
    for rnd in range(CATCH_UP_ROUNDS):
        for gap, times in ((1, normal), (60, caught_up)):
            root = tmp / f"catch-up-{rnd}-{gap}"
            env = project(root, plugin)
            run = [ICC, "run", "--quiet", "--at"]
            subprocess.run([*run, "2030-01-01T10:00:00+00:00"], cwd=root, env=env, check=True)
            later = f"2030-01-01T{10 + gap // 60:02d}:{gap % 60:02d}:00+00:00"
            times.append(timed([*run, later], root, env))
    n, c = statistics.median(normal), statistics.median(caught_up)
    print(f"200 every-minute jobs due, foreground (median of {CATCH_UP_ROUNDS})")
    print(f"  tick one minute after the last        {n * 1000:8.1f} ms")
    print(f"  tick one hour after the last          {c * 1000:8.1f} ms  (11,800 missed slots recorded)")
    print(f"  ratio                                 {c / n:8.2f}x")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        floor = idle(Path(tmp))
        background(Path(tmp), floor)
        catch_up(Path(tmp))


if __name__ == "__main__":
    main()
