"""The ``icc.store`` package module is the parent of every backend module, so the idle paths import it."""

from __future__ import annotations

import subprocess
import sys

# What the idle paths never load: typing and what uuid pulls in (platform), dataclasses, click.
HEAVY = ("typing", "uuid", "platform", "dataclasses", "click", "psycopg")


def imported(code: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {
        line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")
    }


def test_importing_the_postgresql_idle_tick_loads_no_heavy_module_through_the_store_package() -> None:
    names = imported("import icc.store.postgres.idle")
    assert "icc.store" in names
    assert not names & set(HEAVY), sorted(names & set(HEAVY))


def test_host_id_still_makes_and_keeps_a_uuid(tmp_path: object) -> None:
    from pathlib import Path

    from icc.config import Config
    from icc.store import host_id

    root = Path(str(tmp_path))
    config = Config(path=None, root=root, state_dir=root / ".icc")
    first = host_id(config)
    assert len(first) == 36 and first == host_id(config)
