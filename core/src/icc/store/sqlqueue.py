"""The queue transports' SQL, said once for both backends: what SQLite and PostgreSQL do the same way.

:class:`SqlTransport` holds what the two transports share: which rows a lease takes and the envelopes it hands
out (with the "lease expired" record of a redelivered message), ``retry`` and ``fail``, the failed store's
reads, the stats tally and the tolerant decoding of rows (a row written by hand may hold anything). Its SQL is
written once in PostgreSQL's spelling (``%s``, ``{s}.table``) and each backend renders it (:meth:`_t`). The
dialect stays in the backends as small methods: one transaction (:meth:`_transaction`), one read
(:meth:`_read`), "in a while" on the right clock (:meth:`_at`: this host's for SQLite, the server's for
PostgreSQL), row locks (:attr:`_FOR_UPDATE`), text the database accepts (:meth:`_clean`). Sending, the lease's
own statements, the wake-up and the stop requests differ between the two and stay whole in each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from icc.queue.message import (
    Envelope,
    ErrorRecord,
    FailedMessage,
    decode_history,
    encode_history,
    error_record,
)
from icc.queue.transport import QueueStats

T = TypeVar("T")

FAILED_COLUMNS = "id, queue, name, payload, attempts, created_at, failed_at, reason, errors"


def text_of(value: object) -> str:
    """A column that should hold text, as text: rows written by hand may hold anything."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return repr(value)  # not JSON: the consumer reports it as malformed
    return "" if value is None else repr(value) if not isinstance(value, int | float) else str(value)


