"""The StateStore contract, method by method, against both backends with the same assertions: the embedded SQLite
store and the shared PostgreSQL one."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from icc.config import Config, StoreConfig
from icc.store import open_store
from icc.store.protocol import Claim, JobRecord, StateStore, UnchangedGone

BACKENDS = ["sqlite", "postgres"]
StoreFactory = Callable[[], StateStore]


def _config(tmp_path: Path, url: str | None, host: str = "host-a") -> Config:
    return Config(
        path=None,
        root=tmp_path,
        state_dir=tmp_path / ".icc",
        store=StoreConfig(url=url, host_id=host),
    )


@pytest.fixture(params=BACKENDS)
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """A fresh store's configuration: SQLite in tmp_path, or a new PostgreSQL database with the schema applied."""
    if request.param == "sqlite":
        return _config(tmp_path, None)
    url = request.getfixturevalue("pg_url")
    cfg = _config(tmp_path, url)
    import icc.store.postgres.connection

    conn = icc.store.postgres.connection.connect(cfg)
    icc.store.postgres.connection.migrate(conn, cfg.store.schema)
    conn.close()
    return cfg


@pytest.fixture
def opener(config: Config) -> Iterator[StoreFactory]:
    opened: list[StateStore] = []

    def make() -> StateStore:
        store = open_store(config)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(opener: StoreFactory) -> StateStore:
    return opener()


def _rec(name: str, expr: str = "* * * * *", **kw: object) -> JobRecord:
    return JobRecord(
        name=name,
        kind="command",
        definition={"schedule": {"expression": expr}, "argv": ["true"]},
        plugin="p",
        **kw,  # type: ignore[arg-type]
    )


def test_sync_jobs_adds_changes_removes_restores_and_prunes(store: StateStore) -> None:
    report = store.sync_jobs([_rec("a"), _rec("b")], prune=False, dry_run=False, now=1.0, meta={"k": "v"})
    assert (report.added, report.changed, report.removed) == (["a", "b"], [], [])
    assert store.get_meta("k") == "v"
    assert [j.name for j in store.jobs()] == ["a", "b"]
    assert store.job("a") == _rec("a")
    report = store.sync_jobs([_rec("a", "0 * * * *")], prune=False, dry_run=False, now=2.0, meta={})
    assert (report.changed, report.removed, report.unchanged) == (["a"], ["b"], [])
    assert [j.name for j in store.jobs()] == ["a"]
    removed = store.job("b")
    assert removed is not None and removed.removed_at == 2.0
    assert [j.name for j in store.jobs(include_removed=True)] == ["a", "b"]
    report = store.sync_jobs(
        [_rec("a", "0 * * * *"), _rec("b")], prune=False, dry_run=False, now=3.0, meta={}
    )
    assert (report.restored, report.unchanged) == (["b"], ["a"])
    dry = store.sync_jobs([], prune=True, dry_run=True, now=4.0, meta={"k": "dry"})
    assert sorted(dry.pruned) == ["a", "b"]
    assert [j.name for j in store.jobs()] == ["a", "b"] and store.get_meta("k") == "v"  # nothing written
    store.claim("b", 60, "scheduled", pid=1, host="h")
    report = store.sync_jobs([_rec("a", "0 * * * *")], prune=True, dry_run=False, now=5.0, meta={})
    assert report.pruned == ["b"]
    assert store.job("b") is None and store.runs("b") == []


def test_sync_jobs_leaves_the_jobs_given_as_unchanged_and_refuses_one_no_longer_stored(
    store: StateStore,
) -> None:
    store.sync_jobs([_rec("a"), _rec("b"), _rec("c")], prune=False, dry_run=False, now=1.0, meta={})
    store.set_next_due({"a": 120})
    report = store.sync_jobs(
        [_rec("b", "0 * * * *")], prune=False, dry_run=False, now=2.0, meta={}, unchanged={"a": "p", "c": "p"}
    )
    assert (report.unchanged, report.changed, report.removed) == (["a", "c"], ["b"], [])
    assert store.job("a") == _rec("a", next_due=120)  # untouched: no record was given for it
    store.sync_jobs([_rec("b", "0 * * * *")], prune=False, dry_run=False, now=3.0, meta={})  # a, c removed
    for unchanged in ({"a": "p"}, {"b": "another-plugin"}, {"zz": "p"}):
        with pytest.raises(UnchangedGone):
            store.sync_jobs([], prune=True, dry_run=False, now=4.0, meta={"k": "v"}, unchanged=unchanged)
    assert store.get_meta("k") is None and [j.name for j in store.jobs()] == ["b"]  # nothing written


