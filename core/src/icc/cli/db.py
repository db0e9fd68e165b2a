"""``icc db``: the PostgreSQL store's schema (``migrate``, ``status``) and the move from SQLite (``copy-from-sqlite``).

Only these commands migrate: ``icc run`` and ``icc consume`` refuse a schema that is behind or ahead of them
(:func:`icc.store.postgres.connection.require_current`). The work is :mod:`icc.store.admin`'s; psycopg is imported
only when one of them runs.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from icc.cli.render import plural
from icc.errors import StateError

if TYPE_CHECKING:
    from icc.config import Config

__all__ = ["db"]

NOT_CURRENT_EXIT = 1  # `icc db status` on a schema that needs `icc db migrate` (or a newer icc)


def _config(env: Any) -> Config:
    """The configuration, refused when it names no PostgreSQL store."""
    config: Config = env.config
    if config.store.url is None:
        where = config.path or "the configuration"
        raise StateError(
            f"icc db: no [icc.store] url in {where}; set it (or ICC_STORE_URL) to the PostgreSQL database, "
            'e.g. url = "postgresql://icc@db.internal/app" (see docs/several-servers.md)'
        )
    return config


@click.group()
def db() -> None:
    """The PostgreSQL store ([icc.store] url): its schema, and the move from SQLite."""


@db.command()
@click.pass_obj
def migrate(env: Any) -> None:
    """Apply the pending migrations of the PostgreSQL store (safe from several hosts at once)."""
    from icc.store import admin  # lazy: psycopg, only for icc db

    config = _config(env)
    applied = admin.migrate(config)
    if not applied:
        click.echo(f"{admin.where(config)} is up to date")
        return
    for migration in applied:
        click.echo(f"applied {migration.version:04d}_{migration.name} to {admin.where(config)}")


@db.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (schema in docs/cli.md).")
@click.pass_obj
def status(env: Any, as_json: bool) -> None:
    """Show the PostgreSQL store's migrations; exit 1 when it needs `icc db migrate` or a newer icc."""
    from icc.store import admin  # lazy: psycopg, only for icc db

    config = _config(env)
    schema = config.store.schema
    state = admin.schema_status(config)
    zone = ZoneInfo(config.timezone)
    applied = [(v, n, datetime.fromisoformat(a).astimezone(zone).isoformat()) for v, n, a in state.applied]
    if state.unknown:
        advice: str | None = f"upgrade icc on this host (the schema has migration {max(state.unknown)})"
    elif state.pending:
        advice = "icc db migrate"
    else:
        advice = None
    if as_json:
        document = {
            "url": admin.shown_url(config),
            "schema": schema,
            "current": state.current,
            "applied": [{"version": v, "name": n, "applied_at": a} for v, n, a in applied],
            "pending": [{"version": m.version, "name": m.name} for m in state.pending],
            "unknown": state.unknown,
            "run": advice,
        }
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(f"store:   {admin.shown_url(config)}")
        click.echo(f"schema:  {schema}")
        known = admin.known_migrations()
        for version, name, applied_at in applied:
            note = "" if version in known else "  (newer than this icc)"
            click.echo(f"applied: {version:04d}_{name}  {applied_at}{note}")
        for migration in state.pending:
            click.echo(f"pending: {migration.version:04d}_{migration.name}")
        if not state.applied and not state.pending:
            click.echo("applied: (none)")
        if advice is None:
            click.echo("up to date")
        elif state.unknown:
            click.echo(f"this icc is older than the schema: {advice}")
        else:
            click.echo(f"not up to date: run `{advice}`")
    if advice is not None:
        raise SystemExit(NOT_CURRENT_EXIT)


@db.command(name="copy-from-sqlite")
@click.option(
    "--state-dir",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the SQLite files are; default: this install's state_dir.",
)
@click.option("--json", "as_json", is_flag=True, help="What was copied, as one JSON document.")
@click.pass_obj
def copy_from_sqlite(env: Any, state_dir: Path | None, as_json: bool) -> None:
    """Copy jobs, runs, meta and messages from SQLite into an empty, migrated PostgreSQL store."""
    from icc.store import admin  # lazy: psycopg, only for icc db

    config = _config(env)
    source = state_dir if state_dir is not None else config.state_dir
    counts = admin.copy_from_sqlite(config, source)
    where = admin.where(config)
    if as_json:
        click.echo(json.dumps({"from": str(source), "to": where, "copied": counts}, indent=2))
        return

    click.echo(
        f"copied {plural(counts['jobs'], 'job')}, {plural(counts['runs'], 'run')}, "
        f"{plural(counts['messages'], 'message')} and {plural(counts['failed'], 'failed message')} "
        f"from {source} to {where}"
    )
