"""The light minute with run hooks that act (icc.tick.light, icc.tick.plain, icc.supervise.observers): with
``monitor.ping_url``, ``[icc.notify] urls`` or a plugin's own ``ICC_RUN_HOOK_SETTINGS`` set, `icc run --quiet`
still runs the minute light, and its supervisors call the run hooks exactly as the full tick's do: the same
pings, notifications, rows and notes, each hook bounded. Each test runs the same minutes in two projects, one
by the full tick (`icc run` without --quiet), one light, and compares."""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from icc.locks import pid_alive
from projectkit import Project, at, slot

if TYPE_CHECKING:
    from pingkit import PingServer

# Each task notes which of coordinator/pluggy/click its process had imported (a forked task inherits its
# supervisor's modules): the full tick's supervisor has the coordinator and pluggy, the light one with run
# hooks to call has pluggy (the hooks' plugins) and never the coordinator nor click.
TASKS = """
def note(name):
    seen = int("icc.tick.coordinator" in sys.modules), int("pluggy" in sys.modules), int("click" in sys.modules)
    with open(os.path.join(os.environ["MARKER_DIR"], "ran"), "a") as f:
        f.write(f"{name} {seen[0]}{seen[1]}{seen[2]}\\n")


def ok():
    note("ok")
    print("fine")


def flaky():
    note("flaky")
    print("flaky says hi")
    if os.path.exists(os.path.join(os.environ["MARKER_DIR"], "fail")):
        sys.stdout.flush()
        os._exit(3)


@icc.hookimpl
def schedule(scheduler):
    scheduler.add(ok, name="ok").every_minute()
    scheduler.add(flaky, name="flaky").every_minute()
"""


def ran(project: Project) -> list[tuple[str, str]]:
    return [(line.split()[0], line.split()[1]) for line in project.marker_lines("ran")]


def comparable(run: dict[str, Any]) -> dict[str, Any]:
    """What the two projects record alike (ids aside: they are the same; times and pids aside)."""
    return {
        key: run[key]
        for key in ("id", "job", "slot", "kind", "outcome", "exit_code", "error", "output", "host")
    } | {"timed": run["started_at"] is not None and run["ended_at"] >= run["started_at"]}


def pair(
    tmp_path: Path, config: str, plugin: str = TASKS, env: dict[str, str] | None = None
) -> tuple[Project, Project]:
    """Two projects alike: ``full`` (each minute by the full tick) and ``light``; scanned, minute 0 run by the
    full tick in both (it makes the plain jobs' next slots), flaky failing from the start. ``{project}`` in
    ``config`` and ``env`` is the project's name."""
    made = []
    for name in ("full", "light"):
        project = Project(tmp_path / name)
        project.env.update({k: v.replace("{project}", name) for k, v in (env or {}).items()})
        project.root.mkdir()
        project.write_config(config.replace("{project}", name))
        project.write_plugin(plugin)
        project.icc("scan", check=True)
        (project.root / "fail").write_text("")
        project.icc("run", "--at", at(0))
        made.append(project)
    return made[0], made[1]


def minute(full: Project, light: Project, n: int) -> tuple[Any, Any]:
    """Minute ``n`` by the full tick in ``full`` and light in ``light``: (full's result, light's)."""
    a = full.icc("run", "--at", at(n))  # not quiet: the full tick (it prints its table)
    b = light.icc("run", "--quiet", "--at", at(n))
    return a, b


def runs_from(project: Project, n: int) -> list[dict[str, Any]]:
    """The comparable runs of minute ``n`` on; the project's folder in a hook's traceback said alike."""
    found = [comparable(r) for r in project.runs() if r["slot"] >= slot(n)]
    return [r | {"output": (r["output"] or "").replace(str(project.root), "ROOT")} for r in found]


def split_hits(server: PingServer) -> dict[str, list[tuple[str, str, bytes]]]:
    """The server's requests by project (the first path segment), each (method, rest of the path, body)."""
    found: dict[str, list[tuple[str, str, bytes]]] = {"full": [], "light": []}
    for hit in server.hits:
        _, project, rest = hit.path.split("/", 2)
        found[project].append((hit.method, rest, hit.body))
    return found


