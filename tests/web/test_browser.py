"""The dashboard in a real browser: Playwright (sync API) drives Debian's chromium against a real `icc web`
process on a real project whose runs come from real ticks (issue 19's browser list, item by item).

Playwright cannot download its own browsers here: the tests launch /usr/bin/chromium. Without it they skip,
unless TESTS_REQUIRE_POSTGRES is set (CI, where .ci/run installs chromium): then its absence fails them."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from projectkit import Project, at
from webkit import TOKEN, Dashboard, fail_a_message, make_project, start, status_job, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS_NAME = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("TESTS_REQUIRE_POSTGRES"):
            pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
        pytest.skip(
            f"{CHROMIUM} is missing (apt-get install chromium); Playwright cannot download a browser here"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Session:
    """A browser page logged in to a dashboard; every JavaScript dialog (an XSS that ran) is recorded."""

    def __init__(self, chromium: Any, board: Dashboard, **context: Any) -> None:
        self.board = board
        self.context = chromium.new_context(**context)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.dialogs: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.goto(board.url + "/login")
        if board.token:
            self.page.fill("#token", board.token)
            self.page.click("button[type=submit]")
            self.page.wait_for_url(board.url + "/")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self, path: str) -> Any:
        self.page.goto(self.board.url + path)
        return self.page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def board(project: Project) -> Iterator[Dashboard]:
    make_project(project)
    dashboard = start(project, token=TOKEN)
    yield dashboard
    dashboard.stop()


@pytest.fixture
def session(chromium: Any, board: Dashboard) -> Iterator[Session]:
    browser = Session(chromium, board)
    yield browser
    assert browser.dialogs == []  # no script of a job name, output or payload ever ran
    browser.close()


def test_the_jobs_page_lists_the_jobs(session: Session) -> None:
    from playwright.sync_api import expect

    page = session.goto("/")
    names = page.locator("a.job-name").all_inner_texts()
    assert sorted(names) == sorted(["boom", "hello", XSS_NAME])
    expect(page.locator("tr[data-job=boom] td").nth(4)).to_contain_text("failed")
    expect(page.locator("tr[data-job=hello] td").nth(2)).to_contain_text("between 00:00")
    # Filter by outcome, then sort by plugin from the column header.
    page.select_option("select[name=outcome]", "failed")
    page.click("form.filters button")
    assert page.locator("a.job-name").all_inner_texts() == ["boom"]
    page.goto(session.board.url + "/?sort=name&dir=desc")
    assert page.locator("a.job-name").all_inner_texts() == sorted(names, reverse=True)


def test_run_now_then_the_run_appears_with_its_output(session: Session, project: Project) -> None:
    from playwright.sync_api import expect

    page = session.goto("/jobs/hello")
    rows = page.locator("table.history tbody tr")
    before = rows.count()
    page.click("#run-now")
    expect(rows).to_have_count(before + 1)  # the live update brings the new run, no reload
    wait_for(lambda: any(r["kind"] == "manual" and r["ended_at"] for r in project.runs("hello")), what="run")
    run_id = max(r["id"] for r in project.runs("hello") if r["kind"] == "manual")
    page.goto(session.board.url + f"/runs/{run_id}")
    output = page.locator("#run-output")
    expect(output).to_contain_text("<script>alert(1)</script>")
    expect(output).to_contain_text('"><img src=x onerror=alert(2)> done')
    expect(page.locator("#run-output span.ansi-fg2")).to_have_text("green")
    assert page.locator("#main img").count() == 0 and page.locator("#main script").count() == 0
    assert "\x1b" not in output.inner_text()


def test_disable_then_enable(session: Session, project: Project) -> None:
    from playwright.sync_api import expect

    page = session.goto("/jobs/boom")
    page.click("#disable")
    expect(page.locator("#job-state")).to_have_text("disabled")
    assert status_job(project, "boom")["enabled"] is False
    page.click("#enable")
    expect(page.locator("#job-state")).to_have_text("enabled")
    assert status_job(project, "boom")["enabled"] is True
    expect(page.locator("table.actions-log")).to_contain_text("disable")


def test_retry_a_failed_message_and_it_is_handled(session: Session, project: Project) -> None:
    from playwright.sync_api import expect

    fail_a_message(project, {"id": 7, "html": '"><img src=x onerror=alert(6)>'})
    page = session.goto("/queues")
    page.click("a[href='/queues/async/failed']")
    article = page.locator("article.failed")
    expect(article).to_have_count(1)
    page.click("article.failed summary")
    expect(article.locator("pre.payload")).to_contain_text('"><img src=x onerror=alert(6)>')
    (project.root / "handler-ok").write_text("")
    article.locator("button", has_text="Retry").click()
    expect(page.locator("article.failed")).to_have_count(0)
    project.icc("consume", "async", "--stop-when-empty", "--time-limit", "20", check=True)
    assert [json.loads(line)["id"] for line in project.marker_lines("handled")] == [7]


def test_pause_shows_the_banner(session: Session, project: Project) -> None:
    from playwright.sync_api import expect

    page = session.goto("/")
    expect(page.locator("#pause-banner")).to_have_count(0)
    page.fill("#reason", "deploy <script>alert(7)</script>")
    page.click("#pause")
    banner = page.locator("#pause-banner")
    expect(banner).to_contain_text("Paused")
    expect(banner).to_contain_text("deploy <script>alert(7)</script>")
    for path in ("/timeline", "/queues", "/jobs/boom"):  # every page says so
        expect(session.goto(path).locator("#pause-banner")).to_be_visible()
    page.click("#resume")
    expect(page.locator("#pause-banner")).to_have_count(0)
    assert json.loads(project.icc("status", "--json", check=True).stdout)["paused"] is None


def test_the_xss_strings_show_as_text(session: Session, project: Project) -> None:
    from playwright.sync_api import expect

    fail_a_message(project, {"note": "<script>alert(8)</script>"})
    boom_run = max(r["id"] for r in project.runs("boom"))
    hello_run = max(r["id"] for r in project.runs("hello"))
    for path in (
        "/",
        "/timeline",
        "/jobs/%3Cscript%3Ealert('x')%3C%2Fscript%3E",
        f"/runs/{boom_run}",
        f"/runs/{hello_run}",
        "/queues/async/failed",
    ):
        page = session.goto(path)
        assert page.locator("#main script").count() == 0, path
        assert page.locator("#main img").count() == 0, path
    page = session.goto("/jobs/%3Cscript%3Ealert('x')%3C%2Fscript%3E")
    expect(page.locator("h1.job-title")).to_have_text(XSS_NAME)
    expect(session.goto(f"/runs/{boom_run}").locator("#run-error")).to_contain_text(
        "RuntimeError: <img src=x onerror=alert(3)>"
    )
    time.sleep(0.5)  # a script that ran would have opened its dialog by now (checked by the fixture)


def test_read_only_has_no_buttons_and_refuses_posts(chromium: Any, project: Project) -> None:
    make_project(project)
    fail_a_message(project, {"id": 1})
    board = start(project, "--read-only", token=TOKEN)
    browser = Session(chromium, board)
    try:
        for path in ("/", "/jobs/boom", "/queues", "/queues/async/failed"):
            page = browser.goto(path)
            assert page.locator("form[method=post]:not([action='/logout'])").count() == 0, path
            assert page.locator("#main button:not(form.filters button)").count() == 0, path
        page = browser.goto("/jobs/boom")
        statuses = page.evaluate(
            """async () => {
                const out = [];
                for (const path of ["/jobs/boom/disable", "/jobs/boom/run", "/pause", "/queues/async/failed/all/remove"]) {
                    const r = await fetch(path, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "csrf=x"});
                    out.push(r.status);
                }
                return out;
            }"""
        )
        assert statuses == [403, 403, 403, 403]
        assert status_job(project, "boom")["enabled"] is True
        assert len(json.loads(project.icc("failed", "list", "--json", check=True).stdout)) == 1
        assert browser.dialogs == []
    finally:
        browser.close()
        board.stop()


def test_the_live_update_arrives_within_2_seconds(session: Session, project: Project) -> None:
    from playwright.sync_api import expect

    page = session.goto("/")
    cells = page.locator("tr[data-job=hello] td.strip a")
    expect(cells).to_have_count(1)
    time.sleep(1.5)  # the page's script has its first stamp
    tick = project.icc("run", "--at", at(1))
    assert "hello" in tick.stdout
    started = time.monotonic()
    expect(cells).to_have_count(2, timeout=2_000)
    assert time.monotonic() - started <= 2.0
    expect(page.locator("tr[data-job=boom] td.strip a")).to_have_count(2)


def test_keyboard_alone_phone_screen_and_dark_mode(chromium: Any, board: Dashboard, project: Project) -> None:
    from playwright.sync_api import expect

    phone = Session(chromium, board, viewport={"width": 390, "height": 844}, color_scheme="dark")
    try:
        page = phone.goto("/jobs/hello")
        # Nothing wider than the screen but the tables, which scroll in their own box.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(13, 17, 23)"  # the dark palette
        # The keyboard alone: Tab to "Run now" and press Enter.
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement && document.activeElement.id") == "run-now":
                break
        else:
            raise AssertionError("Tab never reached the Run now button")
        page.keyboard.press("Enter")
        wait_for(lambda: any(r["kind"] == "manual" for r in project.runs("hello")), what="the manual run")
        expect(page.locator("#run-now")).to_be_visible()
        assert phone.dialogs == []
    finally:
        phone.close()
