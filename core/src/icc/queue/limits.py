"""Consumer limits: memory sizes as people write them, and the process's resident memory."""

from __future__ import annotations

import math
import os
import re
import sys

from icc.errors import QueueError

__all__ = ["parse_size", "rss_bytes"]

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in ``text``: ``"134217728"``, ``"512K"``, ``"128M"``, ``"1G"``, ``"1.5GiB"`` (binary units)."""
    match = _SIZE.match(text)
    if match is None:
        raise QueueError(
            f"memory size {text!r} is not understood; write a number of bytes or one with a unit: "
            "512K, 128M, 1G"
        )
    number, unit = match.groups()
    value = float(number) * _UNITS[unit.upper()]
    if not math.isfinite(value):
        raise QueueError(f"memory size {text!r} is too large; write it with a unit: 512K, 128M, 1G")
    size = int(value)
    if size <= 0:
        raise QueueError(f"memory size {text!r} must be more than zero")
    return size


def rss_bytes() -> int:
    """The resident set size of this process now (not its peak), in bytes."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    # No /proc (macOS, BSD): the peak is the best the standard library offers; it errs on the side of
    # stopping a consumer that once grew, which the next run starts afresh anyway.
    import resource  # lazy: only without /proc (macOS, BSD)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