def test_pings_of_a_light_minute_are_the_full_ticks_for_failure_success_and_recovery(
    tmp_path: Path, ping_server: PingServer
) -> None:
    full, light = pair(tmp_path, f'[icc.monitor]\nping_url = "{ping_server.url}/{{project}}/{{job}}"\n')
    ping_server.hits.clear()
    a, b = minute(full, light, 1)  # flaky fails again
    assert a.returncode == b.returncode == 1, b.stdout + b.stderr
    assert [line.split()[:2] for line in b.stdout.splitlines()[2:]] == [
        ["ok", "succeeded"],
        ["flaky", "failed"],
    ]
    (full.root / "fail").unlink()
    (light.root / "fail").unlink()
    a, b = minute(full, light, 2)  # flaky recovers
    assert (a.returncode, b.returncode, b.stdout, b.stderr) == (0, 0, "", "")

    hits = split_hits(ping_server)
    assert hits["light"] == hits["full"]
    ok = [("GET", "ok/start"), ("POST", "ok"), ("GET", "flaky/start")]
    assert [(m, p) for m, p, _ in hits["light"]] == [*ok, ("POST", "flaky/fail"), *ok, ("POST", "flaky")]
    assert runs_from(light, 1) == runs_from(full, 1)
    # The light path was taken: no coordinator, no click in the light minutes' supervisor (the hooks' pluggy)
    assert ran(full)[2:] == [("ok", "110"), ("flaky", "110")] * 2
    assert ran(light)[2:] == [("ok", "010"), ("flaky", "010")] * 2


def queued(project: Project) -> list[dict[str, Any]]:
    db = sqlite3.connect(project.state_dir / "queue.sqlite3")
    try:
        rows = db.execute("SELECT payload FROM messages WHERE name = 'notify.send' ORDER BY id").fetchall()
    finally:
        db.close()
    return [json.loads(row[0]) for row in rows]


@pytest.mark.parametrize("where", ["file", "environment"])
def test_notifications_of_a_light_minute_are_the_full_ticks(
    tmp_path: Path, ping_server: PingServer, where: str
) -> None:
    url = f"json://127.0.0.1:{ping_server.url.rsplit(':', 1)[1]}/{{project}}/notify"
    if where == "environment":
        full, light = pair(tmp_path, "", env={"ICC_NOTIFY_URLS": url})
    else:
        full, light = pair(tmp_path, f'\n[icc.notify]\nurls = ["{url}"]\n')
    minute(full, light, 1)  # flaky fails again (flood control: one notification per episode)
    for project in (full, light):
        (project.root / "fail").unlink()
    _, b = minute(full, light, 2)  # flaky recovers
    assert (b.returncode, b.stdout, b.stderr) == (0, "", "")

    assert runs_from(light, 1) == runs_from(full, 1)
    # Light (no coordinator, no click); the notifications plugin declares its episode key, so it is loaded
    # after a run that calls for it, never before the task (no pluggy in the tasks).
    assert ran(light)[2:] == [("ok", "000"), ("flaky", "000")] * 2

    def strip(payload: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in payload.items() if k != "url"}

    full_queued, light_queued = queued(full), queued(light)
    assert [strip(p) for p in light_queued] == [strip(p) for p in full_queued]
    assert len(light_queued) == 2  # the failure (minute 0) and the recovery (minute 2)
    assert [p["type"] for p in light_queued] == ["failure", "success"]

    # Sent by the real consumer, to a real HTTP server: the same requests.
    for project in (full, light):
        project.icc("consume", "mail", "--stop-when-empty", check=True)
    hits = split_hits(ping_server)
    assert len(hits["light"]) == 2
    assert [(m, p, json.loads(body)) for m, p, body in hits["light"]] == [
        (m, p, json.loads(body)) for m, p, body in hits["full"]
    ]


CONSUMERS = """
def record(payload):
    print(f"handled {payload['i']}")


@icc.hookimpl
def register_handlers(register):
    register("record", record, queue="async")
"""
LOADED = """
with open(os.path.join(os.environ["MARKER_DIR"], "loaded"), "a") as f:
    f.write(f"{os.getpid()}\\n")
"""


def consumers_ended(project: Project, n: int) -> list[dict[str, Any]]:
    def mine() -> list[dict[str, Any]]:
        return [r for r in project.runs() if r["slot"] == slot(n)]

    project.wait_for(
        lambda: bool(mine()) and all(r["outcome"] not in ("pending", "running") for r in mine()),
        timeout=60,
        what=f"the consumer runs of minute {n} to end",
    )
    project.wait_for(
        lambda: not any(pid_alive(r["pid"]) for r in mine()), timeout=60, what="the supervisors to exit"
    )
    return mine()


