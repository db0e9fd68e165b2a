"""A small Flask app on icc: `flask --app app icc ...`. Jobs and handlers use `g.db` and `current_app` freely:
icc runs each inside its own app context, torn down after it."""

import sqlite3
from pathlib import Path

import icc
from flask import Flask, current_app, g, request
from icc.contrib.flask import Icc

app = Flask(__name__)
app.config["DATABASE"] = str(Path(app.root_path) / "app.sqlite3")
app.config["ICC"] = {"plugins": ["jobs"], "timezone": "Europe/Paris"}
Icc(app)


def db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(current_app.config["DATABASE"])
        g.db.execute("CREATE TABLE IF NOT EXISTS signups (email TEXT, welcomed INTEGER DEFAULT 0)")
        g.db.execute(
            "CREATE TABLE IF NOT EXISTS reports (made_at TEXT DEFAULT CURRENT_TIMESTAMP, signups INTEGER)"
        )
    return g.db


@app.teardown_appcontext
def close_db(exc: BaseException | None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        conn.commit()
        conn.close()


@app.post("/signup")
def signup() -> str:
    email = request.form["email"]
    db().execute("INSERT INTO signups (email) VALUES (?)", (email,))
    icc.dispatch("welcome", {"email": email})
    return "ok"