def test_definition_totals_count_each_plugins_present_jobs_and_their_definitions_length(
    store: StateStore,
) -> None:
    records = [_rec("a"), _rec("b"), JobRecord("c", "command", {"schedule": {}}, plugin="q")]
    store.sync_jobs(records, prune=False, dry_run=False, now=1.0, meta={})
    text = len('{"argv": ["true"], "schedule": {"expression": "* * * * *"}}')
    assert store.definition_totals() == {"p": (2, 2 * text), "q": (1, len('{"schedule": {}}'))}
    store.sync_jobs(records[1:], prune=False, dry_run=False, now=2.0, meta={})  # a removed: not counted
    assert store.definition_totals() == {"p": (1, text), "q": (1, len('{"schedule": {}}'))}


def test_jobs_of_some_plugins(store: StateStore) -> None:
    records = [_rec("a"), _rec("b"), JobRecord("c", "command", {"schedule": {}}, plugin="q")]
    store.sync_jobs(records, prune=False, dry_run=False, now=1.0, meta={})
    assert [j.name for j in store.jobs(plugins={"q"})] == ["c"]
    assert [j.name for j in store.jobs(plugins=["p", "q", "r"])] == ["a", "b", "c"]
    assert store.jobs(plugins=()) == []


def test_job_summaries_read_each_jobs_row_with_its_schedule_and_description(store: StateStore) -> None:
    daily = {"expression": "0 3 * * *", "zone": "UTC"}
    records = [
        JobRecord("b", "callable", {"schedule": daily, "description": "the b", "order": 1}, plugin="p"),
        JobRecord(
            "a",
            "command",
            {"schedule": dict(daily), "argv": ["true"], "order": 0},
            plugin="q",
            distribution="dist",
            version="1.2",
        ),
        _rec("c"),
    ]
    store.sync_jobs(records, prune=False, dry_run=False, now=1.0, meta={})
    store.set_enabled("c", False)
    store.set_next_due({"a": 600})
    store.sync_jobs(records[:2], prune=False, dry_run=False, now=2.0, meta={})  # c removed
    a, b, c = store.job_summaries()
    assert (a.name, a.kind, a.plugin, a.distribution, a.version) == ("a", "command", "q", "dist", "1.2")
    assert (a.enabled, a.removed_at, a.next_due, a.description) == (True, None, 600, None)
    assert dict(a.schedule) == daily and a.schedule is b.schedule  # equal stored schedules: decoded once
    assert (b.description, b.kind, b.plugin) == ("the b", "callable", "p")
    assert (c.enabled, c.removed_at, dict(c.schedule)) == (False, 2.0, {"expression": "* * * * *"})


def test_enabled_next_due_and_earliest_due(store: StateStore) -> None:
    store.sync_jobs([_rec("a"), _rec("b"), _rec("c")], prune=False, dry_run=False, now=1.0, meta={})
    assert store.earliest_due() is None
    store.set_next_due({"a": 600, "b": 120, "c": 60})
    store.set_enabled("c", False)
    assert store.job("c") is not None and store.job("c").enabled is False  # type: ignore[union-attr]
    assert store.earliest_due() == 120
    store.set_enabled("c", True)
    assert store.earliest_due() == 60
    store.save_evaluation({"c": None, "b": 180}, 3000)
    assert store.get_meta("watermark") == "3000"
    assert store.earliest_due() == 180
    assert store.job("c").next_due is None  # type: ignore[union-attr]


def test_update_meta_is_serialised_across_threads(opener: StoreFactory, config: Config) -> None:
    the_config = config
    opener().update_meta("made", lambda old: "1")  # the store exists before the threads open it

    def bump() -> None:
        store = open_store(the_config)  # a connection per thread, as per process
        for _ in range(15):
            store.update_meta("counter", lambda old: str(int(old or 0) + 1))
        store.close()

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first, second = opener(), opener()
    assert first.get_meta("counter") == "60"
    assert first.update_meta("counter", lambda old: None) is None
    assert second.get_meta("counter") is None


