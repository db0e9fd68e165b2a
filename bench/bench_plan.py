"""The tick's planning cost at scale: 10,000 registered jobs against 10 (issue 17).

1. A minute with one due foreground no-op job (every minute) beside 10, then 10,000, daily jobs none of which
   is due. Goal: the 10,000-job minute at most 1.3x the 10-job minute.
2. The idle tick (the same without the every-minute job: nothing due). Goal: at most 1.05x.

Each round ticks the four projects at the next minute (``icc run --quiet --at``), the two of a pair back to back
in alternating order; the ratio is the median of the per-round ratios (paired: same round, same machine
state). The first tick of each project (it evaluates every job once) is not timed.

What is left of the minute's ratio is the plugin load the due job needs (it builds every job's Schedule): the
store side (an index on ``next_due``, only the due rows read, only changed next slots written) no longer grows
with the jobs that are not due.

Run: `nox -s bench -- bench/bench_plan.py` (rounds: BENCH_PLAN_ROUNDS, default 9). To compare with another icc,
put its source first on PYTHONPATH.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

ICC = shutil.which("icc", path=str(Path(sys.executable).parent)) or "icc"
PLUGIN = """
import icc

def noop():
    pass

@icc.hookimpl
def schedule(scheduler):
    for i in range({n}):
        scheduler.add(noop, name=f"job-{{i}}").daily().at(3, i % 60)
    if {due}:
        scheduler.add(noop, name="due").every_minute()
"""


def project(root: Path, n: int, due: bool) -> dict[str, str]:
    root.mkdir(parents=True)
    (root / "icc.toml").write_text(
        '[icc]\nstate_dir = "state"\nplugins = ["bench_plugin"]\n[icc.consumers]\nmode = "service"\n'
    )
    (root / "bench_plugin.py").write_text(textwrap.dedent(PLUGIN.format(n=n, due=due)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["ICC_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    subprocess.run([ICC, "scan"], cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    return env


def timed(root: Path, env: dict[str, str], at: datetime) -> float:
    start = time.perf_counter()
    subprocess.run(
        [ICC, "run", "--quiet", "--at", at.isoformat()],
        cwd=root,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    rounds = int(os.environ.get("BENCH_PLAN_ROUNDS", "9"))
    base = (datetime.now(UTC) + timedelta(days=3)).replace(hour=10, minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        pairs = {
            "due": [
                (t / "d10", project(t / "d10", 10, True)),
                (t / "d10k", project(t / "d10k", 10_000, True)),
            ],
            "idle": [
                (t / "i10", project(t / "i10", 10, False)),
                (t / "i10k", project(t / "i10k", 10_000, False)),
            ],
        }
        for pp in pairs.values():
            for root, env in pp:
                timed(root, env, base)  # warm: evaluates every job once, writes the bytecode
        ratios: dict[str, list[float]] = {"due": [], "idle": []}
        times: dict[str, list[tuple[float, float]]] = {"due": [], "idle": []}
        for r in range(1, rounds + 1):
            at = base + timedelta(minutes=r)
            for kind, ((a, ea), (b, eb)) in pairs.items():
                order = [(a, ea), (b, eb)] if r % 2 else [(b, eb), (a, ea)]
                got = {root: timed(root, env, at) for root, env in order}
                small, big = got[a], got[b]
                ratios[kind].append(big / small)
                times[kind].append((small, big))
        for kind, goal in (("due", 1.3), ("idle", 1.05)):
            small = statistics.median(x for x, _ in times[kind])
            big = statistics.median(y for _, y in times[kind])
            ratio = statistics.median(ratios[kind])
            label = "a minute with one due job" if kind == "due" else "idle tick"
            print(
                f"{label}: 10 jobs {small * 1000:.0f} ms, 10,000 jobs {big * 1000:.0f} ms, "
                f"ratio {ratio:.2f}x (goal <= {goal}x: {'met' if ratio <= goal else 'NOT met'})"
            )


if __name__ == "__main__":
    main()
