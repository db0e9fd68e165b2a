"""`icc web` over HTTP: a real dashboard process on a real project whose runs come from real ticks, on SQLite and
on PostgreSQL; every page and API route, every action (recorded in the store), and every refusal."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from projectkit import Project, at
from webkit import TOKEN, Dashboard, actions, fail_a_message, make_project, start, status_job, wait_for

XSS = ("<script>alert", "<img src=x onerror")


@pytest.fixture
def board(project: Project) -> Iterator[Dashboard]:
    make_project(project)
    dashboard = start(project, token=TOKEN)
    yield dashboard
    dashboard.stop()


@pytest.mark.both_stores
def test_pages_and_api_show_the_runs_of_real_ticks(project: Project, board: Dashboard) -> None:
    client = board.client(bearer=True)
    for path in ("/", "/timeline", "/timeline?hours=6", "/jobs/hello", "/jobs/boom", "/queues", "/hosts"):
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text[:500])
        assert "text/html" in answer.headers["content-type"]
    jobs_page = client.get("/").text
    assert "hello" in jobs_page and "boom" in jobs_page
    assert (
        "between 00:00\u201323:59" in jobs_page and "only in production" in jobs_page
    )  # between, environments

    # /api/jobs: the records of `icc status --json` (the dashboard loads no plugin, so those lists are empty).
    api = client.get("/api/jobs").json()
    cli = json.loads(project.icc("status", "--json", check=True).stdout)
    assert api["plugins"] == [] and cli["plugins"]
    assert {j["name"]: j["last_run"] for j in api["jobs"]} == {j["name"]: j["last_run"] for j in cli["jobs"]}
    assert {j["name"]: j["schedule"] for j in api["jobs"]} == {j["name"]: j["schedule"] for j in cli["jobs"]}
    hello = next(j for j in api["jobs"] if j["name"] == "hello")
    assert hello["schedule"]["between"] == ["00:00", "23:59"]
    assert hello["schedule"]["environments"] == ["production"]

    boom = client.get("/api/jobs/boom").json()
    assert boom["runs"][0]["outcome"] == "failed"
    assert boom["runs"][0]["error"] == "RuntimeError: <img src=x onerror=alert(3)>"
    assert len(boom["next_runs"]) == 10
    run_id = boom["runs"][0]["id"]
    run = client.get(f"/api/runs/{run_id}").json()
    assert run["job"] == "boom" and run["id"] == run_id and "Traceback" in run["output"]
    assert client.get("/api/runs/999999").status_code == 404
    assert client.get("/api/jobs/nope").status_code == 404
    queues = client.get("/api/queues").json()["queues"]
    assert {q["queue"] for q in queues} >= {"mail", "async"}

    # The run page: output escaped, the ANSI colour a class, the error escaped.
    hello_run = client.get("/api/jobs/hello").json()["runs"][0]["id"]
    page = client.get(f"/runs/{hello_run}").text
    assert '<span class="ansi-fg2">green</span>' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert "\x1b" not in page
    boom_page = client.get(f"/runs/{run_id}").text
    assert "RuntimeError: &lt;img src=x onerror=alert(3)&gt;" in boom_page
    for text in (page, boom_page, jobs_page, client.get("/timeline").text):
        assert not any(bad in text for bad in XSS)
    # A job whose name is a script tag: its own page and the timeline show it as text.
    odd = client.get("/jobs/%3Cscript%3Ealert('x')%3C%2Fscript%3E")
    assert odd.status_code == 200 and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in odd.text
    assert not any(bad in odd.text for bad in XSS)
    if project.store_url is not None:  # the hosts of a shared store: the tick's host
        assert "host-a" in client.get("/hosts").text and "host-a" in jobs_page
    # The dashboard's process never imported the plugin (the scan, the ticks and icc status did).
    importers = project.marker_lines("imported-by")
    assert importers and str(board.proc.pid) not in importers


@pytest.mark.both_stores
def test_every_action_changes_the_store_and_is_recorded(project: Project, board: Dashboard) -> None:
    api = board.client(bearer=True)
    assert api.post("/jobs/boom/disable").json()["ok"] is True
    assert status_job(project, "boom")["enabled"] is False
    assert api.post("/jobs/boom/enable").status_code == 200
    assert status_job(project, "boom")["enabled"] is True

    # Run now: `icc exec hello` in a process of its own, recorded as a manual run with its output.
    assert api.post("/jobs/hello/run").status_code == 200
    wait_for(
        lambda: any(r["kind"] == "manual" and r["outcome"] == "succeeded" for r in project.runs("hello")),
        what="the manual run of hello",
    )
    manual = next(r for r in project.runs("hello") if r["kind"] == "manual")
    assert "green" in manual["output"]

    # The same through a browser's form: a session and the CSRF token.
    browser = board.client(login=True)
    token = board.csrf(browser, "/")
    answer = browser.post("/pause", data={"csrf": token, "next": "/", "reason": "deploy <b>now</b>"})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    paused = json.loads(project.icc("status", "--json", check=True).stdout)["paused"]
    assert paused["reason"] == "deploy <b>now</b>"
    page = browser.get("/").text
    assert 'id="pause-banner"' in page and "deploy &lt;b&gt;now&lt;/b&gt;" in page
    assert browser.post("/resume", data={"csrf": token}).status_code == 303
    assert json.loads(project.icc("status", "--json", check=True).stdout)["paused"] is None

    recorded = actions(project)
    assert [(a, t) for a, t, _ in recorded] == [
        ("disable", "boom"),
        ("enable", "boom"),
        ("run", "hello"),
        ("pause", "pause"),
        ("resume", "pause"),
    ]
    assert {remote for _, _, remote in recorded} == {"127.0.0.1"}
    job_page = api.get("/jobs/boom").text
    assert "Actions from the dashboard" in job_page and "disable" in job_page and "127.0.0.1" in job_page


@pytest.mark.both_stores
def test_a_failed_message_retried_from_the_dashboard_is_handled(project: Project, board: Dashboard) -> None:
    fail_a_message(project, {"id": 1, "note": "<script>alert(5)</script>"})
    fail_a_message(project, {"id": 2})
    api = board.client(bearer=True)
    failed = api.get("/queues/async/failed").text
    assert "&lt;script&gt;alert(5)&lt;/script&gt;" in failed and "handler not ready" in failed
    assert not any(bad in failed for bad in XSS)
    ids = [m["id"] for m in json.loads(project.icc("failed", "list", "--json", check=True).stdout)]
    assert len(ids) == 2
    (project.root / "handler-ok").write_text("")
    answer = api.post(f"/queues/async/failed/{ids[0]}/retry")
    assert answer.status_code == 200, answer.text
    assert api.post(f"/queues/async/failed/{ids[1]}/remove").status_code == 200
    assert json.loads(project.icc("failed", "list", "--json", check=True).stdout) == []
    project.icc("consume", "async", "--stop-when-empty", "--time-limit", "20", check=True)
    assert [json.loads(line)["id"] for line in project.marker_lines("handled")] == [1]
    # The throughput: one message handled in the last hour (the two that failed were not handled).
    queues = {q["queue"]: q for q in api.get("/api/queues").json()["queues"]}
    assert queues["async"]["handled_last_hour"] == 1 and queues["mail"]["handled_last_hour"] == 0
    assert '<td class="handled">1</td>' in api.get("/queues").text
    assert api.post("/queues/async/failed/12345/retry").status_code == 404
    assert [(a, t) for a, t, _ in actions(project)] == [
        ("retry", f"queue:async:{ids[0]}"),
        ("remove", f"queue:async:{ids[1]}"),
    ]


def test_retry_all_and_remove_all(project: Project, board: Dashboard) -> None:
    for n in range(3):
        fail_a_message(project, {"id": n})
    api = board.client(bearer=True)
    assert api.post("/queues/async/failed/all/retry").json()["detail"].startswith("3 put back")
    project.icc("consume", "async", "--stop-when-empty", "--time-limit", "20", check=True)  # fails again
    assert len(json.loads(project.icc("failed", "list", "--json", check=True).stdout)) == 3
    assert api.post("/queues/async/failed/all/remove").json()["detail"].startswith("3 removed")
    assert json.loads(project.icc("failed", "list", "--json", check=True).stdout) == []


# -- refusals: each answers 401 or 403 and changes nothing ------------------------------------------------------


def unchanged(project: Project) -> None:
    assert status_job(project, "boom")["enabled"] is True
    assert json.loads(project.icc("status", "--json", check=True).stdout)["paused"] is None
    assert actions(project) == []
    assert not any(r["kind"] == "manual" for r in project.runs())


ACTIONS = ("/jobs/boom/disable", "/jobs/hello/run", "/pause", "/queues/async/failed/all/remove")


def test_without_the_token_every_route_but_healthz_and_login_answers_401(
    project: Project, board: Dashboard
) -> None:
    anonymous = board.client()
    for path in ("/", "/timeline", "/jobs/boom", "/runs/1", "/queues", "/hosts", "/api/jobs", "/api/queues"):
        answer = anonymous.get(path)
        assert answer.status_code == 401, path
        assert "boom" not in answer.text or (path == "/jobs/boom" and "RuntimeError" not in answer.text)
    assert anonymous.get("/api/jobs").json() == {"error": "log in with the dashboard's token"}
    assert anonymous.get("/").text.count('name="token"') == 1  # the login form
    for path in ACTIONS:
        assert anonymous.post(path).status_code == 401, path
    health = anonymous.get("/healthz").json()
    assert health == {"ok": True}  # no stamp without a session
    assert anonymous.get("/login").status_code == 200
    unchanged(project)


def test_a_wrong_token_answers_401_after_a_growing_wait(project: Project, board: Dashboard) -> None:
    wrong = httpx.Client(base_url=board.url, headers={"Authorization": "Bearer wrong-token-wrong-token"})
    waits = []
    for _ in range(3):
        started = time.monotonic()
        assert wrong.get("/api/jobs").status_code == 401
        waits.append(time.monotonic() - started)
    assert waits[0] >= 0.15 and waits[2] >= 0.6 and waits[2] > waits[0], waits
    for path in ACTIONS:
        assert wrong.post(path).status_code == 401
    assert board.client().post("/login", data={"token": "not-the-token-at-all"}).status_code == 401
    wrong.close()
    unchanged(project)
    assert board.client(bearer=True).get("/api/jobs").status_code == 200  # the right one still works


def test_an_action_without_the_csrf_token_or_with_a_get_answers_403(
    project: Project, board: Dashboard
) -> None:
    browser = board.client(login=True)
    token = board.csrf(browser)
    for path in ACTIONS:
        assert browser.post(path).status_code == 403, path
        assert browser.post(path, data={"csrf": "0" * 40}).status_code == 403, path
        assert browser.post(path, data={"csrf": token + "x"}).status_code == 403, path
        answer = browser.get(path)  # a GET on an action, with a session
        assert answer.status_code == 403 and answer.headers["allow"] == "POST", path
        assert board.client(bearer=True).get(path).status_code == 403, path  # with the token too
    # A CSRF token of another session does not pass either.
    other = board.client(login=True)
    assert other.post("/jobs/boom/disable", data={"csrf": token}).status_code == 403
    unchanged(project)
    assert browser.post("/jobs/boom/disable", data={"csrf": token}).status_code == 303


def test_read_only_has_no_buttons_and_refuses_every_action(project: Project) -> None:
    make_project(project)
    fail_a_message(project, {"id": 1})
    board = start(project, "--read-only", token=TOKEN)
    try:
        api = board.client(bearer=True)
        for path in ("/", "/jobs/boom", "/queues", "/queues/async/failed"):
            page = api.get(path).text
            assert 'method="post"' not in page.replace('method="post" action="/logout"', ""), path
            assert "read-only" in page
        for path in (*ACTIONS, "/jobs/boom/enable", "/resume", "/queues/async/failed/all/retry"):
            answer = api.post(path)
            assert answer.status_code == 403, path
            assert "read-only" in answer.json()["error"]
        assert status_job(project, "boom")["enabled"] is True
        assert actions(project) == []
        assert len(json.loads(project.icc("failed", "list", "--json", check=True).stdout)) == 1
    finally:
        board.stop()


def test_a_non_loopback_bind_needs_a_token(project: Project) -> None:
    make_project(project)
    refused = project.icc("web", "--host", "0.0.0.0", "--port", "0", timeout=60)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "refuses to bind 0.0.0.0 without a token" in lines[0], refused.stderr
    assert "[icc.web] token" in lines[0]
    project.env["ICC_WEB_TOKEN"] = "short"
    too_short = project.icc("web", "--port", "0", timeout=60)
    assert too_short.returncode == 2 and "at least 16 characters" in too_short.stderr
    assert "short" not in too_short.stderr.replace("not the value given", "")
    del project.env["ICC_WEB_TOKEN"]
    board = start(project, token=TOKEN, host="0.0.0.0")
    try:
        assert board.client().get("/").status_code == 401
        assert board.client(bearer=True).get("/").status_code == 200
    finally:
        board.stop()


def test_the_token_from_the_config_file_and_its_session_cookie(project: Project) -> None:
    make_project(project, extra=f'\n[icc.web]\ntoken = "{TOKEN}"\n')
    board = start(project)
    try:
        board.token = TOKEN
        answer = board.client().post("/login", data={"token": TOKEN})
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain HTTP here; over HTTPS (a proxy's X-Forwarded-Proto) it is set
        browser = board.client(login=True)
        assert browser.get("/").status_code == 200
        assert "stamp" in browser.get("/healthz").json()
        browser.post("/logout")
        assert browser.get("/").status_code == 401
    finally:
        board.stop()


def test_headers_and_static_files(project: Project, board: Dashboard) -> None:
    client = board.client(bearer=True)
    for path in ("/", "/api/jobs", "/static/icc.css", "/healthz", "/login"):
        headers = client.get(path).headers
        assert headers["content-security-policy"].startswith("default-src 'self'"), path
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["x-content-type-options"] == "nosniff"
    assert client.get("/").headers["cache-control"] == "no-store"
    assert client.get("/static/icc.js").status_code == 200
    for path in (
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e%2f%2e%2e%2ficc.toml",
    ):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert "import" not in answer.text and "[icc]" not in answer.text


def test_without_the_extra_icc_web_says_what_to_install(project: Project, tmp_path: Path) -> None:
    make_project(project)
    hide = tmp_path / "hide"  # first on sys.path: starlette cannot be imported, as if not installed
    hide.mkdir()
    (hide / "starlette.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'starlette'\", name='starlette')\n"
    )
    project.env["PYTHONPATH"] = str(hide)
    proc = project.icc("web", "--port", "0", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: icc web needs the dashboard's packages: pip install 'icc-runner[web]' (starlette is not installed)"
    ]


@pytest.mark.both_stores
def test_healthz_stamp_moves_when_a_tick_records_a_run(project: Project, board: Dashboard) -> None:
    client = board.client(login=True)
    before = client.get("/healthz").json()["stamp"]
    time.sleep(0.5)
    assert client.get("/healthz").json()["stamp"] == before
    project.icc("run", "--at", at(1))
    wait_for(lambda: client.get("/healthz").json()["stamp"] != before, timeout=3, what="a new stamp")
