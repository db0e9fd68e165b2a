"""The runner and the CLI on a shared PostgreSQL store: several project directories (hosts, each with its own
state directory and host_id) against one database."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import migrated_url
from projectkit import Project, at, slot

EVERY_MINUTE = """
def mark(name):
    def task():
        with open(os.path.join(os.environ["MARKER_DIR"], name), "a") as f:
            f.write(f"{os.getpid()}\\n")
        print("ran", name)
    task.__name__ = task.__qualname__ = name
    return task

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("a"), name="a").every_minute()
    scheduler.add(mark("b"), name="b").every_minute().in_background()
"""


def host(tmp_path: Path, url: str, name: str, plugin: str = EVERY_MINUTE) -> Project:
    proj = Project(tmp_path / name, store_url=url, host_id=name)
    proj.root.mkdir()
    proj.write_config()
    proj.write_plugin(plugin)
    return proj


@pytest.fixture
def shared_url(pg_url: str) -> str:
    return migrated_url(pg_url)


def test_runs_on_a_shared_store_are_recorded_under_the_host_id(tmp_path: Path, shared_url: str) -> None:
    web1 = host(tmp_path, shared_url, "web-1")
    web1.icc("scan", check=True)
    web1.icc("run", "--at", at(0), check=True)
    web1.wait_for(lambda: web1.marker_lines("b"), what="background job b")
    web1.icc("exec", "a", check=True)
    web1.wait_for(lambda: all(r["outcome"] == "succeeded" for r in web1.runs()), what="runs recorded")
    assert {r["host"] for r in web1.runs()} == {"web-1"}


def test_the_cli_works_on_a_shared_store(tmp_path: Path, shared_url: str) -> None:
    web1 = host(tmp_path, shared_url, "web-1")
    web2 = host(tmp_path, shared_url, "web-2")
    web1.icc("scan", check=True)
    web2.icc("run", "--at", at(0), check=True)  # another host sees the jobs the first one scanned
    web2.wait_for(lambda: web2.marker_lines("b"), what="background job b")
    status = web1.status()
    assert {j["name"] for j in status["jobs"]} == {"a", "b"}
    logs = web1.icc("logs", "a", check=True)
    assert "ran a" in logs.stdout
    web1.icc("pause", "--reason", "deploy", check=True)
    assert "paused" in web2.icc("status", check=True).stdout.lower()
    web2.icc("run", "--at", at(1), check=True)
    assert len(web2.marker_lines("a")) == 1  # paused: nothing ran
    web2.icc("resume", check=True)
    web1.icc("disable", "a", check=True)
    web2.icc("run", "--at", at(2), check=True)
    assert len(web2.marker_lines("a")) == 1
    assert [r["outcome"] for r in web1.runs("a")] == ["succeeded", "skipped"]


def test_metrics_on_a_shared_store(tmp_path: Path, shared_url: str) -> None:
    pytest.importorskip(
        "icc.store.postgres.queues", reason="the PostgreSQL queue transport (metrics count queues too)"
    )
    web1 = host(tmp_path, shared_url, "web-1")
    web1.icc("scan", check=True)
    web1.icc("run", "--at", at(0), check=True)
    metrics = web1.icc("metrics", check=True).stdout
    assert 'icc_job_runs_total{job="a",outcome="succeeded"} 1' in metrics


def test_on_each_host_definition_round_trip_and_compiled_form_untouched() -> None:
    from icc.cron import compiled_form
    from icc.schedule import Schedule

    plain, each = Schedule().every_minutes(5), Schedule().every_minutes(5).on_each_host()
    assert each.per_host and not plain.per_host
    assert "on_each_host" not in plain.definition()  # a job without it keeps the definition it had
    assert each.definition() == {**plain.definition(), "on_each_host": True}
    assert Schedule.from_definition(each.definition()).per_host
    assert not Schedule.from_definition(plain.definition()).per_host
    assert compiled_form(each.time_rule) == compiled_form(plain.time_rule)
    assert each.expression == plain.expression and each.describe() == plain.describe()


SCOPES = """
def mark(name):
    def task():
        with open(os.path.join(os.environ["MARKERS"], name), "a") as f:
            f.write(os.environ["HOST"] + "\\n")
    task.__name__ = task.__qualname__ = name
    return task

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("once"), name="once").every_minute()
    scheduler.add(mark("each"), name="each").every_minute().on_each_host()
    scheduler.add(mark("each_bg"), name="each_bg").every_minute().on_each_host().in_background()
