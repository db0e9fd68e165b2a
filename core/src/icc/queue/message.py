"""Messages as they travel: the JSON payload codec and the records a transport hands out.

Payloads are JSON objects, never pickles: a message is data another process, another version of the
application or a human with ``icc failed show`` must be able to read.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from json import encoder as json_encoder
from typing import Any, TypedDict, cast

from icc.errors import QueueError

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "Envelope",
    "ErrorRecord",
    "FailedMessage",
    "decode_history",
    "decode_payload",
    "encode_payload",
    "error_record",
    "validate_name",
]

# 256 KiB of UTF-8 JSON. A queue row is read whole on every lease: large blobs belong in files or object
# storage, with their path or key in the payload.
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_NAME_LENGTH = 200
# Error records kept per message: enough to see a pattern, bounded so a message retried for weeks
# does not grow without end.
MAX_HISTORY = 20
MAX_TRACEBACK_CHARS = 8000


class ErrorRecord(TypedDict, total=False):
    """One entry of a message's error history."""

    at: float  # epoch seconds
    attempt: int  # the attempt that failed (1 is the first delivery)
    error: str  # "ExceptionType: message", one line
    traceback: str  # the formatted traceback, truncated from the top


@dataclass(frozen=True, slots=True)
class Envelope:
    """A leased message: the payload as stored (JSON text) and what the transport knows about it."""

    id: int
    queue: str
    name: str
    payload: str
    attempts: int  # including the delivery this envelope is, counted when it was leased
    created_at: float
    redelivered: bool = False  # a previous lease on it expired: its consumer died or was killed
    # The expired lease held this message alone, so its handler was surely running when the consumer
    # died. False when it shared a batch lease: then the crash may have been a neighbour's.
    crashed: bool = False
    # Why the row cannot be delivered (a column holds what icc never writes); the consumer moves it to failed.
    malformed: str | None = None


@dataclass(frozen=True, slots=True)
class FailedMessage:
    """A message in the failed store, with the reason and the error history."""

    id: int
    queue: str
    name: str
    payload: str
    attempts: int
    created_at: float
    failed_at: float
    reason: str
    errors: tuple[ErrorRecord, ...]


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not name or name != name.strip() or len(name) > MAX_NAME_LENGTH:
        raise QueueError(
            f"message name {name!r} must be a non-empty string of at most {MAX_NAME_LENGTH} characters "
            "without surrounding spaces, such as 'report.render'"
        )
    if not _is_unicode(name):
        raise QueueError(f"message name {name!r} is not valid Unicode text (it holds a lone surrogate)")
    return name


