"""Retry backoff: how long a failed message waits before its next attempt."""

from __future__ import annotations

import hashlib
from typing import Protocol

__all__ = ["RETRY_JITTER", "RetryPolicy", "backoff", "max_attempts"]

# A retry waits its backoff shortened by a stable fraction in [0, RETRY_JITTER) of it, different per message
# and attempt: messages that failed together (an outage) do not all come back in the same second.
RETRY_JITTER = 0.25


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


def backoff(policy: RetryPolicy, attempt: int, key: str | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first delivery).

    ``delay * multiplier ** (attempt - 1)``, capped at ``max_delay``: with the defaults (1 s, x2, 1 h)
    the retries wait 1 s, 2 s, 4 s. Computed in a way that cannot overflow for huge attempt counts.
    With ``key`` (the consumer passes the message id) the wait is shortened by a stable fraction of up to
    ``RETRY_JITTER`` of it (sha256 of key and attempt: the same in every process).
    """
    value = _backoff(policy, attempt)
    if key is None or value <= 0:
        return value
    return value * (1 - RETRY_JITTER * jitter_fraction(f"{key}:{max(attempt, 1)}"))


def jitter_fraction(text: str) -> float:
    """A stable number in [0, 1) for ``text``."""
    digest = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _backoff(policy: RetryPolicy, attempt: int) -> float:
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
