"""`nox -s screenshots`: a PNG of each dashboard page for docs/web.md, taken by Playwright (Debian's chromium)
from a real `icc web` on a real project whose runs come from real ticks of the last six hours.

Run: ``nox -s screenshots`` (or ``PYTHONPATH=tests python tests/web/screenshots.py [OUT_DIR]``)."""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from projectkit import Project
from webkit import QUEUE_CONFIG, start

OUT = Path(__file__).resolve().parents[2] / "docs" / "img"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]

PLUGIN = r"""
import json, random

def backup():
    print("\x1b[1mbackup\x1b[0m: 4 databases, 1.2 GB")
    print("\x1b[32mok\x1b[0m uploaded to s3://backups/2026/")

def cleanup_sessions():
    print("removed 312 expired sessions")

def send_digest():
    print("queued 58 digest mails")

def sync_prices():
    if random.random() < 0.4:
        raise ConnectionError("supplier API timed out after 30 s")
    print("synced 1,204 prices")

def handle(payload):
    raise ValueError("template 'invoice.html' not found")

@icc.hookimpl
def schedule(scheduler):
    scheduler.add(backup, name="backup", description="nightly database backup").every_hours(2).set_minute(5)
    scheduler.add(cleanup_sessions, name="cleanup-sessions").every_minutes(15)
    scheduler.add(send_digest, name="send-digest").every_hour().between("08:00", "20:00")
    scheduler.add(sync_prices, name="sync-prices").every_minutes(30).environments("production")
    scheduler.add(["/bin/echo", "rotated"], name="rotate-logs").daily().at(3)

@icc.hookimpl
def register_handlers(register):
    register("invoice.render", handle)
"""


def main(out: Path = OUT) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="icc-shots-") as tmp:
        project = Project(Path(tmp) / "shop")
        project.root.mkdir()
        project.write_config(QUEUE_CONFIG)
        project.write_plugin(PLUGIN)
        project.icc("scan", check=True)
        # Real ticks at slots after the scan (a tick never runs slots from before a job existed), six hours of
        # them; then the runs are moved back into the last six hours, where the timeline shows them.
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        first = (now + timedelta(days=1)).replace(minute=0)
        moment = first
        while moment <= first + timedelta(hours=6):
            project.icc("run", "--quiet", "--at", moment.isoformat())
            moment += timedelta(minutes=5)
        shift = (first - (now.replace(minute=0) - timedelta(hours=6))).total_seconds()  # whole hours
        db = sqlite3.connect(project.db)
        with db:
            db.execute(
                # A run starts a moment after its slot (the ticks ran just now, at slots a day ahead).
                "UPDATE runs SET slot = slot - ?, started_at = slot - ? + 0.3, "
                "ended_at = ended_at - started_at + slot - ? + 0.3",
                (shift, shift, shift),
            )
        db.close()
        from icc.config import load_config
        from icc.queue.dispatch import dispatch

        for n in (1041, 1042):
            dispatch(
                "invoice.render",
                {"invoice": n, "customer": "ACME <b>GmbH</b>"},
                config=load_config(project.config),
            )
        dispatch(
            "invoice.render",
            {"invoice": 1043, "lines": [{"sku": "X-1", "qty": 2}]},
            config=load_config(project.config),
        )
        project.icc(
            "consume", "async", "--stop-when-empty", "--time-limit", "20", check=True
        )  # all three fail
        board = start(project)
        try:
            backup_run = max(r["id"] for r in project.runs("backup") if r["outcome"] == "succeeded")
            failed_run = max(
                (r["id"] for r in project.runs("sync-prices") if r["outcome"] == "failed"), default=None
            )
            pages = {
                "jobs": "/",
                "timeline": "/timeline?hours=6",
                "job": "/jobs/backup",
                "run": f"/runs/{backup_run}",
                "queues": "/queues",
                "failed": "/queues/async/failed",
                "hosts": "/hosts",
            }
            if failed_run is not None:
                pages["run-failed"] = f"/runs/{failed_run}"
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                for scheme, size, suffix in (
                    ("light", {"width": 1280, "height": 800}, ""),
                    ("dark", {"width": 1280, "height": 800}, "-dark"),
                    ("light", {"width": 390, "height": 844}, "-phone"),
                ):
                    context = browser.new_context(viewport=size, color_scheme=scheme, device_scale_factor=1)
                    page = context.new_page()
                    for name, path in pages.items():
                        if suffix and name not in ("jobs", "job"):
                            continue
                        page.goto(board.url + path)
                        if name == "failed":
                            page.click("article.failed summary")
                        page.screenshot(path=str(out / f"{name}{suffix}.png"), full_page=suffix != "-phone")
                        print(f"wrote {out / f'{name}{suffix}.png'}")
                    context.close()
                browser.close()
        finally:
            board.stop()
        print(json.dumps({"pages": len(list(out.glob("*.png")))}))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
