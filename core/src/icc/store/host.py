"""This host's identity among the hosts sharing a store: ``[icc.store] host_id``, or a UUID kept in the state
directory. The backends name their connections and rows with it; :mod:`icc.store` re-exports it."""

from __future__ import annotations

import os

from icc.errors import StateError
from icc.statedir import ensure_state_dir

TYPE_CHECKING = False  # not typing's: icc.store imports this module, and the idle ticks import icc.store
if TYPE_CHECKING:
    from pathlib import Path

    from icc.config import Config

HOST_ID_FILE = "host_id"

# The icc command this process runs (``run``), for its connections' ``application_name`` where click's context
# cannot say: the due ``icc run`` goes without click (icc.__main__). None: click's context, or the program's name.
command: str | None = None


def host_id(config: Config) -> str:
    """This host's stable identity among the hosts sharing a store.

    ``[icc.store] host_id`` when set; else a UUID made once and kept in ``<state_dir>/host_id`` (0600), never
    the bare hostname (containers share hostnames). Without a writable state directory: the hostname.
    """
    import contextlib  # lazy: the idle ticks import icc.store, and so this module
    import uuid  # lazy: uuid imports platform

    if config.store.host_id:
        return config.store.host_id
    path = config.state_dir / HOST_ID_FILE
    kept = _read_host_id(path)
    if kept:
        return kept
    new = str(uuid.uuid4())
    try:
        ensure_state_dir(config.state_dir)
        # Written aside, then linked into place: the file appears complete or not at all, so a process racing
        # this one never reads it empty, and the first link wins for every process of this host.
        tmp = config.state_dir / f".{HOST_ID_FILE}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(new + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                if not _read_host_id(path):  # left empty by an older icc that died mid-write: replace it
                    os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except (OSError, StateError):
        import socket  # lazy: only when no host id can be kept

        return socket.gethostname()
    return _read_host_id(path) or new


def _read_host_id(path: Path) -> str:
    import contextlib  # lazy: as in host_id

    with contextlib.suppress(OSError, UnicodeDecodeError):
        return path.read_text(encoding="ascii").strip()
    return ""