"""


def test_on_each_host_runs_once_per_host_other_jobs_once_in_the_cluster(
    tmp_path: Path, shared_url: str
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    hosts = [host(tmp_path, shared_url, f"web-{i}", SCOPES) for i in (1, 2, 3)]
    for proj in hosts:
        proj.env.update({"MARKERS": str(markers), "HOST": str(proj.host_id)})
    hosts[0].icc("scan", check=True)
    for minute in (0, 1):
        procs = [proj.popen("run", "--at", at(minute)) for proj in hosts]
        for proc in procs:
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
    names = sorted(str(p.host_id) for p in hosts)

    def lines(name: str) -> list[str]:
        path = markers / name
        return sorted(path.read_text().splitlines()) if path.exists() else []

    hosts[0].wait_for(lambda: len(lines("each_bg")) == 6, what="every host's background run, twice")
    assert len(lines("once")) == 2  # one run per slot in the whole cluster
    assert lines("each") == sorted(names * 2)  # one per host per slot
    assert lines("each_bg") == sorted(names * 2)
    runs = hosts[0].runs("each")
    assert sorted(r["host"] for r in runs) == sorted(names * 2)


HOLDS = """
@icc.hookimpl
def schedule(scheduler):
    def hold():
        open(os.path.join(os.environ["MARKERS"], "started-" + os.environ["HOST"]), "w").close()
        release = os.path.join(os.environ["MARKERS"], "release")
        deadline = time.time() + 60
        while not os.path.exists(release) and time.time() < deadline:
            time.sleep(0.05)
    scheduler.add(hold, name="hold").every_minute().in_background()
    scheduler.add(hold, name="hold_each").every_minute().in_background().on_each_host()
"""


def test_without_overlapping_holds_across_hosts(tmp_path: Path, shared_url: str) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    web1, web2 = (host(tmp_path, shared_url, name, HOLDS) for name in ("web-1", "web-2"))
    for proj in (web1, web2):
        proj.env.update({"MARKERS": str(markers), "HOST": str(proj.host_id)})
    web1.icc("scan", check=True)
    web1.icc("run", "--at", at(0), check=True)
    web1.wait_for(lambda: (markers / "started-web-1").exists(), what="web-1's run started")
    web1.wait_for(
        lambda: {r["job"]: r["outcome"] for r in web1.runs()} == {"hold": "running", "hold_each": "running"},
        what="both runs running",
    )
    web2.icc("run", "--at", at(1), check=True)  # the next slot, on the other host, while web-1's run lasts

    def outcome(job: str, host_id: str) -> dict[str, object] | None:
        found = [r for r in web1.runs(job) if r["host"] == host_id]
        return found[-1] if found and found[-1]["outcome"] not in ("pending", "running") else None

    web2.wait_for(lambda: outcome("hold", "web-2") is not None, what="web-2's run of hold recorded")
    skipped = outcome("hold", "web-2")
    assert skipped is not None and skipped["outcome"] == "skipped"
    assert "still running on host web-1" in str(skipped["error"])
    # A per-host job's runs on different hosts do not exclude each other.
    web2.wait_for(lambda: (markers / "started-web-2").exists(), what="web-2's run of hold_each started")
    (markers / "release").touch()
    web1.wait_for(
        lambda: not [r for r in web1.runs() if r["outcome"] in ("pending", "running")], what="all done"
    )
    assert [r["outcome"] for r in web1.runs("hold_each")] == ["succeeded", "succeeded"]
    assert [r["outcome"] for r in web1.runs("hold")] == ["succeeded", "skipped"]


def test_the_idle_fast_path_never_reads_a_stale_sqlite_file_beside_a_postgresql_store(
    tmp_path: Path, shared_url: str
) -> None:
    proj = Project(tmp_path / "moved")
    proj.root.mkdir()
    proj.write_config()
    proj.write_plugin(EVERY_MINUTE.replace(".every_minute()", ".daily()"))
    proj.icc("scan", check=True)
    proj.icc("run", "--at", at(0), check=True)  # SQLite: nothing due before tomorrow
    proj.store_url, proj.host_id = shared_url, "web-1"  # the project moves to PostgreSQL
    proj.write_config()
    proj.write_plugin(EVERY_MINUTE)
    proj.icc("scan", check=True)
    proj.icc("run", "--at", at(1), check=True)
    assert len(proj.marker_lines("a")) == 1


PAUSED_EACH = """
def noted(result):
    with open(os.path.join(os.environ["MARKERS"], "after-" + os.environ["HOST"]), "a") as f:
        f.write(result.outcome + "\\n")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(lambda: None, name="each").every_minute().on_each_host().after(noted)