def test_a_consumer_minute_with_pings_is_light_and_pings_as_the_full_tick(
    tmp_path: Path, ping_server: PingServer
) -> None:
    config = (
        '[icc.consumers]\nmode = "cron"\nqueues = ["async"]\ntime_limit = 1\n'
        f'[icc.monitor]\nping_url = "{ping_server.url}/{{project}}/{{job}}"\n'
    )
    made = []
    for name in ("full", "light"):
        project = Project(tmp_path / name)
        project.root.mkdir()
        project.write_config(config.replace("{project}", name))
        project.write_plugin(LOADED + CONSUMERS)
        project.icc("scan", check=True)
        project.icc("run", "--at", at(0), check=True)
        consumers_ended(project, 0)
        made.append(project)
    full, light = made
    ping_server.hits.clear()
    loaded = [len(p.marker_lines("loaded")) for p in made]
    full.icc("run", "--at", at(1), check=True)
    light_tick = light.icc("run", "--quiet", "--at", at(1), check=True)
    assert (light_tick.stdout, light_tick.stderr) == ("", "")
    full_runs, light_runs = consumers_ended(full, 1), consumers_ended(light, 1)
    assert [comparable(r) for r in light_runs] == [comparable(r) for r in full_runs]
    assert light_runs[0]["outcome"] == "succeeded" and "consumed 0 messages" in light_runs[0]["output"]
    hits = split_hits(ping_server)
    assert [(m, p) for m, p, _ in hits["light"]] == [
        ("GET", "consume%3Aasync/start"),
        ("POST", "consume%3Aasync"),
    ]
    assert hits["light"] == hits["full"]
    # The light minute: the tasks plugin (no run hooks) was not loaded for it; the full tick loaded it once.
    assert len(full.marker_lines("loaded")) == loaded[0] + 1
    assert len(light.marker_lines("loaded")) == loaded[1]


# A plugin whose run hooks misbehave, acting only with [icc.tasks] hooks set (its ICC_RUN_HOOK_SETTINGS); the
# jobs are another plugin's (a plugin with run hooks of its own has no plain jobs).
MISBEHAVING = """
ICC_RUN_HOOK_SETTINGS = ("tasks.hooks",)

@icc.hookimpl
def before_run(job, run):
    print(f"before {job.name}")


@icc.hookimpl
def after_run(job, run, result):
    how = open(os.path.join(os.environ["MARKER_DIR"], "how")).read().strip()
    print(f"after {job.name} {result.outcome}")
    with open(os.path.join(os.environ["MARKER_DIR"], "after_run"), "a") as f:
        f.write(f"{job.name} {result.outcome} {run.slot:%H:%M}\\n")
    if how == "raise":
        raise RuntimeError("the hook broke")
    if how == "exit":
        sys.stdout.flush()
        os._exit(5)
    if how == "hang":
        time.sleep(60)
"""


def test_a_light_consumer_with_pings_hands_a_message_over_to_the_real_consumer_as_the_full_ticks(
    tmp_path: Path, ping_server: PingServer
) -> None:
    from icc.config import load_config
    from icc.queue.dispatch import dispatch

    config = (
        '[icc.consumers]\nmode = "cron"\nqueues = ["async"]\ntime_limit = 2\n'
        f'[icc.monitor]\nping_url = "{ping_server.url}/{{project}}/{{job}}"\n'
    )
    made = []
    for name in ("full", "light"):
        project = Project(tmp_path / name)
        project.root.mkdir()
        project.write_config(config.replace("{project}", name))
        project.write_plugin(LOADED + CONSUMERS)
        project.icc("scan", check=True)
        project.icc("run", "--at", at(0), check=True)
        consumers_ended(project, 0)
        dispatch("record", {"i": 7}, queue="async", config=load_config(project.config))
        made.append(project)
    full, light = made
    ping_server.hits.clear()
    loaded = [len(p.marker_lines("loaded")) for p in made]
    full.icc("run", "--at", at(1), check=True)
    light.icc("run", "--quiet", "--at", at(1), check=True)
    full_runs, light_runs = consumers_ended(full, 1), consumers_ended(light, 1)
    assert [comparable(r) for r in light_runs] == [comparable(r) for r in full_runs]
    assert "handled 7" in light_runs[0]["output"] and "consumed 1 message" in light_runs[0]["output"]
    hits = split_hits(ping_server)
    assert [(m, p) for m, p, _ in hits["light"]] == [
        ("GET", "consume%3Aasync/start"),
        ("POST", "consume%3Aasync"),
    ]
    assert hits["light"] == hits["full"]
    # The light minute: the tasks plugin was loaded by the consumer that took the message over (its task);
    # in the full tick, by the intermediate that forked the supervisor (its consumer inherited it).
    assert light.marker_lines("loaded")[loaded[1] :] == [str(light_runs[0]["task_pid"])]
    [by] = full.marker_lines("loaded")[loaded[0] :]
    assert by not in (str(full_runs[0]["task_pid"]), str(full_runs[0]["pid"]))


