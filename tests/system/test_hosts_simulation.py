"""Simulated hosts: several project directories (each its own state directory and host_id) against one
PostgreSQL database, driven by real `icc run --at` processes started in parallel. The tasks write marker files
(job, host, slot, and for exclusive jobs their start and end times) that the assertions read back, beside the
runs table itself."""

from __future__ import annotations

import itertools
import random
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import migrated_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pgkit import PgServer
from projectkit import Project, at, slot

MARKING = """
def mark(name, sleep=0.0):
    def task(ctx):
        start = time.time()
        if sleep:
            time.sleep(sleep)
        line = f"{os.environ['HOST']} {int(ctx.slot.timestamp())} {start!r} {time.time()!r}\\n"
        fd = os.open(os.path.join(os.environ["MARKERS"], name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    task.__name__ = task.__qualname__ = name
    return task
"""

CLUSTER = (
    MARKING
    + """
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("once"), name="once").every_minute()
    scheduler.add(mark("once_bg"), name="once_bg").every_minute().in_background()
    scheduler.add(mark("each"), name="each").every_minute().on_each_host()
    scheduler.add(mark("each_bg"), name="each_bg").every_minute().on_each_host().in_background()
"""
)


def make_host(base: Path, url: str, name: str, plugin: str, markers: Path) -> Project:
    proj = Project(base / name, store_url=url, host_id=name)
    proj.root.mkdir()
    proj.write_config()
    proj.write_plugin(plugin)
    proj.env.update({"MARKERS": str(markers), "HOST": name})
    return proj


def marks(markers: Path, name: str) -> list[tuple[str, int, float, float]]:
    """(host, slot, start, end) of every run of ``name`` that reached its end."""
    path = markers / name
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        host, slot_, start, end = line.split()
        found.append((host, int(slot_), float(start), float(end)))
    return found


def tick_together(ticks: list[tuple[Project, str]]) -> None:
    """Start every (host, --at) tick at once; each must end cleanly (exit 0, no traceback)."""
    procs = [(proj, when, proj.popen("run", "--at", when)) for proj, when in ticks]
    for proj, when, proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "Traceback" not in err, f"{proj.host_id} at {when}: {out}\n{err}"


def wait_settled(proj: Project) -> None:
    """Until no run is pending or running (the background supervisors finished)."""
    proj.wait_for(
        lambda: not [r for r in proj.runs() if r["outcome"] in ("pending", "running")],
        timeout=60,
        what="every run finished",
    )


def duplicate_claims(url: str) -> list[tuple[str, int, str, int]]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT job, slot, scope, count(*) FROM icc.runs WHERE slot IS NOT NULL "
            "GROUP BY job, slot, scope HAVING count(*) > 1"
        ).fetchall()
    return [tuple(r) for r in rows]


@pytest.fixture
def shared_url(pg_url: str) -> str:
    return migrated_url(pg_url)


