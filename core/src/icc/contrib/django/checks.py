"""``manage.py check``: icc's configuration, its timezone, the store several hosts need, icc's migrations."""

from __future__ import annotations

import contextlib
from typing import Any

from django.conf import settings
from django.core import checks

from icc.errors import IccError


def register() -> None:

    checks.register(icc_checks, "icc")


def icc_checks(app_configs: Any = None, **kwargs: Any) -> list[Any]:

    from icc.config import load_config  # lazy: only manage.py check runs these

    found: list[Any] = []
    try:
        config = load_config()
    except IccError as exc:
        return [checks.Error(str(exc), hint="fix the ICC setting (its keys are icc.toml's)", id="icc.E001")]
    zone = getattr(settings, "TIME_ZONE", None)
    if zone is None:
        found.append(
            checks.Warning(
                "TIME_ZONE is None: icc schedules jobs in UTC",
                hint="set TIME_ZONE, or ICC['timezone'], to the zone your schedules are written in",
                id="icc.W001",
            )
        )
    elif config.timezone != zone:
        found.append(
            checks.Warning(
                f"icc schedules jobs in {config.timezone} (ICC['timezone']) while Django's TIME_ZONE is {zone}",
                hint="remove ICC['timezone'] to schedule in TIME_ZONE, or keep it if that is what you mean",
                id="icc.W002",
            )
        )
    if not config.store.shared:
        engine = str(settings.DATABASES.get("default", {}).get("ENGINE", ""))
        host = str(settings.DATABASES.get("default", {}).get("HOST", "") or "")
        if (
            "postgresql" in engine
            and host not in ("", "localhost", "127.0.0.1", "::1")
            and not host.startswith("/")
        ):
            found.append(
                checks.Warning(
                    "icc's store is a SQLite file on this host while the site's database is a PostgreSQL "
                    f"server ({host}): with several hosts each would run every job",
                    hint="ICC = {'store': {'database': 'default'}} shares icc's store (its own schema) "
                    "in that database",
                    id="icc.W003",
                )
            )
    else:
        found += _migration_checks(config)
    return found


def _migration_checks(config: Any) -> list[Any]:
    """icc's PostgreSQL schema is behind this icc: ``manage.py icc db migrate`` (as ``icc db status`` says)."""

    from icc.store.postgres import connection as pg  # lazy: only on PostgreSQL (icc db's own reading)

    try:
        with contextlib.closing(pg.connect(config, purpose="manage.py check", limit=5.0)) as conn:
            state = pg.schema_status(conn, config.store.schema)
    except IccError as exc:
        return [checks.Warning(f"cannot read icc's store to check its migrations: {exc}", id="icc.W004")]
    if state.pending:
        return [
            # A warning, not an error: an error would stop `manage.py migrate` itself, which deploys run first.
            checks.Warning(
                f"icc's store (schema {config.store.schema!r}) has {len(state.pending)} migration(s) to apply",
                hint="python manage.py icc db migrate",
                id="icc.W005",
            )
        ]
    return []