@pytest.mark.parametrize("how", ["print", "raise", "exit", "hang"])
def test_a_hook_that_prints_raises_exits_or_hangs_affects_only_its_run_as_in_the_full_tick(
    tmp_path: Path, how: str
) -> None:
    config = "callback_timeout = 1\n[icc.tasks]\nhooks = true\n"
    made = []
    for name in ("full", "light"):
        project = Project(tmp_path / name)
        project.root.mkdir()
        project.write_config(config, plugins=("tasks_plugin", "hooks_plugin"))
        project.write_plugin(TASKS)
        project.write_plugin(MISBEHAVING, name="hooks_plugin")
        (project.root / "how").write_text("print")
        (project.root / "fail").write_text("")
        project.icc("scan", check=True)
        project.icc("run", "--at", at(0))
        (project.root / "how").write_text(how)
        made.append(project)
    full, light = made
    a = full.icc("run", "--at", at(1))
    started = time.monotonic()
    b = light.icc("run", "--quiet", "--at", at(1))
    took = time.monotonic() - started
    assert a.returncode == b.returncode == 1  # flaky failed
    assert took < 20  # each hanging hook is ended at its callback_timeout
    assert ran(light)[2:] == [("ok", "010"), ("flaky", "010")]  # light, and both ran
    full_runs, light_runs = runs_from(full, 1), runs_from(light, 1)
    assert light_runs == full_runs
    by_job = {r["job"]: r for r in light_runs}
    assert by_job["ok"]["output"].startswith("--- before_run hook of plugin 'hooks_plugin'") or (
        "before ok" in by_job["ok"]["output"]
    )
    assert "before ok" in by_job["ok"]["output"] and "after ok succeeded" in by_job["ok"]["output"]
    assert "fine" in by_job["ok"]["output"]
    assert by_job["ok"]["output"].index("before ok") < by_job["ok"]["output"].index("fine")
    if how == "print":
        assert by_job["ok"]["error"] is None
    else:
        assert by_job["ok"]["outcome"] == "succeeded" and by_job["ok"]["error"]  # a note, the run unchanged
        assert "after_run hook of plugin 'hooks_plugin'" in by_job["ok"]["error"]
        assert f"warning: ok (run {by_job['ok']['id']}): after_run hook" in b.stderr
    assert light.marker_lines("after_run")[1:] == full.marker_lines("after_run")[1:]
    assert light.marker_lines("after_run")[-2:] == ["ok succeeded 10:01", "flaky failed 10:01"]


# A plugin that declares its episode key (ICC_RUN_HOOK_EPISODE, as icc-mail and icc's notifications do): its
# after_run acts only on a failure, or on a success while the key holds the job's failure episode.
EPISODES = """
ICC_RUN_HOOK_SETTINGS = ("tasks.alerts",)
ICC_RUN_HOOK_EPISODE = "tasks.episode:{job}"

with open(os.path.join(os.environ["MARKER_DIR"], "hook_loaded"), "a") as f:
    f.write(f"{os.getpid()}\\n")


@icc.hookimpl
def after_run(job, run, result):
    from icc.config import load_config
    from icc.store import open_store

    store = open_store(load_config())
    key = f"tasks.episode:{job.name}"
    try:
        if result.outcome in ("failed", "timed_out", "abandoned"):
            store.update_meta(key, lambda old: str(int(old or 0) + 1))
            said = "failing"
        elif result.outcome == "succeeded" and store.get_meta(key) is not None:
            store.update_meta(key, lambda old: None)
            said = "recovered"
        else:
            return
    finally:
        store.close()
    print(f"{job.name} {said}")
    with open(os.path.join(os.environ["MARKER_DIR"], "episodes"), "a") as f:
        f.write(f"{job.name} {said} {run.slot:%H:%M}\\n")
"""


