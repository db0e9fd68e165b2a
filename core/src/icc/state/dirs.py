"""The state directory: created 0700, refused when another user owns it or others may write to it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from icc.errors import StateError

DIR_MODE = 0o700
FILE_MODE = 0o600


def ensure_state_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if missing, and check that only this user can use it."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as exc:
        raise StateError(
            f"cannot create the state directory {path}: {exc.strerror}; check state_dir"
        ) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise StateError(f"state directory {path} is not a directory; point state_dir elsewhere")
    if info.st_uid != os.getuid():
        raise StateError(
            f"state directory {path} is owned by uid {info.st_uid}, not by you (uid {os.getuid()}); "
            "run icc as its owner or point state_dir to a directory of your own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateError(
            f"state directory {path} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"fix it with: chmod 700 {path}"
        )
    if info.st_mode & 0o077:
        # readable by others but not writable: tighten silently, it is ours.
        os.chmod(path, DIR_MODE)
    return path


def secure_file(path: Path) -> None:
    """Make a file of the state directory 0600 (sqlite creates files with the umask's mode)."""
    try:
        if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
            os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        pass
