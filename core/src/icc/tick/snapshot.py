"""A framework project's idle minute: ``icc run`` for a Django or Flask project without importing the framework.

``manage.py icc crontab`` (``flask icc crontab``) prints a line that starts here rather than in the framework::

    * * * * * /usr/bin/env -C /srv/shop DJANGO_SETTINGS_MODULE=mysite.settings /venv/bin/icc run --quiet \\
        --framework-snapshot /srv/shop/.icc/framework.snapshot.json -- /venv/bin/python /srv/shop/manage.py icc

A project's icc configuration lives in its framework's settings, which only the framework can read, and setting
the framework up (``django.setup()``: every app, the settings) costs many times an idle tick. So the framework's
process writes, whenever icc runs in it (``icc scan``, ``icc crontab``, every full ``icc run``), a small snapshot
of what the idle check needs: the state directory, the time zone, ``[icc] scan``, the store (a PostgreSQL URL,
schema and host id, or none: SQLite), and what it was written for and from (the command after ``--``, the working
directory, the framework's variables such as ``DJANGO_SETTINGS_MODULE``, the ``ICC_*`` variables, and the files
its settings come from with their mtimes and sizes). The writer is :mod:`icc.contrib.snapshot`.

Here, with the standard library only, the snapshot is checked and the idle tick asks the store exactly as a plain
``icc run`` does (:mod:`icc.tick.idle`, :mod:`icc.store.postgres.idle`). Nothing due: exit 0. Otherwise this
process becomes the command after ``--`` with ``run`` and the run's options (``os.execv``), the full tick with
the framework set up, which also writes the snapshot again. That happens when something is due, on any doubt of
the idle tick, and when the snapshot cannot be used: missing, unreadable or corrupt, not this user's or not 0600 in a
trusted state directory, written by another icc, for another command, directory or settings module, with other
``ICC_*`` variables, or a settings file changed, added or removed since. The reason is printed (stdout, not with
``--quiet``; a corrupt or untrusted snapshot on stderr always).

When only the consumer cron jobs are due (``consumers.mode = "cron"``, on SQLite), the light minute
(:mod:`icc.tick.light`) runs them from the snapshot's resolved settings, without the framework, as it does for a
plain project; a consumer that finds a message to handle becomes ``COMMAND consume QUEUE --time-limit REST``
(the framework set up) instead of loading the plugins itself.

The snapshot is JSON. ``import json`` costs as much as the rest of the idle check (it imports ``re``), so it is
read with the C scanner ``json`` itself uses (``_json``), falling back to ``json`` where that is missing.
"""

from __future__ import annotations

import os
import stat
import sys

from icc._version import __version__
from icc.statedir import state_dir_problem

TYPE_CHECKING = False  # not typing's: the idle check does not import typing
if TYPE_CHECKING:
    from typing import NoReturn

OPTION = "--framework-snapshot"
FILENAME = "framework.snapshot.json"
FORMAT = "icc framework snapshot 1"
USAGE = (
    "usage: icc run [--quiet] [--at TIME] --framework-snapshot PATH -- COMMAND...: the line "
    "`manage.py icc crontab` (or `flask icc crontab`) prints; print it again"
)


# Variables that never change what the snapshot holds (icc.fastconfig ignores them too): which plugins load, and
# plugin tables' ICC_<TABLE>__<KEY>. Every other ICC_* variable must be as it was when it was written.
_NOT_COMPARED = frozenset({"ICC_PLUGINS", "ICC_DISABLE_PLUGIN_AUTOLOAD"})


def variables() -> dict[str, str]:
    """The ``ICC_*`` variables a snapshot depends on, as they are now."""
    return {
        k: v
        for k, v in os.environ.items()
        if k.startswith("ICC_") and k not in _NOT_COMPARED and "__" not in k[4:]
    }


class Unusable(Exception):
    """Why the snapshot cannot be used (the message); ``loud``: printed even with ``--quiet``."""

    def __init__(self, why: str, loud: bool = False) -> None:
        super().__init__(why)
        self.loud = loud


def parse(args: list[str]) -> tuple[bool, str | None, str, list[str]] | None:
    """``run [-q] [--at T] --framework-snapshot PATH -- COMMAND...`` as ``(quiet, at, path, command)``, or
    None when the line is not one of those."""
    if "--" not in args:
        return None
    split = args.index("--")
    options, command = args[:split], args[split + 1 :]
    quiet, at, path = False, None, None
    if not options or options[0] != "run" or not command or not os.path.isabs(command[0]):
        return None
    it = iter(options[1:])
    for arg in it:
        if arg in ("-q", "--quiet"):
            quiet = True
        elif arg in ("--at", OPTION):
            value = next(it, None)
            if value is None:
                return None
            if arg == OPTION:
                path = value
            else:
                at = value
        elif arg.startswith("--at="):
            at = arg[5:]
        elif arg.startswith(OPTION + "="):
            path = arg[len(OPTION) + 1 :]
        else:
            return None
    if not path:
        return None
    return quiet, at, path, command


