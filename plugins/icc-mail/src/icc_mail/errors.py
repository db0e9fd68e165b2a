"""The plugin's errors, fitted into icc's tree.

A handler that raises :class:`icc.UnrecoverableMessageError` sends the message to the failed store at once;
any other exception, such as :class:`TemporaryDeliveryError`, lets the queue retry it with backoff.
"""

from __future__ import annotations

from icc.errors import QueueError


class MailError(QueueError, ValueError):
    """``send_mail`` was given something that cannot become an e-mail: a bad address, a header injection."""


class TemporaryDeliveryError(Exception):
    """Delivery failed for a reason that may pass (4xx reply, server down, timeout): the queue retries."""