def test_claim_is_once_per_slot_and_manual_runs_never_conflict(store: StateStore) -> None:
    first = store.claim("a", 60, "scheduled", pid=10, host="h")
    assert first is not None
    assert store.claim("a", 60, "scheduled", pid=11, host="h2") is None
    assert store.claim("a", 120, "missed", pid=10, host="h") is not None
    run = store.run(first)
    assert run is not None and (run.job, run.slot, run.kind, run.outcome, run.pid, run.host) == (
        "a",
        60,
        "scheduled",
        "pending",
        10,
        "h",
    )
    m1, m2 = store.start_manual("a", pid=12, host="h"), store.start_manual("a", pid=12, host="h")
    assert m1 != m2
    manual = store.run(m1)
    assert manual is not None and (manual.slot, manual.kind, manual.outcome) == (None, "manual", "pending")
    unfinished = [r.id for r in store.unfinished()]
    assert unfinished == sorted(unfinished) and {first, m1, m2} <= set(unfinished) and len(unfinished) == 4


def _claim_in_process(root: Path, url: str | None, barrier: object, results: object) -> None:
    store = open_store(_config(root, url, host=f"host-{os.getpid()}"))
    barrier.wait()  # type: ignore[attr-defined]
    got = store.claim("contended", 600, "scheduled", pid=os.getpid(), host=f"h{os.getpid()}")
    results.put(got)  # type: ignore[attr-defined]
    store.close()