def test_four_hosts_ticking_the_same_slots_run_each_slot_once_and_per_host_jobs_once_per_host(
    tmp_path: Path, shared_url: str
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    names = [f"web-{i}" for i in range(1, 5)]
    hosts = [make_host(tmp_path, shared_url, name, CLUSTER, markers) for name in names]
    hosts[0].icc("scan", check=True)
    minutes = range(5)
    for minute in minutes:
        tick_together([(proj, at(minute)) for proj in hosts])
    wait_settled(hosts[0])
    slots = [slot(m) for m in minutes]
    for job in ("once", "once_bg"):
        assert sorted(s for _h, s, _a, _b in marks(markers, job)) == slots, job  # once cluster-wide
    for job in ("each", "each_bg"):
        assert sorted((h, s) for h, s, _a, _b in marks(markers, job)) == sorted(
            (h, s) for h in names for s in slots
        ), job  # once per host per slot
    assert duplicate_claims(shared_url) == []
    runs = hosts[0].runs()
    assert Counter(r["outcome"] for r in runs) == {"succeeded": 2 * 5 + 2 * 4 * 5}


def interleaving_plugin(policy_a: str, policy_b: str) -> str:
    return (
        MARKING
        + f"""
@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("a"), name="a").every_minute().missed("{policy_a}")
    scheduler.add(mark("b"), name="b").every_minutes(2).missed("{policy_b}")
    scheduler.add(mark("e"), name="e").every_minute().on_each_host()
    scheduler.add(mark("x", 0.3), name="x").every_minute()
    scheduler.add(mark("xb", 0.5), name="xb").every_minute().in_background()
"""
    )


POLICIES = st.sampled_from(["skip", "once", "all"])
# Waves of ticks: each wave starts its (host, minute) ticks at once; minutes may go back.
WAVES = st.lists(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5)), min_size=1, max_size=3),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(policy_a=POLICIES, policy_b=POLICIES, waves=WAVES, seed=st.integers(0, 2**16))
def test_interleaved_ticks_of_three_hosts_claim_once_and_exclusive_runs_never_overlap(
    pg_server: PgServer, policy_a: str, policy_b: str, waves: list[list[tuple[int, int]]], seed: int
) -> None:
    url = migrated_url(pg_server.url(pg_server.new_database()))
    with tempfile.TemporaryDirectory(prefix="icc-hosts-") as tmp:
        base = Path(tmp)
        markers = base / "markers"
        markers.mkdir()
        plugin = interleaving_plugin(policy_a, policy_b)
        hosts = [make_host(base, url, f"web-{i}", plugin, markers) for i in range(3)]
        hosts[0].icc("scan", check=True)
        shuffle = random.Random(seed)
        for wave in waves:
            ticks = [(hosts[h], at(minute)) for h, minute in wave]
            shuffle.shuffle(ticks)
            tick_together(ticks)
        wait_settled(hosts[0])
        assert duplicate_claims(url) == []  # one claim per (job, slot, scope) in the runs table
        for job in ("a", "b", "x", "xb"):
            ran = [s for _h, s, _a, _b in marks(markers, job)]
            assert len(ran) == len(set(ran)), (job, sorted(ran))  # each slot ran at most once in the cluster
        each = [(h, s) for h, s, _a, _b in marks(markers, "e")]
        assert len(each) == len(set(each)), sorted(each)  # at most once per host per slot
        for job in ("x", "xb"):  # without_overlapping (the default) across hosts
            spans = sorted((start, end, h, s) for h, s, start, end in marks(markers, job))
            for before, after in itertools.pairwise(spans):
                assert after[0] >= before[1], f"{job}: {before} overlaps {after}"


RESTART = (
    MARKING
    + """
def hold(name):
    def task(ctx):
        open(os.path.join(os.environ["MARKERS"], "started-" + name), "w").close()
        release = os.path.join(os.environ["MARKERS"], "release")
        deadline = time.time() + 60
        while not os.path.exists(release) and time.time() < deadline:
            time.sleep(0.05)
        mark(name)(ctx)
    task.__name__ = task.__qualname__ = name
    return task

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(hold("fg"), name="fg").every_minute()
    scheduler.add(hold("bg"), name="bg").every_minute().in_background()
"""
)


def test_a_database_restart_mid_tick_runs_no_slot_twice_and_the_next_tick_runs_normally(
    tmp_path: Path, pg_server: PgServer, shared_url: str
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    web1 = make_host(tmp_path, shared_url, "web-1", RESTART, markers)
    web2 = make_host(tmp_path, shared_url, "web-2", RESTART, markers)
    web1.icc("scan", check=True)
    tick = web1.popen("run", "--at", at(0))
    web1.wait_for(
        lambda: (markers / "started-fg").exists() and (markers / "started-bg").exists(),
        timeout=60,
        what="both tasks started",
    )
    pg_server.restart()
    (markers / "release").touch()
    out, err = tick.communicate(timeout=120)
    assert "Traceback" not in err, err
    if tick.returncode != 0:  # failed: with one clear line
        assert tick.returncode == 2 and len(err.strip().splitlines()) == 1, (tick.returncode, out, err)
    web1.wait_for(lambda: marks(markers, "bg"), timeout=60, what="the background task's end")
    # The slot is not run again: not by this host, not by another one, not after the restart.
    tick_together([(web1, at(0)), (web2, at(0))])
    wait_settled(web1)
    # The next slot runs normally, on either host.
    tick_together([(web2, at(1)), (web1, at(1))])
    wait_settled(web1)
    for job in ("fg", "bg"):
        assert sorted(s for _h, s, _a, _b in marks(markers, job)) == [slot(0), slot(1)], job
        outcomes = [r["outcome"] for r in web1.runs(job)]
        assert outcomes[-1] == "succeeded" and len(outcomes) == 2, (job, web1.runs(job))
    assert duplicate_claims(shared_url) == []
