"""Freshness (``expect_success_within``, icc.notify.freshness): real scans and ticks, the real ``mail`` queue and
consumer, apprise's ``json://`` and the pings' ``/fail`` against a real HTTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from icc.config import load_config
from icc.errors import ScheduleError
from icc.notify import freshness
from icc.schedule import Schedule
from icc.store import open_store, open_transport
from pingkit import PingServer
from projectkit import Project, at

KEY = "f00dfeed"


def nightly(within: float, when: str = ".daily().at(3)") -> str:
    return f"""
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["true"], name="nightly"){when}.expect_success_within({within})
        """


def configure(project: Project, server: PingServer) -> None:
    url = server.url.replace("http://", "json://") + "/hook"
    project.write_config(
        f'\n[icc.monitor]\nping_url = "{server.url}/{KEY}/{{job}}"\n\n[icc.notify]\nurls = ["{url}"]\n'
    )


def messages(project: Project) -> list[str]:
    """The names of the messages waiting on the mail queue."""
    stats = open_transport(load_config(project.config)).stats().get("mail")
    return [] if stats is None else ["x"] * stats.messages


def stale_next(project: Project) -> float | None:
    store = open_store(load_config(project.config))
    try:
        value = store.get_meta(freshness.NEXT_KEY)
    finally:
        store.close()
    return None if value is None else float(json.loads(value))


@pytest.mark.both_stores
def test_a_job_that_never_succeeded_goes_stale_and_the_next_tick_alerts_once(
    project: Project, ping_server: PingServer
) -> None:
    configure(project, ping_server)
    project.write_plugin(nightly(1))
    project.icc("scan", check=True)
    due = stale_next(project)
    assert due is not None
    project.wait_for(lambda: time.time() > due + 0.01, what="the job's window to pass")
    project.icc("run", "--at", at(1), check=True)  # nothing due: the idle tick hands the minute over
    assert len(messages(project)) == 2  # the notification and the pings' /fail (and mail) message
    assert stale_next(project) is None  # nothing else can go stale before it succeeds again
    out = project.icc("run", "--at", at(2), check=True).stdout
    assert "nothing due" in out  # idle again
    assert len(messages(project)) == 2  # once per episode
    project.icc("consume", "mail", "--stop-when-empty", "--time-limit", "60", check=True)
    paths = sorted(hit.path for hit in ping_server.hits)
    assert paths == [f"/{KEY}/nightly/fail", "/hook"]
    [hook] = [json.loads(h.body) for h in ping_server.hits if h.path == "/hook"]
    assert hook["title"].startswith("[icc] nightly is stale on ")
    assert "outcome: stale" in hook["message"]
    assert "no success within 1s (last success: never)" in hook["message"]


@pytest.mark.both_stores
def test_a_success_ends_the_episode_and_the_next_staleness_is_alerted_again(
    project: Project, ping_server: PingServer
) -> None:
    configure(project, ping_server)
    project.write_plugin(nightly(1))  # daily at 3: only `icc exec` runs it here
    project.icc("scan", check=True)
    for minute in (1, 2):
        due = stale_next(project)
        assert due is not None
        project.wait_for(lambda due=due: time.time() > due + 0.01, what="the job's window to pass")
        project.icc("run", "--at", at(minute), check=True)  # idle otherwise: stale.next hands it over
        assert stale_next(project) is None
        if minute == 1:
            project.icc("exec", "nightly", check=True)  # a success: a new episode begins
    project.icc("consume", "mail", "--stop-when-empty", "--time-limit", "60", check=True)
    paths = sorted(hit.path for hit in ping_server.hits if hit.path.endswith(("/fail", "/hook")))
    assert paths == [f"/{KEY}/nightly/fail"] * 2 + ["/hook"] * 3  # stale, recovered, stale again
    titles = [json.loads(h.body)["title"] for h in ping_server.hits if h.path == "/hook"]
    assert [t.split(" on ")[0] for t in titles] == [
        "[icc] nightly is stale",
        "[icc] nightly recovered",
        "[icc] nightly is stale",
    ]


def stale_messages(project: Project) -> int:
    """``notify.stale`` messages queued so far (one per alerted episode)."""
    if project.store_url is not None:
        import psycopg

        with psycopg.connect(project.store_url, autocommit=True) as conn:
            row = conn.execute("SELECT COUNT(*) FROM icc.messages WHERE name = 'notify.stale'").fetchone()
    else:
        import sqlite3

        db = sqlite3.connect(project.state_dir / "queue.sqlite3")
        try:
            row = db.execute("SELECT COUNT(*) FROM messages WHERE name = 'notify.stale'").fetchone()
        finally:
            db.close()
    return int(row[0]) if row else 0


@pytest.mark.both_stores
def test_a_scheduled_success_of_a_job_without_notifications_rearms_the_freshness_check(
    project: Project,
) -> None:
    project.write_plugin(
        """
        @icc.hookimpl
        def schedule(scheduler):
            def flaky():
                if not os.path.exists(os.path.join(os.environ["MARKER_DIR"], "ok")):
                    raise RuntimeError("not yet")
            scheduler.add(flaky, name="flaky").every_minute().expect_success_within(1)
        """
    )
    project.icc("scan", check=True)
    due = stale_next(project)
    assert due is not None
    project.wait_for(lambda: time.time() > due + 0.01, what="the job's window to pass")
    project.icc("run", "--at", at(1))  # fails, and the tick alerts the first episode
    assert stale_messages(project) == 1 and stale_next(project) is None
    (project.root / "ok").write_text("")
    project.icc("run", "--at", at(2), check=True)  # a scheduled success, by its supervisor
    project.wait_for(lambda: stale_next(project) is not None, what="the success to re-arm stale.next")
    due = stale_next(project)
    assert due is not None
    (project.root / "ok").unlink()
    project.wait_for(lambda: time.time() > due + 0.01, what="the job's window to pass again")
    project.icc("run", "--at", at(3))
    assert stale_messages(project) == 2  # the second episode


@pytest.mark.both_stores
def test_several_hosts_checking_the_same_episode_alert_it_once(project: Project) -> None:
    project.write_plugin(nightly(1))
    project.icc("scan", check=True)
    config = load_config(project.config)
    due = stale_next(project)
    assert due is not None
    project.wait_for(lambda: time.time() > due + 0.01, what="the job's window to pass")
    first, second = open_store(config), open_store(config)  # two hosts' connections to one store
    try:
        assert freshness.check(config, first, time.time()) == ["nightly"]
        assert freshness.check(config, second, time.time()) == []
    finally:
        first.close()
        second.close()


@pytest.mark.both_stores
def test_a_fresh_job_leaves_the_idle_tick_idle_and_a_success_restarts_the_episode(project: Project) -> None:
    project.write_plugin(nightly(3600, ".every_minute()"))
    project.icc("scan", check=True)
    due = stale_next(project)
    assert due is not None and due > time.time() + 3000
    project.icc("run", "--at", at(1), check=True)  # the job runs and succeeds
    store = open_store(load_config(project.config))
    try:
        [item] = freshness.freshness(store, time.time())
    finally:
        store.close()
    assert item.job == "nightly" and not item.stale and item.last_success is not None
    assert item.stale_at == pytest.approx(item.last_success + 3600)


def test_a_scan_with_nothing_changed_keeps_stale_next_and_one_dropping_the_check_clears_it(
    project: Project,
) -> None:
    # A scan of unchanged plugins builds no record of their jobs (issue 17), yet stale.next still counts them.
    project.write_plugin(nightly(3600))
    project.icc("scan", check=True)
    due = stale_next(project)
    assert due is not None
    out = project.icc("scan", check=True).stdout
    assert ["nightly", "unchanged"] in [line.split()[:2] for line in out.splitlines()]
    assert stale_next(project) == pytest.approx(due)
    project.write_plugin(
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["true"], name="nightly").daily().at(3)
        """
    )
    project.icc("scan", check=True)
    assert stale_next(project) is None