def number(value: object, default: float = 0.0) -> float:
    """A column that should hold a number, as a float (``default`` when it does not)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def is_row_id(value: int) -> bool:
    """Whether ``value`` fits a 64-bit row id (a larger one names no message)."""
    return -(2**63) <= value < 2**63


def envelope(queue: str, row: Sequence[Any], **flags: Any) -> Envelope:
    """The envelope of a message row just leased: ``(id, name, payload, attempts, created_at)`` as stored, its
    attempts before this lease."""
    message_id, name, payload, attempts, created_at = row[:5]
    return Envelope(
        id=int(message_id),
        queue=queue,
        name=text_of(name),
        payload=text_of(payload),
        attempts=int(number(attempts)) + 1,
        created_at=number(created_at),
        **flags,
    )


def lease_batch(rows: Sequence[Any]) -> list[Any]:
    """The rows one lease takes of the due ``rows`` (``lease_owner`` sixth): an expired lease comes back alone,
    so that if it kills its consumer again no other message shares the blame (and the attempt counted for it);
    otherwise the rows up to the first expired lease."""
    if not rows:
        return []
    if rows[0][5] is not None:
        return list(rows[:1])
    taken = []
    for row in rows:
        if row[5] is not None:
            break
        taken.append(row)
    return taken


class SqlTransport:
    """What both SQL queue transports do the same way. A backend supplies the dialect methods below."""

    _FOR_UPDATE = ""  # a read that decides a write locks its rows (PostgreSQL: " FOR UPDATE")

    # -- the dialect: each backend's own ------------------------------------------------------------------
    def _t(self, sql: str) -> str:
        """``sql`` (``%s`` placeholders, ``{s}.table``) rendered for this database."""
        raise NotImplementedError

    def _transaction(self, op: Callable[[Any], T]) -> T:
        """``op(connection)`` in one write transaction; database errors become a one-line QueueError."""
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read statement (``sql`` not yet rendered)."""
        raise NotImplementedError

    def _at(self, delay: float) -> tuple[str, float]:
        """SQL and its one parameter for the time ``delay`` seconds from now, on the clock that decides."""
        raise NotImplementedError

    def _clean(self, text: str) -> str:
        """``text`` as the database accepts it."""
        return text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates

    def _limit_param(self, limit: int) -> int:
        """``limit`` as a LIMIT parameter."""
        return limit

    @staticmethod
    def _age(at: float, oldest: object) -> float:
        """Seconds the oldest message of a group has waited at ``at``."""
        return max(0.0, at - number(oldest, at))

    # -- leasing --------------------------------------------------------------------------------------
    def _envelopes(self, conn: Any, queue: str, taken: Sequence[Any], now: float) -> list[Envelope]:
        """The envelopes of the rows a lease just took; a redelivered one gets a "lease expired" record."""
        envelopes = []
        for row in taken:
            message_id, _name, _payload, attempts, _created_at, previous_owner, batch = row[:7]
            attempts = int(number(attempts))
            redelivered = previous_owner is not None
            crashed = redelivered and int(number(batch)) <= 1
            if redelivered:
                if crashed:
                    why = "lease expired: the consumer died or was killed while handling it"
                else:
                    why = (
                        f"lease expired: the consumer died or was killed while it held this message "
                        f"in a batch of {batch} (its handler may not have run)"
                    )
                self._append_error(conn, message_id, error_record(attempts, why, at=now))
            envelopes.append(envelope(queue, row, redelivered=redelivered, crashed=crashed))
        return envelopes

    def _append_error(self, conn: Any, message_id: int, record: ErrorRecord) -> None:
        row = conn.execute(self._t("SELECT errors FROM {s}.messages WHERE id = %s"), (message_id,)).fetchone()
        history = decode_history(row[0] if row else None)
        history.append(record)
        conn.execute(
            self._t("UPDATE {s}.messages SET errors = %s WHERE id = %s"),
            (self._clean(encode_history(history)), message_id),
        )

    def retry(self, envelope: Envelope, error: ErrorRecord, *, owner: str, delay: float) -> bool:
        def op(conn: Any) -> bool:
            row = conn.execute(
                self._t(
                    f"SELECT errors FROM {{s}}.messages WHERE id = %s AND lease_owner = %s{self._FOR_UPDATE}"
                ),
                (envelope.id, owner),
            ).fetchone()
            if row is None:
                return False  # the lease was lost: whoever holds it now decides
            history = decode_history(row[0])
            history.append(error)
            at, param = self._at(delay)
            conn.execute(
                self._t(
                    f"UPDATE {{s}}.messages SET available_at = {at}, lease_owner = NULL, lease_batch = 0, "
                    "errors = %s WHERE id = %s"
                ),
                (param, self._clean(encode_history(history)), envelope.id),
            )
            return True

        return self._transaction(op)

    def fail(
        self,
        envelope: Envelope,
        reason: str | Callable[[list[ErrorRecord]], str],
        error: ErrorRecord | None = None,
        *,
        owner: str,
        attempts: int | None = None,
    ) -> str | None:
        def op(conn: Any) -> str | None:
            row = conn.execute(
                self._t(
                    "SELECT queue, name, payload, attempts, created_at, errors FROM {s}.messages "
                    f"WHERE id = %s AND lease_owner = %s{self._FOR_UPDATE}"
                ),
                (envelope.id, owner),
            ).fetchone()
            if row is None:
                return None
            queue, name, payload, stored_attempts, created_at, errors = row
            history = decode_history(errors)
            if error is not None:
                history.append(error)
            why = self._clean(reason if isinstance(reason, str) else reason(history))
            at, param = self._at(0.0)
            # Insert first, delete second, one transaction: the message is never in neither table.
            # ON CONFLICT: ids are never reused, so a clash can only be a stale copy of this message.
            conn.execute(
                self._t(
                    "INSERT INTO {s}.failed (id, queue, name, payload, created_at, failed_at, attempts, "
                    f"reason, errors) VALUES (%s, %s, %s, %s, %s, {at}, %s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET queue = EXCLUDED.queue, name = EXCLUDED.name, "
                    "payload = EXCLUDED.payload, created_at = EXCLUDED.created_at, "
                    "failed_at = EXCLUDED.failed_at, attempts = EXCLUDED.attempts, "
                    "reason = EXCLUDED.reason, errors = EXCLUDED.errors"
                ),
                (
                    envelope.id,
                    text_of(queue),
                    text_of(name),
                    text_of(payload),
                    number(created_at),
                    param,
                    int(number(stored_attempts)) if attempts is None else attempts,
                    why,
                    self._clean(encode_history(history)),
                ),
            )
            conn.execute(self._t("DELETE FROM {s}.messages WHERE id = %s"), (envelope.id,))
            return why

        return self._transaction(op)

    # -- operating: stats ---------------------------------------------------------------------------------
    def _tally(
        self, at: float, rows: Sequence[Any], failed: Sequence[Any], handled: Sequence[Any] = ()
    ) -> dict[str, QueueStats]:
        """Stats from ``(queue, lease_owner, later, count, oldest)`` groups, ``(queue, count)`` failed ones and
        ``(queue, count)`` handled in the last hour."""
        found: dict[str, QueueStats] = {}

        def of(queue: object) -> QueueStats:
            return found.setdefault(text_of(queue), QueueStats())

        for queue, owner, later, count, oldest in rows:
            entry = of(queue)
            if not later:
                entry.ready += count  # an expired lease is available again: ready
            elif owner is None:
                entry.delayed += count
            else:
                entry.in_flight += count
                entry.owners[text_of(owner)] = entry.owners.get(text_of(owner), 0) + count
            age = self._age(at, oldest)
            entry.oldest_age = age if entry.oldest_age is None else max(entry.oldest_age, age)
        for queue, count in failed:
            of(queue).failed += count
        for queue, count in handled:
            of(queue).handled_last_hour += int(count or 0)
        return found

    # -- FailedStore ----------------------------------------------------------------------------------
    @staticmethod
    def _failed(row: Sequence[Any]) -> FailedMessage:
        message_id, queue, name, payload, attempts, created_at, failed_at, reason, errors = row
        return FailedMessage(
            id=int(message_id),
            queue=text_of(queue),
            name=text_of(name),
            payload=text_of(payload),
            attempts=int(number(attempts)),
            created_at=number(created_at),
            failed_at=number(failed_at),
            reason=text_of(reason),
            errors=tuple(decode_history(errors)),
        )

    def failed_list(self, *, queue: str | None = None, limit: int | None = None) -> list[FailedMessage]:
        sql = f"SELECT {FAILED_COLUMNS} FROM {{s}}.failed"
        params: list[Any] = []
        if queue is not None:
            sql += " WHERE queue = %s"
            params.append(queue)
        sql += " ORDER BY failed_at, id"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(self._limit_param(limit))
        return [self._failed(row) for row in self._read(sql, params)]

    def failed_get(self, message_id: int) -> FailedMessage | None:
        if not is_row_id(message_id):
            return None  # past 64-bit integers: no message has it
        rows = self._read(f"SELECT {FAILED_COLUMNS} FROM {{s}}.failed WHERE id = %s", (message_id,))
        return self._failed(rows[0]) if rows else None