def test_declared_episode_hooks_are_loaded_only_for_a_failure_or_the_end_of_an_episode(
    tmp_path: Path,
) -> None:
    made = []
    for name in ("full", "light"):
        project = Project(tmp_path / name)
        project.root.mkdir()
        project.write_config("[icc.tasks]\nalerts = true\n", plugins=("tasks_plugin", "episode_plugin"))
        project.write_plugin(TASKS)
        project.write_plugin(EPISODES, name="episode_plugin")
        project.icc("scan", check=True)
        (project.root / "fail").write_text("")
        project.icc("run", "--at", at(0))
        made.append(project)
    full, light = made
    loads = [len(light.marker_lines("hook_loaded"))]
    for n in (1, 2, 3):  # flaky: fails again, recovers; then a minute of successes after successes
        if n == 2:
            for project in made:
                (project.root / "fail").unlink()
        a, b = minute(full, light, n)
        assert a.returncode == b.returncode == (1 if n == 1 else 0), b.stdout + b.stderr
        loads.append(len(light.marker_lines("hook_loaded")))
    assert runs_from(light, 1) == runs_from(full, 1)
    episodes = ["flaky failing 10:00", "flaky failing 10:01", "flaky recovered 10:02"]
    assert full.marker_lines("episodes") == light.marker_lines("episodes") == episodes
    flaky = [r for r in runs_from(light, 1) if r["job"] == "flaky"]
    assert "flaky failing" in flaky[0]["output"] and "flaky recovered" in flaky[1]["output"]
    assert ran(light)[2:] == [("ok", "000"), ("flaky", "000")] * 3  # light; nothing loaded before a task
    # Light: loaded once in minute 1 (flaky failed; ok's success before it, with no episode, loaded nothing),
    # once in minute 2 (flaky's episode ended), never in minute 3. The full tick loads it for every run.
    assert [after - before for before, after in itertools.pairwise(loads)] == [1, 1, 0]


def test_icc_mail_and_notifications_declare_the_episode_key_their_after_run_keeps() -> None:
    import icc_mail.alerts
    import icc_mail.plugin
    from icc.notify import notifications

    assert icc_mail.plugin.ICC_RUN_HOOK_EPISODE == icc_mail.alerts.META_PREFIX + "{job}"
    assert notifications.ICC_RUN_HOOK_EPISODE == notifications.META_PREFIX + "{job}"


BROKEN = """
if os.path.exists(os.path.join(os.environ["MARKER_DIR"], "break")):
    raise RuntimeError("broken on purpose")


def fragile():
    pass


@icc.hookimpl
def schedule(scheduler):
    scheduler.add(fragile, name="fragile").every_minute()
"""


def test_a_job_whose_plugin_no_longer_imports_fails_pings_and_warns_as_in_the_full_tick(
    tmp_path: Path, ping_server: PingServer
) -> None:
    made = []
    for name in ("full", "light"):
        project = Project(tmp_path / name)
        project.root.mkdir()
        project.write_config(
            f'[icc.monitor]\nping_url = "{ping_server.url}/{name}/{{job}}"\n',
            plugins=("tasks_plugin", "fragile_plugin"),
        )
        project.write_plugin(TASKS)
        project.write_plugin(BROKEN, name="fragile_plugin")
        project.icc("scan", check=True)
        project.icc("run", "--at", at(0), check=True)
        (project.root / "break").write_text("")  # from now on its import raises (no plugin file changed)
        made.append(project)
    full, light = made
    ping_server.hits.clear()
    a, b = minute(full, light, 1)
    assert a.returncode == b.returncode == 1
    said = "warning: plugin fragile_plugin: RuntimeError: broken on purpose"
    assert [line for line in b.stderr.splitlines() if line.startswith("warning:")] == [said]
    assert said in a.stderr.splitlines()
    assert runs_from(light, 1) == runs_from(full, 1)
    fragile = next(r for r in runs_from(light, 1) if r["job"] == "fragile")
    assert fragile["outcome"] == "failed" and "could not be loaded from its plugin" in fragile["error"]
    hits = split_hits(ping_server)
    assert hits["light"] == hits["full"]
    assert ("POST", "fragile/fail") in [(m, p) for m, p, _ in hits["light"]]
    assert ran(light)[-2:] == [("ok", "010"), ("flaky", "010")]  # light