def test_expect_success_within_takes_positive_seconds_with_one_line() -> None:
    with pytest.raises(
        ScheduleError, match=r"^expect_success_within\(0\) is not valid: give seconds greater than 0"
    ):
        Schedule().expect_success_within(0)
    with pytest.raises(ScheduleError, match="is not valid"):
        Schedule().expect_success_within("1h")  # type: ignore[arg-type]
    with pytest.raises(ScheduleError, match="at most 31622400"):
        Schedule().expect_success_within(10**400)  # no OverflowError
    schedule = Schedule().expect_success_within(7200)
    assert Schedule.from_definition(schedule.definition()).stale_after == 7200


def test_a_stale_alert_that_cannot_be_queued_is_given_back_and_queued_by_a_later_check(
    project: Project,
) -> None:
    project.write_plugin(nightly(1))
    project.icc("scan", check=True)
    due = stale_next(project)
    assert due is not None
    project.wait_for(lambda: time.time() > due + 0.01, what="the job's window to pass")
    config = load_config(project.config)
    blocker = project.state_dir / "queue.sqlite3"
    blocker.mkdir()  # the queue database cannot be opened: nothing can be queued
    store = open_store(config)
    try:
        assert freshness.check(config, store, time.time()) == []
        assert stale_next(project) == pytest.approx(due)  # still due: the next tick tries again
        blocker.rmdir()
        assert freshness.check(config, store, time.time()) == ["nightly"]
        assert stale_next(project) is None
    finally:
        store.close()