def _loads(text: str) -> object:
    """JSON without importing ``json`` (and ``re``): its C scanner, with json.loads' settings."""
    try:
        import _json  # lazy: the C scanner alone; import json costs re
    except ImportError:  # an implementation without it
        import json  # lazy: an implementation without _json

        return json.loads(text)

    class Context:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = None
        memo: dict[str, str] = {}

    text = text.strip(" \t\n\r")
    value, end = _json.make_scanner(Context())(text, 0)  # type: ignore[arg-type]  # the attributes it reads
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value


def _file_stamp(path: str) -> list[int] | None:
    """``[mtime_ns, size]`` of ``path``, or None when it does not exist."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return [info.st_mtime_ns, info.st_size]


def load(path: str, command: list[str]) -> dict[str, object]:
    """The snapshot at ``path`` when the idle check may use it for ``command``; raises :class:`Unusable`."""

    problem = state_dir_problem(os.path.dirname(path) or ".")
    if problem is not None:
        raise Unusable(problem, loud=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Unusable(f"there is no framework snapshot {path} yet") from None
    except OSError as exc:
        raise Unusable(f"cannot read the framework snapshot {path}: {exc.strerror}", loud=True) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
            raise Unusable(
                f"the framework snapshot {path} is not a file of yours that only you can read (mode "
                f"{stat.S_IMODE(info.st_mode):o}); remove it: the full tick writes it again",
                loud=True,
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = _loads(fh.read(1 << 20).decode())
    except (ValueError, TypeError, UnicodeDecodeError, OSError, StopIteration, RecursionError) as exc:
        raise Unusable(
            f"the framework snapshot {path} is corrupt ({exc}); the full tick writes it again", loud=True
        ) from None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise Unusable(f"the framework snapshot {path} is corrupt (not a {FORMAT!r})", loud=True)
    if data.get("icc") != __version__:
        raise Unusable(
            f"the framework snapshot {path} was written by icc {data.get('icc')}, not {__version__}"
        )
    if data.get("command") != command:
        raise Unusable(
            f"the framework snapshot {path} was written for another command: {data.get('command')}"
        )
    if data.get("cwd") != os.getcwd():
        raise Unusable(f"the framework snapshot {path} was written in {data.get('cwd')}, not {os.getcwd()}")
    environment = data.get("environment")
    if not isinstance(environment, dict) or any(os.environ.get(k) != v for k, v in environment.items()):
        raise Unusable(f"the framework snapshot {path} was written for other settings: {environment}")
    if data.get("icc_variables") != variables():
        raise Unusable(
            f"the ICC_* variables differ from those the framework snapshot {path} was written with"
        )
    sources = data.get("sources")
    if not isinstance(sources, list):
        raise Unusable(f"the framework snapshot {path} is corrupt (no sources)", loud=True)
    for source in sources:
        if not isinstance(source, list) or len(source) != 2 or not isinstance(source[0], str):
            raise Unusable(f"the framework snapshot {path} is corrupt (a source {source!r})", loud=True)
        if _file_stamp(source[0]) != source[1]:
            raise Unusable(f"{source[0]} changed since the framework snapshot {path} was written")
    for key in ("state_dir", "timezone", "scan"):
        if not isinstance(data.get(key), str):
            raise Unusable(f"the framework snapshot {path} is corrupt (no {key})", loud=True)
    store = data.get("store")
    if store is not None and not (isinstance(store, dict) and isinstance(store.get("url"), str)):
        raise Unusable(f"the framework snapshot {path} is corrupt (its store)", loud=True)
    return data


def main(args: list[str]) -> NoReturn:
    """The crontab line's ``icc run ... --framework-snapshot PATH -- COMMAND...``: exits 0 when nothing is due,
    else becomes ``COMMAND run [--quiet] [--at TIME]``."""
    parsed = parse(args)
    if parsed is None:
        sys.stderr.write(f"icc: {USAGE}\n")
        raise SystemExit(2)
    quiet, at, path, command = parsed
    try:
        known = load(path, command)
    except Unusable as why:
        if why.loud:
            sys.stderr.write(f"icc run: {why}; running the full tick\n")
        elif not quiet:
            sys.stdout.write(f"icc run: {why}; running the full tick\n")
    except Exception as exc:  # anything unforeseen: the full tick decides
        sys.stderr.write(
            f"icc run: cannot use the framework snapshot {path}: {exc!r}; running the full tick\n"
        )
    else:
        from icc.tick.idle import idle_tick  # lazy: only a usable snapshot asks the store

        code = idle_tick(None, quiet, at, known)
        if code is not None:
            raise SystemExit(code)
    full = [*command, "run", *(["--quiet"] if quiet else []), *(["--at", at] if at is not None else [])]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(full[0], full)  # noqa: S606  # an argv list, never a shell: the crontab line's own command
    except OSError as exc:
        sys.stderr.write(
            f"icc run: cannot run {full[0]}: {exc.strerror}; print the crontab line again "
            "(`manage.py icc crontab` or `flask icc crontab`) and install it\n"
        )
        raise SystemExit(2) from None