BACKGROUND_TASKS = TASKS.replace(
    'scheduler.add(flaky, name="flaky").every_minute()',
    'scheduler.add(flaky, name="flaky").every_minute().in_background()',
)


def settled(full: Project, light: Project, server: PingServer, n: int, outcome: str, pings: int) -> None:
    """Wait until minute ``n``'s background run of flaky is recorded ``outcome`` in both projects and each
    project's server has ``pings`` requests in all."""
    for project in (full, light):
        project.wait_for(
            lambda p=project: (
                [r["outcome"] for r in p.runs() if r["slot"] == slot(n) and r["job"] == "flaky"] == [outcome]
                and len(split_hits(server)[p.root.name]) == pings
            ),
            timeout=30,
            what=f"the background run to be {outcome} and pinged",
        )


def test_background_runs_of_a_light_minute_are_pinged_as_by_the_full_tick_for_failure_and_recovery(
    tmp_path: Path, ping_server: PingServer
) -> None:
    """With ``monitor.ping_url`` set (its ``before_run`` acts: no declared episode), the light background
    supervisor (icc.tick.background) calls each background run's hooks as the full tick's supervisor does:
    the same pings for a failure and a recovery, the same rows; the light path taken (no coordinator)."""
    full, light = pair(
        tmp_path, f'[icc.monitor]\nping_url = "{ping_server.url}/{{project}}/{{job}}"\n', BACKGROUND_TASKS
    )
    assert sqlite3.connect(light.db).execute(
        "SELECT background FROM light_jobs WHERE name = 'flaky'"
    ).fetchone() == (1,)
    settled(full, light, ping_server, 0, "failed", 4)  # minute 0's background pings may come after its tick
    ping_server.hits.clear()
    minute(full, light, 1)  # flaky (in the background) fails again
    settled(full, light, ping_server, 1, "failed", 4)
    (full.root / "fail").unlink()
    (light.root / "fail").unlink()
    minute(full, light, 2)  # flaky recovers
    settled(full, light, ping_server, 2, "succeeded", 8)

    hits = split_hits(ping_server)
    for first, last in ((0, 4), (4, 8)):  # each minute's: ok's and flaky's pings interleave as they run
        assert sorted(hits["light"][first:last]) == sorted(hits["full"][first:last])
    flaky = [(m, p) for m, p, _ in hits["light"] if p.startswith("flaky")]
    assert flaky == [
        ("GET", "flaky/start"),
        ("POST", "flaky/fail"),
        ("GET", "flaky/start"),
        ("POST", "flaky"),
    ]
    assert runs_from(light, 1) == runs_from(full, 1)
    # The light path was taken: the background supervisor had the hooks' pluggy, never the coordinator nor click
    assert sorted(ran(full)[2:]) == sorted([("ok", "110"), ("flaky", "110")] * 2)
    assert sorted(ran(light)[2:]) == sorted([("ok", "010"), ("flaky", "010")] * 2)


# Run hooks with a before_run (no declared episode) whose after_run hangs for ok's runs: bounded by
# callback_timeout, it holds up the watching of the other background task at most that long.
BEFORE_AND_HANG = """
ICC_RUN_HOOK_SETTINGS = ("tasks.hooks",)

@icc.hookimpl
def before_run(job, run):
    print(f"before {job.name}")
    with open(os.path.join(os.environ["MARKER_DIR"], "before_run"), "a") as f:
        f.write(f"{job.name} {time.time()}\\n")


@icc.hookimpl
def after_run(job, run, result):
    print(f"after {job.name} {result.outcome}")
    if job.name == "ok":
        time.sleep(60)
"""


