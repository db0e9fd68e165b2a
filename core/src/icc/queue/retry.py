"""Retry backoff: how long a failed message waits before its next attempt."""

from __future__ import annotations

from typing import Protocol

__all__ = ["RetryPolicy", "backoff", "max_attempts"]


class RetryPolicy(Protocol):
    """What backoff needs of a queue's settings (:class:`icc.config.QueueConfig` is one)."""

    @property
    def retries(self) -> int: ...
    @property
    def delay(self) -> float: ...
    @property
    def multiplier(self) -> float: ...
    @property
    def max_delay(self) -> float: ...


def backoff(policy: RetryPolicy, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first delivery).

    ``delay * multiplier ** (attempt - 1)``, capped at ``max_delay``: with the defaults (1 s, x2, 1 h)
    the retries wait 1 s, 2 s, 4 s. Computed in a way that cannot overflow for huge attempt counts.
    """
    if attempt < 1:
        attempt = 1
    delay = float(policy.delay)
    cap = float(policy.max_delay)
    if delay <= 0 or cap <= 0:
        return 0.0
    if delay >= cap:
        return cap
    multiplier = float(policy.multiplier)
    if multiplier <= 1:
        return delay
    try:
        value = delay * multiplier ** (attempt - 1)
    except OverflowError:
        return cap
    return min(value, cap)


def max_attempts(policy: RetryPolicy) -> int:
    """Deliveries a message gets: the first one plus ``retries``."""
    return max(0, int(policy.retries)) + 1
