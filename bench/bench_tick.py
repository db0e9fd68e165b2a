"""Benchmarks of `icc run`, each against a baseline measured in the same run, each goal printed met / NOT met.

1. The idle tick. `icc run --quiet` with 200 registered jobs, none due, ``consumers.mode = "service"`` (so
   that nothing at all is due), against two floors: ``python -c "import sqlite3"`` (an interpreter that can
   open a database, which is all the idle tick needs: it imports sqlite3, reads the config and runs one
   query) and ``python -c pass``. What differs: the tick also starts through the ``icc`` console script,
   imports icc's fast path and config loader and reads the config file; that is the overhead the ratio
   shows. The three commands run in rounds, in a rotating order within each round; the ratio is the median
   of the per-round ratios (paired: same round, same machine state).
   Goal: idle tick at most 1.2x ``python -c "import sqlite3"``.
1b. Service mode's idle consumers. In service mode the idle tick is not all that runs: ``icc systemd`` keeps
   one ``icc consume <queue> --time-limit=3600`` per queue running, polling empty queues. Two of them (mail
   and async) are started in the idle project; once past start-up, their CPU (all threads, from Linux's
   per-thread schedstat, nanoseconds) is read over windows of 10 s, scaled to a minute, and each window is
   paired with the median CPU of 3 idle ticks measured right after it.
   Goal: two idle consumers cost at most 1x an idle tick's CPU per minute.
2. The default minute. With ``consumers.mode = "cron"`` (the default) the ``consume:mail`` and
   ``consume:async`` jobs are due every minute, so the common minute is not idle. When nothing else is due,
   ``icc run --quiet`` runs the light minute (icc.tick.light): it claims and records the two runs without
   loading click or the plugins and starts two background supervisors, each forking a consumer that waits up
   to S seconds for messages, polling the queue database once a second (the plugins are loaded only when a
   message arrives, never here). Measured with empty queues and every installed plugin (autoload on:
   in the nox session, icc-mail). The bench sets ``consumers.time_limit = 3`` (the default is 20) to keep
   the run short. CPU seconds are user + system time from ``getrusage(RUSAGE_CHILDREN)`` deltas: this
   process makes itself the child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``), so the detached supervisors
   are reparented to it and their CPU, and their consumers', is counted when it reaps them, over their whole
   lifetime. The baseline is an idle tick's CPU (project 1) measured in the same round. This is a budget,
   not a like-for-like comparison: the idle tick is the unit the minute's cost is counted in.
   Goal: the whole minute (tick + supervisors + consumers) at most 3x an idle tick's CPU.
   A consumer waiting on empty queues polls once per second, so its CPU grows with the time limit: the same
   minute with ``time_limit = 9``, paired with the 3 s minute of the same round, gives the CPU per second of
   waiting, and so an estimate for the default 20 s (printed, marked as an estimate; the goal is judged on
   the 3 s measurement).
3. Background start-up. A tick with 20 due ``in_background()`` jobs; the time from launching ``icc run``
   until every one of the 20 tasks has started (each writes its start time), and until ``icc run``
   returned; the median and the worst of the rounds. Each round is paired with ``python -c "import
   sqlite3"`` measured just before it. Goal: all 20 started within 6x that floor in each of the 10 rounds
   (judged on the worst round's ratio). Each round is the minute after the one before; an unmeasured tick
   the minute before the first round runs the jobs once (without it the first round would also catch up
   every slot from the scan's time to the rounds' year 2030, section 4's business).
4. Catching up (no goal). With 200 every-minute jobs, the tick after an hour without ticks (11,800 slots
   recorded missed) against a tick one minute after the last, as a ratio. Both ticks run the same 200
   foreground jobs (which dominate their time); the difference is the missed slots recorded.

The machine's load moves absolute times a lot; the ratios, measured paired and interleaved, move less.

Run: `nox -s bench -- bench/bench_tick.py`; name sections to run only those
(`python bench/bench_tick.py background`: idle, service, minute, background, catch-up).
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROUNDS = 25
MINUTE_ROUNDS = 3
SCALE_ROUNDS = 2
BACKGROUND_ROUNDS = 10
CATCH_UP_ROUNDS = 2  # each tick runs 200 foreground jobs: seconds per tick
TIME_LIMIT = 3.0  # consumers.time_limit in the default-minute bench (icc's default: 20)
SCALE_LIMIT = 9.0
DEFAULT_LIMIT = 20.0
IDLE_GOAL = 1.2
MINUTE_GOAL = 3.0
BACKGROUND_GOAL = 6.0  # x python -c "import sqlite3", measured in the same round
SERVICE_GOAL = 1.0  # two idle service consumers' CPU per minute, in idle ticks' CPU
SERVICE_WINDOWS = 3
SERVICE_WINDOW = 10.0  # seconds per window
SERVICE_QUEUES = ("mail", "async")
ICC = shutil.which("icc", path=str(Path(sys.executable).parent)) or "icc"
PR_SET_CHILD_SUBREAPER = 36

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


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def become_subreaper() -> bool:
    """Make orphaned descendants (the detached background supervisors) children of this process."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reap_all(timeout: float = 120.0) -> None:
    """Wait for every descendant reparented to this process; their CPU joins RUSAGE_CHILDREN."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("descendants still running after the deadline")
            time.sleep(0.02)


def measured(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one command."""
    cpu = children_cpu()
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, children_cpu() - cpu


