"""icc in a Django project: add ``"icc.contrib.django"`` to ``INSTALLED_APPS`` (extra ``icc-runner[django]``).

- each installed app's ``icc_tasks.py`` is a plugin module (``@icc.hookimpl def schedule(scheduler)``);
- the ``ICC`` setting holds icc.toml's keys; the timezone falls back to ``TIME_ZONE``;
- ``python manage.py icc <command> ...`` runs every icc command with Django set up;
- ``scheduler.command("clearsessions")`` schedules a management command;
- :func:`dispatch_on_commit` sends a message once the surrounding transaction commits.

See docs/django.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import transaction

from icc.errors import QueueError

__all__ = ["dispatch_on_commit"]


def dispatch_on_commit(
    name: str, payload: Mapping[str, Any], queue: str = "async", delay: float = 0, *, using: str | None = None
) -> None:
    """``icc.dispatch(name, payload, queue=queue, delay=delay)`` once the current transaction on database
    ``using`` commits (at once outside a transaction); nothing is sent when it rolls back.

    The message is checked now (its name, its payload as JSON, the queue): a bad one raises
    :class:`icc.QueueError` here, in the view, not after the commit."""

    from icc.config import load_config  # lazy: Django imports this package in every process
    from icc.queue.dispatch import dispatch, validate_queue  # lazy: icc.queue, ~55 ms: only a dispatch pays
    from icc.queue.message import encode_payload, is_finite_delay, validate_name  # lazy: as above

    validate_name(name)
    encode_payload(payload)
    if not is_finite_delay(delay):
        raise QueueError(f"delay must be a finite number of seconds >= 0, not {delay!r}")
    validate_queue(load_config(), queue)
    frozen = dict(payload)  # what the caller changes after this call is not sent

    def send() -> None:
        dispatch(name, frozen, queue=queue, delay=delay)

    transaction.on_commit(send, using=using)