def _is_unicode(text: str) -> bool:
    """False for text with a lone surrogate (``"\\ud800"``): it cannot be stored as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# json.dumps with any non-default argument builds an encoder per call; dispatch encodes every message.
_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))
# And JSONEncoder.encode builds its C encoder per call too: built once here, without the cycle check's dict (a
# payload that refers to itself then recurses, and the slow encoder tells why). Half the encoding's cost.
_MAKE_ENCODER: Any = getattr(json_encoder, "c_make_encoder", None)  # CPython's C encoder; not in typeshed
_ITERENCODE: Any = (
    None
    if _MAKE_ENCODER is None
    else _MAKE_ENCODER(
        None, _ENCODER.default, json_encoder.encode_basestring, None, ":", ",", False, False, False
    )
)


def _not_json(exc: BaseException) -> QueueError:
    return QueueError(
        f"the message payload is not JSON-serialisable: {exc}; send plain dicts, lists, strings, "
        "numbers, booleans and None (ids instead of objects, ISO strings instead of datetimes)"
    )


def encode_payload(payload: object) -> str:
    """The JSON text of ``payload``; a :class:`QueueError` for anything that is not a JSON object or is too big."""
    if type(payload) is not dict and not isinstance(payload, Mapping):  # a dict first: no ABC check
        raise QueueError(
            f"a message payload must be a dict (a JSON object), not {type(payload).__name__}; "
            "wrap the value: {'value': ...}"
        )
    try:
        # allow_nan=False: NaN and Infinity are not JSON, and other consumers (PostgreSQL's jsonb, other
        # languages) would refuse them. sort_keys is not needed: payloads are read, not compared.
        text = _ENCODER.encode(payload) if _ITERENCODE is None else "".join(_ITERENCODE(payload, 0))
    except (TypeError, ValueError) as exc:
        raise _not_json(exc) from None
    except RecursionError:
        try:
            _ENCODER.encode(payload)  # checks for cycles: "Circular reference detected"
        except ValueError as exc:
            raise _not_json(exc) from None
        except RecursionError:
            pass
        raise QueueError("the message payload nests too deeply (or refers to itself)") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise QueueError(
            f"the message payload is not valid Unicode text: a lone surrogate {text[exc.start : exc.end]!r} "
            f"in {text[max(0, exc.start - 30) : exc.end + 30]!r}; decode bytes properly before sending them"
        ) from None
    if size > MAX_PAYLOAD_BYTES:
        raise QueueError(
            f"the message payload is {size} bytes of JSON, more than the {MAX_PAYLOAD_BYTES} allowed; "
            "store large data elsewhere and send its path or id"
        )
    return text


def decode_payload(text: object) -> dict[str, Any]:
    """The payload dict of a stored message; ``ValueError`` says why a row cannot be one."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if not isinstance(text, str):
        raise ValueError(f"payload is {type(text).__name__}, not JSON text")

    def no_constants(value: str) -> float:
        raise ValueError(f"{value} is not JSON")

    try:
        value = json.loads(text, parse_constant=no_constants)
    except RecursionError:
        raise ValueError("payload nests too deeply to be read") from None
    if not isinstance(value, dict):
        raise ValueError(f"payload is a JSON {type(value).__name__}, not an object")
    return value


def decode_history(text: object) -> list[ErrorRecord]:
    """The error history column; an unreadable one becomes a single record saying so (never raises)."""
    if text is None or text == "":
        return []
    try:
        value = json.loads(text if isinstance(text, str | bytes) else str(text))
    except (ValueError, TypeError) as exc:
        return [ErrorRecord(error=f"unreadable error history: {exc}")]
    except RecursionError:
        return [ErrorRecord(error="unreadable error history: it nests too deeply")]
    if not isinstance(value, list):
        return [ErrorRecord(error="unreadable error history: not a list")]
    return [cast(ErrorRecord, item) for item in value if isinstance(item, dict)]


def encode_history(records: list[ErrorRecord]) -> str:
    # ASCII: an error text may hold lone surrogates (a file name decoded with surrogateescape), which
    # SQLite cannot store as UTF-8; escaped, they round-trip.
    return json.dumps(records[-MAX_HISTORY:], ensure_ascii=True, allow_nan=False)


def error_record(
    attempt: int, error: BaseException | str, *, at: float | None = None, with_traceback: bool = True
) -> ErrorRecord:
    """An :class:`ErrorRecord` for an exception (with its traceback) or for a plain reason."""
    record = ErrorRecord(at=time.time() if at is None else at, attempt=attempt)
    if isinstance(error, BaseException):
        try:
            text = str(error).strip().replace("\n", " ")
        except Exception as exc:  # an exception whose str() fails must not take the consumer down
            text = f"<str() of the exception failed: {type(exc).__name__}>"
        record["error"] = f"{type(error).__name__}: {text}" if text else type(error).__name__
        if with_traceback and error.__traceback__ is not None:
            try:
                formatted = "".join(traceback.format_exception(error))
            except Exception:
                formatted = ""
            if formatted:
                record["traceback"] = formatted[-MAX_TRACEBACK_CHARS:]
    else:
        record["error"] = error
    return record


def is_finite_delay(delay: object) -> bool:
    if type(delay) is int:  # the common case (0): no union isinstance, no isfinite
        return delay >= 0
    return (
        isinstance(delay, int | float) and not isinstance(delay, bool) and math.isfinite(delay) and delay >= 0
    )
