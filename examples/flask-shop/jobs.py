"""The app's jobs and handlers (ICC["plugins"] = ["jobs"])."""

import icc
from app import db


def nightly_report() -> None:
    (count,) = db().execute("SELECT count(*) FROM signups").fetchone()
    db().execute("INSERT INTO reports (signups) VALUES (?)", (count,))
    print(f"{count} signups so far")


def welcome(payload: dict) -> None:
    db().execute("UPDATE signups SET welcomed = 1 WHERE email = ?", (payload["email"],))


@icc.hookimpl
def schedule(scheduler: icc.Scheduler) -> None:
    scheduler.add(nightly_report, name="nightly-report").daily().at(2)


@icc.hookimpl
def register_handlers(register) -> None:
    register("welcome", welcome, queue="async")
