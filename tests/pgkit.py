"""A throw-away PostgreSQL server for the tests, from the Debian packages (``initdb`` + ``pg_ctl``).

One server per test session on a free loopback port (fsync off: the tests never survive a power cut), started as
the ``postgres`` user through ``runuser`` when the tests run as root (PostgreSQL refuses to run as root). Each
test gets a fresh database made from an empty template, so tests never see each other's rows.

Without the binaries the PostgreSQL tests skip, unless ``TESTS_REQUIRE_POSTGRES=1`` (set by ``.ci/run``): then a
missing server fails the run. (Not an ``ICC_*`` name: those are icc's configuration, and the idle tick doubts
ones it does not know.)
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_VARIABLE = "TESTS_REQUIRE_POSTGRES"
_counter = itertools.count(1)


def _bindir() -> Path | None:
    """Debian's versioned directory (newest), else wherever ``initdb`` is on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


# Where Debian and Fedora keep runuser: cron's and some shells' PATH leave /usr/sbin out.
RUNUSER_PATHS = ("/usr/sbin/runuser", "/sbin/runuser")


def as_postgres() -> list[str]:
    """The argv prefix that runs a command as ``postgres``: [] unless root (PostgreSQL refuses to run as root).

    As root without ``runuser`` (on PATH or in /usr/sbin) the PostgreSQL tests skip, saying why."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser") or next((p for p in RUNUSER_PATHS if os.access(p, os.X_OK)), None)
    if runuser is None:
        pytest.skip(
            "the tests run as root and PostgreSQL refuses to: runuser (util-linux) is needed to start the "
            f"server as postgres, and it is neither on PATH nor at {' or '.join(RUNUSER_PATHS)}"
        )
    return [runuser, "-u", "postgres", "--"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgServer:
    """A running server: ``url(dbname)`` gives a libpq URL; ``admin(sql)`` runs SQL as the superuser."""

    bindir: Path
    datadir: Path
    port: int
    as_user: list[str]  # ["/usr/sbin/runuser", "-u", "postgres", "--"] when root, else []
    user: str = "postgres"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` through psql as the superuser; its output (unaligned, tuples only)."""
        out = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.url(dbname),
            ],
            input=sql,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def new_database(self) -> str:
        """A fresh, empty database (from the template); its name."""
        name = f"t{os.getpid()}_{next(_counter)}"
        self.admin(f'CREATE DATABASE "{name}" TEMPLATE icc_template')
        return name

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(RuntimeError):
            self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", "-t", "60", *args],
            check=True,
            capture_output=True,
            timeout=90,
        )

    def restart(self) -> None:
        # With its log file: without -l the new server keeps pg_ctl's output pipe open and pg_ctl never returns.
        self.pg_ctl("restart", "-m", "fast", "-l", str(self.datadir.parent / "log"))


def start_server() -> PgServer:
    bindir = _bindir()
    if bindir is None or not (bindir / "initdb").exists():
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql"
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{message} ({REQUIRE_VARIABLE}=1 makes this a failure)", pytrace=False)
        pytest.skip(message)
    as_user = as_postgres()
    root = Path(tempfile.mkdtemp(prefix="icc-pg-"))
    datadir = root / "data"
    if as_user:
        shutil.chown(root, "postgres", "postgres")
        os.chmod(root, 0o700)
    subprocess.run(
        [
            *as_user,
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = _free_port()
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
        "-c full_page_writes=off -c max_connections=300 -c shared_buffers=64MB"
    )
    server = PgServer(bindir=bindir, datadir=datadir, port=port, as_user=as_user)
    subprocess.run(
        [
            *as_user,
            str(bindir / "pg_ctl"),
            "-D",
            str(datadir),
            "-l",
            str(root / "log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )
    server.admin("CREATE DATABASE icc_template")
    return server


def stop_server(server: PgServer) -> None:
    with contextlib.suppress(Exception):
        server.pg_ctl("stop", "-m", "immediate")
    shutil.rmtree(server.datadir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A libpq URL of a fresh, empty database on the session's server."""
    name = pg_server.new_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)


def wait_for(predicate: object, timeout: float = 30.0) -> None:  # pragma: no cover - helper for slow servers
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )


@dataclass
class PgBouncer:
    """A pgbouncer in transaction mode in front of a :class:`PgServer`: ``url(dbname)`` reaches any of the
    server's databases through it. Two server connections per database and user, so that clients really share
    them: consecutive transactions of one client may land on different server sessions."""

    root: Path
    port: int
    user: str = "postgres"

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"


def start_pgbouncer(server: PgServer, *, ignore_options: bool = True) -> PgBouncer:
    """Start pgbouncer (as the ``postgres`` user when root: it refuses to run as root). ``ignore_options``:
    whether its ini has ``ignore_startup_parameters = options``, as docs/several-servers.md says to set."""
    binary = _pgbouncer_binary()
    if binary is None:
        message = "pgbouncer not found; apt-get install pgbouncer"
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{message} ({REQUIRE_VARIABLE}=1 makes this a failure)", pytrace=False)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="icc-pgbouncer-"))
    port = _free_port()
    (root / "users.txt").write_text(f'"{server.user}" ""\n')
    (root / "pgbouncer.ini").write_text(
        f"""[databases]
* = host=127.0.0.1 port={server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {root}
auth_type = trust
auth_file = {root}/users.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 500
server_reset_query =
ignore_startup_parameters = {"options" if ignore_options else ""}
logfile = {root}/pgbouncer.log
pidfile = {root}/pgbouncer.pid
"""
    )
    as_user = server.as_user
    if as_user:
        for path in (root, *root.iterdir()):
            shutil.chown(path, "postgres", "postgres")
    subprocess.run(
        [*as_user, binary, "-d", str(root / "pgbouncer.ini")], check=True, capture_output=True, timeout=30
    )
    bouncer = PgBouncer(root=root, port=port, user=server.user)
    deadline = time.monotonic() + 30
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return bouncer
        if time.monotonic() > deadline:
            log = root / "pgbouncer.log"
            raise RuntimeError(f"pgbouncer did not start: {log.read_text() if log.exists() else 'no log'}")
        time.sleep(0.05)


def stop_pgbouncer(bouncer: PgBouncer) -> None:
    with contextlib.suppress(OSError, ValueError):
        pid = int((bouncer.root / "pgbouncer.pid").read_text())
        os.kill(pid, 15)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.05)
    shutil.rmtree(bouncer.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pgbouncer(pg_server: PgServer) -> Iterator[PgBouncer]:
    bouncer = start_pgbouncer(pg_server)
    try:
        yield bouncer
    finally:
        stop_pgbouncer(bouncer)