def project(
    root: Path,
    plugin: str,
    consumers: str = 'mode = "service"',
    autoload: bool = False,
    files: dict[str, str] | None = None,
) -> dict[str, str]:
    root.mkdir(parents=True)
    for name, text in (files or {}).items():  # written before the scan, which imports the plugin
        (root / name).write_text(text)
    (root / "icc.toml").write_text(
        f'[icc]\nstate_dir = "state"\nplugins = ["bench_plugin"]\n[icc.consumers]\n{consumers}\n'
    )
    (root / "bench_plugin.py").write_text(textwrap.dedent(plugin))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")}
    # An installed icc has its bytecode (pip compiles it at install time); with PYTHONDONTWRITEBYTECODE every
    # command would compile icc's modules from source again, a cost no deployment pays (the floors' stdlib
    # modules are precompiled). The set-up's first commands write the bytecode.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not autoload:
        env["ICC_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["BENCH_DIR"] = str(root)
    subprocess.run([ICC, "scan"], cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    return env


class IdleProject:
    """200 yearly jobs, none due, service mode: every `icc run` is an idle tick."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "idle"
        self.env = project(self.root, YEARLY_PLUGIN)
        self.argv = [ICC, "run", "--quiet"]
        subprocess.run(self.argv, cwd=self.root, env=self.env, check=True)  # the first tick evaluates all 200

    def tick(self) -> tuple[float, float]:
        return measured(self.argv, self.root, self.env)


def idle(tmp: Path, idle_project: IdleProject) -> float:
    """Section 1; returns the median wall time of `python -c "import sqlite3"`."""
    root, env = idle_project.root, idle_project.env
    commands: dict[str, Callable[[], tuple[float, float]]] = {
        "pass": lambda: measured([sys.executable, "-c", "pass"], root, env),
        "sqlite3": lambda: measured([sys.executable, "-c", "import sqlite3"], root, env),
        "tick": idle_project.tick,
    }
    names = list(commands)
    for _ in range(3):  # warm the page cache
        for name in names:
            commands[name]()
    rows: list[dict[str, tuple[float, float]]] = []
    for rnd in range(ROUNDS):
        order = names[rnd % 3 :] + names[: rnd % 3]
        rows.append({name: commands[name]() for name in order})

    def wall(name: str) -> float:
        return statistics.median(row[name][0] for row in rows)

    def cpu(name: str) -> float:
        return statistics.median(row[name][1] for row in rows)

    def paired(name: str, floor: str) -> float:
        return statistics.median(row[name][0] / row[floor][0] for row in rows)

    ratio = paired("tick", "sqlite3")
    floor_label = 'python -c "import sqlite3"'
    print(
        f"1. idle tick: 200 jobs, none due, consumers.mode = service (medians of {ROUNDS} interleaved rounds)"
    )
    print(f"   {'':38}{'wall':>10}{'CPU':>10}")
    print(f"   {'python -c pass':38}{wall('pass') * 1e3:8.1f}ms{cpu('pass') * 1e3:8.1f}ms")
    print(f"   {floor_label:38}{wall('sqlite3') * 1e3:8.1f}ms{cpu('sqlite3') * 1e3:8.1f}ms")
    print(f"   {'icc run --quiet':38}{wall('tick') * 1e3:8.1f}ms{cpu('tick') * 1e3:8.1f}ms")
    print(f"   {'idle tick / python -c pass':38}{paired('tick', 'pass'):9.2f}x  (no goal)")
    print(f"   {'idle tick / ' + floor_label:38}{ratio:9.2f}x")
    print(
        f"   goal: idle tick at most {IDLE_GOAL}x python -c 'import sqlite3': {verdict(ratio <= IDLE_GOAL)}"
    )
    return wall("sqlite3")


def process_cpu(pid: int) -> float:
    """CPU seconds of a live process, all its threads, in nanoseconds' precision (Linux schedstat; the tick
    counters of /proc/<pid>/stat count in 10 ms steps, too coarse for an idle process over seconds)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:  # a thread that just ended
            continue
    return total / 1e9


def service_consumers(idle_project: IdleProject) -> None:
    """Section 1b: service mode's idle cost is not only the tick: `icc systemd` runs one `icc consume <queue>`
    per queue all the time. Two idle consumers' CPU per minute, against an idle tick's CPU."""
    print()
    print(
        f"1b. service mode: two idle `icc consume` consumers ({', '.join(SERVICE_QUEUES)}; empty queues, "
        f"--time-limit 3600 as icc systemd runs them),\n    CPU over {SERVICE_WINDOWS} windows of "
        f"{SERVICE_WINDOW:g} s, each paired with 3 idle ticks measured right after it"
    )
    if not os.path.exists(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/schedstat"):
        print("    not measured: needs Linux's /proc/<pid>/task/<tid>/schedstat")
        print(
            f"    goal: two idle consumers at most {SERVICE_GOAL:g}x an idle tick's CPU: NOT met (not measured)"
        )
        return
    root, env = idle_project.root, idle_project.env
    consumers = [
        subprocess.Popen(
            [ICC, "consume", queue, "--time-limit", "3600", "--quiet"],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for queue in SERVICE_QUEUES
    ]
    try:
        queue_db = root / "state" / "queue.sqlite3"
        deadline = time.monotonic() + 60
        while not queue_db.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(3)  # past start-up (imports, plugins, the first polls): idle from here on
        rows = []
        for _ in range(SERVICE_WINDOWS):
            before = sum(process_cpu(c.pid) for c in consumers)
            started = time.monotonic()
            time.sleep(SERVICE_WINDOW)
            per_minute = (
                (sum(process_cpu(c.pid) for c in consumers) - before) / (time.monotonic() - started) * 60
            )
            tick = statistics.median(idle_project.tick()[1] for _ in range(3))
            rows.append((per_minute, tick))
        for c in consumers:
            if c.poll() is not None:
                raise RuntimeError(f"a consumer ended during the measurement (exit {c.returncode})")
    finally:
        for c in consumers:
            c.terminate()
        for c in consumers:
            c.wait(60)
    consumers_cpu = statistics.median(r[0] for r in rows)
    tick_cpu = statistics.median(r[1] for r in rows)
    ratio = statistics.median(r[0] / r[1] for r in rows)
    print(f"    {'two idle consumers, CPU per minute':44}{consumers_cpu * 1e3:8.1f}ms")
    print(f"    {'idle tick, CPU':44}{tick_cpu * 1e3:8.1f}ms")
    print(f"    {'two consumers per minute / idle tick':44}{ratio:9.2f}x")
    print(
        f"    goal: two idle consumers cost at most {SERVICE_GOAL:g}x an idle tick's CPU per minute: "
        f"{verdict(ratio <= SERVICE_GOAL)}"
    )


class CronMinute:
    """The default consumers.mode = "cron" with empty queues: each `icc run` at a new minute starts
    consume:mail and consume:async in the background, which wait up to their time limit."""

    def __init__(self, tmp: Path, limit: float) -> None:
        self.root = tmp / f"cron-{limit:g}"
        self.env = project(self.root, YEARLY_PLUGIN, consumers=f"time_limit = {limit:g}", autoload=True)
        self.minute = 0
        self.minute_of()  # warm up: the first full tick, the queue database, the consumers' first start

    def minute_of(self) -> tuple[float, float, float]:
        """Wall seconds of the tick; CPU seconds of the tick; CPU seconds of its supervisors and consumers."""
        # 1 June: none of the yearly jobs is due, only the consumers. A new minute each time.
        at = f"2030-06-01T{10 + self.minute // 60:02d}:{self.minute % 60:02d}:00+00:00"
        self.minute += 1
        wall, tick_cpu = measured([ICC, "run", "--quiet", "--at", at], self.root, self.env)
        before = children_cpu()
        reap_all()
        return wall, tick_cpu, children_cpu() - before


def default_minute(tmp: Path, idle_project: IdleProject, subreaper: bool) -> None:
    """Section 2."""
    print()
    print(
        f"2. the default minute: consumers.mode = cron, queues mail and async empty; consumers.time_limit = "
        f"{TIME_LIMIT:g} s here\n   (default {DEFAULT_LIMIT:g} s); medians of {MINUTE_ROUNDS} rounds, each "
        "paired with an idle tick; CPU = user + system seconds"
    )
    if not subreaper:
        print("   not measured: needs Linux (PR_SET_CHILD_SUBREAPER) to count the detached consumers' CPU")
        print(f"   goal: whole minute at most {MINUTE_GOAL:g}x an idle tick's CPU: NOT met (not measured)")
        return
    short, longer = CronMinute(tmp, TIME_LIMIT), CronMinute(tmp, SCALE_LIMIT)
    idles: list[tuple[float, float]] = []
    minutes: list[tuple[float, float, float]] = []
    scaled: list[tuple[float, float, float]] = []
    for rnd in range(MINUTE_ROUNDS):
        idles.append(idle_project.tick())
        minutes.append(short.minute_of())
        if rnd < SCALE_ROUNDS:
            scaled.append(longer.minute_of())
    idle_wall = statistics.median(w for w, _ in idles)
    idle_cpu = statistics.median(c for _, c in idles)
    tick_wall = statistics.median(m[0] for m in minutes)
    tick_cpu = statistics.median(m[1] for m in minutes)
    consumers_cpu = statistics.median(m[2] for m in minutes)
    whole = statistics.median(m[1] + m[2] for m in minutes)
    wall_ratio = statistics.median(m[0] / i[0] for m, i in zip(minutes, idles, strict=True))
    tick_ratio = statistics.median(m[1] / i[1] for m, i in zip(minutes, idles, strict=True))
    ratio = statistics.median((m[1] + m[2]) / i[1] for m, i in zip(minutes, idles, strict=True))
    slopes = [(s[2] - m[2]) / (SCALE_LIMIT - TIME_LIMIT) for s, m in zip(scaled, minutes, strict=False)]
    slope = statistics.median(slopes)  # may come out <= 0 when waiting costs less than start-up's noise
    estimate = whole + max(0.0, slope) * (DEFAULT_LIMIT - TIME_LIMIT)
    print(f"   {'':44}{'wall':>10}{'CPU':>10}")
    print(f"   {'idle tick (project 1)':44}{idle_wall * 1e3:8.1f}ms{idle_cpu * 1e3:8.1f}ms")
    print(f"   {'icc run --quiet (2 consumers due)':44}{tick_wall * 1e3:8.1f}ms{tick_cpu * 1e3:8.1f}ms")
    print(f"   {'2 supervisors + consumers, whole lifetime':44}{'':>10}{consumers_cpu * 1e3:8.1f}ms")
    print(f"   {'whole minute':44}{'':>10}{whole * 1e3:8.1f}ms")
    print(f"   {'tick / idle tick, wall':44}{wall_ratio:9.2f}x  (no goal)")
    print(f"   {'tick / idle tick, CPU':44}{tick_ratio:9.2f}x  (no goal)")
    print(f"   {'whole minute / idle tick, CPU':44}{ratio:9.2f}x")
    print(
        f"   goal: whole minute at most {MINUTE_GOAL:g}x an idle tick's CPU "
        f"(time_limit {TIME_LIMIT:g} s): {verdict(ratio <= MINUTE_GOAL)}"
    )
    label = f"2 supervisors + consumers, time_limit {SCALE_LIMIT:g} s"
    longer_cpu = statistics.median(row[2] for row in scaled)
    print(f"   {label:44}{'':>10}{longer_cpu * 1e3:8.1f}ms  (median of {SCALE_ROUNDS})")
    print(
        f"   waiting on empty queues: {slope * 1e3:.1f} ms CPU per second for both consumers ({SCALE_LIMIT:g} s "
        f"against {TIME_LIMIT:g} s,\n   paired; 0 or less: lost in the noise of their start-up)"
    )
    print(
        f"   estimate at the default {DEFAULT_LIMIT:g} s: {estimate * 1e3:.1f} ms, {estimate / idle_cpu:.2f}x an "
        f"idle tick: {verdict(estimate / idle_cpu <= MINUTE_GOAL)} (estimate)"
    )


def background(tmp: Path) -> None:
    """Section 3."""
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
    # The minute before the first round, unmeasured: the jobs' next run is then the first round's minute.
    subprocess.run(
        [ICC, "run", "--quiet", "--at", "2030-01-01T09:59:00+00:00"], cwd=root, env=env, check=True
    )
    deadline = time.time() + 60
    while not all(m.exists() and m.read_text() for m in markers) and time.time() < deadline:
        time.sleep(0.01)
    reap_all()
    returns, firsts, lasts, floors = [], [], [], []
    for minute in range(BACKGROUND_ROUNDS):
        for m in markers:
            m.unlink(missing_ok=True)
        floors.append(measured([sys.executable, "-c", "import sqlite3"], root, env)[0])
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
        reap_all()  # the supervisors, reparented here when this process is the subreaper
    worst, last = max(lasts), statistics.median(lasts)
    ratios = [a / f for a, f in zip(lasts, floors, strict=True)]
    print()
    print(
        f"3. 20 due background jobs, one tick ({BACKGROUND_ROUNDS} rounds, each paired with "
        'python -c "import sqlite3")'
    )
    print(f"   {'':38}{'median':>10}{'worst':>10}")
    print(
        f"   {'icc run returned after':38}{statistics.median(returns) * 1e3:8.1f}ms{max(returns) * 1e3:8.1f}ms"
    )
    print(
        f"   {'first task started after':38}{statistics.median(firsts) * 1e3:8.1f}ms{max(firsts) * 1e3:8.1f}ms"
    )
    print(f"   {'all 20 tasks started after':38}{last * 1e3:8.1f}ms{worst * 1e3:8.1f}ms")
    print(f"   {'python -c import sqlite3 (same round)':38}{statistics.median(floors) * 1e3:8.1f}ms")
    print(f"   {'all 20 started / import sqlite3':38}{statistics.median(ratios):9.2f}x{max(ratios):9.2f}x")
    print(
        f"   goal: all 20 started within {BACKGROUND_GOAL:g}x python -c 'import sqlite3' in each of "
        f"{BACKGROUND_ROUNDS} rounds (the worst): {verdict(max(ratios) <= BACKGROUND_GOAL)}"
    )


def catch_up(tmp: Path) -> None:
    """Section 4: a tick after an hour without ticks (200 every-minute jobs: 11,800 missed slots to record)
    against the same tick one minute after the previous one, interleaved in fresh copies of the project."""
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
            times.append(measured([*run, later], root, env)[0])
    n, c = statistics.median(normal), statistics.median(caught_up)
    ratio = statistics.median(b / a for a, b in zip(normal, caught_up, strict=True))
    print()
    print(f"4. 200 every-minute jobs due, foreground (medians of {CATCH_UP_ROUNDS} interleaved rounds)")
    print(f"   {'tick one minute after the last':38}{n * 1e3:8.1f}ms")
    print(f"   {'tick one hour after the last':38}{c * 1e3:8.1f}ms  (11,800 missed slots recorded)")
    print(f"   {'ratio':38}{ratio:9.2f}x  (no goal)")


SECTIONS = ("idle", "service", "minute", "background", "catch-up")


def main() -> None:
    """Every section, or those named on the command line (``python bench/bench_tick.py background``)."""
    wanted = set(sys.argv[1:]) or set(SECTIONS)
    if wanted - set(SECTIONS):
        sys.exit(f"unknown section(s) {sorted(wanted - set(SECTIONS))}; known: {', '.join(SECTIONS)}")
    subreaper = become_subreaper()
    with tempfile.TemporaryDirectory() as tmp:
        idle_project = IdleProject(Path(tmp)) if wanted & {"idle", "service", "minute"} else None
        if idle_project is not None and "idle" in wanted:
            idle(Path(tmp), idle_project)
        if idle_project is not None and "service" in wanted:
            service_consumers(idle_project)
        if idle_project is not None and "minute" in wanted:
            default_minute(Path(tmp), idle_project, subreaper)
        if "background" in wanted:
            background(Path(tmp))
        if "catch-up" in wanted:
            catch_up(Path(tmp))


if __name__ == "__main__":
    main()