def test_claim_from_many_processes_at_once_has_one_winner(config: Config, store: StateStore) -> None:
    ctx = multiprocessing.get_context("fork")
    count = 6
    barrier, results = ctx.Barrier(count), ctx.Queue()
    procs = [
        ctx.Process(target=_claim_in_process, args=(config.root, config.store.url, barrier, results))
        for _ in range(count)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    winners = [g for g in got if g is not None]
    assert len(winners) == 1
    assert [r.id for r in store.runs("contended")] == winners


def test_claim_many_wins_each_unclaimed_pair_once_in_the_order_given(store: StateStore) -> None:
    assert store.claim_many([], pid=1, host="h") == []
    taken = store.claim("b", 60, "scheduled", pid=9, host="other")
    assert taken is not None
    claims = [
        Claim("c", 60, "scheduled"),
        Claim("b", 60, "scheduled"),  # claimed before
        Claim("a", 60, "missed"),
        Claim("c", 60, "scheduled"),  # a duplicate later in the batch
        Claim("a", 120, "scheduled"),
    ]
    won = store.claim_many(claims, pid=1, host="h")
    assert [w is not None for w in won] == [True, False, True, False, True]
    assert len({w for w in won if w is not None}) == 3
    for claim, run_id in zip(claims, won, strict=True):
        if run_id is not None:
            run = store.run(run_id)
            assert run is not None
            assert (run.job, run.slot, run.kind, run.outcome, run.pid, run.host) == (
                claim.job,
                claim.slot,
                claim.kind,
                "pending",
                1,
                "h",
            )
    # Each pair is now claimed: by claim_many as by claim.
    assert store.claim_many(claims[:1], pid=2, host="h2") == [None]
    assert store.claim("a", 120, "scheduled", pid=2, host="h2") is None
    assert store.runs("b")[0].id == taken


def test_claim_many_in_its_scope(store: StateStore, config: Config) -> None:
    """As claim(): a host's scope is apart from the cluster-wide one on a shared store; one scope on a local one."""
    shared = config.store.url is not None
    won = store.claim_many(
        [
            Claim("a", 60, "scheduled", ""),
            Claim("a", 60, "scheduled", "host-b"),
            Claim("a", 60, "scheduled", "host-c"),
        ],
        pid=1,
        host="h",
    )
    assert [w is not None for w in won] == [True, shared, shared]
    again = store.claim_many(
        [Claim("a", 60, "scheduled", "host-b"), Claim("a", 60, "scheduled", "host-d")], pid=2, host="h"
    )
    assert [w is not None for w in again] == [False, shared]


def _claim_many_in_process(root: Path, url: str | None, index: int, barrier: object, results: object) -> None:
    import random

    store = open_store(_config(root, url, host=f"host-{os.getpid()}"))
    # Overlapping batches in a different order in each process: every pair is wanted by 2 to 4 processes.
    keys = [(f"job-{n:03d}", 600) for n in range(index * 10, index * 10 + 40)]
    random.Random(index).shuffle(keys)
    claims = [Claim(job, slot, "scheduled") for job, slot in keys]
    barrier.wait()  # type: ignore[attr-defined]
    got = store.claim_many(claims, pid=os.getpid(), host=f"h{os.getpid()}")
    results.put([(c.job, run_id) for c, run_id in zip(claims, got, strict=True) if run_id is not None])  # type: ignore[attr-defined]
    store.close()


def test_claim_many_from_many_processes_on_overlapping_batches_wins_each_pair_once(
    config: Config, store: StateStore
) -> None:
    ctx = multiprocessing.get_context("fork")
    count = 6
    barrier, results = ctx.Barrier(count), ctx.Queue()
    procs = [
        ctx.Process(target=_claim_many_in_process, args=(config.root, config.store.url, i, barrier, results))
        for i in range(count)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * count
    won = [pair for batch in got for pair in batch]
    wanted = {f"job-{n:03d}" for n in range((count - 1) * 10 + 40)}
    assert sorted(job for job, _ in won) == sorted(wanted)  # each pair won exactly once
    for job, run_id in won:
        assert [r.id for r in store.runs(job)] == [run_id]


def test_record_writes_unclaimed_slots_only_and_forget_unrun_deletes_them(store: StateStore) -> None:
    store.claim("a", 120, "scheduled", pid=1, host="h")
    assert store.record("a", [60, 120, 180], "missed", "missed", error="missed (skip policy)") == [60, 180]
    assert store.record("a", [60], "skipped", "scheduled") == []
    rows = {r.slot: r for r in store.runs("a")}
    assert rows[60].outcome == "missed" and rows[60].error == "missed (skip policy)"
    assert rows[60].started_at is None and rows[60].ended_at is not None
    assert store.run_counts() == {"a": {"missed": 2}}
    assert store.missed_counts(0, 120) == {"a": 1}
    assert store.missed_counts(0, 600) == {"a": 2}
    assert store.forget_unrun(120) == 1
    assert sorted(r.slot for r in store.runs("a") if r.slot is not None) == [60, 120]


def test_forget_unrun_keeps_skipped_rows_they_are_decisions(store: StateStore) -> None:
    assert store.record("a", [240], "skipped", "scheduled", error="paused") == [240]
    assert store.record("a", [300], "missed", "missed") == [300]
    assert store.forget_unrun(120) == 1
    assert [(r.slot, r.outcome) for r in store.runs("a")] == [(240, "skipped")]


def test_run_life_mark_running_hand_over_finish_and_notes(store: StateStore) -> None:
    a = store.claim("a", 60, "scheduled", pid=1, host="h")
    b = store.claim("b", 60, "scheduled", pid=1, host="h")
    assert a is not None and b is not None
    store.mark_running(a, pid=2, task_pid=3, now=100.0)
    run = store.run(a)
    assert run is not None and (run.outcome, run.pid, run.task_pid, run.started_at) == (
        "running",
        2,
        3,
        100.0,
    )
    store.hand_over({a: 9, b: 8}, now=101.0)
    assert store.run(a).pid == 2  # type: ignore[union-attr]  # already running under its supervisor
    assert (store.run(b).outcome, store.run(b).pid) == ("running", 8)  # type: ignore[union-attr]
    store.finish(a, "succeeded", now=110.0, exit_code=0, output="hello\n")
    store.finish(a, "succeeded", now=110.0, exit_code=0, output="hello\n")  # counted once
    done = store.run(a)
    assert done is not None and (done.outcome, done.exit_code, done.output, done.duration) == (
        "succeeded",
        0,
        "hello\n",
        10.0,
    )
    store.mark_running(a, pid=5, task_pid=6, now=200.0)  # ended: nothing written
    assert store.run(a).outcome == "succeeded"  # type: ignore[union-attr]
    store.finish(b, "failed", now=120.0, error="boom")
    assert store.run(b).started_at is None  # type: ignore[union-attr]  # its task never started: no duration
    store.add_note(b, "after callback failed")
    store.add_note(a, "hook failed")
    assert store.run(b).error == "boom; after callback failed"  # type: ignore[union-attr]
    assert store.run(a).error == "hook failed"  # type: ignore[union-attr]
    assert store.run_counts() == {"a": {"succeeded": 1}, "b": {"failed": 1}}
    assert store.unfinished() == []
    assert store.run(999999) is None


def test_a_later_finish_of_a_finished_run_rewrites_it_on_sqlite_and_is_refused_on_postgres(
    store: StateStore, config: Config
) -> None:
    """The one difference the shared finish() keeps (icc.store.sql): one host's SQLite store shows the last
    finish of a run; the shared store never lets a late finish overwrite what was recorded. Counted once on both."""
    run_id = store.claim("a", 60, "scheduled", pid=1, host="h")
    assert run_id is not None
    store.finish(run_id, "abandoned", now=110.0, error="its supervisor died")
    store.finish(run_id, "succeeded", now=120.0, exit_code=0, output="late\n")
    run = store.run(run_id)
    assert run is not None
    if config.store.url is None:
        assert (run.outcome, run.exit_code, run.output, run.ended_at) == ("succeeded", 0, "late\n", 120.0)
    else:
        assert (run.outcome, run.error, run.ended_at) == ("abandoned", "its supervisor died", 110.0)
    assert store.run_counts() == {"a": {"abandoned": 1}}


def test_runs_latest_last_outcomes_and_timeline(store: StateStore) -> None:
    ids = []
    for slot, outcome in [(60, "succeeded"), (120, "failed"), (180, "succeeded"), (240, "timed_out")]:
        run_id = store.claim("a", slot, "scheduled", pid=1, host="h")
        assert run_id is not None
        store.mark_running(run_id, pid=1, task_pid=2, now=float(slot))
        store.finish(run_id, outcome, now=slot + 5.0)  # type: ignore[arg-type]
        ids.append(run_id)
    store.record("a", [300], "missed", "missed")
    manual = store.start_manual("b", pid=1, host="h")
    store.mark_running(manual, pid=1, task_pid=2, now=130.0)
    assert [r.slot for r in store.runs("a", limit=3)] == [300, 240, 180]
    latest = store.latest_runs()
    assert latest["a"].id == ids[3] and latest["b"].id == manual
    last = store.last_outcomes()
    assert last["a"]["success"].id == ids[2] and last["a"]["failure"].id == ids[3]
    assert "b" not in last
    timeline = store.outcomes_between(100, 250)
    assert [(j, t, o) for _i, j, t, o in timeline] == [
        ("a", 120.0, "failed"),
        ("b", 130.0, "running"),
        ("a", 180.0, "succeeded"),
        ("a", 240.0, "timed_out"),
    ]


def test_prune_runs_keeps_the_newest_and_the_last_success_and_failure(store: StateStore) -> None:
    outcomes = ["failed", "succeeded"] + ["stopped"] * 5
    for i, outcome in enumerate(outcomes):
        run_id = store.claim("a", 60 * (i + 1), "scheduled", pid=1, host="h")
        assert run_id is not None
        store.finish(run_id, outcome, now=float(i))  # type: ignore[arg-type]
    store.record("a", [60 * s for s in range(100, 110)], "missed", "missed")
    running = store.claim("a", 60 * 200, "scheduled", pid=1, host="h")
    deleted = store.prune_runs(3, keep_unrun=4)
    assert deleted == 3 + 6  # three stopped (the pending one counts among the newest), six missed
    left = store.runs("a", limit=100)
    outcomes_left = sorted(r.outcome for r in left)
    assert outcomes_left == sorted(["failed", "succeeded", "stopped", "stopped", "pending"] + ["missed"] * 4)
    assert running in [r.id for r in left]
    assert store.run_counts()["a"]["missed"] == 10  # counts are not pruned


def test_a_store_closed_and_reopened_sees_everything(opener: StoreFactory) -> None:
    first = opener()
    first.update_meta("x", lambda old: "1")
    first.close()
    assert opener().get_meta("x") == "1"


def test_claim_in_its_scope(store: StateStore, config: Config) -> None:
    """Scopes: on a shared store a host's scope is claimed apart from the cluster-wide one; a local store has one
    host, so the scope changes nothing there."""
    assert store.claim("a", 60, "scheduled", pid=1, host="h", scope="") is not None
    other = store.claim("a", 60, "scheduled", pid=1, host="h", scope="host-b")
    assert (other is not None) == (config.store.url is not None)
    assert store.record("a", [60], "skipped", "scheduled", scope="host-c") == (
        [60] if config.store.url is not None else []
    )


def test_time_stays_the_callers(store: StateStore) -> None:
    """Times in rows are the caller's (the tick's ``now``), never replaced by the database's."""
    run_id = store.claim("a", 60, "scheduled", pid=1, host="h")
    assert run_id is not None
    store.finish(run_id, "succeeded", now=12.5)
    assert store.run(run_id).ended_at == 12.5  # type: ignore[union-attr]


# -- PostgreSQL only: connections ------------------------------------------------------------------------------


@pytest.fixture
def pg_config(tmp_path: Path, pg_url: str) -> Config:
    import icc.store.postgres.connection

    cfg = _config(tmp_path, pg_url)
    conn = icc.store.postgres.connection.connect(cfg)
    icc.store.postgres.connection.migrate(conn, cfg.store.schema)
    conn.close()
    return cfg


def _terminate_others(config: Config) -> int:
    import icc.store.postgres.connection

    conn = icc.store.postgres.connection.connect(config, autocommit=True)
    row = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchone()
    conn.close()
    return int(row[0]) if row else 0


def test_a_connection_the_server_dropped_is_reopened_and_the_work_done(pg_config: Config) -> None:
    store = open_store(pg_config)
    store.sync_jobs([_rec("a")], prune=False, dry_run=False, now=1.0, meta={})
    assert _terminate_others(pg_config) == 1
    assert [j.name for j in store.jobs()] == ["a"]  # a read
    assert _terminate_others(pg_config) == 1
    run_id = store.claim("a", 60, "scheduled", pid=1, host="h")  # a write that surely was not committed
    assert run_id is not None and store.run(run_id) is not None
    assert _terminate_others(pg_config) == 1
    assert store.update_meta("n", lambda old: "1") == "1"
    store.close()


def test_claim_many_on_a_connection_lost_keeps_its_own_committed_claims_and_claims_the_rest_again(
    pg_config: Config,
) -> None:
    """The batch's fate is unknown when its connection is lost: rows there that are ours (pending, our owner
    and pid) are won, another's rows are not, and the pairs with no row are claimed again."""
    import icc.store.postgres.connection

    store = open_store(pg_config)
    store.update_meta("n", lambda old: "1")  # the store's connection is open
    conn = icc.store.postgres.connection.connect(pg_config, autocommit=True)
    owner = store.owner  # type: ignore[attr-defined]
    insert = (
        "INSERT INTO icc.runs (job, slot, scope, kind, outcome, pid, host, owner) "
        "VALUES (%s, 60, '', 'scheduled', %s, %s, 'h', %s)"
    )
    conn.execute(insert, ("ours", "pending", 7, owner))  # as if the lost statement had committed it
    conn.execute(insert, ("theirs", "pending", 8, "host-b:8"))
    conn.execute(insert, ("ours-but-done", "succeeded", 7, owner))
    conn.close()
    assert _terminate_others(pg_config) == 1
    claims = [Claim(job, 60, "scheduled") for job in ("missing", "ours", "theirs", "ours-but-done")]
    won = store.claim_many(claims, pid=7, host="h")
    assert won[0] is not None and [r.id for r in store.runs("missing")] == [won[0]]
    assert won[1] is not None and [r.id for r in store.runs("ours")] == [won[1]]
    assert won[2:] == [None, None]
    assert len(store.runs("theirs")) == 1
    conn = icc.store.postgres.connection.connect(pg_config, autocommit=True)
    row = conn.execute(  # leased and owned as claim() leases and owns its run
        "SELECT owner, lease_until > extract(epoch from clock_timestamp()) FROM icc.runs WHERE id = %s",
        (won[0],),
    ).fetchone()
    conn.close()
    assert row == (owner, True)
    store.close()


def test_a_store_used_in_a_forked_child_opens_its_own_connection_and_leaves_the_parents(
    pg_config: Config,
) -> None:
    store = open_store(pg_config)
    store.update_meta("who", lambda old: "parent")
    session = store._conn.info.backend_pid  # type: ignore[attr-defined]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            store.update_meta("who", lambda old: f"{old}+child")
            own = store._conn.info.backend_pid  # type: ignore[attr-defined]
            store.close()
            code = 0 if own != session else 3  # its own session; closing it leaves the parent's alone
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connection still works, in the same session.
    assert store.get_meta("who") == "parent+child"
    assert store._conn.info.backend_pid == session  # type: ignore[attr-defined]
    store.close()


def test_errors_are_one_line_state_errors_without_the_password(tmp_path: Path, pg_server: object) -> None:
    from icc.errors import StateError

    url = pg_server.url("postgres").replace("postgres@", "postgres:s3cret@")  # type: ignore[attr-defined]
    with pytest.raises(StateError) as err:
        open_store(_config(tmp_path, url))  # no schema in this database
    message = str(err.value)
    assert "icc db migrate" in message and "s3cret" not in message and "\n" not in message


def test_take_exclusive_keeps_one_running_run_per_job_and_scope(store: StateStore, config: Config) -> None:
    first = store.claim("a", 60, "scheduled", pid=1, host="web-1")
    second = store.claim("a", 120, "scheduled", pid=2, host="web-2")
    other_scope = store.claim("a", 120, "scheduled", pid=3, host="web-3", scope="web-3")
    assert first is not None and second is not None
    assert store.take_exclusive(first, pid=11) is None
    assert store.take_exclusive(first, pid=11) is None  # taken again by the same run: still its own
    shared = config.store.url is not None
    assert store.take_exclusive(second, pid=12) == ("host web-1, pid 11" if shared else None)
    if shared:
        assert store.run(second).outcome == "pending"  # type: ignore[union-attr]  # nothing written
        assert other_scope is not None and store.take_exclusive(other_scope, pid=13) is None
    store.finish(first, "succeeded", now=100.0)
    assert store.take_exclusive(second, pid=12) is None


def test_a_server_restart_is_survived_by_reconnecting(pg_config: Config, pg_server: object) -> None:
    store = open_store(pg_config)
    store.update_meta("x", lambda old: "before")
    pg_server.restart()  # type: ignore[attr-defined]
    assert store.get_meta("x") == "before"
    store.finish(store.start_manual("a", pid=1, host="h"), "succeeded", now=1.0)
    pg_server.restart()  # type: ignore[attr-defined]
    store.set_enabled("a", False)  # an idempotent write
    assert store.run_counts() == {"a": {"succeeded": 1}}
    store.close()


def test_output_and_errors_with_a_nul_character_are_stored(store: StateStore) -> None:
    run_id = store.start_manual("a", pid=1, host="h")
    store.finish(run_id, "failed", now=1.0, output="a\x00b", error="bad\x00byte")
    store.add_note(run_id, "note\x00")
    run = store.run(run_id)
    assert run is not None and run.outcome == "failed"
    assert len(run.output) == 3 and run.output[0] == "a" and run.output[2] == "b"
    assert (
        run.error is not None and run.error.startswith("bad") and run.error.endswith("; note" + run.error[-1])
    )


def test_due_jobs_reads_only_the_jobs_a_tick_reached_by_name(store: StateStore) -> None:
    records = [
        _rec("b-due", next_due=600),
        _rec("a-new", next_due=0),  # never evaluated
        _rec("c-later", next_due=660),
        _rec("d-disabled", next_due=60),
        _rec("e-removed", next_due=60),
        _rec("f-each", next_due=900),
    ]
    records[-1] = JobRecord(
        name="f-each",
        kind="command",
        definition={"schedule": {"expression": "* * * * *", "on_each_host": True}, "argv": ["true"]},
        plugin="p",
        next_due=900,
    )
    store.sync_jobs(records, prune=False, dry_run=False, now=1.0, meta={})
    store.set_enabled("d-disabled", False)
    store.sync_jobs(
        [r for r in records if r.name != "e-removed"], prune=False, dry_run=False, now=2.0, meta={}
    )
    due = [job.name for job in store.due_jobs(600)]
    # A shared store adds every on_each_host() job: each host keeps its own progress through them.
    assert due == (["a-new", "b-due", "f-each"] if store.lease is not None else ["a-new", "b-due"])
    assert [job.name for job in store.due_jobs(660)][:3] == ["a-new", "b-due", "c-later"]


def test_an_older_state_file_gains_the_due_index_and_the_due_query_uses_it(tmp_path: Path) -> None:
    import sqlite3

    from icc.store.sqlite.state import SQLiteStateStore

    SQLiteStateStore(tmp_path / "state").close()
    path = tmp_path / "state" / "state.sqlite3"
    db = sqlite3.connect(path)
    db.execute("DROP INDEX jobs_next_due")  # as an icc before the index made it
    db.close()
    SQLiteStateStore(tmp_path / "state").close()
    db = sqlite3.connect(path)
    try:
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT name FROM jobs WHERE removed_at IS NULL AND enabled = 1 "
            "AND (next_due IS NULL OR next_due <= 0)"
        ).fetchall()
    finally:
        db.close()
    searches = [row[3] for row in plan if row[3].startswith(("SEARCH", "SCAN"))]
    assert searches and all("jobs_next_due" in row for row in searches), plan