"""


def test_each_host_reports_only_its_own_rows_of_an_on_each_host_job(tmp_path: Path, shared_url: str) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    web1, web2 = (host(tmp_path, shared_url, name, PAUSED_EACH) for name in ("web-1", "web-2"))
    for proj in (web1, web2):
        proj.env.update({"MARKERS": str(markers), "HOST": str(proj.host_id)})
    web1.icc("scan", check=True)
    web1.icc("pause", check=True)
    web1.icc("run", "--at", at(0), check=True)
    web2.icc("run", "--at", at(0), check=True)
    assert [r["outcome"] for r in web1.runs("each")] == ["skipped", "skipped"]
    for name in ("web-1", "web-2"):  # each host's after callback ran once, for its own skipped slot
        # Callbacks of rows the tick records itself run in its detached concluder, which may end after the tick.
        marker = markers / f"after-{name}"
        web1.wait_for(marker.exists, what=f"{name}'s after callback")
        web1.wait_for(lambda marker=marker: marker.read_text().endswith("\n"), what="the callback's line")
        assert marker.read_text().splitlines() == ["skipped"], name


def test_icc_exec_does_not_overlap_a_run_on_another_host(tmp_path: Path, shared_url: str) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    web1, web2 = (host(tmp_path, shared_url, name, HOLDS) for name in ("web-1", "web-2"))
    for proj in (web1, web2):
        proj.env.update({"MARKERS": str(markers), "HOST": str(proj.host_id)})
    web1.icc("scan", check=True)
    web1.icc("run", "--at", at(0), check=True)
    web1.wait_for(lambda: (markers / "started-web-1").exists(), what="web-1's run started")
    web1.wait_for(lambda: web1.runs("hold")[0]["outcome"] == "running", what="web-1's run running")
    web2.icc("exec", "hold")
    manual = [r for r in web1.runs("hold") if r["kind"] == "manual"]
    assert [r["outcome"] for r in manual] == ["skipped"]
    assert "still running on host web-1" in str(manual[0]["error"])
    (markers / "release").touch()
    web1.wait_for(lambda: web1.runs("hold")[0]["outcome"] == "succeeded", what="web-1's run done")


MANY_JOBS = """
def mark(name):
    def task():
        with open(os.path.join(os.environ["MARKER_DIR"], "order"), "a") as f:
            f.write(name + "\\n")
    task.__name__ = task.__qualname__ = name
    return task

@icc.hookimpl
def schedule(scheduler):
    for n in range(25):
        name = f"job-{24 - n:02d}"  # defined in reverse name order: the plan follows the definitions
        scheduler.add(mark(name), name=name).every_minute()
"""


def test_a_tick_claims_all_its_due_jobs_in_one_statement(tmp_path: Path, shared_url: str) -> None:
    """25 jobs due at once: one INSERT into runs for all of their claims (a statement-level trigger counts the
    INSERT statements), and the foreground jobs still run one by one in plan order."""
    import psycopg

    with psycopg.connect(shared_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.run_inserts (n integer NOT NULL)")
        conn.execute(
            "CREATE FUNCTION public.count_run_insert() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO public.run_inserts VALUES (1); RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE TRIGGER count_inserts AFTER INSERT ON icc.runs "
            "FOR EACH STATEMENT EXECUTE FUNCTION public.count_run_insert()"
        )
    web1 = host(tmp_path, shared_url, "web-1", MANY_JOBS)
    web1.icc("scan", check=True)
    web1.icc("run", "--at", at(0), check=True)
    expected = [f"job-{24 - n:02d}" for n in range(25)]
    assert web1.marker_lines("order") == expected
    assert sorted(r["job"] for r in web1.runs() if r["outcome"] == "succeeded") == sorted(expected)
    with psycopg.connect(shared_url) as conn:
        row = conn.execute("SELECT count(*) FROM public.run_inserts").fetchone()
    assert row is not None and row[0] == 1


EXCLUSIVE = """
def a():
    with open(os.path.join(os.environ["MARKER_DIR"], "a"), "a") as f:
        f.write(f"{os.getpid()}\\n")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(a, name="a").every_minute().without_overlapping()
