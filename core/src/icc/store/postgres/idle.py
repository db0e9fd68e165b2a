"""The idle tick on a PostgreSQL store: ``icc run`` with nothing due, without importing psycopg.

psycopg alone costs more to import than the whole SQLite idle tick (about 170 ms against 25 ms on the machine
bench/bench_pg_tick.py ran on), so this path talks to the server through libpq directly (``ctypes``: the
library psycopg's binary package bundles, else the system's ``libpq.so.5``), with the same connection settings
as :func:`icc.store.postgres.connection.connect` (``application_name``, the timeouts, keepalives). One statement, one round trip, asks
what :mod:`icc.tick.idle` asks SQLite: the earliest stored next slot, the watermark, whether the store was
scanned or paused, and whether a run may need recovering. On a shared store that last question covers this
host's unfinished runs and any host's run whose lease has expired on the server's clock (another host's live
run is its own business). Two more answers send the tick to the full command: a job that runs on each host
(``on_each_host()``, such as the built-in consumers: its next slot is shared by every host, so a slot another
host already evaluated may still be due here), and a schema that is not exactly this icc's migrations (the full
tick refuses it with the command to run).

Anything unusual returns None and the full tick decides, with its proper messages: no ``[icc.store] url`` in
the configuration file (``ICC_STORE_*`` variables are a doubt of :mod:`icc.fastconfig`), no host id yet, no
psycopg installed (the full tick would refuse to run), no libpq to load, a connection or query that fails. A
server that cannot be reached is therefore tried twice (here, then by the full tick), each within the
connection timeout.
"""

from __future__ import annotations

import os
import sys
import time

from icc.slots import tick_slot  # loaded already: icc.tick.idle imports it
from icc.statedir import state_dir_problem  # every call of try_pg_idle_tick reads it
from icc.tickwatch import drift, idle_notices, stamp_tick  # loaded already: icc.tick.idle imports it

TYPE_CHECKING = False  # not typing's: importing typing costs more than this module
if TYPE_CHECKING:
    from typing import Any

# icc.store.postgres.connection's connection settings (tests/tick/test_fastpath_pg.py pins that they are equal; importing icc.store.postgres.connection costs more
# than the query).
STATEMENT_TIMEOUT_MS = 30_000
LOCK_TIMEOUT_MS = 10_000
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
CONNECT_TIMEOUT_S = 10
# libpq's ConnStatusType and ExecStatusType values used here.
_CONNECTION_OK = 0
_PGRES_TUPLES_OK = 2

_QUERY = (
    "SELECT (SELECT MIN(next_due) FROM {s}.jobs WHERE enabled AND removed_at IS NULL),"
    " (SELECT COUNT(*) FROM {s}.runs WHERE outcome IN ('pending', 'running') AND (host IS NULL OR host = $1"
    " OR lease_until IS NULL OR lease_until < extract(epoch from clock_timestamp())::double precision)),"
    " (SELECT value FROM {s}.meta WHERE key = 'watermark'),"
    " (SELECT value FROM {s}.meta WHERE key = 'plugins_fingerprint'),"
    " (SELECT COUNT(*) FROM {s}.meta WHERE key = 'pause'),"
    # on_each_host() jobs: the full tick. strpos over the JSON text: a superset (a job named so counts too).
    " (SELECT COUNT(*) FROM {s}.jobs WHERE enabled AND removed_at IS NULL"
    " AND strpos(definition, 'on_each_host') > 0),"
    " (SELECT string_agg(version::text, ',' ORDER BY version) FROM {s}.migrations),"
    " (SELECT value FROM {s}.meta WHERE key = 'drift_stamp'),"
    # expect_success_within: the earliest moment a job goes stale unalerted (icc.notify.freshness)
    " (SELECT value FROM {s}.meta WHERE key = 'stale.next')"
)


def _libpq() -> Any | None:
    """libpq through ctypes, or None. psycopg must be installed (the full tick needs it)."""
    import ctypes  # lazy: libpq, only once the configuration names a URL (a full tick that falls through does without)

    candidates: list[str] = []
    found_psycopg = False
    for entry in sys.path:
        base = entry or "."
        if os.path.isdir(os.path.join(base, "psycopg")):
            found_psycopg = True
        libs = os.path.join(base, "psycopg_binary.libs")
        if os.path.isdir(libs):
            candidates += sorted(os.path.join(libs, n) for n in os.listdir(libs) if n.startswith("libpq"))
    if not found_psycopg:
        return None
    candidates += ["libpq.so.5", "libpq.5.dylib"]
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        p, c_int, c_char_p = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        lib.PQconnectdbParams.restype = p
        lib.PQconnectdbParams.argtypes = [ctypes.POINTER(c_char_p), ctypes.POINTER(c_char_p), c_int]
        lib.PQstatus.argtypes = [p]
        lib.PQfinish.argtypes = [p]
        lib.PQexecParams.restype = p
        lib.PQexecParams.argtypes = [p, c_char_p, c_int, p, ctypes.POINTER(c_char_p), p, p, c_int]
        lib.PQresultStatus.argtypes = [p]
        lib.PQntuples.argtypes = [p]
        lib.PQnfields.argtypes = [p]
        lib.PQgetisnull.argtypes = [p, c_int, c_int]
        lib.PQgetvalue.restype = c_char_p
        lib.PQgetvalue.argtypes = [p, c_int, c_int]
        lib.PQclear.argtypes = [p]
        return lib
    return None


