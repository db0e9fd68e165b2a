"""A throw-away icc project on disk, driven through real `icc` processes (see the `project` fixture)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Far enough ahead of the real clock that `--at` ticks are after every scan's "now".
BASE = (datetime.now(UTC) + timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)


def at(minutes: float = 0, seconds: float = 0) -> str:
    """An ISO time `minutes` after BASE, for `icc run --at`."""
    return (BASE + timedelta(minutes=minutes, seconds=seconds)).isoformat()


def slot(minutes: float = 0) -> int:
    return int((BASE + timedelta(minutes=minutes)).timestamp())


@dataclass
class Project:
    """A project folder with icc.toml and a local plugin module `tasks_plugin.py`."""

    root: Path
    extra_config: str = ""
    env: dict[str, str] = field(default_factory=dict)
    store_url: str | None = None  # a PostgreSQL store (its schema already migrated); None: SQLite in state/
    host_id: str | None = None  # [icc.store] host_id, with store_url

    @property
    def config(self) -> Path:
        return self.root / "icc.toml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def db(self) -> Path:
        return self.state_dir / "state.sqlite3"

    def store_config(self) -> str:
        """The ``[icc.store]`` table of a project on a PostgreSQL store; empty for SQLite."""
        if self.store_url is None:
            return ""
        host = f'host_id = "{self.host_id}"\n' if self.host_id else ""
        return f'\n[icc.store]\nurl = "{self.store_url}"\n{host}'

    def has_store(self) -> bool:
        return self.store_url is not None or self.db.exists()

    def write_config(self, extra: str = "", plugins: tuple[str, ...] = ("tasks_plugin",)) -> None:
        plugin_list = ", ".join(f'"{p}"' for p in plugins)
        self.config.write_text(
            textwrap.dedent(
                f"""
                [icc]
                timezone = "UTC"
                state_dir = "state"
                plugins = [{plugin_list}]
                missed_window = 120
                grace = 1
                """
            )
            + textwrap.dedent(extra)
            + ("" if "[icc.consumers]" in extra else '\n[icc.consumers]\nmode = "service"\n')
            + self.store_config()
        )

    def write_plugin(self, body: str, name: str = "tasks_plugin") -> Path:
        path = self.root / f"{name}.py"
        path.write_text("import os, sys, time\nimport icc\n" + textwrap.dedent(body))
        return path

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ICC_")}
        env["ICC_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only this project's local plugins
        env["MARKER_DIR"] = str(self.root)
        env.update(self.env)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "icc", "--config", str(self.config), *args]

    def icc(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(*args),
            cwd=self.root,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"icc {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            cwd=self.root,
            env=self.environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def status(self) -> dict[str, Any]:
        return json.loads(self.icc("status", "--json", check=True).stdout)

    def runs(self, job: str | None = None) -> list[dict[str, Any]]:
        if self.store_url is not None:
            return self._store_runs(job)
        db = sqlite3.connect(self.db)
        db.row_factory = sqlite3.Row
        try:
            sql = "SELECT * FROM runs" + (" WHERE job = ?" if job else "") + " ORDER BY id"
            return [dict(r) for r in db.execute(sql, (job,) if job else ())]
        finally:
            db.close()

    def _store_runs(self, job: str | None) -> list[dict[str, Any]]:
        """The runs through the store's own code (PostgreSQL): the columns of a RunRecord, oldest first."""
        from dataclasses import asdict

        from icc.config import load_config
        from icc.store import open_store

        store = open_store(load_config(self.config))
        try:
            names = [job] if job else [r.name for r in store.jobs(include_removed=True)]
            found = [asdict(r) for name in names for r in store.runs(name, limit=100_000)]
        finally:
            store.close()
        return sorted(found, key=lambda r: int(r["id"]))

    def marker_lines(self, name: str) -> list[str]:
        path = self.root / name
        return path.read_text().splitlines() if path.exists() else []

    def wait_for(self, predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")


class QueueProject(Project):
    """A project whose local plugin ``module`` (source ``handlers``) registers queue handlers; ``config`` is
    its icc.toml. Dispatches in-process and reads the queue database directly.

    ``store_url`` (a migrated PostgreSQL database) puts its queues there (``[icc.store] url``, with
    ``host_id``); :meth:`query` then runs its SQL (``?`` placeholders) on that database's icc schema."""

    def __init__(
        self,
        root: Path,
        config: str,
        handlers: str,
        module: str,
        *,
        store_url: str | None = None,
        host_id: str | None = None,
    ) -> None:
        super().__init__(root, env={"QTEST_DIR": str(root)})
        text = textwrap.dedent(config)
        if store_url is not None:
            text += f'\n[icc.store]\nurl = "{store_url}"\nhost_id = "{host_id or root.name}"\n'
        self.config.write_text(text)
        (root / f"{module}.py").write_text(handlers)
        self.db_path = self.state_dir / "queue.sqlite3"
        self.store_url = store_url
        from icc.config import load_config

        self.loaded = load_config(self.config)

    def dispatch(self, name: str, payload: dict[str, Any], queue: str = "async") -> int:
        from icc.queue.dispatch import dispatch

        return dispatch(name, payload, queue=queue, config=self.loaded)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self.store_url is not None:
            import psycopg

            with psycopg.connect(self.store_url, options="-c search_path=icc", autocommit=True) as conn:
                return [tuple(row) for row in conn.execute(sql.replace("?", "%s"), params).fetchall()]
        db = sqlite3.connect(self.db_path)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()