"""


def test_a_late_hosts_tick_deletes_no_other_hosts_rows_and_leaves_no_slot_without_one(
    tmp_path: Path, shared_url: str
) -> None:
    web1 = host(tmp_path, shared_url, "web-1", EXCLUSIVE)
    web2 = host(tmp_path, shared_url, "web-2", EXCLUSIVE)
    web1.icc("scan", check=True)
    web1.icc("run", "--at", at(10), check=True)
    web1.icc("run", "--at", at(15), check=True)  # web-1 records minutes 11 to 14 missed
    before = {(r["slot"], r["outcome"], r["host"]) for r in web1.runs("a")}
    web2.icc("run", "--at", at(12), check=True)  # web-2 is behind: a frozen host's late tick
    web2.icc("run", "--at", at(16), check=True)
    rows = {r["slot"]: r for r in web1.runs("a")}
    assert sorted(rows) == [slot(m) for m in range(10, 17)]  # every slot has its row
    assert before <= {
        (r["slot"], r["outcome"], r["host"]) for r in web1.runs("a")
    }  # nothing of web-1's deleted
    assert [rows[s]["outcome"] for s in sorted(rows)] == ["succeeded"] + ["missed"] * 4 + ["succeeded"] * 2
    assert len(web1.marker_lines("a")) == 2 and len(web2.marker_lines("a")) == 1


EACH_HOST = """
def mark(name):
    def task(ctx):
        with open(os.path.join(os.environ["MARKER_DIR"], name), "a") as f:
            f.write(f"{int(ctx.slot.timestamp())}\\n")
    task.__name__ = task.__qualname__ = name
    return task

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(mark("each"), name="each").every_minute().on_each_host()
    scheduler.add(mark("once"), name="once").every_minute().on_each_host().missed("once")
"""


def test_a_host_that_was_down_keeps_its_own_progress_through_on_each_host_jobs(
    tmp_path: Path, shared_url: str
) -> None:
    web1 = host(tmp_path, shared_url, "web-1", EACH_HOST)
    web2 = host(tmp_path, shared_url, "web-2", EACH_HOST)
    web1.icc("scan", check=True)
    for project in (web1, web2):
        project.icc("run", "--at", at(0), check=True)
    for minute in range(1, 6):
        web1.icc("run", "--at", at(minute), check=True)
    web2.icc("run", "--at", at(5), check=True)  # web-2 was down for minutes 1 to 4
    rows = [(r["job"], r["host"], r["slot"], r["outcome"], r["kind"]) for r in web1.runs()]
    for job in ("each", "once"):
        for name in ("web-1", "web-2"):
            mine = sorted((s, o, k) for j, h, s, o, k in rows if j == job and h == name)
            assert [s for s, _o, _k in mine] == [slot(m) for m in range(6)], (job, name)  # one row per slot
    web2_each = {s: o for j, h, s, o, _k in rows if j == "each" and h == "web-2"}
    assert [web2_each[slot(m)] for m in range(6)] == ["succeeded"] + ["missed"] * 4 + ["succeeded"]
    web2_once = {s: (o, k) for j, h, s, o, k in rows if j == "once" and h == "web-2"}
    # missed("once") with the current slot due: that run is the catch-up, the rest are recorded missed.
    assert [web2_once[slot(m)] for m in range(1, 6)] == [("missed", "missed")] * 4 + [
        ("succeeded", "scheduled")
    ]
    assert web2.marker_lines("each") == [str(slot(0)), str(slot(5))]