def test_two_hosts_ticking_at_once_on_a_shared_store_alert_a_stale_job_once(
    tmp_path: Path, pg_url: str
) -> None:
    from conftest import migrated_url

    url = migrated_url(pg_url)
    hosts = []
    for name in ("host-a", "host-b"):
        host = Project(tmp_path / name, store_url=url, host_id=name)
        host.root.mkdir()
        host.write_config()
        host.write_plugin(nightly(1))
        hosts.append(host)
    hosts[0].icc("scan", check=True)
    due = stale_next(hosts[0])
    assert due is not None
    hosts[0].wait_for(lambda: time.time() > due + 0.01, what="the job's window to pass")
    ticks = [host.popen("run", "--at", at(1)) for host in hosts]  # both hosts tick the same minute
    for tick in ticks:
        out, err = tick.communicate(timeout=120)
        assert tick.returncode == 0, out + err
    assert stale_messages(hosts[0]) == 1
    assert stale_next(hosts[1]) is None


@pytest.mark.both_stores
def test_status_shows_a_stale_job_as_stale_and_a_fresh_one_as_fresh(project: Project) -> None:
    project.write_plugin(
        """
        @icc.hookimpl
        def schedule(scheduler):
            scheduler.add(["true"], name="fresh").every_minute().expect_success_within(3600)
            scheduler.add(["true"], name="nightly").daily().at(3).expect_success_within(1)
            scheduler.add(["true"], name="plain").every_minute()
        """
    )
    project.icc("scan", check=True)
    due = stale_next(project)  # nightly's moment (read before a tick may alert it and move stale.next on)
    assert due is not None
    project.icc("run", "--at", at(1), check=True)  # fresh and plain succeed; nightly is not due
    project.wait_for(lambda: time.time() > due + 0.01, what="nightly's second to pass")
    jobs = {j["name"]: j for j in project.status()["jobs"]}
    assert jobs["nightly"]["stale"] is True
    assert jobs["nightly"]["freshness"]["within"] == 1 and jobs["nightly"]["freshness"]["stale"] is True
    assert jobs["nightly"]["freshness"]["stale_at"] is not None
    assert jobs["fresh"]["stale"] is False and jobs["fresh"]["freshness"]["within"] == 3600
    assert jobs["plain"]["stale"] is None and jobs["plain"]["freshness"] is None
    rows = {line.split()[0]: line for line in project.icc("status", check=True).stdout.splitlines()[2:]}
    assert "enabled, stale" in rows["nightly"]
    assert "stale" not in rows["fresh"] and "stale" not in rows["plain"]
    detail = project.icc("status", "nightly", check=True).stdout
    assert "freshness: stale since " in detail
    assert ": no success within 1s (last success: never)" in detail
    fresh = project.icc("status", "fresh", check=True).stdout
    assert "freshness: fresh until " in fresh and ": a success expected within 3600s" in fresh
    assert "freshness:" not in project.icc("status", "plain", check=True).stdout