def test_light_background_runs_call_every_before_observer_before_any_fork_and_bound_a_hanging_after(
    tmp_path: Path,
) -> None:
    """Two background runs with run hooks whose ``before_run`` acts: the light background supervisor calls
    both runs' ``before`` observers before it forks either task; ok's ``after_run`` hangs and is ended at
    ``callback_timeout`` (a note on the run); the rows are the full tick's."""
    plugin = BACKGROUND_TASKS.replace(
        'scheduler.add(ok, name="ok").every_minute()',
        'scheduler.add(ok, name="ok").every_minute().in_background()',
    )
    made = []
    for name in ("full", "light"):
        project = Project(tmp_path / name)
        project.root.mkdir()
        project.write_config(
            "callback_timeout = 1\n[icc.tasks]\nhooks = true\n", plugins=("tasks_plugin", "hooks_plugin")
        )
        project.write_plugin(plugin)
        project.write_plugin(BEFORE_AND_HANG, name="hooks_plugin")
        project.icc("scan", check=True)
        (project.root / "fail").write_text("")
        project.icc("run", "--at", at(0))
        made.append(project)
    full, light = made

    def done(project: Project, n: int) -> bool:
        runs = [r for r in project.runs() if r["slot"] == slot(n)]
        return len(runs) == 2 and all(
            r["outcome"] not in ("pending", "running") and not pid_alive(r["pid"]) for r in runs
        )

    for project in made:
        project.wait_for(lambda p=project: done(p, 0), timeout=30, what="minute 0's runs and hooks to end")
    minute(full, light, 1)
    for project in made:
        project.wait_for(lambda p=project: done(p, 1), timeout=30, what="minute 1's runs and hooks to end")
    assert runs_from(light, 1) == runs_from(full, 1)
    by_job = {r["job"]: r for r in runs_from(light, 1)}
    assert by_job["ok"]["output"].index("before ok") < by_job["ok"]["output"].index("fine")
    assert "after_run hook of plugin 'hooks_plugin'" in by_job["ok"]["error"]
    assert by_job["flaky"]["outcome"] == "failed" and "after flaky failed" in by_job["flaky"]["output"]
    assert sorted(ran(light)[2:]) == [("flaky", "010"), ("ok", "010")]  # light
    befores = [float(line.split()[1]) for line in light.marker_lines("before_run")[2:]]
    started = [r["started_at"] for r in light.runs() if r["slot"] == slot(1)]
    assert len(befores) == 2 and max(befores) < min(started)  # every before observer, then the forks


def test_light_background_runs_whose_hook_plugins_do_not_load_in_time_fail_unstarted_as_in_the_full_tick(
    tmp_path: Path,
) -> None:
    """A run hook plugin (its ``before_run`` acts) whose import hangs: each background run fails at its
    timeout, its task not started, with the full tick's error; the light minute taken all the same (one
    supervisor for both runs, where the full tick has one each)."""
    plugin = TASKS.replace(".every_minute()", ".every_minute().in_background().timeout(2)")
    hanging = 'if os.path.exists(os.path.join(os.environ["MARKER_DIR"], "hang")):\n    time.sleep(60)\n'
    made = []
    for name in ("full", "light"):
        project = Project(tmp_path / name)
        project.root.mkdir()
        project.write_config(
            "callback_timeout = 1\n[icc.tasks]\nhooks = true\n", plugins=("tasks_plugin", "hooks_plugin")
        )
        project.write_plugin(plugin)
        project.write_plugin(
            hanging + BEFORE_AND_HANG.replace('job.name == "ok"', "False"), name="hooks_plugin"
        )
        project.icc("scan", check=True)
        project.icc("run", "--at", at(0))
        made.append(project)
    full, light = made

    def ended(project: Project, n: int) -> list[dict[str, Any]] | None:
        runs = [r for r in project.runs() if r["slot"] == slot(n)]
        done = len(runs) == 2 and all(
            r["outcome"] not in ("pending", "running") and not pid_alive(r["pid"]) for r in runs
        )
        return runs if done else None

    for project in made:
        project.wait_for(lambda p=project: ended(p, 0), timeout=30, what="minute 0's background runs")
        (project.root / "hang").write_text(
            ""
        )  # from now on the hooks plugin's import hangs (no file changed)
    minute(full, light, 1)
    for project in made:
        project.wait_for(lambda p=project: ended(p, 1), timeout=30, what="minute 1's background runs")
    assert runs_from(light, 1) == runs_from(full, 1)
    for run in runs_from(light, 1):
        assert run["outcome"] == "failed" and "did not load within 2s" in run["error"]
    assert len(ran(light)) == len(ran(full)) == 2  # minute 0's: no task of minute 1 started
    # Light: one background supervisor for both runs; the full tick has one per run
    assert len({r["pid"] for r in ended(light, 1) or []}) == 1
    assert len({r["pid"] for r in ended(full, 1) or []}) == 2