def _strings(values: list[str]) -> Any:
    import ctypes  # lazy: loaded already by _libpq

    array = (ctypes.c_char_p * (len(values) + 1))()
    for i, value in enumerate(values):
        array[i] = value.encode()
    array[len(values)] = None
    return array


def _ask(url: str, schema: str, host: str) -> list[str | None] | None:
    """The answers of _QUERY, or None (no libpq, no connection, an error)."""
    pq = _libpq()
    if pq is None:
        return None
    settings = {
        "dbname": url,
        "application_name": f"icc run {host}"[:63],  # as connection.connect names an `icc run`
        "options": (
            f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS} "
            f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
        ),
        "connect_timeout": str(CONNECT_TIMEOUT_S),
        "keepalives": "1",
        "keepalives_idle": "10",
        "keepalives_interval": "5",
        "keepalives_count": "3",
        "tcp_user_timeout": "30000",
    }
    conn = pq.PQconnectdbParams(_strings(list(settings)), _strings(list(settings.values())), 1)
    if not conn:
        return None
    try:
        if pq.PQstatus(conn) != _CONNECTION_OK:
            return None
        sql = _QUERY.replace("{s}", f'"{schema}"').encode()
        res = pq.PQexecParams(conn, sql, 1, None, _strings([host]), None, None, 0)
        if not res:
            return None
        try:
            if pq.PQresultStatus(res) != _PGRES_TUPLES_OK or pq.PQntuples(res) != 1:
                return None
            answers: list[str | None] = []
            for column in range(pq.PQnfields(res)):
                if pq.PQgetisnull(res, 0, column):
                    answers.append(None)
                else:
                    answers.append(pq.PQgetvalue(res, 0, column).decode())
            return answers
        finally:
            pq.PQclear(res)
    finally:
        pq.PQfinish(conn)


def _migrations() -> str | None:
    """The versions of the migrations shipped with this icc, as the query lists them ("1,2"), or None."""
    directory = os.path.join(os.path.dirname(__file__), "migrations")
    versions = sorted(
        int(name[:4])
        for name in os.listdir(directory)
        if name.endswith(".sql") and name[:4].isdigit() and name[4:5] == "_"
    )
    return ",".join(map(str, versions)) or None


def _host_id(store: dict[str, object], state_dir: str) -> str | None:
    """``[icc.store] host_id``, else the one kept in the state directory (never made here)."""
    configured = store.get("host_id")
    if isinstance(configured, str):
        return configured
    try:
        with open(os.path.join(state_dir, "host_id"), encoding="ascii") as fh:
            return fh.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _say_idle(slot: int, timezone: str) -> None:
    """What the full tick prints when nothing is due (cli.py: ``nothing due at <time> (<zone>)``)."""
    if timezone == "UTC":
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(slot))
    else:
        from datetime import UTC, datetime  # lazy: only a zone other than UTC
        from zoneinfo import ZoneInfo  # lazy: as above

        when = datetime.fromtimestamp(slot, tz=UTC).astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")
    sys.stdout.write(f"icc run: nothing due at {when} ({timezone})\n")


def try_pg_idle_tick(
    config_path: str | None, quiet: bool, at: str | None, known: dict[str, object] | None = None
) -> int | None:
    """Exit code of an idle tick on a PostgreSQL store, or None when the full ``icc run`` must handle it.
    ``known``: a framework's snapshot (:mod:`icc.tick.snapshot`) instead of the configuration file."""
    try:
        from icc.fastconfig import read_config  # lazy: a framework's snapshot reads no config file

        store: dict[str, object] = {}
        settings: dict[str, object] = {}
        known_store = None if known is None else known.get("store")
        if known is not None and isinstance(known_store, dict):
            store.update(known_store)
            settings["scan"] = known["scan"]
            config: tuple[str, str] | None = (str(known["state_dir"]), str(known["timezone"]))
        else:
            config = read_config(config_path, store, settings)
        url = store.get("url")
        if config is None or not isinstance(url, str):
            return None
        state_dir, timezone = config
        if not os.path.isdir(state_dir) or state_dir_problem(state_dir) is not None:
            return None

        stamp_tick(state_dir)  # `icc check`: a tick ran (the idle tick writes nothing else)
        host = _host_id(store, state_dir)
        schema = store.get("schema", "icc")
        if host is None or not isinstance(schema, str):
            return None

        slot = tick_slot(at, timezone)
        if slot is None:
            return None
        answers = _ask(url, schema, host)
        if answers is None:
            return None
        earliest, unfinished, watermark, scanned, paused, per_host, applied, stamp, stale_next = answers
        if scanned is None or applied is None or applied != _migrations():
            return None
        if watermark is not None and slot < int(watermark):
            return None
        if int(unfinished or 0) or int(paused or 0) or int(per_host or 0):
            return None
        if earliest is not None and int(earliest) <= slot:
            return None
        if stale_next is not None and float(stale_next) <= time.time():
            return None  # a job went stale: the full tick alerts

        scan_auto = settings.get("scan") == "auto"
        why = drift(stamp) if scan_auto or not quiet else None  # as icc.tick.idle's idle tick
        if why is not None and (scan_auto or why.startswith("packages:")):
            return None
    except Exception:
        return None
    if not quiet:
        sys.stdout.write(idle_notices(state_dir, why))
        _say_idle(slot, timezone)
    return 0
