"""Benchmarks of a minute with work due, and of scale, each against a baseline measured in the same run.

Every command is a real ``icc`` process in a real project (``consumers.mode = "service"``, so that only the
jobs below are ever due), timed from launch to exit (wall) and by its CPU (user + system, from
``getrusage(RUSAGE_CHILDREN)``). Every tick runs at an explicit ``--at`` slot that moves forward each round,
so each round's minute is a new slot and each idle tick is truly idle. The commands of a comparison run in
rounds, alternating which goes first; a ratio is the median of the per-round ratios (paired: same round,
same machine state). Each goal prints met or NOT met.

1. A minute with one due job. A project of 10 jobs: 9 yearly (1 January, not due) and one daily no-op
   foreground job at 03:00. The minute: ``icc run --quiet --at <day> 03:00``; the idle tick: ``icc run
   --quiet --at <day> 02:59`` in the same project, one minute earlier.
   Goal: the minute with one due foreground no-op at most 2.0x an idle tick (wall).
   The same minute in a project like it that has ``mail.alert_to`` set (icc-mail loaded through its entry
   point, as a production project has it), against that project's own idle tick, paired and interleaved the
   same way: no goal, a figure to watch (the run hooks' plugins are loaded by the run's supervisor).
2. 100 due foreground no-op jobs. A project of 100 every-minute no-op jobs in one plugin module; one tick at a
   new minute runs all 100, one after another. The baseline is what 100 crontab lines would do: 100 processes
   ``python -c "import myjob"``, one after another, where ``myjob.py`` holds the same no-op function.
   Goal: the tick at most 0.25x the 100 processes (wall).
3. Scale: the project of 1 with 10,000 jobs (9,999 yearly, the same daily one), against the 10-job project,
   each command paired with the same command in the 10-job project:
   - the idle tick. Goal: at most 1.05x the 10-job idle tick;
   - the minute with the one due job. Goal: at most 1.3x the 10-job minute;
   - ``icc scan`` with nothing changed, and ``icc status``. Goal: each at most 2x its 10-job cost.

Run: ``nox -s bench -- bench/bench_minute.py``; name sections to run only those (``python
bench/bench_minute.py minute hundred``: minute, hundred, scale).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench_tick import ICC, measured, project, verdict

MINUTE_ROUNDS = 9
HUNDRED_ROUNDS = 3
SCALE_ROUNDS = 7
SLOW_ROUNDS = 3  # scan and status at 10,000 jobs take seconds each
MINUTE_GOAL = 2.0
HUNDRED_GOAL = 0.25
IDLE_SCALE_GOAL = 1.05
MINUTE_SCALE_GOAL = 1.3
COMMAND_SCALE_GOAL = 2.0

PLUGIN = """
    import icc

    def task():
        pass

    @icc.hookimpl
    def schedule(scheduler):
        for i in range({yearly}):
            scheduler.add(task, name=f"job-{{i}}").yearly().at(i % 24, i % 60)
        scheduler.add(task, name="due").daily().at(3, 0)
    """

HUNDRED_PLUGIN = """
    import icc
    from myjob import task

    @icc.hookimpl
    def schedule(scheduler):
        for i in range(100):
            scheduler.add(task, name=f"j{i}").every_minute()
    """

Timing = tuple[float, float]  # wall seconds, CPU seconds


# icc-mail's failure alerts on (the job never fails: nothing is queued, nothing is sent).
ALERT_TO = '\n[icc.mail]\ndsn = "smtp://127.0.0.1:9"\nsender = "icc <icc@example.org>"\nalert_to = ["ops@example.org"]\n'


class Project:
    """A project of ``jobs`` jobs: ``jobs - 1`` yearly ones and the daily one at 03:00. ``extra``: more of
    icc.toml (then scanned again, with the installed plugins' entry points loaded too)."""

    def __init__(self, tmp: Path, jobs: int, extra: str = "", name: str = "") -> None:
        self.root = tmp / (name or f"jobs-{jobs}")
        self.env = project(self.root, PLUGIN.format(yearly=jobs - 1))
        if extra:
            with (self.root / "icc.toml").open("a") as f:
                f.write(extra)
            self.env.pop("ICC_DISABLE_PLUGIN_AUTOLOAD", None)
            subprocess.run([ICC, "scan"], cwd=self.root, env=self.env, check=True, stdout=subprocess.DEVNULL)
        self.day = 1
        self.run("2030-06-01T02:58:00+00:00")  # the first tick after the scan: a full one

    def run(self, at: str) -> Timing:
        return measured([ICC, "run", "--quiet", "--at", at], self.root, self.env)

    def idle(self) -> Timing:
        return self.run(f"2030-06-{self.day:02d}T02:59:00+00:00")

    def minute(self) -> Timing:
        timing = self.run(f"2030-06-{self.day:02d}T03:00:00+00:00")
        self.day += 1  # the next round: a new day, so idle and minute come at new slots
        return timing

    def command(self, *args: str) -> Callable[[], Timing]:
        return lambda: measured([ICC, *args], self.root, self.env)


def rounds(n: int, commands: dict[str, Callable[[], Timing]]) -> list[dict[str, Timing]]:
    """``n`` rounds of the commands, in an order that alternates (each round reversed from the last), after
    one unmeasured warm-up round. Commands that must run in a given order within a round (an idle tick
    before the minute of the same day) are given as one command."""
    names = list(commands)
    for name in names:
        commands[name]()
    rows = []
    for rnd in range(n):
        order = names if rnd % 2 == 0 else names[::-1]
        rows.append({name: commands[name]() for name in order})
    return rows


def paired(rows: list[dict[str, Timing]], name: str, base: str, column: int = 0) -> float:
    return statistics.median(row[name][column] / row[base][column] for row in rows)


def median(rows: list[dict[str, Timing]], name: str, column: int) -> float:
    return statistics.median(row[name][column] for row in rows)


def table(rows: list[dict[str, Timing]], labels: dict[str, str]) -> None:
    print(f"   {'':46}{'wall':>10}{'CPU':>10}")
    for name, label in labels.items():
        print(f"   {label:46}{median(rows, name, 0) * 1e3:8.1f}ms{median(rows, name, 1) * 1e3:8.1f}ms")


def minute_section(small: Project) -> None:
    rows = []
    for _ in range(MINUTE_ROUNDS + 1):
        idle = small.idle()
        minute = small.minute()
        rows.append({"idle": idle, "minute": minute})
    rows = rows[1:]  # the first is a warm-up
    ratio = paired(rows, "minute", "idle")
    print(
        f"1. a minute with one due foreground no-op job, 10 jobs (medians of {MINUTE_ROUNDS} paired rounds)"
    )
    table(rows, {"idle": "idle tick (02:59)", "minute": "minute, one due job (03:00)"})
    print(f"   {'minute / idle tick, CPU':46}{paired(rows, 'minute', 'idle', 1):9.2f}x  (no goal)")
    print(f"   {'minute / idle tick, wall':46}{ratio:9.2f}x")
    print(f"   goal: the minute at most {MINUTE_GOAL:g}x an idle tick: {verdict(ratio <= MINUTE_GOAL)}")


def alert_section(alerting: Project) -> None:
    """The minute with one due job in a project with ``mail.alert_to`` set, against its own idle tick."""
    rows = []
    for _ in range(MINUTE_ROUNDS + 1):
        idle = alerting.idle()
        minute = alerting.minute()
        rows.append({"idle": idle, "minute": minute})
    rows = rows[1:]  # the first is a warm-up
    print(f"   with mail.alert_to set (icc-mail loaded), 10 jobs (medians of {MINUTE_ROUNDS} paired rounds)")
    table(rows, {"idle": "idle tick (02:59)", "minute": "minute, one due job (03:00)"})
    print(f"   {'minute / idle tick, CPU':46}{paired(rows, 'minute', 'idle', 1):9.2f}x  (no goal)")
    print(f"   {'minute / idle tick, wall':46}{paired(rows, 'minute', 'idle'):9.2f}x  (no goal)")


def hundred_section(tmp: Path) -> None:
    root = tmp / "hundred"
    env = project(root, HUNDRED_PLUGIN, files={"myjob.py": "def task():\n    pass\n"})
    minute = 0

    def tick() -> Timing:
        nonlocal minute
        minute += 1
        at = f"2030-01-01T10:{minute:02d}:00+00:00"
        return measured([ICC, "run", "--quiet", "--at", at], root, env)

    def crontab() -> Timing:
        wall = cpu = 0.0
        for _ in range(100):
            w, c = measured([sys.executable, "-c", "import myjob"], root, env)
            wall += w
            cpu += c
        return wall, cpu

    rows = rounds(HUNDRED_ROUNDS, {"tick": tick, "crontab": crontab})
    ratio = paired(rows, "tick", "crontab")
    print()
    print(f"2. 100 due foreground no-op jobs in one tick (medians of {HUNDRED_ROUNDS} paired rounds)")
    table(rows, {"crontab": '100 x python -c "import myjob"', "tick": "icc run, 100 jobs due"})
    print(f"   {'tick / 100 processes, wall':46}{ratio:9.2f}x")
    print(
        f"   goal: the tick at most {HUNDRED_GOAL:g}x 100 x python -c 'import myjob': "
        f"{verdict(ratio <= HUNDRED_GOAL)}"
    )


def scale_section(small: Project, big: Project) -> None:
    def day(p: Project) -> Callable[[], Timing]:
        def both() -> Timing:  # the idle tick, then the minute of the same day: slots move forward
            idles[p.root] = p.idle()
            return p.minute()

        return both

    idles: dict[Path, Timing] = {}
    names = {"small": small, "big": big}
    ticks: list[dict[str, Timing]] = []
    minutes: list[dict[str, Timing]] = []
    for rnd in range(SCALE_ROUNDS + 1):
        order = list(names) if rnd % 2 == 0 else list(names)[::-1]
        row = {name: day(names[name])() for name in order}
        if rnd:  # the first round is a warm-up
            minutes.append(row)
            ticks.append({name: idles[names[name].root] for name in names})
    slow = rounds(
        SLOW_ROUNDS,
        {
            "scan-small": small.command("scan"),
            "scan-big": big.command("scan"),
            "status-small": small.command("status"),
            "status-big": big.command("status"),
        },
    )
    print()
    print("3. scale: 10,000 jobs against 10 (each command paired with the same in the 10-job project), wall")
    print(f"   {'':40}{'10 jobs':>10}{'10,000':>10}{'ratio':>9}")
    results = []
    for label, data, small_name, big_name, goal, n in (
        ("idle tick", ticks, "small", "big", IDLE_SCALE_GOAL, SCALE_ROUNDS),
        ("minute, one due job", minutes, "small", "big", MINUTE_SCALE_GOAL, SCALE_ROUNDS),
        ("icc scan, nothing changed", slow, "scan-small", "scan-big", COMMAND_SCALE_GOAL, SLOW_ROUNDS),
        ("icc status", slow, "status-small", "status-big", COMMAND_SCALE_GOAL, SLOW_ROUNDS),
    ):
        ratio = paired(data, big_name, small_name)
        print(
            f"   {label + f' ({n} rounds)':40}{median(data, small_name, 0) * 1e3:8.1f}ms"
            f"{median(data, big_name, 0) * 1e3:8.1f}ms{ratio:8.2f}x"
        )
        results.append((label, goal, ratio))
    for label, goal, ratio in results:
        print(f"   goal: {label} at 10,000 jobs at most {goal:g}x at 10 jobs: {verdict(ratio <= goal)}")


SECTIONS = ("minute", "hundred", "scale")


def main() -> None:
    """Every section, or those named on the command line (``python bench/bench_minute.py minute hundred``)."""
    wanted = set(sys.argv[1:]) or set(SECTIONS)
    if wanted - set(SECTIONS):
        sys.exit(f"unknown section(s) {sorted(wanted - set(SECTIONS))}; known: {', '.join(SECTIONS)}")
    with tempfile.TemporaryDirectory() as tmp:
        small = Project(Path(tmp), 10) if wanted & {"minute", "scale"} else None
        if small is not None and "minute" in wanted:
            minute_section(small)
            alert_section(Project(Path(tmp), 10, ALERT_TO, name="alert-to"))
        if "hundred" in wanted:
            hundred_section(Path(tmp))
        if small is not None and "scale" in wanted:
            big = Project(Path(tmp), 10_000)
            scale_section(small, big)


if __name__ == "__main__":
    main()
